//! The SDP side of the fallback number: the caller's offer read (and refused where tonegate
//! could not inspect its media) with the ng path's parser, and tonegate's answer written.

use std::net::{IpAddr, SocketAddr};

use tonegate_dsp::G711Law;

use super::message::Request;
use crate::ng::sdp::{AudioStream, Sdp, SdpError};

/// The audio the INVITE (or re-INVITE) offers, or why tonegate refuses it.
pub(crate) fn offer_of(r: &Request) -> Result<AudioStream, String> {
    if r.body.is_empty() {
        return Err("an INVITE without an SDP offer is not supported".into());
    }
    if r.content_type.as_deref() != Some("application/sdp") {
        return Err("the body is not application/sdp".into());
    }
    let text = std::str::from_utf8(&r.body).map_err(|_| "the SDP is not UTF-8".to_string())?;
    Sdp::parse(text)
        .map(|s| s.stream().clone())
        .map_err(|e: SdpError| e.to_string())
}

/// Text safe inside a quoted Warning value.
pub(crate) fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

/// The SDP answer: the offered G.711 codec and telephone-event, at the relay's caller leg.
pub fn answer_sdp(offer: &AudioStream, local: SocketAddr, session: u64, version: u64) -> String {
    let ip = local.ip();
    let fam = if ip.is_ipv6() { "IP6" } else { "IP4" };
    let name = match offer.law {
        G711Law::Ulaw => "PCMU",
        G711Law::Alaw => "PCMA",
    };
    let mut pts = offer.pt.to_string();
    let mut attrs = format!("a=rtpmap:{} {name}/8000\r\n", offer.pt);
    if let Some(ev) = offer.event_pt {
        pts.push_str(&format!(" {ev}"));
        attrs.push_str(&format!(
            "a=rtpmap:{ev} telephone-event/8000\r\na=fmtp:{ev} 0-15\r\n"
        ));
    }
    // A held caller (sendonly, inactive) is answered in kind.
    let direction = match offer.direction.as_deref() {
        Some("sendonly") => "recvonly",
        Some("recvonly") => "sendonly",
        Some("inactive") => "inactive",
        _ => "sendrecv",
    };
    format!(
        "v=0\r\no=tonegate {} {version} IN {fam} {ip}\r\ns=tonegate\r\nc=IN {fam} {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP {pts}\r\n{attrs}a=ptime:20\r\na={direction}\r\n",
        session >> 1,
        local.port()
    )
}

/// The relay address an answer of ours names (its `c=` and `m=` lines).
pub(crate) fn answer_address(sdp: &str) -> SocketAddr {
    let mut ip: IpAddr = IpAddr::from([127, 0, 0, 1]);
    let mut port = 0;
    for l in sdp.lines() {
        if let Some(c) = l.strip_prefix("c=IN ") {
            if let Some(a) = c.get(4..).and_then(|a| a.trim().parse().ok()) {
                ip = a;
            }
        }
        if let Some(m) = l.strip_prefix("m=audio ") {
            port = m
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
        }
    }
    SocketAddr::new(ip, port)
}
