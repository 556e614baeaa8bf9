//! Behind Kamailio: Debian's Kamailio (its `rtpengine` module, `rtpengine_sock` pointing at
//! tonegate's ng port) routes a SIP call between two sipp instances — a caller keying a card,
//! an agent whose media is the test's recorder — exactly as it would drive rtpengine.
//!
//! Needs `kamailio` and `sip-tester` (sipp); `scripts/test` installs them and sets
//! `TONEGATE_REQUIRE_TOOLS=1`, without which a missing tool skips these tests loudly.

use crate::common;

use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::gateway::{get, post, Gateway};
use common::*;
use serde_json::json;
use tonegate_dsp::G711Law;

const CARD: &str = "4556737586899855#0328#123#";

/// A UDP port for Kamailio or sipp. Not a kernel-chosen one released for the tool to bind (any
/// other socket on the machine could take it in between): each comes from 28000-28999, a range no
/// other test uses (below the relay's 30000-39999, the tests' fixed relay ranges at 29000+, and
/// the kernel's ephemeral ports), claimed per test process, four apart (sipp's media takes the
/// ports above the one it is given: RTCP, video), and checked free.
fn free_port() -> u16 {
    claimed_port(28000..29000, 4)
}

/// Whether some socket has UDP `port` bound on IPv4 (read from /proc/net/udp, so probing binds
/// nothing the tool could then fail to bind).
fn udp_port_bound(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp");
    let suffix = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|local| local.ends_with(&suffix))
}

/// Waits until `what` (Kamailio, a sipp UAS) listens on UDP `port`: readiness, not a sleep.
pub(crate) fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !udp_port_bound(port) {
        assert!(
            Instant::now() < deadline,
            "{what} did not bind UDP port {port} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The tools, or `None` (skipped loudly) when they are missing.
pub(crate) fn tools() -> Option<(PathBuf, PathBuf)> {
    let k = tool("kamailio").or_else(|| {
        let p = PathBuf::from("/usr/sbin/kamailio");
        p.is_file().then_some(p)
    })?;
    let s = tool("sipp")?;
    Some((k, s))
}

pub(crate) fn modules_dir() -> PathBuf {
    for d in std::fs::read_dir("/usr/lib").unwrap().flatten() {
        let m = d.path().join("kamailio/modules");
        if m.join("rtpengine.so").is_file() {
            return m;
        }
    }
    let m = PathBuf::from("/usr/lib/kamailio/modules");
    assert!(
        m.join("rtpengine.so").is_file(),
        "Kamailio's rtpengine.so not found"
    );
    m
}

/// A process the test started in a process group of its own, ended (the group, by the
/// child's id: Kamailio forks workers) when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        // SAFETY: signals the process group this test created for its child.
        unsafe { libc::kill(-pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; whatever is left of the group.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Kamailio on `sip`, driving the ng relays in `socks` (`udp:127.0.0.1:P=1 …`), forwarding
/// INVITEs to the agent on `uas`. The routing is the ng lab's, with `block_dtmf()` on the 200
/// and `unblock_dtmf()` on an in-dialog INFO (answered 200 or 409, so sipp can check it).
fn kamailio(bin: &Path, dir: &Path, sip: u16, socks: &str, uas: u16) -> (Proc, PathBuf) {
    let cfg = format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
listen=udp:127.0.0.1:{sip}
mpath="{modules}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "rtpengine.so"
modparam("rtpengine", "rtpengine_sock", "{socks}")
modparam("rtpengine", "rtpengine_tout_ms", 500)
modparam("rtpengine", "rtpengine_retr", 2)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{
            if (is_method("BYE|CANCEL")) rtpengine_manage();
            else if (is_method("INFO")) {{
                if (unblock_dtmf()) {{ sl_send_reply("200", "Unblocked"); }}
                else {{ xlog("L_NOTICE", "TONEGATE unblock refused\n"); sl_send_reply("409", "Masking stays on"); }}
                exit;
            }}
            else if (has_body("application/sdp")) rtpengine_manage("trust-address replace-origin");
            t_relay(); exit;
        }}
        if (is_method("ACK")) {{ if (t_check_trans()) t_relay(); exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ rtpengine_manage(); t_relay(); }} exit; }}
    t_check_trans();
    record_route();
    if (is_method("INVITE") && has_body("application/sdp")) {{
        if (!rtpengine_manage("trust-address replace-origin replace-session-connection ICE=remove label=caller DTMF-security=silence")) {{
            xlog("L_ERR", "TONEGATE offer refused\n");
            sl_send_reply("488", "Not Acceptable Here");
            exit;
        }}
    }}
    $du = "sip:127.0.0.1:{uas}";
    t_on_reply("MANAGE_REPLY");
    t_on_failure("MANAGE_FAILURE");
    if (!t_relay()) sl_reply_error();
    exit;
}}
onreply_route[MANAGE_REPLY] {{
    if (has_body("application/sdp")) {{
        rtpengine_manage("trust-address replace-origin replace-session-connection ICE=remove label=callee");
        if (status == "200") {{
            block_dtmf();
        }}
    }}
}}
failure_route[MANAGE_FAILURE] {{
    rtpengine_manage();
}}
"#,
        modules = modules_dir().display()
    );
    let path = dir.join(format!("kamailio-{sip}.cfg"));
    std::fs::write(&path, cfg).unwrap();
    let log = dir.join(format!("kamailio-{sip}.log"));
    let child = Command::new(bin)
        .args([
            "-f",
            path.to_str().unwrap(),
            "-D",
            "-E",
            "-w",
            dir.to_str().unwrap(),
        ])
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting kamailio");
    // Kamailio listens within a second; its first ng ping reaches tonegate then.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("INFO")
    {
        assert!(
            Instant::now() < deadline,
            "kamailio did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_listening(sip, "kamailio");
    (Proc(child), log)
}

/// The caller: INVITE with PCMU (and telephone-event if `events`), a fixed Call-ID, then either
/// sipp's own `rtp_stream` of `ulaw` or a pause while the test streams, an optional INFO
/// (expecting `info_code`), BYE. `srtp` offers RTP/SAVP instead and expects 488.
struct Caller<'a> {
    call_id: &'a str,
    events: bool,
    ulaw: Option<&'a Path>,
    pause_ms: u32,
    info_code: Option<u16>,
    srtp: bool,
}

