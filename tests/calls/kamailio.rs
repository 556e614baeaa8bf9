//! Behind Kamailio: Debian's Kamailio (its `rtpengine` module, `rtpengine_sock` pointing at
//! tonegate's ng port) routes a SIP call between two sipp instances — a caller keying a card,
//! an agent whose media is the test's recorder — exactly as it would drive rtpengine.
//!
//! Needs `kamailio` and `sip-tester` (sipp); `scripts/test` installs them and sets
//! `TONEGATE_REQUIRE_TOOLS=1`, without which a missing tool skips these tests loudly.

use crate::common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::gateway::{get, post, Gateway};
use common::kamailio::*;
use common::*;
use serde_json::json;
use tonegate_dsp::G711Law;

const CARD: &str = "4556737586899855#0328#123#";

fn wait_session(gw: &Gateway, tok: &str, id: &str, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = get(gw, tok, &format!("/globalpci/v1/session/{id}"));
        if v["sessionState"] == state || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One call through Kamailio and tonegate. Returns (agent-leg packets, sipp UAC exit status,
/// the session's state at the end, relay calls left after BYE).
fn one_call(
    gw: &Gateway,
    ng_port: u16,
    events: bool,
    run: &str,
) -> (Vec<Vec<u8>>, bool, String, usize) {
    let (kam, sipp_bin) = tools().expect("checked by the caller");
    let dir = tempfile::tempdir().unwrap();
    let (sip, uas) = (free_port(), free_port());
    let recorder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rec_port = recorder.local_addr().unwrap().port();
    let (_k, log) = kamailio(
        &kam,
        dir.path(),
        sip,
        &format!("udp:127.0.0.1:{ng_port}"),
        uas,
    );
    let call_id = format!("tonegate-e2e-{run}@127.0.0.1");
    // The agent's backend opens a payment session for the call before it arrives.
    let tok = gw.token("globalpci");
    let (s, v) = post(
        gw,
        &tok,
        "/globalpci/v1/agentsession",
        &json!({"AccountConfigurationId": "dev-account", "CallGuid": call_id,
                "PaymentData": {"amount": "9.99", "merchantTxnRef": run}}),
    );
    assert_eq!(s, 200, "{v}");
    let session = v["sessionId"].as_str().unwrap().to_string();
    let signal = tonegate_dsp::generator::human_keying(CARD, 17, Some(30.0));
    let ulaw = dir.path().join("card.ul");
    let mut bytes = vec![0u8; signal.samples.len()];
    G711Law::Ulaw.encode_into(&signal.samples, &mut bytes);
    std::fs::write(&ulaw, &bytes).unwrap();
    let audio_ms = (signal.samples.len() / 8) as u32;
    let rec = record(recorder, Duration::from_secs(40));
    let mut uas_p = sipp_agent(&sipp_bin, dir.path(), "uas", uas, rec_port, events, 1);
    let caller = Caller {
        call_id: &call_id,
        events,
        // With telephone-event the test itself streams audio and events on one SSRC.
        ulaw: (!events).then_some(ulaw.as_path()),
        pause_ms: audio_ms + 3000,
        info_code: None,
        srtp: false,
    };
    let mut uac_p = sipp_caller(&sipp_bin, dir.path(), "uac", sip, &caller, &[]);
    if events {
        // Find the relay's caller leg (the ng offer created it) and key the card from there.
        let relay_tok = gw.token("relay");
        let deadline = Instant::now() + Duration::from_secs(10);
        // The first key goes out once the answer (200 OK) has reached the relay: the call's
        // agent leg then has its remote.
        let caller_leg = loop {
            let (_, list) = get(gw, &relay_tok, "/relay/v1/calls");
            let found = list["calls"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["call_guid"] == call_id.as_str() && c["agent"]["remote"].is_string())
                .map(|c| c["caller"]["local"].as_str().unwrap().to_string());
            if let Some(c) = found {
                break c;
            }
            assert!(
                Instant::now() < deadline,
                "no answered relay call for {call_id}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let packets = rtp_stream(
            &signal,
            StreamOptions {
                events_pt: Some(101),
                ..Default::default()
            },
        );
        for p in &packets {
            sock.send_to(&p.bytes, caller_leg.as_str()).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // While the call is up (the caller pauses 1.5 s after the last key).
    let state = wait_session(gw, &tok, &session, "ReadyToSubmit")["sessionState"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ok = uac_p.0.wait().unwrap().success();
    let _ = uas_p.0.wait();
    let heard = rec.join().unwrap();
    let relay_tok = gw.token("relay");
    let deadline = Instant::now() + Duration::from_secs(5);
    let left = loop {
        let (_, list) = get(gw, &relay_tok, "/relay/v1/calls");
        let n = list["calls"].as_array().unwrap().len();
        if n == 0 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !ok {
        eprintln!(
            "kamailio log:\n{}\nuac:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("uac.out")).unwrap_or_default()
        );
    }
    (heard, ok, state, left)
}

/// A gateway with its ng listener on a free port; `ng` adds keys to `[ng]`, `extra` goes after.
fn ng_gateway(ng: &str, extra: &str) -> (Gateway, u16) {
    let port = free_port();
    (
        Gateway::start(&format!(
            "[ng]\nlisten = \"127.0.0.1:{port}\"\n{ng}\n{extra}"
        )),
        port,
    )
}

#[test]
fn a_call_through_kamailio_is_masked_and_its_keys_captured() {
    if tools().is_none() {
        return;
    }
    let (gw, ng_port) = ng_gateway("", "");
    for (events, run) in [(false, "inband"), (true, "events")] {
        let (heard, ok, state, left) = one_call(&gw, ng_port, events, run);
        assert!(ok, "{run}: the call did not complete");
        assert!(
            heard.len() > 200,
            "{run}: RTP reached the agent through tonegate ({} packets)",
            heard.len()
        );
        for p in &heard {
            assert_ne!(
                tonegate::media::rtp::RtpHeader::parse(p)
                    .unwrap()
                    .payload_type,
                101,
                "{run}: a telephone-event reached the agent"
            );
        }
        assert_eq!(
            agent_keys(&heard),
            "",
            "{run}: multimon-ng heard keys on the agent leg"
        );
        assert_eq!(
            state, "ReadyToSubmit",
            "{run}: the session linked by Call-ID captured the card"
        );
        assert_eq!(left, 0, "{run}: BYE -> delete -> the call is gone");
    }
}

#[test]
fn unblock_from_the_script_is_refused_while_a_capture_holds_the_call_and_srtp_fails_closed() {
    let Some((kam, sipp_bin)) = tools() else {
        return;
    };
    let (gw, ng_port) = ng_gateway(
        "account = \"dev-account\"",
        "[[accounts]]\nid = \"dev-account\"\npsp = \"sandbox\"\ndtmf_masking = \"session\"\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let (sip, uas) = (free_port(), free_port());
    let recorder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rec_port = recorder.local_addr().unwrap().port();
    let (_k, log) = kamailio(
        &kam,
        dir.path(),
        sip,
        &format!("udp:127.0.0.1:{ng_port}"),
        uas,
    );
    let call_id = "tonegate-unblock@127.0.0.1";
    let tok = gw.token("globalpci");
    let (_, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/agentsession",
        &json!({"AccountConfigurationId": "dev-account", "CallGuid": call_id,
                "PaymentData": {"amount": "1.00", "merchantTxnRef": "unblock"}}),
    );
    let session = v["sessionId"].as_str().unwrap().to_string();
    let _rec = record(recorder, Duration::from_secs(15));
    let mut uas_p = sipp_agent(&sipp_bin, dir.path(), "uas", uas, rec_port, true, 1);
    let caller = Caller {
        call_id,
        events: true,
        ulaw: None,
        pause_ms: 1500,
        info_code: Some(409),
        srtp: false,
    };
    let mut uac_p = sipp_caller(&sipp_bin, dir.path(), "uac", sip, &caller, &[]);
    // The session linked by Call-ID and holds secure mode; block_dtmf() on the 200 took effect.
    assert_eq!(
        wait_session(&gw, &tok, &session, "Capturing")["sessionState"],
        "Capturing"
    );
    let relay_tok = gw.token("relay");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = get(&gw, &relay_tok, "/relay/v1/calls");
        if list["calls"][0]["secure"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the call never went secure: {list}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The INFO made the script call unblock_dtmf(): refused (sipp checks the 409).
    let ok = uac_p.0.wait().unwrap().success();
    let _ = uas_p.0.wait();
    let k = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        ok,
        "the call (INFO answered 409) did not go as expected:\n{k}"
    );
    assert!(k.contains("TONEGATE unblock refused"), "{k}");
    assert!(
        k.contains("is capturing on this call"),
        "Kamailio logs tonegate's reason:\n{k}"
    );
    // An SRTP offer fails closed: Kamailio logs why and the caller gets 488.
    let srtp = Caller {
        call_id: "tonegate-srtp@127.0.0.1",
        events: false,
        ulaw: None,
        pause_ms: 0,
        info_code: None,
        srtp: true,
    };
    let mut uac_p = sipp_caller(&sipp_bin, dir.path(), "uac-srtp", sip, &srtp, &[]);
    let refused = uac_p.0.wait().unwrap().success();
    assert!(
        refused,
        "the SRTP offer was not refused with 488; sipp said:\n{}\nkamailio said:\n{}",
        std::fs::read_to_string(dir.path().join("uac-srtp.out")).unwrap_or_default(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let k = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        k.contains("encrypted media") && k.contains("TONEGATE offer refused"),
        "{k}"
    );
}

#[test]
fn calls_spread_over_two_nodes_and_move_to_the_other_when_one_stops() {
    let Some((kam, sipp_bin)) = tools() else {
        return;
    };
    let (a, pa) = ng_gateway("", "");
    let (b, pb) = ng_gateway("", "");
    let dir = tempfile::tempdir().unwrap();
    let (sip, uas) = (free_port(), free_port());
    let recorder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rec_port = recorder.local_addr().unwrap().port();
    let (_k, log) = kamailio(
        &kam,
        dir.path(),
        sip,
        &format!("udp:127.0.0.1:{pa}=1 udp:127.0.0.1:{pb}=1"),
        uas,
    );
    let created = |g: &Gateway| g.state.relay.totals().calls_created;
    // Ten short calls: Kamailio spreads them over both nodes.
    const CALLS: u32 = 10;
    let mut uas_p = sipp_agent(
        &sipp_bin,
        dir.path(),
        "uas-many",
        uas,
        rec_port,
        false,
        CALLS,
    );
    let many = Caller {
        call_id: "",
        events: false,
        ulaw: None,
        pause_ms: 200,
        info_code: None,
        srtp: false,
    };
    let mut uac_p = sipp_caller(
        &sipp_bin,
        dir.path(),
        "uac-many",
        sip,
        &many,
        &["-m".into(), CALLS.to_string(), "-r".into(), "5".into()],
    );
    let ok = uac_p.0.wait().unwrap().success();
    let _ = uas_p.0.wait();
    let k = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(ok, "not every call completed:\n{k}");
    let (na, nb) = (created(&a), created(&b));
    assert_eq!(na + nb, CALLS as u64, "every call set up on one node");
    assert!(
        na > 0 && nb > 0,
        "calls spread over both nodes: {na} and {nb}"
    );
    // Node B stops: the next call goes to A, and is masked there.
    drop(b);
    let before = created(&a);
    let signal = tonegate_dsp::generator::human_keying("4111#", 3, Some(30.0));
    let ulaw = dir.path().join("keys.ul");
    let mut bytes = vec![0u8; signal.samples.len()];
    G711Law::Ulaw.encode_into(&signal.samples, &mut bytes);
    std::fs::write(&ulaw, &bytes).unwrap();
    let rec = record(recorder, Duration::from_secs(30));
    let mut uas_p = sipp_agent(&sipp_bin, dir.path(), "uas-one", uas, rec_port, false, 1);
    let one = Caller {
        call_id: "",
        events: false,
        ulaw: Some(&ulaw),
        pause_ms: (signal.samples.len() / 8) as u32 + 1000,
        info_code: None,
        srtp: false,
    };
    let mut uac_p = sipp_caller(&sipp_bin, dir.path(), "uac-one", sip, &one, &[]);
    let ok = uac_p.0.wait().unwrap().success();
    let _ = uas_p.0.wait();
    let heard = rec.join().unwrap();
    let k = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        ok,
        "the call after node B stopped failed; the caller's sipp said:\n{}\nthe callee's:\n{}\nkamailio said:\n{k}",
        std::fs::read_to_string(dir.path().join("uac-one.out")).unwrap_or_default(),
        std::fs::read_to_string(dir.path().join("uas-one.out")).unwrap_or_default(),
    );
    assert_eq!(created(&a), before + 1, "it went to node A");
    // The ten earlier calls sent no media; this one's keys were masked on A.
    assert!(heard.len() > 50, "{} packets", heard.len());
    assert_eq!(agent_keys(&heard), "", "the failed-over call still masks");
}
