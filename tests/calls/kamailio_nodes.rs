//! The cluster calls through Kamailio: three `tonegate serve` nodes (A, B, C) on one
//! PostgreSQL, Kamailio with B and C in one rtpengine set, a sipp caller keying in-band at
//! -12 dBm0 and a sipp agent whose media is the test's recorder. The session is created on A;
//! the call lands on whichever node of the set Kamailio picks (read from the nodes' call
//! listings); the agent's screen, in Chromium, is on the node that does not hold the call.
//!
//! Needs Kamailio, sipp, PostgreSQL and (for the agent's screen) Chromium; each missing one
//! skips loudly, or fails under `TONEGATE_REQUIRE_TOOLS=1`.

use crate::common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::{send, Cluster};
use common::gateway::http;
use common::kamailio::*;
use common::multimon_keys;
use common::serve::dev_token;
use common::webdriver::{self, Browser};
use serde_json::Value;
use tonegate_dsp::generator::{add_noise_below, human_keying_at};
use tonegate_dsp::G711Law;

const A: usize = 0;
/// The nodes in Kamailio's rtpengine set.
const SET: [usize; 2] = [1, 2];
/// The level of every key the caller presses (the low tone; the high one within ±3 dB).
const KEY_DBM0: f32 = -12.0;

/// The cluster, and Kamailio in front of B and C routing INVITEs to the sipp agent.
struct Rig {
    cl: Cluster,
    sipp: PathBuf,
    dir: tempfile::TempDir,
    sip: u16,
    uas: u16,
    log: PathBuf,
    _kamailio: Proc,
}

/// A call through Kamailio under way: the two sipp ends and the agent leg's recording.
struct Call {
    uac: Proc,
    uas: Proc,
    heard: JoinHandle<Vec<Vec<u8>>>,
    /// Audio packets the caller sends.
    sent: usize,
}

impl Rig {
    /// `None` (skipped, loudly) when Kamailio, sipp or PostgreSQL is missing.
    fn start() -> Option<Rig> {
        let (kam, sipp) = tools()?;
        let ng = [0, free_port(), free_port()];
        let cl = Cluster::start_with(|i| {
            if SET.contains(&i) {
                format!("[ng]\nlisten = \"127.0.0.1:{}\"\n", ng[i])
            } else {
                String::new()
            }
        })?;
        let dir = tempfile::tempdir().unwrap();
        let (sip, uas) = (free_port(), free_port());
        let socks = SET.map(|i| format!("udp:127.0.0.1:{}=1", ng[i])).join(" ");
        let (k, log) = kamailio(&kam, dir.path(), sip, &socks, uas);
        Some(Rig {
            cl,
            sipp,
            dir,
            sip,
            uas,
            log,
            _kamailio: k,
        })
    }

    /// The caller keys each of `parts` in turn (after its silence, ms), every key at
    /// [`KEY_DBM0`] with line noise 30 dB below; raw µ-law for sipp, and its length in ms.
    fn keying(&self, parts: &[(u32, &str)]) -> (PathBuf, u32) {
        let mut samples = Vec::new();
        for (seed, (silence_ms, keys)) in parts.iter().enumerate() {
            samples.resize(samples.len() + *silence_ms as usize * 8, 0i16);
            let signal = human_keying_at(keys, 40 + seed as u32, (KEY_DBM0, KEY_DBM0));
            samples.extend_from_slice(&signal.samples);
        }
        add_noise_below(&mut samples, KEY_DBM0, 30.0, 41);
        // The control: the decoder that must hear nothing on the agent leg hears the keys in
        // what the caller sends (some twice: it splits a long tone, so repeats are ignored).
        let wav = self.dir.path().join("keys.wav");
        tonegate::wav::write_pcm8k(&wav, &samples).unwrap();
        let mut heard = multimon_keys(&wav).into_bytes();
        let mut keyed: Vec<u8> = parts.iter().flat_map(|(_, k)| k.bytes()).collect();
        heard.dedup();
        keyed.dedup();
        assert_eq!(
            String::from_utf8(heard).unwrap(),
            String::from_utf8(keyed).unwrap(),
            "multimon-ng on the caller's audio"
        );
        let mut bytes = vec![0u8; samples.len()];
        G711Law::Ulaw.encode_into(&samples, &mut bytes);
        let path = self.dir.path().join("keys.ul");
        std::fs::write(&path, &bytes).unwrap();
        (path, (samples.len() / 8) as u32)
    }

