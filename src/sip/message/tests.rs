use super::*;
use proptest::prelude::*;

const INVITE: &str =
    "INVITE sip:+442079460000@127.0.0.1:5060;tonegate-link-id=12345674 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc\r\n\
v: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKdef\r\n\
From: \"ivr\" <sip:ivr@10.0.0.1>;tag=f1\r\n\
To: <sip:+442079460000@127.0.0.1>\r\n\
Call-ID: c1@10.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:ivr@10.0.0.1:5060>\r\n\
Record-Route: <sip:10.0.0.2;lr>\r\n\
Supported: timer, replaces\r\n\
Session-Expires: 300;refresher=uac\r\n\
X-Tonegate-Link-Id: 98765432\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 5\r\n\r\nv=0\r\n";

fn request(text: &str) -> Box<Request> {
    match parse(text.as_bytes()).unwrap() {
        Message::Request(r) => r,
        m => panic!("not a request: {m:?}"),
    }
}

#[test]
fn an_invite_is_read_field_by_field() {
    let r = request(INVITE);
    assert_eq!(r.method, "INVITE");
    assert_eq!(r.user.as_deref(), Some("+442079460000"));
    assert_eq!(r.uri_link_id.as_deref(), Some("12345674"));
    assert_eq!(r.header_link_id.as_deref(), Some("98765432"));
    assert_eq!(r.link_id(), Some("98765432"), "the header wins");
    assert_eq!(r.branch, "z9hG4bKabc");
    assert_eq!(r.from_tag.as_deref(), Some("f1"));
    assert_eq!(r.to_tag, None);
    assert_eq!(r.call_id, "c1@10.0.0.1");
    assert_eq!(r.cseq, 1);
    assert_eq!(r.contact.as_deref(), Some("sip:ivr@10.0.0.1:5060"));
    assert_eq!(r.record_route, ["<sip:10.0.0.2;lr>"]);
    assert_eq!(r.session_expires, Some((300, Refresher::Uac)));
    assert!(r.supports_timer());
    assert_eq!(r.content_type.as_deref(), Some("application/sdp"));
    assert_eq!(&r.body[..], b"v=0\r\n");
}

#[test]
fn a_response_copies_via_from_to_call_id_and_cseq_and_adds_the_tag() {
    let r = request(INVITE);
    let b = String::from_utf8(r.response(180, "Ringing", Some("t9"), &[], None)).unwrap();
    assert!(b.starts_with("SIP/2.0 180 Ringing\r\n"), "{b}");
    // Both Vias, in order, the compact one written out.
    let vias: Vec<&str> = b.lines().filter(|l| l.starts_with("Via: ")).collect();
    assert_eq!(
        vias,
        [
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc",
            "Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKdef"
        ]
    );
    assert!(
        b.contains("\r\nTo: <sip:+442079460000@127.0.0.1>;tag=t9\r\n"),
        "{b}"
    );
    assert!(
        b.contains("\r\nCall-ID: c1@10.0.0.1\r\nCSeq: 1 INVITE\r\n"),
        "{b}"
    );
    assert!(b.ends_with("Content-Length: 0\r\n\r\n"));
    // 100 Trying carries no tag.
    let t = String::from_utf8(r.response(100, "Trying", Some("t9"), &[], None)).unwrap();
    assert!(!t.contains("tag=t9"), "{t}");
    // And what we write parses back.
    match parse(&r.response(200, "OK", Some("t9"), &[], Some("v=0\r\n"))).unwrap() {
        Message::Response(resp) => {
            assert_eq!(
                (resp.code, resp.cseq, resp.cseq_method.as_str()),
                (200, 1, "INVITE")
            )
        }
        m => panic!("{m:?}"),
    }
}

#[test]
fn malformed_messages_say_why_and_are_answerable_when_the_headers_allow() {
    // No CSeq: nothing to answer with.
    let no_cseq = INVITE.replace("CSeq: 1 INVITE\r\n", "");
    match parse(no_cseq.as_bytes()) {
        Err(ParseError::Malformed { echo: None, .. }) => {}
        other => panic!("{other:?}"),
    }
    // A bad request line with the headers there: a 400 can be written.
    let bad_line = INVITE.replacen("INVITE sip:", "INVITE nonsense:", 1);
    match parse(bad_line.as_bytes()) {
        Err(ParseError::Malformed {
            reason,
            echo: Some(e),
        }) => {
            let b = String::from_utf8(e.response(400, reason).unwrap()).unwrap();
            assert!(b.starts_with("SIP/2.0 400 bad request line\r\n"), "{b}");
            assert!(b.contains("Call-ID: c1@10.0.0.1"));
        }
        other => panic!("{other:?}"),
    }
    // A body shorter than its Content-Length.
    let short = INVITE.replace("Content-Length: 5", "Content-Length: 400");
    assert!(matches!(
        parse(short.as_bytes()),
        Err(ParseError::Malformed {
            reason: "body shorter than Content-Length",
            ..
        })
    ));
    // A CSeq naming another method.
    let mismatch = INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE");
    assert!(matches!(
        parse(mismatch.as_bytes()),
        Err(ParseError::Malformed {
            reason: "CSeq method differs",
            ..
        })
    ));
    // Never answered: an ACK.
    let ack = "ACK sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: x\r\nCSeq: 1 ACK\r\nCSeq: junk\r\n\r\n";
    if let Err(ParseError::Malformed { echo: Some(e), .. }) = parse(ack.as_bytes()) {
        assert_eq!(e.response(400, "x"), None);
    }
}

