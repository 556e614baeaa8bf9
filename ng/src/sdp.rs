//! The SDP an ng `offer`/`answer` carries: what it says about the sender's media, whether
//! tonegate can guarantee masking on it, and the same body rewritten to point at the relay.
//!
//! The rewrite is line-preserving: every line it has no reason to touch (vendor attributes,
//! ordering, `\r\n` or `\n` endings, spacing) leaves byte for byte. That is why it is written
//! here rather than with an SDP crate: `webrtc-sdp` drops unknown attributes, and `sdp-types`
//! and webrtc-rs `sdp` re-serialise every line from their model.
//!
//! Fail closed: an offer tonegate cannot inspect for keys is refused with a reason — encrypted
//! media it does not terminate (`RTP/SAVP`, `a=crypto`, DTLS fingerprints), or no codec the
//! masker can decode (PCMU, PCMA). ICE candidates are always stripped (they would let media
//! bypass the relay); codecs other than the one G.711 codec kept and telephone-event are removed,
//! so the far end cannot choose one tonegate cannot inspect; other media sections are rejected
//! (port 0); `a=rtcp-mux` is removed (the relay uses RTCP on port + 1).

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;
use tonegate_dsp::G711Law;

/// Why an SDP cannot be relayed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    /// Not parseable as SDP.
    #[error("bad SDP: {0}")]
    Malformed(String),
    /// Encrypted media (SRTP, DTLS): tonegate would relay what it cannot inspect.
    #[error("encrypted media ({0}) cannot be inspected for keys: tonegate refuses it")]
    Encrypted(String),
    /// No PCMU or PCMA audio.
    #[error("no audio codec tonegate can inspect for keys (PCMU or PCMA) in the SDP")]
    NoInspectableCodec,
}

/// The one audio stream tonegate relays, as an SDP describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioStream {
    /// Where the sender receives RTP (`None` on hold: `c=0.0.0.0` or port 0).
    pub remote: Option<SocketAddr>,
    /// The sender's media host, if it named one (even on hold it is where media comes from).
    pub host: Option<IpAddr>,
    /// The codec kept.
    pub law: G711Law,
    /// Its payload type.
    pub pt: u8,
    /// telephone-event's payload type, if offered.
    pub event_pt: Option<u8>,
    /// `sendrecv`, `sendonly`, `recvonly` or `inactive`, if given.
    pub direction: Option<String>,
}

/// A parsed SDP body.
#[derive(Debug, Clone)]
pub struct Sdp {
    lines: Vec<String>,
    eol: &'static str,
    /// The relayed audio section: index of its `m=` line, its end (exclusive).
    audio: (usize, usize),
    stream: AudioStream,
}

