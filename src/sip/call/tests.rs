use super::*;

const CALLER: &str = "10.0.0.9:5060";

fn peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: CALLER.parse().unwrap(),
    }
}

fn cfg() -> EndpointConfig {
    EndpointConfig {
        numbers: [("442079460000".to_string(), "acct".to_string())].into(),
        ring: Duration::ZERO,
        session_expires_s: 1800,
        min_se_s: 90,
        invites_per_second: 5,
        after_payment: AfterPayment::Bye,
        local: "127.0.0.1:5060".parse().unwrap(),
        tls_local: None,
    }
}

fn sdp(proto: &str) -> String {
    format!("v=0\r\no=c 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio 4000 {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")
}

/// A request from the caller; `to_tag` makes it in-dialog.
fn req(
    method: &str,
    user: &str,
    branch: &str,
    cseq: u32,
    to_tag: Option<&str>,
    extra: &str,
    body: &str,
) -> Vec<u8> {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let ctype = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".into()
    };
    format!(
        "{method} sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch={branch}\r\nFrom: <sip:ivr@10.0.0.9>;tag=ct\r\nTo: <sip:{user}@127.0.0.1>{to_tag}\r\nCall-ID: call-1\r\nCSeq: {cseq} {method}\r\nContact: <sip:ivr@{CALLER}>\r\nRecord-Route: <sip:10.0.0.8;lr>\r\n{extra}{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn invite(extra: &str) -> Vec<u8> {
    req(
        "INVITE",
        "+442079460000",
        "z9hG4bKinv",
        1,
        None,
        extra,
        &sdp("RTP/AVP"),
    )
}

/// Everything the endpoint wants done now: (texts sent, other outputs).
fn drain(ep: &mut Endpoint) -> (Vec<String>, Vec<Output>) {
    let (mut sent, mut other) = (Vec::new(), Vec::new());
    while let Some(o) = ep.poll_output() {
        match o {
            Output::Send { bytes, .. } => sent.push(String::from_utf8(bytes).unwrap()),
            o => other.push(o),
        }
    }
    (sent, other)
}

