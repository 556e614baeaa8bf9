//! IVR self-service over real UDP: the seed's XML starts the session, the caller hears prompts
//! (in order, with barge-in) and keys the card as in-band audio, the sandbox PSP approves, and
//! the seed's status definition reads the terminal state. Then the same with the call found by
//! its keyed `dtmfLinkId` instead of its CallGuid.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::gateway::{http, Gateway, DEV_CLIENT};
use common::*;
use serde_json::{json, Value};
use tonegate::interaction::{Interaction, InteractionRunner, Variables};
use tonegate::media::rtp::RtpHeader;
use tonegate_dsp::G711Law;

fn seed(name: &str, fill: &[&str]) -> Interaction {
    let mut text = std::fs::read_to_string(fixture(&format!("interactions/{name}.xml"))).unwrap();
    for f in fill {
        text = text.replacen("~~~REPLACE~~~", f, 1);
    }
    Interaction::parse(&text).unwrap()
}

/// Each prompt's first audible frame (index from the clip's start, encoded), to recognise a
/// prompt on the caller's socket: clips begin with a little silence, so the first frame alone
/// says nothing.
fn prompt_signatures() -> Vec<(String, usize, Vec<u8>)> {
    tonegate::prompts::PROMPT_NAMES
        .iter()
        .map(|n| {
            let pcm = tonegate::wav::read_pcm8k(&root().join(format!("config/prompts/en/{n}.wav")))
                .unwrap();
            let i = pcm
                .chunks(160)
                .position(|f| f.iter().any(|s| s.unsigned_abs() > 300))
                .unwrap();
            let mut enc = vec![0u8; 160];
            G711Law::Ulaw.encode_into(&pcm[i * 160..(i + 1) * 160], &mut enc);
            (n.to_string(), i, enc)
        })
        .collect()
}

/// A caller: sends keys as audio, and reports which prompts start arriving.
struct Caller {
    leg: KeyingLeg,
    prompts: mpsc::Receiver<(String, usize)>,
}

impl Caller {
    fn new(sock: UdpSocket, relay: SocketAddr) -> Caller {
        let rx_sock = sock.try_clone().unwrap();
        rx_sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let (tx, prompts) = mpsc::channel::<(String, usize)>();
        let sigs = prompt_signatures();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let start = Instant::now();
            // Frames since the last clip start (marker bit), and whether that clip is named yet.
            let (mut since_marker, mut named) = (0usize, true);
            // Frames of the previous clip, reported with the next clip's name.
            let mut previous_frames = 0usize;
            while start.elapsed() < Duration::from_secs(120) {
                let Ok((n, _)) = rx_sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(h) = RtpHeader::parse(&buf[..n]) else {
                    continue;
                };
                if h.marker {
                    previous_frames = since_marker + 1;
                    since_marker = 0;
                    named = false;
                } else {
                    since_marker += 1;
                }
                if named {
                    continue;
                }
                let payload = &buf[h.payload_start..h.payload_end];
                if let Some((name, _, _)) = sigs
                    .iter()
                    .find(|(_, i, s)| *i == since_marker && s.as_slice() == payload)
                {
                    named = true;
                    if tx.send((name.clone(), previous_frames)).is_err() {
                        return;
                    }
                }
            }
        });
        Caller {
            leg: KeyingLeg::new(sock, relay),
            prompts,
        }
    }

    fn key(&mut self, keys: &str, seed: u32) {
        self.leg.key(keys, seed);
    }

    /// Waits for the next prompt to start; returns its name.
    fn next_prompt(&self) -> String {
        self.prompts
            .recv_timeout(Duration::from_secs(20))
            .expect("no prompt started")
            .0
    }

    /// Waits for the next prompt to start; returns its name and how many frames of the
    /// previous prompt arrived before it.
    fn next_prompt_after(&self) -> (String, usize) {
        self.prompts
            .recv_timeout(Duration::from_secs(20))
            .expect("no prompt started")
    }
}

