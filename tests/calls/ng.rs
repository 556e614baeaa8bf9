//! The ng control protocol over real UDP, as Kamailio's rtpengine module speaks it (bencode,
//! unsorted keys, numbers as strings) and as JSON; and `rtpengine-ng-client` (Debian
//! `rtpengine-utils`) run against tonegate unchanged.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::gateway::{get, post, Gateway};
use tonegate::ng::bencode::{decode, Value};

/// A free UDP port on loopback (bound, read back, released).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Ng {
    sock: UdpSocket,
    to: SocketAddr,
}

impl Ng {
    /// A client of the ng listener on `port`, once it answers a ping (it starts with the
    /// gateway, as Kamailio's pings at start-up find out).
    fn new(port: u16) -> Ng {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 64];
        let up = (0..50).any(|_| {
            sock.send_to(b"up d7:command4:pinge", to).unwrap();
            sock.recv_from(&mut buf).is_ok()
        });
        assert!(up, "the ng listener did not answer");
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Ng { sock, to }
    }

    /// A client sending from `ip` (another host, on loopback), not waiting for any answer.
    fn from(ip: &str, port: u16) -> Ng {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Ng {
            sock,
            to: format!("127.0.0.1:{port}").parse().unwrap(),
        }
    }

    /// Sends `cookie` + a bencoded dictionary, not reading any reply.
    fn fire(&self, cookie: &str, pairs: &[(&str, Value)]) {
        let mut d = cookie.as_bytes().to_vec();
        d.push(b' ');
        d.extend(Value::dict(pairs.iter().cloned()).encode());
        self.sock.send_to(&d, self.to).unwrap();
    }

    /// Whether anything came back. Called after an allowed peer's request was answered: the
    /// listener answers in arrival order, so whatever it sent to this socket has arrived.
    fn got_any_reply(&self) -> bool {
        self.sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = vec![0u8; 65536];
        self.sock.recv_from(&mut buf).is_ok()
    }

    /// Sends raw bytes, returns the raw reply.
    fn raw(&self, datagram: &[u8]) -> Vec<u8> {
        self.sock.send_to(datagram, self.to).unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, _) = self.sock.recv_from(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    /// Sends `cookie` + a bencoded dictionary; returns the reply dictionary.
    fn send(&self, cookie: &str, pairs: &[(&str, Value)]) -> Value {
        let mut d = cookie.as_bytes().to_vec();
        d.push(b' ');
        d.extend(Value::dict(pairs.iter().cloned()).encode());
        let r = self.raw(&d);
        let sp = r.iter().position(|&b| b == b' ').unwrap();
        assert_eq!(&r[..sp], cookie.as_bytes(), "the reply carries the cookie");
        decode(&r[sp + 1..]).unwrap()
    }
}

fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Dict(d) => d.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v),
        _ => None,
    }
}