fn status(m: &str) -> u16 {
    m.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn statuses(sent: &[String]) -> Vec<u16> {
    sent.iter()
        .filter(|m| m.starts_with("SIP/2.0"))
        .map(|m| status(m))
        .collect()
}

fn to_tag(m: &str) -> String {
    let to = m.lines().find(|l| l.starts_with("To:")).unwrap();
    to.split(";tag=").nth(1).unwrap().trim().to_string()
}

/// An answered, ACKed call; its local tag.
fn up(ep: &mut Endpoint, t0: Instant, extra: &str) -> String {
    up_with(ep, t0, extra).0
}

/// An answered, ACKed call: its local tag and the 200 that answered it.
fn up_with(ep: &mut Endpoint, t0: Instant, extra: &str) -> (String, String) {
    ep.on_message(t0, peer(), &invite(extra));
    let (sent, other) = drain(ep);
    assert_eq!(statuses(&sent), [100]);
    assert!(
        matches!(&other[..], [Output::CreateCall(n)] if n.account == "acct" && n.event_pt == Some(101))
    );
    ep.relay_ready(t0, "call-1", "r1".into(), "0.0.0.0:30000".parse().unwrap());
    let (sent, _) = drain(ep);
    assert_eq!(statuses(&sent), [180, 200]);
    let tag = to_tag(&sent[1]);
    ep.on_message(
        t0,
        peer(),
        &req("ACK", "+442079460000", "z9hG4bKack", 1, Some(&tag), "", ""),
    );
    (tag, sent[1].clone())
}

#[test]
fn an_invite_to_the_number_rings_answers_with_g711_and_confirms_on_ack() {
    let mut ep = Endpoint::new(cfg(), 7);
    let t0 = Instant::now();
    ep.on_message(t0, peer(), &invite(""));
    let (sent, other) = drain(&mut ep);
    assert_eq!(statuses(&sent), [100]);
    let Output::CreateCall(n) = &other[0] else {
        panic!("{other:?}")
    };
    assert_eq!(n.call_id, "call-1");
    assert_eq!(n.remote, Some("10.0.0.9:4000".parse().unwrap()));
    ep.relay_ready(t0, "call-1", "r1".into(), "0.0.0.0:30000".parse().unwrap());
    let (sent, _) = drain(&mut ep);
    assert_eq!(statuses(&sent), [180, 200]);
    let ok = &sent[1];
    // The relay's caller leg, at the SIP address where the relay binds every interface.
    assert!(ok.contains("c=IN IP4 127.0.0.1\r\n"), "{ok}");
    assert!(ok.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{ok}");
    assert!(ok.contains("a=rtpmap:101 telephone-event/8000"), "{ok}");
    assert!(
        ok.contains("Contact: <sip:tonegate@127.0.0.1:5060>"),
        "{ok}"
    );
    // The proxy's route set goes back, so the ACK comes through it.
    assert!(ok.contains("Record-Route: <sip:10.0.0.8;lr>\r\n"), "{ok}");
    assert_eq!(to_tag(&sent[0]), to_tag(ok));
    // Unacknowledged, the 200 goes again at T1, then 2×T1...
    ep.handle_timeout(t0 + T1);
    assert_eq!(statuses(&drain(&mut ep).0), [200]);
    ep.handle_timeout(t0 + T1 * 3);
    assert_eq!(statuses(&drain(&mut ep).0), [200]);
    // ...until the ACK.
    let tag = to_tag(ok);
    ep.on_message(
        t0,
        peer(),
        &req("ACK", "+442079460000", "z9hG4bKa", 1, Some(&tag), "", ""),
    );
    ep.handle_timeout(t0 + Duration::from_secs(10));
    assert!(drain(&mut ep).0.is_empty());
    assert_eq!(ep.counts().answered, 1);
    // A retransmitted INVITE gets the 200 again and sets nothing new up.
    ep.on_message(t0, peer(), &invite(""));
    let (sent, other) = drain(&mut ep);
    assert_eq!(statuses(&sent), [200]);
    assert!(other.is_empty());
}

#[test]
fn refusals_name_their_reason() {
    let mut ep = Endpoint::new(cfg(), 7);
    let t0 = Instant::now();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            req("INVITE", "+449999", "z9hG4bK1", 1, None, "", &sdp("RTP/AVP")),
            404,
            "",
        ),
        (
            req(
                "INVITE",
                "442079460000",
                "z9hG4bK2",
                1,
                None,
                "",
                &sdp("RTP/SAVP"),
            ),
            488,
            "Warning: 399 tonegate \"encrypted media",
        ),
        (
            req("INVITE", "442079460000", "z9hG4bK3", 1, None, "", ""),
            488,
            "without an SDP offer",
        ),
        (
            req(
                "INVITE",
                "442079460000",
                "z9hG4bK4",
                1,
                None,
                "Supported: timer\r\nSession-Expires: 60\r\n",
                &sdp("RTP/AVP"),
            ),
            422,
            "Min-SE: 90",
        ),
        (
            req(
                "INVITE",
                "442079460000",
                "z9hG4bK5",
                1,
                None,
                "Require: 100rel\r\n",
                &sdp("RTP/AVP"),
            ),
            420,
            "Unsupported: 100rel",
        ),
        (
            req("REGISTER", "x", "z9hG4bK6", 1, None, "", ""),
            405,
            "Allow: INVITE",
        ),
        (req("FROB", "x", "z9hG4bK7", 1, None, "", ""), 501, ""),
        (
            req("BYE", "x", "z9hG4bK8", 2, Some("nope"), "", ""),
            481,
            "",
        ),
        (
            req("OPTIONS", "x", "z9hG4bK9", 1, None, "", ""),
            200,
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, NOTIFY",
        ),
        (
            b"INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:1@h>\r\nCall-ID: m\r\nCSeq: one INVITE\r\n\r\n".to_vec(),
            400,
            "",
        ),
    ];
    for (msg, code, has) in cases {
        // Every call comes from its own peer: the per-peer rate is not what is tested.
        let p = Peer {
            transport: Transport::Udp,
            addr: SocketAddr::new([10, 0, 1, code as u8].into(), 5060),
        };
        ep.on_message(t0, p, &msg);
        let (sent, other) = drain(&mut ep);
        assert_eq!(statuses(&sent), [code], "{}", String::from_utf8_lossy(&msg));
        assert!(sent[0].contains(has), "{code}: {}", sent[0]);
        assert!(other.is_empty(), "{code}: nothing is set up");
    }
    let c = ep.counts();
    assert_eq!(
        (c.not_found, c.not_acceptable, c.bad_method, c.malformed),
        (1, 2, 2, 1)
    );
}

