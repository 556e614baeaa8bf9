//! A real softphone on the fallback number: Debian's baresip (headless: no sound card, a WAV
//! of silence as its microphone, commands over its `cons` UDP console) calls tonegate's SIP
//! listener as a caller transferred by the IVR would, and keys the card as RFC 4733 events
//! (`/sndcode`); the session completes and tonegate hangs up.
//!
//! Needs `baresip` (Debian's baresip-core, installed by `scripts/test`); a missing baresip skips
//! it loudly (and fails under `TONEGATE_REQUIRE_TOOLS`).

use crate::common;
use crate::sip::{
    free_port, relay_calls_left, session_state, sip_gateway, start_session, wait_session,
};

use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// baresip in a process group of its own, ended when dropped; its console and its log.
struct Baresip {
    child: Child,
    console: u16,
    log: PathBuf,
}

impl Baresip {
    /// baresip with its configuration in `dir`, dialling `uri` at once.
    fn dial(bin: &Path, dir: &Path, uri: &str) -> Baresip {
        // A block of four for SIP (UDP and TCP), the SIP-over-TLS listener baresip opens on
        // the next port of its own accord, and the console; another for RTP and RTCP.
        let sip = free_port();
        let console = sip + 2;
        let rtp = free_port();
        let silence = dir.join("silence.wav");
        write_silence(&silence);
        let config = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{sip}\naudio_player aubridge,nil\naudio_source aufile,{}\naudio_alert aubridge,nil\nmodule_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\nmodule aubridge.so\nmodule cons.so\nmodule_app account.so\nmodule_app menu.so\ncons_listen 127.0.0.1:{console}\nrtp_ports {}-{}\n",
            silence.display(),
            rtp,
            rtp + 1
        );
        std::fs::write(dir.join("config"), config).unwrap();
        // PCMU only; keys as RTP events (RFC 4733), baresip's default.
        std::fs::write(
            dir.join("accounts"),
            "<sip:caller@127.0.0.1>;regint=0;audio_codecs=PCMU;dtmfmode=rtpevent\n",
        )
        .unwrap();
        let log = dir.join("baresip.log");
        // Line-buffered, so what it prints can be waited for while it runs.
        let child = Command::new("stdbuf")
            .arg("-oL")
            .arg(bin)
            .arg("-f")
            .arg(dir)
            // The loopback address, not the machine's first interface, in its SDP.
            .args(["-4", "-n", "127.0.0.1", "-e"])
            .arg(format!("/dial {uri}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting baresip");
        Baresip {
            child,
            console,
            log,
        }
    }

    /// Keys `digits` as RTP events in the call (the console's `/sndcode`).
    fn keys(&self, digits: &str) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(
            format!("/sndcode {digits}\n").as_bytes(),
            ("127.0.0.1", self.console),
        )
        .unwrap();
    }

    /// What baresip has printed (its status line's carriage returns as newlines).
    fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).replace('\r', "\n")
    }

    /// Waits for `what` in baresip's output.
    fn wait_for(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.output().contains(what) {
            assert!(
                Instant::now() < deadline,
                "baresip never printed {what:?}: {}",
                tail(&self.output())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        // The process group this test created for its child (stdbuf and baresip).
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// The last lines of baresip's output without its once-a-tick status lines.
fn tail(out: &str) -> String {
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("audio="))
        .collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Five minutes of 8 kHz silence: baresip's microphone (it hangs up when the file ends).
fn write_silence(path: &Path) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for _ in 0..8000 * 300 {
        w.write_sample(0i16).unwrap();
    }
    w.finalize().unwrap();
}

/// The IVR starts a self-service session and transfers the caller to the fallback number
/// with the session's link id in the Request-URI; the caller (baresip) keys the card as RFC
/// 4733 events; the payment completes and tonegate sends the BYE baresip reports.
#[test]
fn baresip_calls_the_fallback_number_keys_the_card_and_is_hung_up_on() {
    let Some(bin) = common::tool("baresip") else {
        return;
    };
    let (gw, sip) = sip_gateway("", "");
    let dir = tempfile::tempdir().unwrap();
    let (session, link_id, number) = start_session(&gw, "ivr-call-baresip");
    let phone = Baresip::dial(
        &bin,
        dir.path(),
        &format!("sip:{number}@127.0.0.1:{sip};tonegate-link-id={link_id}"),
    );
    phone.wait_for("Call established");
    wait_session(&gw, &session, "Capturing");
    // Field by field, each once the prompt before it has played (the one relay call is this).
    let relay = &gw.state.relay;
    let call = relay.list(tonegate::relay::Access::Admin("test"))[0]
        .id
        .clone();
    for field in ["4242424242424242#", "1230#", "737"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while relay.is_prompting(&call) != Some(false) {
            assert!(
                Instant::now() < deadline,
                "the prompt never ended: {}",
                tail(&phone.output())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        phone.keys(field);
        // The next prompt starts once the field is taken (or the call is over, after the last).
        let deadline = Instant::now() + Duration::from_secs(30);
        while relay.is_prompting(&call) == Some(false) {
            assert!(
                Instant::now() < deadline,
                "no prompt after {field}: {}",
                tail(&phone.output())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(
        session_state(&gw, &session, true),
        "Completed",
        "{:?}\n{:?}\n{:?}",
        gw.state.sessions.get_any(&session),
        relay.get(&call, tonegate::relay::Access::Admin("test")),
        gw.state.sessions.store().relay_audit(None, 20),
    );
    // tonegate's BYE, as baresip saw it.
    phone.wait_for("terminated");
    assert_eq!(relay_calls_left(&gw), 0);
}