impl Sdp {
    /// Parses and checks an SDP body (see the module documentation for what is refused).
    pub fn parse(body: &str) -> Result<Sdp, SdpError> {
        if body.len() > crate::message::MAX_MESSAGE {
            return Err(SdpError::Malformed("too long".into()));
        }
        let eol = if body.contains("\r\n") { "\r\n" } else { "\n" };
        let lines: Vec<String> = body
            .split(eol)
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect();
        // A trailing newline leaves one empty line at the end; keep it to reproduce it.
        if !lines.first().is_some_and(|l| l.starts_with("v=")) {
            return Err(SdpError::Malformed("does not start with v=".into()));
        }
        for l in &lines {
            if !l.is_empty() && (l.len() < 2 || l.as_bytes()[1] != b'=') {
                return Err(SdpError::Malformed(format!("not a type=value line: {l:?}")));
            }
        }
        let sections: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("m="))
            .map(|(i, _)| i)
            .collect();
        let session_end = sections.first().copied().unwrap_or(lines.len());
        let session = &lines[..session_end];
        if let Some(l) = session
            .iter()
            .find(|l| l.starts_with("a=fingerprint") || l.starts_with("a=crypto"))
        {
            return Err(SdpError::Encrypted(attr_name(l)));
        }
        let session_conn = session.iter().find_map(|l| conn_addr(l));
        let session_dir = session.iter().find_map(|l| direction(l));
        let mut audio = None;
        for (n, &start) in sections.iter().enumerate() {
            let end = sections.get(n + 1).copied().unwrap_or(lines.len());
            let m: Vec<&str> = lines[start][2..].split_whitespace().collect();
            if m.len() < 4 {
                return Err(SdpError::Malformed(format!(
                    "short m= line: {:?}",
                    lines[start]
                )));
            }
            if m[0] != "audio" || m[1] == "0" || audio.is_some() {
                continue;
            }
            let proto = m[2];
            if proto.contains("SAVP") || proto.contains("TLS") {
                return Err(SdpError::Encrypted(proto.to_string()));
            }
            let section = &lines[start + 1..end];
            if let Some(l) = section
                .iter()
                .find(|l| l.starts_with("a=fingerprint") || l.starts_with("a=crypto"))
            {
                return Err(SdpError::Encrypted(attr_name(l)));
            }
            let port: u16 = m[1]
                .split('/')
                .next()
                .unwrap_or("")
                .parse()
                .map_err(|_| SdpError::Malformed(format!("bad port in {:?}", lines[start])))?;
            let rtpmap = |pt: &str| -> Option<String> {
                section.iter().find_map(|l| {
                    let rest = l.strip_prefix("a=rtpmap:")?;
                    let (p, enc) = rest.split_once(' ')?;
                    (p == pt).then(|| enc.trim().to_ascii_uppercase())
                })
            };
            let mut chosen = None;
            let mut event_pt = None;
            for f in &m[3..] {
                let enc = rtpmap(f);
                let law = match (*f, enc.as_deref()) {
                    (_, Some(e)) if e.starts_with("PCMU/8000") => Some(G711Law::Ulaw),
                    (_, Some(e)) if e.starts_with("PCMA/8000") => Some(G711Law::Alaw),
                    ("0", None) => Some(G711Law::Ulaw),
                    ("8", None) => Some(G711Law::Alaw),
                    _ => None,
                };
                if let (Some(law), None) = (law, chosen) {
                    chosen = Some((law, f.parse::<u8>().unwrap_or(0)));
                }
                if enc
                    .as_deref()
                    .is_some_and(|e| e.starts_with("TELEPHONE-EVENT/8000"))
                {
                    event_pt = f.parse().ok();
                }
            }
            let Some((law, pt)) = chosen else {
                return Err(SdpError::NoInspectableCodec);
            };
            let host = section.iter().find_map(|l| conn_addr(l)).or(session_conn);
            let remote = host
                .filter(|ip| !ip.is_unspecified() && port != 0)
                .map(|ip| SocketAddr::new(ip, port));
            audio = Some((
                (start, end),
                AudioStream {
                    remote,
                    host: host.filter(|ip| !ip.is_unspecified()),
                    law,
                    pt,
                    event_pt,
                    direction: section
                        .iter()
                        .find_map(|l| direction(l))
                        .or_else(|| session_dir.clone()),
                },
            ));
        }
        let Some((audio, stream)) = audio else {
            return Err(SdpError::NoInspectableCodec);
        };
        Ok(Sdp {
            lines,
            eol,
            audio,
            stream,
        })
    }

    /// The audio stream tonegate relays.
    pub fn stream(&self) -> &AudioStream {
        &self.stream
    }

    /// The body rewritten for the other party: media to `local` (the relay leg facing it),
    /// the origin's address too when `replace_origin`.
    pub fn rewrite(&self, local: SocketAddr, replace_origin: bool) -> String {
        let ip = local.ip();
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let keep: Vec<String> = std::iter::once(self.stream.pt)
            .chain(self.stream.event_pt)
            .map(|p| p.to_string())
            .collect();
        let (a_start, a_end) = self.audio;
        let mut out: Vec<String> = Vec::with_capacity(self.lines.len());
        let mut section_kind_audio = false;
        for (i, l) in self.lines.iter().enumerate() {
            let in_audio = (a_start..a_end).contains(&i);
            if let Some(m) = l.strip_prefix("m=") {
                section_kind_audio = in_audio;
                let mut f: Vec<&str> = m.split_whitespace().collect();
                if in_audio {
                    let port = local.port().to_string();
                    let head = format!("m={} {} {}", f[0], port, f[2]);
                    out.push(format!("{head} {}", keep.join(" ")));
                } else {
                    // Not relayed: rejected, so nothing flows around the relay.
                    f[1] = "0";
                    out.push(format!("m={}", f.join(" ")));
                }
                continue;
            }
            if is_ice(l) || l == "a=rtcp-mux" {
                continue;
            }
            if l.starts_with("c=") {
                let zero = conn_addr(l).is_some_and(|a| a.is_unspecified());
                let session_level = i < a_start.min(self.first_m());
                if (in_audio || session_level) && !zero {
                    out.push(format!("c=IN {family} {ip}"));
                } else {
                    out.push(l.clone());
                }
                continue;
            }
            if let Some(o) = l.strip_prefix("o=").filter(|_| replace_origin) {
                let mut f: Vec<&str> = o.split_whitespace().collect();
                if f.len() == 6 {
                    let ip_s = ip.to_string();
                    f[4] = family;
                    f[5] = &ip_s;
                    out.push(format!("o={}", f.join(" ")));
                    continue;
                }
            }
            if section_kind_audio && in_audio {
                if let Some(pt) = attr_pt(l) {
                    if !keep.iter().any(|k| k == pt) {
                        continue;
                    }
                }
                if l.starts_with("a=rtcp:") {
                    out.push(format!("a=rtcp:{} IN {family} {ip}", local.port() + 1));
                    continue;
                }
            }
            out.push(l.clone());
        }
        out.join(self.eol)
    }

    fn first_m(&self) -> usize {
        self.lines
            .iter()
            .position(|l| l.starts_with("m="))
            .unwrap_or(self.lines.len())
    }
}

/// The address of a `c=IN IP4|IP6 addr[/ttl]` line.
fn conn_addr(l: &str) -> Option<IpAddr> {
    let f: Vec<&str> = l.strip_prefix("c=")?.split_whitespace().collect();
    f.get(2)?.split('/').next()?.parse().ok()
}