#[test]
fn an_invite_flood_from_one_peer_gets_503_with_retry_after() {
    let mut ep = Endpoint::new(cfg(), 7);
    let t0 = Instant::now();
    for i in 0..8 {
        let mut m = invite("");
        let text = String::from_utf8(m.clone())
            .unwrap()
            .replace("call-1", &format!("call-f{i}"));
        m = text.into_bytes();
        ep.on_message(t0, peer(), &m);
    }
    let (sent, _) = drain(&mut ep);
    let busy: Vec<&String> = sent.iter().filter(|m| status(m) == 503).collect();
    assert_eq!(busy.len(), 3, "5 a second pass, 3 are refused");
    assert!(busy[0].contains("Retry-After: 1"));
    // The next second, the peer may call again.
    ep.handle_timeout(t0 + Duration::from_secs(1));
    let m = String::from_utf8(invite(""))
        .unwrap()
        .replace("call-1", "call-next");
    ep.on_message(t0 + Duration::from_secs(1), peer(), m.as_bytes());
    assert_eq!(statuses(&drain(&mut ep).0), [100]);
    // A shell that is behind: new calls get 503 too.
    ep.set_overloaded(true);
    let m = String::from_utf8(invite(""))
        .unwrap()
        .replace("call-1", "call-shed");
    let p2 = Peer {
        transport: Transport::Udp,
        addr: "10.0.0.99:5060".parse().unwrap(),
    };
    ep.on_message(t0 + Duration::from_secs(1), p2, m.as_bytes());
    assert_eq!(statuses(&drain(&mut ep).0), [503]);
    ep.set_overloaded(false);
    // A full relay: 503 too.
    ep.relay_refused(t0, "call-next", Refusal::Busy);
    let (sent, _) = drain(&mut ep);
    assert_eq!(statuses(&sent), [503]);
    assert!(sent[0].contains("Retry-After: 5"));
}

#[test]
fn cancel_while_ringing_ends_the_call_with_487() {
    let mut ep = Endpoint::new(
        EndpointConfig {
            ring: Duration::from_secs(5),
            ..cfg()
        },
        7,
    );
    let t0 = Instant::now();
    ep.on_message(t0, peer(), &invite(""));
    ep.relay_ready(
        t0,
        "call-1",
        "r1".into(),
        "127.0.0.1:30000".parse().unwrap(),
    );
    let (sent, _) = drain(&mut ep);
    assert_eq!(statuses(&sent), [100, 180]);
    ep.on_message(
        t0,
        peer(),
        &req("CANCEL", "+442079460000", "z9hG4bKinv", 1, None, "", ""),
    );
    let (sent, other) = drain(&mut ep);
    assert_eq!(statuses(&sent), [200, 487]);
    assert!(sent[0].contains("CSeq: 1 CANCEL"));
    assert_eq!(other, [Output::EndCall { relay: "r1".into() }]);
    // The ring deadline passes: no 200 now.
    ep.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(statuses(&drain(&mut ep).0), [487]);
    let tag = to_tag(&sent[1]);
    ep.on_message(
        t0,
        peer(),
        &req("ACK", "+442079460000", "z9hG4bKinv", 1, Some(&tag), "", ""),
    );
    ep.handle_timeout(t0 + Duration::from_secs(9));
    assert!(drain(&mut ep).0.is_empty());
    assert_eq!(ep.live_calls(), 0);
    // A CANCEL for nothing.
    ep.on_message(
        t0,
        peer(),
        &req("CANCEL", "+442079460000", "z9hG4bKzz", 1, None, "", ""),
    );
    assert_eq!(statuses(&drain(&mut ep).0), [481]);
}

