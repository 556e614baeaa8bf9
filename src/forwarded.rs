//! `server.trusted_proxies`: whose `X-Forwarded-For` is believed (a leaf module: the config
//! holds the list, the token endpoint and the connection caps read it).
//!
//! Behind a TLS proxy or load balancer every connection comes from the proxy, so the token
//! throttle would count every client as one. From a configured proxy the header names the
//! real client: the rightmost hop that is not itself a trusted proxy (hops to its left were
//! written by the client and may be forged). From anyone else the header is ignored, so a
//! client cannot pick the address it is counted under. Sans-IO.

use std::net::IpAddr;

use ipnet::IpNet;

/// The networks whose `X-Forwarded-For` header is read.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct TrustedProxies(Vec<IpNet>);

impl TryFrom<Vec<String>> for TrustedProxies {
    type Error = String;

    fn try_from(v: Vec<String>) -> Result<Self, String> {
        crate::networks::parse("server.trusted_proxies", &v).map(TrustedProxies)
    }
}

impl TrustedProxies {
    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        crate::networks::contains(&self.0, ip)
    }

    /// Whether none is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client a request from `peer` comes from: `peer` itself unless it is a trusted
    /// proxy; then the rightmost `X-Forwarded-For` hop that is not a trusted proxy. `headers`
    /// are the header's values in order (a proxy may add a line rather than extend one). An
    /// entry that is not an address ends the walk at the hop to its right (the nearest one a
    /// trusted proxy wrote), so garbage never makes up an address.
    pub fn client<'a>(&self, peer: IpAddr, headers: impl IntoIterator<Item = &'a str>) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .into_iter()
            .flat_map(|h| h.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !self.contains(ip) {
                return ip;
            }
        }
        client
    }
}

/// An address from one `X-Forwarded-For` entry (`1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`, `::1`).
fn parse_hop(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    s.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(v: &[&str]) -> TrustedProxies {
        TrustedProxies::try_from(v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_peer_is_believed_and_only_up_to_the_first_untrusted_hop() {
        let t = proxies(&["10.0.0.0/8", "192.0.2.7"]);
        // Not a proxy: the header is ignored.
        assert_eq!(
            t.client(ip("203.0.113.5"), ["198.51.100.1"]),
            ip("203.0.113.5")
        );
        // A proxy: the client it saw.
        assert_eq!(
            t.client(ip("10.1.2.3"), ["198.51.100.1"]),
            ip("198.51.100.1")
        );
        // A forged entry to the left of the real client is not used.
        assert_eq!(
            t.client(ip("10.1.2.3"), ["6.6.6.6, 198.51.100.1, 192.0.2.7"]),
            ip("198.51.100.1")
        );
        // Several header lines read as one list.
        assert_eq!(
            t.client(ip("10.1.2.3"), ["6.6.6.6", "198.51.100.1:4444"]),
            ip("198.51.100.1")
        );
        // Garbage stops at the nearest trusted hop; no header: the proxy itself.
        assert_eq!(t.client(ip("10.1.2.3"), ["junk, 10.9.9.9"]), ip("10.9.9.9"));
        assert_eq!(t.client(ip("10.1.2.3"), Vec::<&str>::new()), ip("10.1.2.3"));
        assert_eq!(
            t.client(ip("::ffff:10.1.2.3"), ["[2001:db8::1]:80"]),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn bad_entries_are_refused_naming_the_setting() {
        let e = TrustedProxies::try_from(vec!["10.0.0.0/33".to_string()]).unwrap_err();
        assert!(e.contains("server.trusted_proxies"), "{e}");
        assert!(proxies(&[]).is_empty());
    }
}