fn uac_scenario(c: &Caller) -> String {
    let codecs = if c.events { "0 101" } else { "0" };
    let proto = if c.srtp { "RTP/SAVP" } else { "RTP/AVP" };
    let crypto = if c.srtp {
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\n"
    } else {
        ""
    };
    let events = if c.events {
        "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\n"
    } else {
        ""
    };
    let invite = format!(
        r#"  <send retrans="500"><![CDATA[
INVITE sip:agent@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "caller" <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:agent@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:caller@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=caller 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[local_ip_type] [media_ip]
t=0 0
m=audio [media_port] {proto} {codecs}
a=rtpmap:0 PCMU/8000
{events}{crypto}a=sendrecv
]]></send>
  <recv response="100" optional="true"/>
"#,
    );
    if c.srtp {
        return format!(
            r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="srtp caller">
{invite}  <recv response="488"/>
  <send><![CDATA[
ACK sip:agent@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "caller" <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:agent@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
</scenario>
"#
        );
    }
    let media = match c.ulaw {
        Some(f) => format!(
            "  <nop><action><exec rtp_stream=\"{},1,0\"/></action></nop>\n",
            f.display()
        ),
        None => String::new(),
    };
    let info = match c.info_code {
        Some(code) => format!(
            r#"  <send retrans="500"><![CDATA[
INFO [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: "caller" <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:agent@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 INFO
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="{code}"/>
"#
        ),
        None => String::new(),
    };
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="caller keying a card">
{invite}  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: "caller" <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:agent@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
{media}  <pause milliseconds="{pause}"/>
{info}  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: "caller" <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:agent@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 3 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" crlf="true"/>
</scenario>
"#,
        pause = c.pause_ms
    )
}

/// The agent: 183 with SDP, then 200 with the same SDP (two ng answers), media at `rec`.
fn uas_scenario(rec: u16, events: bool) -> String {
    let codecs = if events { "0 101" } else { "0" };
    let sdp = format!(
        "v=0\no=agent 1 1 IN IP[local_ip_type] [local_ip]\ns=-\nc=IN IP[local_ip_type] [media_ip]\nt=0 0\nm=audio {rec} RTP/AVP {codecs}\na=rtpmap:0 PCMU/8000\n{}a=sendrecv\n",
        if events { "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\n" } else { "" }
    );
    let reply = |code: &str| {
        format!(
            r#"  <send><![CDATA[
SIP/2.0 {code}
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:agent@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{sdp}]]></send>
"#
        )
    };
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="agent">
  <recv request="INVITE" crlf="true"/>
{}{}  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"#,
        reply("183 Session Progress"),
        reply("200 OK")
    )
}

/// RTP packets received at `sock` until `deadline` or 1.5 s of silence after the first.
fn record(sock: UdpSocket, until: Duration) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while start.elapsed() < until {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => got.push(buf[..n].to_vec()),
                Err(_) if !got.is_empty() => break,
                Err(_) => {}
            }
        }
        got
    })
}

fn agent_keys(packets: &[Vec<u8>]) -> String {
    let first = tonegate::media::rtp::RtpHeader::parse(&packets[0])
        .unwrap()
        .timestamp;
    let audio = agent_audio(packets, G711Law::Ulaw, first);
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("agent.wav");
    tonegate::wav::write_pcm8k(&wav, &audio).unwrap();
    assert_eq!(
        detect_keys(&wav),
        "",
        "tonegate detect heard keys on the agent leg"
    );
    multimon_keys(&wav)
}