#[test]
fn bye_from_the_caller_ends_the_relay_call_and_repeats_are_answered_alike() {
    let mut ep = Endpoint::new(cfg(), 7);
    let t0 = Instant::now();
    let tag = up(&mut ep, t0, "");
    drain(&mut ep);
    let bye = req("BYE", "+442079460000", "z9hG4bKbye", 2, Some(&tag), "", "");
    ep.on_message(t0, peer(), &bye);
    let (sent, other) = drain(&mut ep);
    assert_eq!(statuses(&sent), [200]);
    assert_eq!(other, [Output::EndCall { relay: "r1".into() }]);
    ep.on_message(t0, peer(), &bye);
    let (sent, other) = drain(&mut ep);
    assert_eq!(statuses(&sent), [200]);
    assert!(other.is_empty());
    assert_eq!(ep.live_calls(), 0);
    ep.handle_timeout(t0 + T64);
    assert_eq!(ep.poll_timeout(), None, "forgotten after 64×T1");
}

#[test]
fn tonegate_hangs_up_with_a_bye_in_the_dialog() {
    let mut ep = Endpoint::new(cfg(), 7);
    let t0 = Instant::now();
    let tag = up(&mut ep, t0, "");
    drain(&mut ep);
    ep.hang_up(t0, "r1");
    let (sent, other) = drain(&mut ep);
    assert_eq!(other, [Output::EndCall { relay: "r1".into() }]);
    let bye = &sent[0];
    assert!(
        bye.starts_with("BYE sip:ivr@10.0.0.9:5060 SIP/2.0\r\n"),
        "{bye}"
    );
    assert!(
        bye.contains(&format!(
            "From: <sip:+442079460000@127.0.0.1>;tag={tag}\r\n"
        )),
        "{bye}"
    );
    assert!(bye.contains("To: <sip:ivr@10.0.0.9>;tag=ct\r\n"), "{bye}");
    assert!(bye.contains("Route: <sip:10.0.0.8;lr>\r\n"), "{bye}");
    assert!(bye.contains("CSeq: 2 BYE\r\n"), "{bye}");
    // Retransmitted until answered.
    ep.handle_timeout(t0 + T1);
    assert!(drain(&mut ep).0[0].starts_with("BYE "));
    let ok = format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:+442079460000@127.0.0.1>;tag={tag}\r\nTo: <sip:ivr@10.0.0.9>;tag=ct\r\nCall-ID: call-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
    ep.on_message(t0, peer(), ok.as_bytes());
    ep.handle_timeout(t0 + Duration::from_secs(3));
    assert!(drain(&mut ep).0.is_empty());
    assert_eq!(ep.live_calls(), 0);
    assert_eq!(ep.counts().hung_up, 1);
}

#[test]
fn a_refused_refer_falls_back_to_bye() {
    let mut ep = Endpoint::new(
        EndpointConfig {
            after_payment: AfterPayment::Refer("sip:ivr@10.0.0.1".into()),
            ..cfg()
        },
        7,
    );
    let t0 = Instant::now();
    let tag = up(&mut ep, t0, "");
    drain(&mut ep);
    ep.hang_up(t0, "r1");
    let (sent, other) = drain(&mut ep);
    assert!(other.is_empty(), "the media stays while the transfer runs");
    assert!(sent[0].starts_with("REFER "), "{}", sent[0]);
    assert!(sent[0].contains("Refer-To: <sip:ivr@10.0.0.1>\r\n"));
    let no = format!("SIP/2.0 603 Decline\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:+442079460000@127.0.0.1>;tag={tag}\r\nTo: <sip:ivr@10.0.0.9>;tag=ct\r\nCall-ID: call-1\r\nCSeq: 2 REFER\r\nContent-Length: 0\r\n\r\n");
    ep.on_message(t0, peer(), no.as_bytes());
    let (sent, other) = drain(&mut ep);
    assert!(sent[0].starts_with("BYE "), "{}", sent[0]);
    assert!(sent[0].contains("CSeq: 3 BYE"));
    assert_eq!(other, [Output::EndCall { relay: "r1".into() }]);
}