    /// Calls through Kamailio with Call-ID `call_id`: the caller streams `ulaw` (`audio_ms`
    /// long) and hangs up `hold_ms` after it.
    fn call(&self, call_id: &str, ulaw: &Path, audio_ms: u32, hold_ms: u32) -> Call {
        let recorder = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rec_port = recorder.local_addr().unwrap().port();
        let heard = record(recorder, Duration::from_secs(60));
        let uas = sipp_agent(
            &self.sipp,
            self.dir.path(),
            "uas",
            self.uas,
            rec_port,
            false,
            1,
        );
        let caller = Caller {
            call_id,
            events: false,
            ulaw: Some(ulaw),
            pause_ms: audio_ms + hold_ms,
            info_code: None,
            srtp: false,
        };
        let uac = sipp_caller(&self.sipp, self.dir.path(), "uac", self.sip, &caller, &[]);
        Call {
            uac,
            uas,
            heard,
            sent: audio_ms as usize / 20,
        }
    }

    /// Node `on`'s relay calls (its call listing).
    fn calls(&self, on: usize) -> Vec<Value> {
        let (s, v) = send(
            http()
                .get(format!("{}/relay/v1/calls", self.cl.base(on)))
                .bearer_auth(dev_token(self.cl.base(on), "relay")),
        );
        assert_eq!(s, 200, "{v}");
        v["calls"].as_array().unwrap().clone()
    }