fn relay_call(gw: &Gateway, call_guid: &str, caller: &UdpSocket) -> SocketAddr {
    let tok = gw.token("relay");
    let v: Value = http()
        .post(gw.url("/relay/v1/calls"))
        .bearer_auth(&tok)
        .json(&json!({"call_guid": call_guid, "codec": "PCMU", "caller": {"remote": caller.local_addr().unwrap().to_string()}, "agent": {"remote": null}}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["caller"]["local"].as_str().unwrap().parse().unwrap()
}

/// Runs the caller's side of a payment: a mistyped PAN, then the card; checks the prompts.
fn pay_by_phone(caller: &mut Caller) {
    assert_eq!(caller.next_prompt(), "enter_card_number");
    caller.key("4242424242424241#", 1);
    // Barge-in: keying cut the first prompt short.
    let full = tonegate::wav::read_pcm8k(&root().join("config/prompts/en/enter_card_number.wav"))
        .unwrap()
        .len()
        / 160;
    let (next, heard) = caller.next_prompt_after();
    assert_eq!(next, "invalid_card");
    assert!(
        heard < full,
        "the prompt played {heard} of {full} frames despite the keys"
    );
    assert_eq!(caller.next_prompt(), "enter_card_number");
    caller.key("4242424242424242#", 2);
    assert_eq!(caller.next_prompt(), "enter_expiry");
    caller.key("1230#", 3);
    assert_eq!(caller.next_prompt(), "enter_security_code");
    caller.key("737", 4);
    for want in ["processing", "approved", "goodbye"] {
        assert_eq!(caller.next_prompt(), want);
    }
}

fn poll_status(gw: &Gateway, vars: &mut Variables) {
    let base = format!("http://{}", gw.addr);
    let status = seed("seed_sessionstatus", &[&base]);
    let engine = InteractionRunner::new(Duration::from_secs(10), 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        gw.runtime.block_on(engine.run(&status, vars)).unwrap();
        if vars["GlobalPCI|SessionState"] == "Completed" || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(vars["GlobalPCI|SessionState"], "Completed");
    assert_eq!(vars["GlobalPCI|ResponseCode"], 200);
}

fn start_session(gw: &Gateway, call_guid: &str, txn: &str) -> Variables {
    let base = format!("http://{}", gw.addr);
    let engine = InteractionRunner::new(Duration::from_secs(10), 0);
    let mut vars = Variables::new();
    for (k, v) in [
        ("CallGuid", call_guid),
        ("N", "Ada Lovelace"),
        ("P", "SW1A 1AA"),
        ("A", "10 Downing St"),
        ("T", txn),
        ("M", "19.99"),
    ] {
        vars.insert(k.into(), json!(v));
    }
    gw.runtime
        .block_on(engine.run(
            &seed("seed_authorize", &[&base, DEV_CLIENT.0, DEV_CLIENT.1]),
            &mut vars,
        ))
        .unwrap();
    gw.runtime
        .block_on(engine.run(
            &seed(
                "seed_selfservicesession",
                &[&base, "dev-account", "N", "P", "A", "T", "M"],
            ),
            &mut vars,
        ))
        .unwrap();
    assert_eq!(vars["GlobalPCIResponseCode"], 200);
    vars
}

fn self_service_call_by_call_guid() {
    let gw = Gateway::start("");
    let mut vars = start_session(&gw, "ss-call-1", "SS-1");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay = relay_call(&gw, "ss-call-1", &sock);
    let mut caller = Caller::new(sock, relay);
    pay_by_phone(&mut caller);
    poll_status(&gw, &mut vars);
    let id = vars["GlobalPCI|SessionId"].as_str().unwrap();
    let s = gw.state.sessions.get_any(id).unwrap();
    assert_eq!(s.result.masked_pan.as_deref(), Some("************4242"));
    let charges = gw.state.sandbox.charges_made();
    assert!(charges.iter().any(|c| c.2 == id && c.1 == 1999));
}

fn self_service_call_by_keyed_link_id() {
    let gw = Gateway::start("");
    let mut vars = start_session(&gw, "ss-call-unbridged", "SS-2");
    let link_id = vars["PCIPal|DtmfLinkId"].as_str().unwrap().to_string();
    // The IVR bridged to the fallback number: the call carries another CallGuid.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay = relay_call(&gw, "fallback-leg-77", &sock);
    let mut caller = Caller::new(sock, relay);
    std::thread::sleep(Duration::from_millis(200));
    // A wrong id first (a typo: the check digit catches it): told it is not valid; then the
    // right one.
    let mut typo = link_id.clone().into_bytes();
    typo[2] = b'0' + (typo[2] - b'0' + 1) % 10;
    caller.key(std::str::from_utf8(&typo).unwrap(), 7);
    assert_eq!(caller.next_prompt(), "invalid_entry");
    caller.key(&link_id, 8);
    pay_by_phone(&mut caller);
    poll_status(&gw, &mut vars);
}

/// Prompts, barge-in and capture on each IO engine (the call driver is shared; how its time
/// is kept is not).
macro_rules! on_engine {
    ($module:ident, $engine:literal) => {
        mod $module {
            #[test]
            fn self_service_call_by_call_guid() {
                super::common::gateway::with_engine($engine, super::self_service_call_by_call_guid);
            }

            #[test]
            fn self_service_call_by_keyed_link_id() {
                super::common::gateway::with_engine(
                    $engine,
                    super::self_service_call_by_keyed_link_id,
                );
            }
        }
    };
}

on_engine!(io_uring_engine, "io_uring");
on_engine!(tokio_engine, "tokio");