#[test]
fn a_re_invite_keeps_the_ports_and_moves_the_media() {
    let mut ep = Endpoint::new(cfg(), 7);
    let t0 = Instant::now();
    let tag = up(&mut ep, t0, "");
    drain(&mut ep);
    let moved = sdp("RTP/AVP").replace("4000", "4100");
    let re = req(
        "INVITE",
        "+442079460000",
        "z9hG4bKre",
        2,
        Some(&tag),
        "",
        &moved,
    );
    ep.on_message(t0, peer(), &re);
    let (sent, other) = drain(&mut ep);
    assert_eq!(statuses(&sent), [200]);
    assert!(
        sent[0].contains("m=audio 30000 RTP/AVP 0 101"),
        "{}",
        sent[0]
    );
    assert!(sent[0].contains("o=tonegate 3 2 IN IP4"), "{}", sent[0]);
    assert_eq!(
        other,
        [Output::MediaMoved {
            relay: "r1".into(),
            host: Some("10.0.0.9".parse().unwrap()),
            remote: Some("10.0.0.9:4100".parse().unwrap()),
        }]
    );
    // An offer tonegate cannot inspect is refused; the call goes on.
    let srtp = req(
        "INVITE",
        "+442079460000",
        "z9hG4bKre2",
        3,
        Some(&tag),
        "",
        &sdp("RTP/SAVP"),
    );
    ep.on_message(t0, peer(), &srtp);
    let (sent, other) = drain(&mut ep);
    assert_eq!(statuses(&sent), [488]);
    assert!(other.is_empty());
    assert_eq!(ep.live_calls(), 1);
}

#[test]
fn session_timers_end_a_call_nobody_refreshes() {
    let mut ep = Endpoint::new(cfg(), 7);
    let t0 = Instant::now();
    let (tag, ok) = up_with(&mut ep, t0, "Supported: timer\r\nSession-Expires: 120\r\n");
    assert!(
        ok.contains("Session-Expires: 120;refresher=uac\r\nRequire: timer\r\n"),
        "{ok}"
    );
    // Refreshed by UPDATE at 60 s: the interval starts again.
    let t1 = t0 + Duration::from_secs(60);
    ep.on_message(
        t1,
        peer(),
        &req(
            "UPDATE",
            "+442079460000",
            "z9hG4bKu",
            2,
            Some(&tag),
            "Session-Expires: 120;refresher=uac\r\n",
            "",
        ),
    );
    assert_eq!(statuses(&drain(&mut ep).0), [200]);
    ep.handle_timeout(t0 + Duration::from_secs(100));
    assert!(drain(&mut ep).0.is_empty(), "refreshed: still up");
    // Then no refresh: BYE 32 s before the interval ends.
    assert_eq!(ep.poll_timeout(), Some(t1 + Duration::from_secs(120 - 32)));
    ep.handle_timeout(t1 + Duration::from_secs(88));
    let (sent, other) = drain(&mut ep);
    assert!(sent[0].starts_with("BYE "));
    assert_eq!(other, [Output::EndCall { relay: "r1".into() }]);
}

#[test]
fn no_ack_for_the_200_ends_the_call() {
    let mut ep = Endpoint::new(cfg(), 7);
    let t0 = Instant::now();
    ep.on_message(t0, peer(), &invite(""));
    ep.relay_ready(
        t0,
        "call-1",
        "r1".into(),
        "127.0.0.1:30000".parse().unwrap(),
    );
    drain(&mut ep);
    let mut t = t0;
    let mut sends = 0;
    while let Some(next) = ep.poll_timeout() {
        if next > t0 + T64 {
            break;
        }
        t = next;
        ep.handle_timeout(t);
        sends += drain(&mut ep).0.len();
    }
    // T1, 2, 4 then every T2 (4 s) to 32 s, then the BYE.
    assert!((8..=12).contains(&sends), "{sends} retransmissions");
    assert!(t >= t0 + T64);
    assert_eq!(ep.counts().answered, 1);
}