#[test]
fn oversize_messages_and_header_floods_are_too_large() {
    let big = INVITE.replace("v=0\r\n", &"a".repeat(MAX_MESSAGE)).replace(
        "Content-Length: 5",
        &format!("Content-Length: {}", MAX_MESSAGE),
    );
    match parse(big.as_bytes()) {
        Err(ParseError::TooLarge(Some(e))) => {
            let b = String::from_utf8(e.response(513, "Message Too Large").unwrap()).unwrap();
            assert!(b.starts_with("SIP/2.0 513 "));
        }
        other => panic!("{other:?}"),
    }
    let many = INVITE.replace(
        "Supported:",
        &format!("{}Supported:", "X-Pad: 1\r\n".repeat(MAX_HEADERS)),
    );
    assert!(matches!(
        parse(many.as_bytes()),
        Err(ParseError::TooLarge(_))
    ));
}

#[test]
fn streams_are_framed_by_content_length() {
    let two = format!("{INVITE}{INVITE}");
    let n = framed_len(two.as_bytes()).unwrap().unwrap();
    assert_eq!(n, INVITE.len());
    assert_eq!(
        framed_len(&two.as_bytes()[..INVITE.len() - 2]).unwrap(),
        None
    );
    assert_eq!(framed_len(b"\r\n\r\nINVITE").unwrap(), Some(4));
    let no_len = INVITE.replace("Content-Length: 5\r\n", "");
    assert!(framed_len(no_len.as_bytes()).is_err());
    let huge = INVITE.replace("Content-Length: 5", "Content-Length: 99999999");
    assert!(matches!(
        framed_len(huge.as_bytes()),
        Err(ParseError::TooLarge(None))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes: no panic, and whatever is answered is a well-formed SIP response.
    #[test]
    fn arbitrary_bytes_never_panic_and_any_answer_is_a_response(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        if let Err(ParseError::Malformed { echo: Some(e), reason }) = parse(&bytes) {
            if let Some(b) = e.response(400, reason) {
                prop_assert!(b.starts_with(b"SIP/2.0 400 "));
                prop_assert!(b.ends_with(b"Content-Length: 0\r\n\r\n"));
            }
        }
        let _ = framed_len(&bytes);
    }

    /// An INVITE cut or corrupted anywhere: either read as the same call or refused, never
    /// misread as another call.
    #[test]
    fn a_mangled_invite_is_the_same_call_or_refused(
        cut in 0..INVITE.len(), at in 0..INVITE.len(), byte in any::<u8>()
    ) {
        let mut b = INVITE.as_bytes().to_vec();
        b[at] = byte;
        b.truncate(cut.max(at + 1));
        if let Ok(Message::Request(r)) = parse(&b) {
            // The Call-ID line may be the one hit; then it is still one read from the message.
            prop_assert!(INVITE.contains(&r.call_id) || String::from_utf8_lossy(&b).contains(&r.call_id));
        }
    }

    /// Framing a stream of messages split at any point gives back exactly the messages.
    #[test]
    fn framing_recovers_messages_from_any_split(split in 0..(2 * INVITE.len())) {
        let stream = format!("{INVITE}{INVITE}");
        let (a, b) = stream.as_bytes().split_at(split);
        let mut buf = a.to_vec();
        let mut got = Vec::new();
        let mut fed = false;
        loop {
            match framed_len(&buf).unwrap() {
                Some(n) => got.push(buf.drain(..n).collect::<Vec<u8>>()),
                None if !fed => { buf.extend_from_slice(b); fed = true; }
                None => break,
            }
        }
        prop_assert_eq!(got.len(), 2);
        for m in got {
            prop_assert_eq!(m, INVITE.as_bytes().to_vec());
        }
    }
}