    /// The node of the set that took call `call_id` (read from the call listings; the other
    /// node and A list no such call).
    fn holder(&self, call_id: &str) -> usize {
        let lists = |on| self.calls(on).iter().any(|c| c["call_guid"] == call_id);
        let deadline = Instant::now() + Duration::from_secs(15);
        let on = loop {
            if let Some(&on) = SET.iter().find(|&&on| lists(on)) {
                break on;
            }
            assert!(
                Instant::now() < deadline,
                "no node lists call {call_id}; kamailio said:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!lists(other(on)) && !lists(A), "one node holds the call");
        eprintln!(
            "call {call_id}: on node {on} (0 = A), the other node of the set {}",
            other(on)
        );
        on
    }

    /// Waits for both ends to hang up: the agent leg's packets. Also checks that the BYE
    /// ended the call on its node.
    fn finish(&self, call: Call, on: usize) -> Vec<Vec<u8>> {
        let Call {
            mut uac,
            mut uas,
            heard,
            sent,
        } = call;
        let ok = uac.0.wait().unwrap().success();
        let _ = uas.0.wait();
        assert!(
            ok,
            "the call did not complete; the caller's sipp said:\n{}\nkamailio said:\n{}",
            std::fs::read_to_string(self.dir.path().join("uac.out")).unwrap_or_default(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        let heard = heard.join().unwrap();
        common::assert_agent_heard_audio(&heard, sent);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.calls(on).is_empty() {
            assert!(Instant::now() < deadline, "BYE -> delete: the call stayed");
            std::thread::sleep(Duration::from_millis(50));
        }
        heard
    }

    /// Session `id` paid: A's status poll (the IVR's) reads Completed with the masked PAN;
    /// then the call ends, its agent leg carried audio in which multimon-ng hears no key;
    /// exactly one result webhook says Completed; the database holds no card data. A's
    /// status.
    fn completed(&self, call: Call, on: usize, id: &str) -> Value {
        let done = self.cl.wait_state(A, id, "Completed");
        assert!(
            done["maskedPan"]
                .as_str()
                .is_some_and(|p| p.ends_with("4242")),
            "{done}"
        );
        let heard = self.finish(call, on);
        assert_eq!(
            agent_keys(&heard),
            "",
            "multimon-ng heard keys on the agent leg"
        );
        self.cl.nodes[A].wait_webhooks_delivered(id);
        let hooks = self.cl.hook.seen.lock().unwrap().clone();
        let mine: Vec<_> = hooks.iter().filter(|(_, v)| v["sessionId"] == id).collect();
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(mine[0].1["sessionState"], "Completed", "{mine:?}");
        common::assert_no_card_digits(
            "the database",
            common::postgres::dump(&self.cl.url).as_bytes(),
        );
        done
    }
}

/// The node of the set that is not `on`.
fn other(on: usize) -> usize {
    SET[0] + SET[1] - on
}

/// The agent screen's session state.
const PAGE_STATE: &str = "return document.getElementById('state').dataset.state";

/// The first cluster call: an agent session created on A for the call's Call-ID; the
/// call through Kamailio lands on B or C; the agent's screen, opened in Chromium on the other
/// of the two, shows the PAN masked while the caller is still keying (live, across nodes),
/// then the whole card masked, and submits; the node holding the call pays the sandbox PSP,
/// which approves; A's status poll reads Completed; one webhook; multimon-ng hears no key on
/// the agent leg; no card data in the database.
#[test]
fn a_call_through_kamailio_on_the_set_session_on_a_screen_on_the_other_node() {
    let Some(rig) = Rig::start() else {
        return;
    };
    if !webdriver::available() {
        return;
    }
    let call_id = "cluster-agent@127.0.0.1";
    let (id, code) = rig.cl.agent_session(A, call_id);
    // The PAN, then a pause long enough to see it masked on the screen before the rest.
    let (ulaw, audio_ms) = rig.keying(&[(1000, "4242424242424242#"), (4000, "1230#737")]);
    // The browser first: the screen opens as soon as the call's node is known.
    let b = Browser::start();
    // The call stays up after the last key for the agent to submit.
    let call = rig.call(call_id, &ulaw, audio_ms, 12_000);
    let on = rig.holder(call_id);
    let screen = other(on);
    rig.cl.wait_state(A, &id, "Capturing");
    b.goto(&format!(
        "{}/pay/agent/{id}?code={code}",
        rig.cl.base(screen)
    ));
    let pan = b.wait_text("#f-pan .mask", 30, |t| t.ends_with("4242"));
    assert_eq!(pan.chars().count(), 16, "{pan}");
    assert_eq!(b.text("#f-pan .status"), "Complete");
    // Live: the PAN shows while the caller has not keyed the expiry yet.
    assert_eq!(b.text("#f-expiry .mask"), "", "the screen lagged the call");
    assert_eq!(b.script(PAGE_STATE), "Capturing");
    b.wait_script(PAGE_STATE, 30, |s| s == "ReadyToSubmit");
    assert_eq!(b.text("#f-expiry .mask"), "••••");
    assert_eq!(b.text("#f-cvv .mask"), "•••");
    common::assert_no_card_digits("the agent's screen", b.source().as_bytes());
    b.click("#submit");
    let result = b.wait_text("#result", 20, |t| t.starts_with("Payment approved"));
    common::assert_no_card_digits("the agent's screen", b.source().as_bytes());

    let done = rig.completed(call, on, &id);
    assert_eq!(
        result,
        format!(
            "Payment approved. PSP reference {}.",
            done["pspTransactionId"].as_str().unwrap()
        )
    );
}

/// The second cluster call: a self-service session created on A for the IVR's own
/// call; the caller reaches the set through Kamailio under a Call-ID no session names, keys the
/// session's `dtmfLinkId` and then the card; the node holding the call links it to A's session,
/// captures and pays; A's status poll (and the other node's) reads Completed; one webhook;
/// multimon-ng hears no key (link id or card) on the agent leg; no card data in the database.
#[test]
fn a_link_id_keyed_through_kamailio_links_a_session_created_on_a() {
    let Some(rig) = Rig::start() else {
        return;
    };
    let (id, link_id) = rig.cl.self_service_session(A, "ivr-leg-of-a");
    let call_id = "cluster-transferred@127.0.0.1";
    let (ulaw, audio_ms) = rig.keying(&[(1500, &link_id), (2500, "4242424242424242#1230#737")]);
    let call = rig.call(call_id, &ulaw, audio_ms, 5000);
    let on = rig.holder(call_id);
    rig.completed(call, on, &id);
    assert_eq!(rig.cl.status(other(on), &id)["sessionState"], "Completed");
}