#[test]
fn a_hang_up_before_the_ack_waits_for_it() {
    let mut ep = Endpoint::new(cfg(), 7);
    let t0 = Instant::now();
    ep.on_message(t0, peer(), &invite(""));
    ep.relay_ready(
        t0,
        "call-1",
        "r1".into(),
        "127.0.0.1:30000".parse().unwrap(),
    );
    let (sent, _) = drain(&mut ep);
    ep.hang_up(t0, "r1");
    assert!(drain(&mut ep).1.is_empty());
    let tag = to_tag(&sent[2]);
    ep.on_message(
        t0,
        peer(),
        &req("ACK", "+442079460000", "z9hG4bKa", 1, Some(&tag), "", ""),
    );
    let (sent, other) = drain(&mut ep);
    assert!(sent[0].starts_with("BYE "));
    assert_eq!(other, [Output::EndCall { relay: "r1".into() }]);
}

#[test]
fn refused_calls_over_tcp_are_forgotten_without_an_ack() {
    let mut ep = Endpoint::new(cfg(), 7);
    let t0 = Instant::now();
    let tcp = Peer {
        transport: Transport::Tcp(1),
        addr: CALLER.parse().unwrap(),
    };
    ep.on_message(t0, tcp, &invite(""));
    ep.relay_refused(t0, "call-1", Refusal::Failed);
    let (sent, _) = drain(&mut ep);
    assert_eq!(statuses(&sent), [100, 500]);
    // No retransmission over a stream; the call is forgotten after 64×T1 and another 64×T1.
    ep.handle_timeout(t0 + T64);
    assert!(drain(&mut ep).0.is_empty());
    ep.handle_timeout(t0 + T64 * 2);
    assert_eq!(ep.poll_timeout(), None);
    assert_eq!(ep.live_calls(), 0);
}