fn direction(l: &str) -> Option<String> {
    let a = l.strip_prefix("a=")?;
    matches!(a, "sendrecv" | "sendonly" | "recvonly" | "inactive").then(|| a.to_string())
}

fn is_ice(l: &str) -> bool {
    [
        "a=candidate:",
        "a=ice-ufrag:",
        "a=ice-pwd:",
        "a=ice-options:",
        "a=ice-lite",
        "a=end-of-candidates",
        "a=remote-candidates:",
        "a=ice-mismatch",
    ]
    .iter()
    .any(|p| l.starts_with(p))
}

/// The payload type an `a=rtpmap:`, `a=fmtp:` or `a=rtcp-fb:` line is about.
fn attr_pt(l: &str) -> Option<&str> {
    let rest = l
        .strip_prefix("a=rtpmap:")
        .or_else(|| l.strip_prefix("a=fmtp:"))
        .or_else(|| l.strip_prefix("a=rtcp-fb:"))?;
    let pt = rest.split_whitespace().next()?;
    (pt != "*").then_some(pt)
}

fn attr_name(l: &str) -> String {
    l.split(':').next().unwrap_or(l).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=caller 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0 8 9 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=X-vendor:foo\r\na=rtcp-mux\r\na=rtcp:16001\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\na=candidate:1 1 UDP 2130706431 127.0.0.2 16000 typ host\r\na=sendrecv\r\nm=video 18000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";

    #[test]
    fn reads_the_stream_and_rewrites_only_what_it_must() {
        let s = Sdp::parse(OFFER).unwrap();
        let st = s.stream();
        assert_eq!(st.remote, Some("127.0.0.2:16000".parse().unwrap()));
        assert_eq!((st.law, st.pt, st.event_pt), (G711Law::Ulaw, 0, Some(101)));
        assert_eq!(st.direction.as_deref(), Some("sendrecv"));
        let out = s.rewrite("127.0.0.1:30002".parse().unwrap(), true);
        assert_eq!(
            out,
            "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30002 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=X-vendor:foo\r\na=rtcp:30003 IN IP4 127.0.0.1\r\na=sendrecv\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        );
        // Without replace-origin the o= line stays; the same input gives the same output.
        let again = s.rewrite("127.0.0.1:30002".parse().unwrap(), false);
        assert!(again.contains("o=caller 1 1 IN IP4 127.0.0.2\r\n"));
        assert_eq!(
            again,
            Sdp::parse(OFFER)
                .unwrap()
                .rewrite("127.0.0.1:30002".parse().unwrap(), false)
        );
    }

    #[test]
    fn hold_keeps_the_zero_address_and_lf_endings_survive() {
        let s = Sdp::parse("v=0\no=a 1 2 IN IP4 10.0.0.1\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\nm=audio 4000 RTP/AVP 8\na=sendonly\n").unwrap();
        assert_eq!(s.stream().remote, None);
        assert_eq!(s.stream().law, G711Law::Alaw);
        assert_eq!(s.stream().direction.as_deref(), Some("sendonly"));
        let out = s.rewrite("[::1]:30000".parse().unwrap(), false);
        assert_eq!(out, "v=0\no=a 1 2 IN IP4 10.0.0.1\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\nm=audio 30000 RTP/AVP 8\na=sendonly\n");
    }

    #[test]
    fn refuses_what_masking_cannot_guarantee() {
        let srtp = OFFER.replace("RTP/AVP 0 8", "RTP/SAVP 0 8");
        assert_eq!(
            Sdp::parse(&srtp).unwrap_err(),
            SdpError::Encrypted("RTP/SAVP".into())
        );
        let crypto = OFFER.replace("a=ptime:20", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x");
        assert_eq!(
            Sdp::parse(&crypto).unwrap_err(),
            SdpError::Encrypted("a=crypto".into())
        );
        let dtls = OFFER.replace("t=0 0", "t=0 0\r\na=fingerprint:sha-256 AB:CD");
        assert!(matches!(Sdp::parse(&dtls), Err(SdpError::Encrypted(_))));
        let opus = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 5000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n";
        assert_eq!(Sdp::parse(opus).unwrap_err(), SdpError::NoInspectableCodec);
        assert!(matches!(Sdp::parse("hello"), Err(SdpError::Malformed(_))));
        assert!(matches!(
            Sdp::parse("v=0\r\nm=audio\r\n"),
            Err(SdpError::Malformed(_))
        ));
        assert!(matches!(
            Sdp::parse("v=0\r\nnonsense\r\n"),
            Err(SdpError::Malformed(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "(v=0\r\n)?[a-z]=[ -~]{0,40}(\r\n[a-z]=[ -~]{0,40}){0,12}") {
            if let Ok(sdp) = Sdp::parse(&s) {
                // Whatever parses can be rewritten, and the rewrite parses again with the relay
                // as the remote.
                let out = sdp.rewrite("127.0.0.1:30000".parse().unwrap(), true);
                let back = Sdp::parse(&out).unwrap();
                proptest::prop_assert_eq!(back.stream().law, sdp.stream().law);
            }
        }
    }
}