/// Runs sipp once; `call_id` (UAC) is the Call-ID it uses.
fn sipp(bin: &Path, dir: &Path, name: &str, scenario: &str, args: &[String]) -> Child {
    let path = dir.join(format!("{name}.xml"));
    std::fs::write(&path, scenario).unwrap();
    Command::new(bin)
        .process_group(0)
        .arg("-sf")
        .arg(&path)
        .args(args)
        .args(if args.iter().any(|a| a == "-m") {
            &[][..]
        } else {
            &["-m", "1"][..]
        })
        .args(["-nostdin", "-timeout", "40s", "-timeout_error"])
        .stdout(std::fs::File::create(dir.join(format!("{name}.out"))).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting sipp")
}

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
    let (sip, uas, uac, uac_media) = (free_port(), free_port(), free_port(), free_port());
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
    let mut uas_p = Proc(sipp(
        &sipp_bin,
        dir.path(),
        "uas",
        &uas_scenario(rec_port, events),
        &[
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            uas.to_string(),
        ],
    ));
    wait_listening(uas, "the sipp UAS");
    let caller = Caller {
        call_id: &call_id,
        events,
        // With telephone-event the test itself streams audio and events on one SSRC.
        ulaw: (!events).then_some(ulaw.as_path()),
        pause_ms: audio_ms + 3000,
        info_code: None,
        srtp: false,
    };
    let mut uac_p = Proc(sipp(
        &sipp_bin,
        dir.path(),
        "uac",
        &uac_scenario(&caller),
        &[
            format!("127.0.0.1:{sip}"),
            "-cid_str".into(),
            call_id.clone(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            uac.to_string(),
            "-mp".into(),
            uac_media.to_string(),
        ],
    ));
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
    let (sip, uas, uac, uac_media) = (free_port(), free_port(), free_port(), free_port());
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
    let mut uas_p = Proc(sipp(
        &sipp_bin,
        dir.path(),
        "uas",
        &uas_scenario(rec_port, true),
        &[
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            uas.to_string(),
        ],
    ));
    wait_listening(uas, "the sipp UAS");
    let caller = Caller {
        call_id,
        events: true,
        ulaw: None,
        pause_ms: 1500,
        info_code: Some(409),
        srtp: false,
    };
    let mut uac_p = Proc(sipp(
        &sipp_bin,
        dir.path(),
        "uac",
        &uac_scenario(&caller),
        &[
            format!("127.0.0.1:{sip}"),
            "-cid_str".into(),
            call_id.into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            uac.to_string(),
            "-mp".into(),
            uac_media.to_string(),
        ],
    ));
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
    let mut uac_p = Proc(sipp(
        &sipp_bin,
        dir.path(),
        "uac-srtp",
        &uac_scenario(&srtp),
        &[
            format!("127.0.0.1:{sip}"),
            "-cid_str".into(),
            srtp.call_id.into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            free_port().to_string(),
            "-mp".into(),
            free_port().to_string(),
        ],
    ));
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
    let mut uas_p = Proc(sipp(
        &sipp_bin,
        dir.path(),
        "uas-many",
        &uas_scenario(rec_port, false),
        &[
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            uas.to_string(),
            "-m".into(),
            CALLS.to_string(),
        ],
    ));
    wait_listening(uas, "the sipp UAS");
    let many = Caller {
        call_id: "",
        events: false,
        ulaw: None,
        pause_ms: 200,
        info_code: None,
        srtp: false,
    };
    let mut uac_p = Proc(sipp(
        &sipp_bin,
        dir.path(),
        "uac-many",
        &uac_scenario(&many),
        &[
            format!("127.0.0.1:{sip}"),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            free_port().to_string(),
            "-mp".into(),
            free_port().to_string(),
            "-m".into(),
            CALLS.to_string(),
            "-r".into(),
            "5".into(),
        ],
    ));
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
    let mut uas_p = Proc(sipp(
        &sipp_bin,
        dir.path(),
        "uas-one",
        &uas_scenario(rec_port, false),
        &[
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            uas.to_string(),
        ],
    ));
    wait_listening(uas, "the sipp UAS");
    let one = Caller {
        call_id: "",
        events: false,
        ulaw: Some(&ulaw),
        pause_ms: (signal.samples.len() / 8) as u32 + 1000,
        info_code: None,
        srtp: false,
    };
    let mut uac_p = Proc(sipp(
        &sipp_bin,
        dir.path(),
        "uac-one",
        &uac_scenario(&one),
        &[
            format!("127.0.0.1:{sip}"),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            free_port().to_string(),
            "-mp".into(),
            free_port().to_string(),
        ],
    ));
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
