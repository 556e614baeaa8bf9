//! Lists of networks from the config (`server.trusted_proxies`, `ng.allow`): CIDRs or single
//! addresses, matched with an IPv4-mapped IPv6 peer read as IPv4 (a dual-stack socket's view of
//! an IPv4 client). One parser, so every such setting accepts and refuses the same entries.
//! Sans-IO.

use std::net::IpAddr;

use ipnet::IpNet;

/// `entries` of `setting` as networks (host bits cleared: `10.1.2.3/16` is `10.1.0.0/16`); an
/// entry that is neither an address nor a CIDR is refused, naming the setting and the entry.
pub fn parse(setting: &str, entries: &[String]) -> Result<Vec<IpNet>, String> {
    entries
        .iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "{setting}: {s:?} is not an address or a CIDR network (e.g. \"10.0.0.0/24\")"
                    )
                })
        })
        .collect()
}

/// Whether `ip` is in any of `nets`.
pub fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn addresses_and_cidrs_parse_and_match_mapped_peers() {
        let nets = parse("x", &list(&["10.1.2.3/16", "192.0.2.7", "fd00::/8"])).unwrap();
        assert_eq!(
            nets,
            ["10.1.0.0/16", "192.0.2.7/32", "fd00::/8"].map(|n| n.parse::<IpNet>().unwrap())
        );
        for ok in ["10.1.200.1", "192.0.2.7", "::ffff:192.0.2.7", "fd12::1"] {
            assert!(contains(&nets, ok.parse().unwrap()), "{ok}");
        }
        for no in ["10.2.0.1", "192.0.2.8", "::1", "fe80::1"] {
            assert!(!contains(&nets, no.parse().unwrap()), "{no}");
        }
        for bad in ["10.0.0/8", "10.0.0.0/33", "pbx.example.com", ""] {
            let e = parse("ng.allow", &list(&["127.0.0.1", bad])).unwrap_err();
            assert!(e.contains("ng.allow") && e.contains("CIDR"), "{bad}: {e}");
        }
    }
}