fn s(v: &Value, key: &str) -> String {
    field(v, key)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

fn sdp(port: u16, codecs: &str) -> Value {
    Value::str(&format!(
        "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP {codecs}\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    ))
}

fn offer(call: &str, from: &str, port: u16) -> Vec<(&'static str, Value)> {
    vec![
        ("supports", Value::List(vec![Value::str("load limit")])),
        ("sdp", sdp(port, "0 101")),
        ("ICE", Value::str("remove")),
        ("flags", Value::List(vec![Value::str("trust-address")])),
        ("replace", Value::List(vec![Value::str("origin")])),
        ("call-id", Value::str(call)),
        (
            "received-from",
            Value::List(vec![Value::str("IP4"), Value::str("127.0.0.1")]),
        ),
        ("from-tag", Value::str(from)),
        ("command", Value::str("offer")),
    ]
}

fn gateway(extra: &str) -> (Gateway, u16) {
    let port = free_port();
    let gw = Gateway::start(&format!("[ng]\nlisten = \"127.0.0.1:{port}\"\n{extra}"));
    (gw, port)
}

fn m_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn offers_answers_and_retransmissions_keep_one_set_of_ports() {
    let (gw, port) = gateway("");
    let ng = Ng::new(port);
    assert_eq!(
        s(&ng.send("p1", &[("command", Value::str("ping"))]), "result"),
        "pong"
    );
    // A retransmitted offer (same cookie) gets the identical reply, and no new call.
    let first = ng.send("o1", &offer("call-1", "tag-a", 16000));
    assert_eq!(s(&first, "result"), "ok", "{first:?}");
    let again = ng.send("o1", &offer("call-1", "tag-a", 16000));
    assert_eq!(first, again);
    // The same offer under a new cookie (Kamailio re-sending the INVITE) keeps the ports.
    let re = ng.send("o2", &offer("call-1", "tag-a", 16000));
    assert_eq!(s(&re, "sdp"), s(&first, "sdp"));
    let offered = s(&first, "sdp");
    assert!(!offered.contains("16000") && offered.contains("c=IN IP4 127.0.0.1"));
    // 183 then 200 then a retransmitted 200: answers are idempotent.
    let answer = |cookie: &str| {
        ng.send(
            cookie,
            &[
                ("sdp", sdp(7000, "0 101")),
                ("call-id", Value::str("call-1")),
                ("from-tag", Value::str("tag-a")),
                ("to-tag", Value::str("tag-b")),
                ("command", Value::str("answer")),
            ],
        )
    };
    let a183 = answer("a1");
    let a200 = answer("a2");
    let a200b = answer("a3");
    assert_eq!(s(&a183, "sdp"), s(&a200, "sdp"));
    assert_eq!(s(&a200, "sdp"), s(&a200b, "sdp"));
    // One relay call, its legs where the SDPs say.
    let tok = gw.token("relay");
    let (_, list) = get(&gw, &tok, "/relay/v1/calls");
    let calls = list["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{list}");
    assert_eq!(calls[0]["call_guid"], "call-1");
    assert_eq!(
        calls[0]["agent"]["local"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap(),
        m_port(&offered).to_string()
    );
    assert_eq!(
        calls[0]["caller"]["local"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap(),
        m_port(&s(&a200, "sdp")).to_string()
    );
    assert_eq!(calls[0]["agent"]["remote"], "127.0.0.1:7000");
    // Hold (sendonly, c=0.0.0.0) re-offers keep the ports.
    let mut hold = offer("call-1", "tag-a", 16000);
    hold[1].1 = Value::str("v=0\r\no=caller 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0\r\na=sendonly\r\n");
    let held = ng.send("o3", &hold);
    assert_eq!(m_port(&s(&held, "sdp")), m_port(&offered));
    assert!(s(&held, "sdp").contains("c=IN IP4 0.0.0.0") && s(&held, "sdp").contains("a=sendonly"));
    // query, list, delete; then the call is gone.
    let q = ng.send(
        "q1",
        &[
            ("call-id", Value::str("call-1")),
            ("command", Value::str("query")),
        ],
    );
    assert!(
        field(&q, "totals").is_some() && field(&q, "tags").is_some(),
        "{q:?}"
    );
    let l = ng.send("l1", &[("command", Value::str("list"))]);
    assert_eq!(
        field(&l, "calls"),
        Some(&Value::List(vec![Value::str("call-1")]))
    );
    let d = ng.send(
        "d1",
        &[
            ("call-id", Value::str("call-1")),
            ("from-tag", Value::str("tag-a")),
            ("command", Value::str("delete")),
        ],
    );
    assert_eq!(s(&d, "result"), "ok");
    let (_, list) = get(&gw, &tok, "/relay/v1/calls");
    assert_eq!(list["calls"].as_array().unwrap().len(), 0);
    let d = ng.send(
        "d2",
        &[
            ("call-id", Value::str("call-1")),
            ("command", Value::str("delete")),
        ],
    );
    assert_eq!(s(&d, "warning"), "Unknown call-id");
}

#[test]
fn masking_is_refused_where_it_cannot_be_guaranteed_and_errors_say_why() {
    let (_gw, port) = gateway("");
    let ng = Ng::new(port);
    let mut srtp = offer("call-s", "t", 16000);
    srtp[1].1 = Value::str("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 16000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA\r\n");
    let r = ng.send("s1", &srtp);
    assert_eq!(s(&r, "result"), "error");
    assert!(s(&r, "error-reason").contains("encrypted media"), "{r:?}");
    let mut opus = offer("call-o", "t", 16000);
    opus[1].1 = sdp(16000, "96");
    let r = ng.send("s2", &opus);
    assert!(s(&r, "error-reason").contains("PCMU or PCMA"), "{r:?}");
    let r = ng.send("s3", &[("command", Value::str("frobnicate"))]);
    assert_eq!(
        (s(&r, "result"), s(&r, "error-reason")),
        ("error".into(), "Unrecognized command".into())
    );
    let r = ng.send(
        "s4",
        &[
            ("call-id", Value::str("nope")),
            ("to-tag", Value::str("x")),
            ("sdp", sdp(1, "0")),
            ("command", Value::str("answer")),
        ],
    );
    assert_eq!(s(&r, "error-reason"), "Unknown call-id");
    // Garbage after a cookie gets an error reply; no cookie, no reply.
    let r = ng.raw(b"c9 d7:commande");
    assert!(String::from_utf8_lossy(&r).contains("error"));
    ng.sock.send_to(b"nocookie", ng.to).unwrap();
    let mut buf = [0u8; 100];
    ng.sock
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(ng.sock.recv_from(&mut buf).is_err());
    // JSON works too, and gets JSON back.
    let r = ng.raw(br#"j1 {"command":"ping"}"#);
    assert_eq!(r, br#"j1 {"result":"pong"}"#);
}

#[test]
fn unblock_dtmf_is_refused_under_policy_call_and_capacity_says_load_limit() {
    let (_gw, port) = gateway("[relay]\nport_min = 29100\nport_max = 29103\n");
    let ng = Ng::new(port);
    assert_eq!(
        s(&ng.send("c1", &offer("call-x", "a", 16000)), "result"),
        "ok"
    );
    let b = ng.send(
        "b1",
        &[
            ("call-id", Value::str("call-x")),
            ("from-tag", Value::str("a")),
            ("command", Value::str("block DTMF")),
        ],
    );
    assert_eq!(s(&b, "result"), "ok");
    let u = ng.send(
        "u1",
        &[
            ("call-id", Value::str("call-x")),
            ("flags", Value::List(vec![Value::str("all")])),
            ("command", Value::str("unblock DTMF")),
        ],
    );
    assert_eq!(s(&u, "result"), "error");
    assert!(s(&u, "error-reason").contains("whole call"), "{u:?}");
    // Four ports: one call fits; the next is "load limit" for a proxy that supports it, and
    // rtpengine's failover string for one that does not.
    let full = ng.send("c2", &offer("call-y", "a", 16002));
    assert_eq!(s(&full, "result"), "load limit", "{full:?}");
    let mut plain = offer("call-z", "a", 16004);
    plain.remove(0);
    let full = ng.send("c3", &plain);
    assert_eq!(s(&full, "error-reason"), "Ran out of ports");
}

/// While the gateway drains (SIGTERM, `tonegate ctl drain`), a live call's re-offers and
/// answers are served as before (a re-INVITE for hold must not fail), and a new call is
/// refused as rtpengine refuses one over its session limit: `load limit` for a proxy that
/// supports it, else the error-reason Kamailio moves on to the next node of its set for.
#[test]
fn a_draining_gateway_refuses_new_offers_and_keeps_serving_live_calls() {
    let (gw, port) = gateway("");
    let ng = Ng::new(port);
    let first = ng.send("d1", &offer("call-live", "a", 16010));
    assert_eq!(s(&first, "result"), "ok", "{first:?}");
    gw.state.relay.start_draining();
    let re = ng.send("d2", &offer("call-live", "a", 16012));
    assert_eq!(s(&re, "result"), "ok", "{re:?}");
    assert_eq!(m_port(&s(&re, "sdp")), m_port(&s(&first, "sdp")));
    let answer = ng.send(
        "d3",
        &[
            ("sdp", sdp(7010, "0 101")),
            ("call-id", Value::str("call-live")),
            ("from-tag", Value::str("a")),
            ("to-tag", Value::str("b")),
            ("command", Value::str("answer")),
        ],
    );
    assert_eq!(s(&answer, "result"), "ok", "{answer:?}");
    let new = ng.send("d4", &offer("call-new", "a", 16014));
    assert_eq!(s(&new, "result"), "load limit", "{new:?}");
    assert_eq!(s(&new, "message"), "Parallel session limit reached");
    let mut plain = offer("call-new", "a", 16014);
    plain.remove(0);
    let legacy = ng.send("d5", &plain);
    assert_eq!(s(&legacy, "result"), "error");
    assert_eq!(s(&legacy, "error-reason"), "Parallel session limit reached");
    let tok = gw.token("relay");
    let (_, list) = get(&gw, &tok, "/relay/v1/calls");
    assert_eq!(list["calls"].as_array().unwrap().len(), 1, "{list}");
    let gone = ng.send(
        "d6",
        &[
            ("call-id", Value::str("call-live")),
            ("from-tag", Value::str("a")),
            ("command", Value::str("delete")),
        ],
    );
    assert_eq!(s(&gone, "result"), "ok", "{gone:?}");
}

/// The `/metrics` body and its content type.
fn scrape(gw: &Gateway) -> String {
    let r = gw.client.get(gw.url("/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/plain; version=0.0.4"
    );
    r.text().unwrap()
}

/// The value of the sample `series` (its name with its labels, as written), if present.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{series} {v}")))
}

/// `/metrics` times ng requests by command and outcome (unknown commands and unparsable
/// requests are `other`; retransmissions answered from the cache are not timed), from the same
/// registry as the counters, which read as they always have.
#[test]
fn metrics_time_ng_requests_by_command_and_outcome() {
    let (gw, port) = gateway("");
    let ng = Ng::new(port);
    // Once this is answered, the start-up pings are all counted (one request at a time).
    assert_eq!(
        s(&ng.send("m0", &[("command", Value::str("ping"))]), "result"),
        "pong"
    );
    let before = scrape(&gw);
    let count = |text: &str, command: &str, outcome: &str| {
        sample(
            text,
            &format!(
                "tonegate_ng_request_duration_seconds_count{{command=\"{command}\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    let pings = count(&before, "ping", "ok").expect("the pings so far are timed");
    let counter = |text: &str, name: &str| {
        sample(text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    let requests = counter(&before, "tonegate_ng_requests_total");
    assert_eq!(counter(&before, "tonegate_ng_retransmissions_total"), 0);
    assert_eq!(counter(&before, "tonegate_ng_errors_total"), 0);

    let o = ng.send("m1", &offer("call-m", "tag-a", 16020));
    assert_eq!(s(&o, "result"), "ok", "{o:?}");
    // A retransmission: answered from the cache, counted, not timed.
    assert_eq!(ng.send("m1", &offer("call-m", "tag-a", 16020)), o);
    let answer = |cookie: &str, call: &str| {
        ng.send(
            cookie,
            &[
                ("sdp", sdp(7020, "0 101")),
                ("call-id", Value::str(call)),
                ("from-tag", Value::str("tag-a")),
                ("to-tag", Value::str("tag-b")),
                ("command", Value::str("answer")),
            ],
        )
    };
    assert_eq!(s(&answer("m2", "call-m"), "result"), "ok");
    let secret = "secret-call-id-zqj";
    assert_eq!(s(&answer("m3", secret), "error-reason"), "Unknown call-id");
    let q = ng.send(
        "m4",
        &[
            ("call-id", Value::str("call-m")),
            ("command", Value::str("query")),
        ],
    );
    assert!(field(&q, "totals").is_some(), "{q:?}");
    assert_eq!(
        s(&ng.send("m5", &[("command", Value::str("ping"))]), "result"),
        "pong"
    );
    // An unknown command and an unparsable request: `other`, never their text.
    let r = ng.send(
        "m6",
        &[
            ("call-id", Value::str(secret)),
            ("command", Value::str("frobnicate-zqj")),
        ],
    );
    assert_eq!(s(&r, "error-reason"), "Unrecognized command");
    assert!(String::from_utf8_lossy(&ng.raw(b"m7 d7:commande")).contains("error"));
    // No cookie: no reply, no request (the delete's reply says it was read).
    ng.sock.send_to(b"nocookie", ng.to).unwrap();
    let d = ng.send(
        "m8",
        &[
            ("call-id", Value::str("call-m")),
            ("from-tag", Value::str("tag-a")),
            ("command", Value::str("delete")),
        ],
    );
    assert_eq!(s(&d, "result"), "ok", "{d:?}");

    let after = scrape(&gw);
    assert!(
        after.contains("# TYPE tonegate_ng_request_duration_seconds histogram"),
        "{after}"
    );
    assert_eq!(count(&after, "ping", "ok"), Some(pings + 1));
    for (command, outcome, n) in [
        ("offer", "ok", 1),
        ("answer", "ok", 1),
        ("answer", "error", 1),
        ("query", "ok", 1),
        ("delete", "ok", 1),
        ("other", "error", 2),
    ] {
        assert_eq!(
            count(&after, command, outcome),
            Some(n),
            "{command} {outcome}:\n{after}"
        );
    }
    for (command, outcome) in [("offer", "error"), ("query", "error"), ("other", "ok")] {
        assert_eq!(count(&after, command, outcome), None, "{after}");
    }
    // Every timed request is one of these: the label sets are the ones above.
    let series: Vec<&str> = after
        .lines()
        .filter(|l| l.starts_with("tonegate_ng_request_duration_seconds_count{"))
        .collect();
    assert_eq!(series.len(), 7, "{series:?}");
    assert!(
        !after.contains("zqj"),
        "request text became a label:\n{after}"
    );
    // Each request's observation fell in some bucket.
    assert_eq!(
        sample(
            &after,
            "tonegate_ng_request_duration_seconds_bucket{le=\"+Inf\",command=\"offer\",outcome=\"ok\"}"
        ),
        Some(1),
        "{after}"
    );

    // The counters beside them, as before: 9 requests (one a retransmission), 3 errors.
    assert_eq!(counter(&after, "tonegate_ng_requests_total"), requests + 9);
    assert_eq!(counter(&after, "tonegate_ng_retransmissions_total"), 1);
    assert_eq!(counter(&after, "tonegate_ng_errors_total"), 3);
    assert_eq!(counter(&after, "tonegate_ng_malformed_total"), 1);
    assert_eq!(counter(&after, "tonegate_ng_refused_offers_total"), 0);
    assert_eq!(counter(&after, "tonegate_relay_calls_created_total"), 1);
    assert_eq!(counter(&after, "tonegate_relay_calls_active"), 0);
    assert!(after.contains("# TYPE tonegate_relay_calls_active gauge"));
    assert!(after.contains("# TYPE tonegate_relay_calls_created_total counter"));
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("tonegate_relay_engine_info{engine=\"") && l.ends_with("\"} 1")),
        "{after}"
    );
    assert_eq!(
        counter(&after, "tonegate_link_attempts_total{result=\"linked\"}"),
        0
    );
    // Every name the hand-written exposition had is still there, as a sample.
    for name in [
        "relay_calls_active",
        "relay_calls_created_total",
        "relay_calls_timed_out_total",
        "relay_calls_refused_total",
        "relay_call_faults_total",
        "relay_worker_failures_total",
        "relay_rtp_packets_in_total",
        "relay_rtp_packets_out_total",
        "relay_bytes_in_total",
        "relay_bytes_out_total",
        "relay_rtcp_packets_total",
        "relay_dropped_malformed_total",
        "relay_dropped_foreign_source_total",
        "relay_dropped_no_destination_total",
        "relay_dropped_send_total",
        "relay_latch_events_total",
        "relay_frames_masked_total",
        "relay_events_consumed_total",
        "relay_uninspectable_total",
        "relay_keys_captured_total",
        "relay_duplicate_keys_total",
        "relay_guard_replaced_total",
        "http_connections_refused_total",
        "token_requests_throttled_total",
        "token_requests_busy_total",
        "card_memory_locked",
        "card_memory_slots_in_use",
        "card_memory_heap_fallbacks_total",
        "link_attempts_total{result=\"bad_check_digit\"}",
        "link_attempts_total{result=\"not_found\"}",
        "link_attempts_total{result=\"rate_limited\"}",
        "link_calls_limited_total",
        "link_sessions_locked_total",
        "agent_events_written_total",
        "agent_events_coalesced_total",
        "agent_event_write_failures_total",
        "ng_unknown_keys_total",
    ] {
        counter(&after, &format!("tonegate_{name}"));
    }
    assert!(
        !after.contains("_total_total") && !after.contains("# EOF"),
        "{after}"
    );
}

#[test]
fn rtpengine_ng_client_works_unchanged() {
    let Some(client) = common::tool("rtpengine-ng-client") else {
        return;
    };
    let (_gw, port) = gateway("");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&client)
            .arg("--proxy-port")
            .arg(port.to_string())
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "rtpengine-ng-client {args:?}: {text}");
        text
    };
    assert!(run(&["ping"]).contains("pong"));
    let offer_sdp =
        "v=0\no=moo 1 2 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 3456 RTP/AVP 0\n";
    let o = run(&[
        "offer",
        "--trust-address",
        "--from-tag=ft",
        "--call-id=cli-1",
        &format!("--sdp={offer_sdp}"),
    ]);
    assert!(
        o.contains("New SDP") && !o.split("New SDP").nth(1).unwrap().contains("3456"),
        "{o}"
    );
    let a = run(&[
        "answer",
        "--trust-address",
        "--from-tag=ft",
        "--to-tag=tt",
        "--call-id=cli-1",
        &format!("--sdp={}", offer_sdp.replace("3456", "4456")),
    ]);
    assert!(a.contains("New SDP"), "{a}");
    let q = run(&["query", "--call-id=cli-1"]);
    assert!(
        q.contains("totals") && q.contains("ft") && q.contains("tt"),
        "{q}"
    );
    run(&["delete", "--call-id=cli-1", "--from-tag=ft"]);
}

/// A card number in a SIP Call-ID never reaches the log or the relay's audit trail: the id is
/// masked where it enters, and the call is still found by it (delete works).
#[test]
fn a_card_number_in_a_call_id_is_logged_and_stored_masked() {
    #[derive(Clone)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logged = Buf(Default::default());
    let writer = logged.clone();
    // Global: the gateway logs from its runtime's threads. Other tests here log into it too.
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let (gw, port) = gateway("");
    let ng = Ng::new(port);
    let call = "4242424242424242@pbx";
    let r = ng.send("c1", &offer(call, "tag-a", 16010));
    assert_eq!(s(&r, "result"), "ok", "{r:?}");
    let d = ng.send(
        "c2",
        &[
            ("call-id", Value::str(call)),
            ("from-tag", Value::str("tag-a")),
            ("command", Value::str("delete")),
        ],
    );
    assert_eq!(s(&d, "result"), "ok", "{d:?}");
    let admin = gw.token("admin");
    // The relay audit is written in the background: wait (bounded) for the call's lines.
    let mut audit = String::new();
    for _ in 0..50 {
        audit = gw
            .client
            .get(gw.url("/admin/v1/audit/relay"))
            .bearer_auth(&admin)
            .send()
            .unwrap()
            .text()
            .unwrap();
        if audit.contains("4242@pbx") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(audit.contains("4242@pbx"), "the call is audited: {audit}");
    drop(gw);
    let log = String::from_utf8_lossy(&logged.0.lock().unwrap()).into_owned();
    // The capture is global (other tests' gateways log into it too): only the line about this
    // test's own call proves this gateway's log was read, and shows the id masked in it.
    assert!(
        log.lines()
            .any(|l| l.contains("ng delete: call ended")
                && l.contains("call_id=************4242@pbx")),
        "this call's delete was logged, its id masked: {log}"
    );
    for text in [&log, &audit] {
        assert!(
            !text.contains("424242424242"),
            "a call id's card number: {text}"
        );
    }
}

/// The relay calls the ng owner's relay token sees.
fn relay_calls(gw: &Gateway) -> Vec<serde_json::Value> {
    let (_, list) = get(gw, &gw.token("relay"), "/relay/v1/calls");
    list["calls"].as_array().unwrap().clone()
}

/// Finding 1: a host outside `[ng] allow` gets no reply to anything, creates, redirects and
/// deletes nothing, and is counted; the allowed proxy carries on.
#[test]
fn a_peer_outside_ng_allow_gets_no_reply_and_changes_nothing() {
    let (gw, port) = gateway("allow = [\"127.0.0.1/32\"]\n");
    let ng = Ng::new(port);
    let attacker = Ng::from("127.0.0.2", port);
    let dropped = |gw: &Gateway| {
        sample(&scrape(gw), "tonegate_ng_dropped_foreign_source_total")
            .expect("the drop counter is exported")
    };
    assert_eq!(dropped(&gw), 0);
    // An offer, a list and a ping from the foreign host: nothing comes back, no call is made.
    attacker.fire("x1", &offer("call-foreign", "tag-x", 17000));
    attacker.fire("x2", &[("command", Value::str("list"))]);
    attacker.fire("x3", &[("command", Value::str("ping"))]);
    let l = ng.send("l1", &[("command", Value::str("list"))]);
    assert_eq!(field(&l, "calls"), Some(&Value::List(vec![])), "{l:?}");
    assert!(!attacker.got_any_reply(), "the foreign host was answered");
    assert!(relay_calls(&gw).is_empty());
    // The allowed proxy's call: the foreign host can neither redirect nor delete it.
    let o = ng.send("o1", &offer("call-1", "tag-a", 16000));
    assert_eq!(s(&o, "result"), "ok", "{o:?}");
    let mut redirect = offer("call-1", "tag-a", 17000);
    redirect[1].1 = Value::str("v=0\r\no=x 1 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 17000 RTP/AVP 0 101\r\n");
    redirect.push(("media-address", Value::str("127.0.0.2")));
    attacker.fire("x4", &redirect);
    attacker.fire(
        "x5",
        &[
            ("call-id", Value::str("call-1")),
            ("command", Value::str("delete")),
        ],
    );
    let q = ng.send(
        "q1",
        &[
            ("call-id", Value::str("call-1")),
            ("command", Value::str("query")),
        ],
    );
    assert_eq!(s(&q, "result"), "ok", "the call survived: {q:?}");
    assert!(!attacker.got_any_reply());
    let calls = relay_calls(&gw);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["call_guid"], "call-1");
    assert_eq!(calls[0]["caller"]["remote"], "127.0.0.1:16000");
    assert_eq!(dropped(&gw), 5);
}

/// Finding 1's attack: a host that could send one datagram set up a call under a merchant's
/// CallGuid before the merchant's call arrived, and the merchant's self-service session took
/// its keys from that call. From outside `[ng] allow` the offer is dropped: the session waits
/// for, and links to, the call the allowed proxy sets up.
#[test]
fn a_foreign_host_cannot_take_a_merchants_call_guid_before_the_call() {
    let (gw, port) = gateway("allow = [\"127.0.0.1/32\"]\n");
    let ng = Ng::new(port);
    let guid = "merchant-call-77@pbx";
    let attacker = Ng::from("127.0.0.2", port);
    let mut hijack = offer(guid, "tag-x", 17000);
    hijack[1].1 = Value::str("v=0\r\no=x 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 17000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n");
    attacker.fire("h1", &hijack);
    assert_eq!(
        s(&ng.send("p1", &[("command", Value::str("ping"))]), "result"),
        "pong"
    );
    assert!(
        !attacker.got_any_reply(),
        "the hijacker learnt the relay's ports"
    );
    // The merchant's IVR opens its self-service session for the call: nothing to link to yet.
    let tok = gw.token("globalpci");
    let (st, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/selfservicesession",
        &serde_json::json!({"AccountConfigurationId": "dev-account", "CallGuid": guid,
            "PaymentData": {"amount": "124.99", "merchantTxnRef": "INV-77"}}),
    );
    assert_eq!(st, 200, "{v}");
    let id = v["sessionId"].as_str().unwrap().to_string();
    let state = |gw: &Gateway| {
        get(gw, &tok, &format!("/globalpci/v1/session/{id}")).1["sessionState"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(state(&gw), "Created");
    assert!(relay_calls(&gw).is_empty());
    // The real call arrives through the allowed proxy and the session captures from it.
    let o = ng.send("o1", &offer(guid, "tag-a", 16000));
    assert_eq!(s(&o, "result"), "ok", "{o:?}");
    let calls = relay_calls(&gw);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["caller"]["remote"], "127.0.0.1:16000");
    let mut now = state(&gw);
    for _ in 0..100 {
        if now != "Created" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        now = state(&gw);
    }
    assert_eq!(now, "Capturing");
}

/// Finding 5: 60 `list`s added 392 MB — replies (much larger than requests) were kept by count
/// only, for call ids of any length. A flood with fresh cookies now leaves the reply cache
/// within `ng.reply_cache_bytes`, and an overlong call id is refused by name.
#[test]
fn a_list_flood_keeps_the_reply_cache_within_its_byte_bound() {
    let bound: u64 = 1 << 20;
    let (gw, port) = gateway(&format!("reply_cache_bytes = {bound}\n"));
    let ng = Ng::new(port);
    // Calls with the longest call ids accepted, so every `list` reply is large (~13 KB).
    for i in 0..48 {
        let call = format!("{i:03}{}", "c".repeat(253));
        let mut o = offer(&call, "tag-a", 16000 + 2 * i);
        o.push(("tonegate-callguid", Value::str(&format!("flood-{i}"))));
        let r = ng.send(&format!("o{i}"), &o);
        assert_eq!(s(&r, "result"), "ok", "{r:?}");
    }
    // One byte longer: refused, by name, without the id, and no call is made.
    let long = "x".repeat(257);
    let mut o = offer(&long, "tag-a", 16500);
    o.push(("tonegate-callguid", Value::str("flood-long")));
    let r = ng.send("olong", &o);
    assert_eq!(
        (s(&r, "result"), s(&r, "error-reason")),
        ("error".into(), "call-id longer than 256 bytes".into())
    );
    let r = ng.send(
        "qlong",
        &[
            ("call-id", Value::str(&"q".repeat(10_000))),
            ("command", Value::str("query")),
        ],
    );
    assert_eq!(s(&r, "error-reason"), "call-id longer than 256 bytes");
    assert_eq!(relay_calls(&gw).len(), 48);
    let mut kept = 0;
    for i in 0..3000 {
        let l = ng.send(
            &format!("flood{i}"),
            &[("command", Value::str("list")), ("limit", Value::Int(1000))],
        );
        let Some(Value::List(calls)) = field(&l, "calls") else {
            panic!("{l:?}");
        };
        assert_eq!(calls.len(), 48);
        if i % 500 == 499 {
            kept = sample(&scrape(&gw), "tonegate_ng_reply_cache_bytes")
                .expect("the cache's bytes are exported");
            assert!(kept <= bound, "{kept} bytes kept, over {bound}");
        }
    }
    // Full, not empty: the bound is what held it (3,000 replies are about 40 MB).
    assert!(kept > bound / 2, "{kept}");
    // The newest replies are still there for retransmissions.
    let retransmissions = |gw: &Gateway| sample(&scrape(gw), "tonegate_ng_retransmissions_total");
    let before = retransmissions(&gw).unwrap();
    let again = ng.send(
        "flood2999",
        &[("command", Value::str("list")), ("limit", Value::Int(1000))],
    );
    assert_eq!(s(&again, "result"), "ok");
    assert_eq!(retransmissions(&gw), Some(before + 1));
}

/// A call that ends elsewhere (media timeout, the relay API) without an ng `delete` leaves
/// `list` and `statistics`, and the ng listener's memory, instead of staying for good.
#[test]
fn calls_ended_elsewhere_leave_list_and_statistics() {
    let (gw, port) = gateway("");
    let ng = Ng::new(port);
    for (i, call) in ["call-kept", "call-ended"].into_iter().enumerate() {
        let r = ng.send(
            &format!("o{i}"),
            &offer(call, "tag-a", 16000 + 2 * i as u16),
        );
        assert_eq!(s(&r, "result"), "ok", "{r:?}");
    }
    let ended = relay_calls(&gw)
        .into_iter()
        .find(|c| c["call_guid"] == "call-ended")
        .unwrap();
    let r = gw
        .client
        .delete(gw.url(&format!(
            "/relay/v1/calls/{}",
            ended["id"].as_str().unwrap()
        )))
        .bearer_auth(gw.token("relay"))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let l = ng.send("l1", &[("command", Value::str("list"))]);
    assert_eq!(
        field(&l, "calls"),
        Some(&Value::List(vec![Value::str("call-kept")])),
        "{l:?}"
    );
    let st = ng.send("s1", &[("command", Value::str("statistics"))]);
    let own = field(&st, "statistics")
        .and_then(|v| field(v, "currentstatistics"))
        .and_then(|v| field(v, "sessionsown"));
    assert_eq!(own, Some(&Value::Int(1)), "{st:?}");
}