/// The caller's answer to a request tonegate sent: `code` with its Via, From, To, Call-ID
/// and CSeq copied, and `extra` header lines.
fn reply(request: &str, code: u16, extra: &str) -> Vec<u8> {
    let copied: String = request
        .lines()
        .filter(|l| {
            ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                .iter()
                .any(|h| l.starts_with(h))
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    format!("SIP/2.0 {code} Whatever\r\n{copied}{extra}Content-Length: 0\r\n\r\n").into_bytes()
}

/// Runs the clock from `from` to `to`, each timer when it is due: what was sent.
fn run_until(ep: &mut Endpoint, from: Instant, to: Instant) -> Vec<String> {
    let mut sent = Vec::new();
    let mut t = from;
    while let Some(next) = ep.poll_timeout() {
        if next > to {
            break;
        }
        assert!(next >= t, "a timer went back in time");
        t = next;
        ep.handle_timeout(t);
        sent.extend(drain(ep).0);
    }
    sent
}

#[test]
fn asked_to_refresh_tonegate_sends_update_at_half_the_interval_and_hangs_up_unanswered() {
    let mut ep = Endpoint::new(cfg(), 7);
    let t0 = Instant::now();
    let asked = "Supported: timer\r\nSession-Expires: 90;refresher=uas\r\nAllow: INVITE, ACK, BYE, UPDATE\r\n";
    let (tag, ok) = up_with(&mut ep, t0, asked);
    assert!(
        ok.contains("Session-Expires: 90;refresher=uas\r\nRequire: timer\r\n"),
        "{ok}"
    );
    drain(&mut ep);
    // Nothing before half the interval.
    let half = t0 + Duration::from_secs(45);
    assert_eq!(ep.poll_timeout(), Some(half));
    ep.handle_timeout(half - Duration::from_millis(1));
    assert!(drain(&mut ep).0.is_empty());
    ep.handle_timeout(half);
    let (sent, other) = drain(&mut ep);
    assert!(other.is_empty(), "{other:?}");
    let update = &sent[0];
    assert!(
        update.starts_with("UPDATE sip:ivr@10.0.0.9:5060 SIP/2.0\r\n"),
        "{update}"
    );
    for line in [
        "Session-Expires: 90;refresher=uas\r\n",
        "CSeq: 2 UPDATE\r\n",
        "Route: <sip:10.0.0.8;lr>\r\n",
        "Content-Length: 0\r\n",
    ] {
        assert!(update.contains(line), "{line}: {update}");
    }
    assert!(update.contains(&format!(
        "From: <sip:+442079460000@127.0.0.1>;tag={tag}\r\n"
    )));
    assert_eq!(ep.counts().refreshes, 1);
    // Answered: the interval starts again from the answer.
    ep.on_message(
        half,
        peer(),
        &reply(update, 200, "Session-Expires: 90;refresher=uas\r\n"),
    );
    assert!(drain(&mut ep).0.is_empty());
    let again = half + Duration::from_secs(45);
    assert_eq!(ep.poll_timeout(), Some(again));
    assert!(run_until(&mut ep, half, again - Duration::from_millis(1)).is_empty());
    // The next refresh is never answered: resent over UDP, then the caller is taken for gone.
    let sent = run_until(&mut ep, half, again + T64);
    let updates = sent.iter().filter(|m| m.starts_with("UPDATE ")).count();
    assert!((7..=12).contains(&updates), "{updates} UPDATEs: {sent:?}");
    assert!(sent
        .iter()
        .all(|m| m.contains("CSeq: 3 UPDATE") || m.starts_with("BYE ")));
    assert!(sent.last().unwrap().starts_with("BYE "), "{sent:?}");
    assert_eq!(ep.counts().expired, 1);
    assert_eq!(ep.live_calls(), 1, "until the BYE's answer");
}

#[test]
fn a_caller_without_timers_or_update_is_refreshed_by_acked_re_invite() {
    let mut ep = Endpoint::new(cfg(), 7);
    let t0 = Instant::now();
    let tag = up(&mut ep, t0, "");
    drain(&mut ep);
    // RFC 4028 §9: tonegate refreshes a caller that does not support timers, and does not
    // Require what the caller does not know.
    let half = t0 + Duration::from_secs(900);
    assert_eq!(ep.poll_timeout(), Some(half));
    ep.handle_timeout(half);
    let (sent, _) = drain(&mut ep);
    let reinvite = &sent[0];
    assert!(
        reinvite.starts_with("INVITE sip:ivr@10.0.0.9:5060 SIP/2.0\r\n"),
        "{reinvite}"
    );
    assert!(reinvite.contains("CSeq: 2 INVITE\r\n"), "{reinvite}");
    assert!(reinvite.contains(&format!(";tag={tag}\r\n")), "{reinvite}");
    // The session as it is: same address and port, so nothing moves.
    assert!(
        reinvite.contains("m=audio 30000 RTP/AVP 0 101\r\n"),
        "{reinvite}"
    );
    assert!(
        reinvite.contains("Content-Type: application/sdp\r\n"),
        "{reinvite}"
    );
    // A provisional answer stops the resending; the 200 is ACKed, and so is its repeat.
    ep.on_message(half, peer(), &reply(reinvite, 100, ""));
    assert!(run_until(&mut ep, half, half + Duration::from_secs(10)).is_empty());
    let t = half + Duration::from_secs(10);
    ep.on_message(t, peer(), &reply(reinvite, 200, ""));
    let (sent, _) = drain(&mut ep);
    assert!(
        sent[0].starts_with("ACK sip:ivr@10.0.0.9:5060 SIP/2.0\r\n"),
        "{sent:?}"
    );
    assert!(sent[0].contains("CSeq: 2 ACK\r\n"), "{}", sent[0]);
    ep.on_message(t, peer(), &reply(reinvite, 200, ""));
    assert!(drain(&mut ep).0[0].starts_with("ACK "));
    // The next refresh is refused (the caller no longer knows the dialog): BYE at once.
    let next = t + Duration::from_secs(900);
    assert_eq!(ep.poll_timeout(), Some(next));
    ep.handle_timeout(next);
    let reinvite = drain(&mut ep).0.remove(0);
    ep.on_message(next, peer(), &reply(&reinvite, 481, ""));
    let (sent, other) = drain(&mut ep);
    assert!(sent[0].starts_with("BYE "), "{sent:?}");
    assert_eq!(other, [Output::EndCall { relay: "r1".into() }]);
    assert_eq!(ep.counts().expired, 1);
}

#[test]
fn a_caller_re_invite_while_tonegates_is_out_gets_491() {
    let mut ep = Endpoint::new(cfg(), 7);
    let t0 = Instant::now();
    let tag = up(&mut ep, t0, "");
    drain(&mut ep);
    let half = t0 + Duration::from_secs(900);
    ep.handle_timeout(half);
    drain(&mut ep);
    let glare = req(
        "INVITE",
        "+442079460000",
        "z9hG4bKre",
        2,
        Some(&tag),
        "",
        &sdp("RTP/AVP"),
    );
    ep.on_message(half, peer(), &glare);
    assert_eq!(statuses(&drain(&mut ep).0), [491]);
}

#[test]
fn shutting_down_byes_every_call_refuses_the_unanswered_and_new_ones() {
    let mut ep = Endpoint::new(cfg(), 7);
    let t0 = Instant::now();
    up(&mut ep, t0, "");
    drain(&mut ep);
    // A second call still setting up (its relay call not ready yet).
    let ringing = String::from_utf8(invite(""))
        .unwrap()
        .replace("call-1", "call-2")
        .replace("z9hG4bKinv", "z9hG4bKinv2");
    ep.on_message(t0, peer(), ringing.as_bytes());
    drain(&mut ep);
    ep.shut_down(t0);
    let (sent, other) = drain(&mut ep);
    let bye = sent.iter().find(|m| m.starts_with("BYE ")).expect("a BYE");
    assert!(bye.contains("Call-ID: call-1\r\n"), "{bye}");
    let refused = sent
        .iter()
        .find(|m| m.starts_with("SIP/2.0 "))
        .expect("an answer");
    assert!(refused.starts_with("SIP/2.0 503 ") && refused.contains("Call-ID: call-2\r\n"));
    assert!(refused.contains("Retry-After: "), "{refused}");
    assert_eq!(other, [Output::EndCall { relay: "r1".into() }]);
    assert_eq!(ep.hanging_up(), 1);
    // The BYE's 200: nothing left to wait for.
    ep.on_message(t0, peer(), &reply(bye, 200, ""));
    assert_eq!(ep.hanging_up(), 0);
    // And nothing new starts.
    let late = String::from_utf8(invite(""))
        .unwrap()
        .replace("call-1", "call-3")
        .replace("z9hG4bKinv", "z9hG4bKinv3");
    ep.on_message(t0, peer(), late.as_bytes());
    let (sent, other) = drain(&mut ep);
    assert_eq!(statuses(&sent), [503]);
    assert!(other.is_empty());
}

#[test]
fn a_call_over_tls_names_the_tls_address_and_stays_on_its_connection() {
    let mut c = cfg();
    c.tls_local = Some("127.0.0.1:5061".parse().unwrap());
    let mut ep = Endpoint::new(c, 7);
    let t0 = Instant::now();
    let tls = Peer {
        transport: Transport::Tls(3),
        addr: CALLER.parse().unwrap(),
    };
    ep.on_message(t0, tls, &invite(""));
    ep.relay_ready(t0, "call-1", "r1".into(), "0.0.0.0:30000".parse().unwrap());
    let mut sent = Vec::new();
    while let Some(o) = ep.poll_output() {
        if let Output::Send { to, bytes } = o {
            assert_eq!(to, tls, "answered on another transport");
            sent.push(String::from_utf8(bytes).unwrap());
        }
    }
    let ok = sent.iter().find(|m| m.starts_with("SIP/2.0 200")).unwrap();
    assert!(
        ok.contains("Contact: <sip:tonegate@127.0.0.1:5061;transport=tls>\r\n"),
        "{ok}"
    );
    let tag = to_tag(ok);
    ep.on_message(
        t0,
        tls,
        &req("ACK", "+442079460000", "z9hG4bKack", 1, Some(&tag), "", ""),
    );
    ep.hang_up(t0, "r1");
    let (to, bye) = std::iter::from_fn(|| ep.poll_output())
        .find_map(|o| match o {
            Output::Send { to, bytes } => Some((to, String::from_utf8(bytes).unwrap())),
            _ => None,
        })
        .expect("a BYE");
    assert_eq!(to, tls);
    assert!(bye.starts_with("BYE "), "{bye}");
    assert!(bye.contains("Via: SIP/2.0/TLS 127.0.0.1:5061;"), "{bye}");
}
