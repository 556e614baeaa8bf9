//! The fallback number: sipp plays the IVR's transfer (`INVITE sip:<dtmfFallbackNumber>@…`) to
//! tonegate's `[sip] listen`; the test is the caller's phone (its RTP socket keys the link id and
//! the card in-band and hears the prompts) and the IVR's backend (`tonegate interact` runs the
//! shipped definitions: authorize, selfservicesession, sessionstatus).
//!
//! Needs `sipp` (Debian's sip-tester); `scripts/test` installs it and sets
//! `TONEGATE_REQUIRE_TOOLS=1`, without which a missing sipp skips these tests loudly.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gateway::{get, Gateway};
use common::*;
use serde_json::Value;
use tonegate::media::rtp::RtpHeader;
use tonegate_dsp::G711Law;

/// A UDP port for sipp or tonegate's SIP listener (see `kamailio.rs`: the same claimed range).
pub(crate) fn free_port() -> u16 {
    claimed_port(28000..29000, 4)
}

/// A gateway with its SIP listener on a free port; `sip` adds keys to `[sip]`.
pub(crate) fn sip_gateway(sip: &str, extra: &str) -> (Gateway, u16) {
    let port = free_port();
    let gw = Gateway::start(&format!(
        "[sip]\nlisten = \"127.0.0.1:{port}\"\n{sip}\n{extra}"
    ));
    // The listeners come up as the gateway starts serving, after `start` returns.
    crate::common::kamailio::wait_listening(port, "tonegate's SIP listener");
    (gw, port)
}

/// A sipp run in a process group of its own, ended when dropped.
struct Sipp(Child, PathBuf);

impl Sipp {
    /// Whether its scenario ran to the end (waiting for it); its output when not.
    fn finished(&mut self) -> Result<(), String> {
        match self.0.wait() {
            Ok(s) if s.success() => Ok(()),
            _ => Err(std::fs::read_to_string(&self.1).unwrap_or_default()),
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        // SAFETY: signals the process group this test created for its child.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// `/metrics` as text.
fn metrics(gw: &Gateway) -> String {
    common::gateway::http()
        .get(gw.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// How the caller's side of a scenario ends.
#[derive(Clone, Copy, PartialEq)]
enum End {
    /// Waits for tonegate's BYE and answers it.
    AwaitBye,
    /// Waits for the test's trigger (an INFO the test sends it), then hangs up itself.
    ByeOnTrigger,
    /// Cancels after the 180.
    Cancel,
    /// Answers tonegate's session refresh (an UPDATE saying it refreshes), then hangs up.
    AnswerRefresh,
    /// Takes tonegate's REFER back to `REFER_TO` (202, then a NOTIFY reporting 200) and
    /// waits for its BYE.
    AcceptRefer,
    /// Declines tonegate's REFER (603) and waits for its BYE.
    DeclineRefer,
}

/// Where `after_payment = "refer"` sends the caller back to in these tests.
const REFER_TO: &str = "sip:ivr-return@127.0.0.1";

/// The IVR's transfer: an INVITE to `number` with PCMU and telephone-event, media at `media`
/// (the test's socket), `headers` added.
fn scenario(number: &str, media: u16, headers: &str, end: End) -> String {
    let invite = format!(
        r#"  <send retrans="500"><![CDATA[
INVITE sip:{number}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "ivr" <sip:ivr@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{number}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:ivr@[local_ip]:[local_port]>
Max-Forwards: 70
Supported: timer
{headers}Content-Type: application/sdp
Content-Length: [len]

v=0
o=ivr 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {media} RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
]]></send>
  <recv response="100" optional="true"/>
"#
    );
    let dialog = |method: &str, cseq: u32| {
        format!(
            r#"  <send><![CDATA[
{method} [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: "ivr" <sip:ivr@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{number}@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} {method}
Max-Forwards: 70
Content-Length: 0

]]></send>
"#
        )
    };
    let body = match end {
        End::Cancel => format!(
            r#"  <recv response="180"/>
  <send><![CDATA[
CANCEL sip:{number}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-3]
From: "ivr" <sip:ivr@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{number}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 CANCEL
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
  <recv response="487"/>
  <send><![CDATA[
ACK sip:{number}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-6]
From: "ivr" <sip:ivr@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{number}@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
"#
        ),
        End::AnswerRefresh => format!(
            r#"  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
{}  <recv request="UPDATE" timeout="90000">
    <action>
      <ereg regexp="90;refresher=uas" search_in="hdr" header="Session-Expires:" check_it="true" assign_to="se"/>
    </action>
  </recv>
  <Reference variables="se"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Session-Expires: 90;refresher=uas
Require: timer
Content-Length: 0

]]></send>
{}  <recv response="200"/>
"#,
            dialog("ACK", 1),
            dialog("BYE", 2)
        ),
        End::AcceptRefer | End::DeclineRefer => {
            let (code, notify) = if end == End::AcceptRefer {
                (
                    "202 Accepted",
                    format!(
                        r#"  <send><![CDATA[
NOTIFY [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: "ivr" <sip:ivr@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{number}@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 NOTIFY
Max-Forwards: 70
Contact: <sip:ivr@[local_ip]:[local_port]>
Event: refer
Subscription-State: terminated;reason=noresource
Content-Type: message/sipfrag;version=2.0
Content-Length: [len]

SIP/2.0 200 OK
]]></send>
  <recv response="200"/>
"#
                    ),
                )
            } else {
                ("603 Declined", String::new())
            };
            format!(
                r#"  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
{ack}  <recv request="REFER" timeout="90000">
    <action>
      <ereg regexp="{}" search_in="hdr" header="Refer-To:" check_it="true" assign_to="to"/>
    </action>
  </recv>
  <Reference variables="to"/>
  <send><![CDATA[
SIP/2.0 {code}
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:ivr@[local_ip]:[local_port]>
Content-Length: 0

]]></send>
{notify}  <recv request="BYE" timeout="30000"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
"#,
                REFER_TO.replace('.', "\\."),
                ack = dialog("ACK", 1)
            )
        }
        End::AwaitBye | End::ByeOnTrigger => {
            let mut b = format!(
                "  <recv response=\"180\" optional=\"true\"/>\n  <recv response=\"200\" rrs=\"true\"/>\n{}",
                dialog("ACK", 1)
            );
            if end == End::AwaitBye {
                b.push_str(
                    r#"  <recv request="BYE" timeout="90000"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
"#,
                );
            } else {
                b.push_str("  <recv request=\"INFO\" timeout=\"90000\"/>\n");
                b.push_str(&dialog("BYE", 2));
                b.push_str("  <recv response=\"200\"/>\n");
            }
            b
        }
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"ivr transfer\">\n{invite}{body}</scenario>\n"
    )
}

/// sipp as the IVR, calling tonegate's SIP port from UDP `local` with Call-ID `call_id`.
fn sipp(bin: &Path, dir: &Path, scenario: &str, sip: u16, local: u16, call_id: &str) -> Sipp {
    let path = dir.join(format!("uac-{local}.xml"));
    let out = dir.join(format!("uac-{local}.out"));
    std::fs::write(&path, scenario).unwrap();
    Sipp(
        Command::new(bin)
            .process_group(0)
            .arg(format!("127.0.0.1:{sip}"))
            .arg("-sf")
            .arg(&path)
            .args(["-m", "1", "-i", "127.0.0.1", "-p", &local.to_string()])
            .args(["-cid_str", call_id])
            .args(["-nostdin", "-timeout", "120s", "-timeout_error"])
            .args(["-trace_err", "-error_file"])
            .arg(dir.join(format!("uac-{local}.err")))
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting sipp"),
        out,
    )
}

/// The caller's phone: an RTP socket that keys in-band and records what it hears.
struct Phone {
    sock: UdpSocket,
    heard: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Phone {
    fn new() -> Phone {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = sock.try_clone().unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            // Until the test (the only other holder) is done.
            while Arc::strong_count(&h) > 1 {
                if let Ok((n, _)) = rx.recv_from(&mut buf) {
                    h.lock().unwrap().push(buf[..n].to_vec());
                }
            }
        });
        Phone { sock, heard }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    /// Prompts started so far (each clip starts with the RTP marker bit).
    fn prompts(&self) -> usize {
        self.heard
            .lock()
            .unwrap()
            .iter()
            .filter(|p| RtpHeader::parse(p).is_ok_and(|h| h.marker))
            .count()
    }

    /// Waits until `n` prompts have started.
    fn wait_prompts(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.prompts() < n {
            assert!(
                Instant::now() < deadline,
                "the caller heard {} prompts, not {n}",
                self.prompts()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Packets heard in each prompt, in order (a prompt runs from its marker to the next).
    fn clip_lengths(&self) -> Vec<usize> {
        let mut clips: Vec<usize> = Vec::new();
        for p in self.heard.lock().unwrap().iter() {
            let Ok(h) = RtpHeader::parse(p) else { continue };
            if h.marker {
                clips.push(0);
            }
            if let Some(n) = clips.last_mut() {
                *n += 1;
            }
        }
        clips
    }

    /// The loudest sample the caller heard.
    fn loudest(&self) -> i32 {
        self.heard
            .lock()
            .unwrap()
            .iter()
            .filter_map(|p| {
                RtpHeader::parse(p)
                    .ok()
                    .map(|h| p[h.payload_start..h.payload_end].to_vec())
            })
            .flatten()
            .map(|b| i32::from(G711Law::Ulaw.decode(b)).abs())
            .max()
            .unwrap_or(0)
    }
}

/// Runs `tonegate interact` on the shipped definitions `defs` against `gw`, with the example
/// variables and `vars` over them; the variables it prints.
fn interact(gw: &Gateway, defs: &[&str], vars: &[(&str, &str)], poll: bool) -> Value {
    let example = root().join("config/interactions/vars.example.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(example).unwrap()).unwrap();
    v["BaseUrl"] = format!("http://{}", gw.addr).into();
    for (k, val) in vars {
        v[*k] = (*val).into();
    }
    let file = gw.dir.path().join("vars.json");
    std::fs::write(&file, v.to_string()).unwrap();
    let paths: Vec<String> = defs
        .iter()
        .map(|d| format!("config/interactions/{d}.xml"))
        .collect();
    let mut args: Vec<&str> = vec!["interact"];
    args.extend(paths.iter().map(String::as_str));
    args.extend(["--vars-file", file.to_str().unwrap()]);
    if poll {
        args.push("--poll");
    }
    let out = tonegate(&args);
    assert!(
        out.status.success(),
        "interact failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Starts a self-service session for IVR call `call_guid`: its (session id, link id,
/// fallback number).
pub(crate) fn start_session(gw: &Gateway, call_guid: &str) -> (String, String, String) {
    let v = interact(
        gw,
        &["authorize", "selfservicesession"],
        &[
            ("CallGuid", call_guid),
            ("MerchantTxnRef", call_guid),
            ("Amount", "19.99"),
        ],
        false,
    );
    assert_eq!(v["GlobalPCIResponseCode"], 200, "{v}");
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    (
        s("GlobalPCI|SessionId"),
        s("PCIPal|DtmfLinkId"),
        s("PCIPal|DtmfFallbackNumber"),
    )
}

/// The session's state as the IVR reads it (`poll`: until it is terminal).
pub(crate) fn session_state(gw: &Gateway, id: &str, poll: bool) -> String {
    let v = interact(
        gw,
        &["authorize", "sessionstatus"],
        &[("GlobalPCI|SessionId", id)],
        poll,
    );
    v["GlobalPCI|SessionState"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The relay's caller leg for SIP call `call_id`, once the INVITE has set it up.
fn caller_leg(gw: &Gateway, call_id: &str) -> SocketAddr {
    let tok = gw.token("relay");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, list) = get(gw, &tok, "/relay/v1/calls");
        if let Some(c) = list["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["call_guid"] == call_id)
        {
            return c["caller"]["local"].as_str().unwrap().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no relay call for {call_id}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Relay calls still up, after waiting (bounded) for them to go.
pub(crate) fn relay_calls_left(gw: &Gateway) -> usize {
    let tok = gw.token("relay");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = get(gw, &tok, "/relay/v1/calls");
        let n = list["calls"].as_array().unwrap().len();
        if n == 0 || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sipp_bin() -> Option<PathBuf> {
    tool("sipp")
}

/// The seed's self-service call plan through the fallback number: the IVR starts the session,
/// transfers the caller (sipp), the caller keys the link id and the card (in-band tones, or RFC
/// 4733 events only), hears the prompts, tonegate pays and hangs up, the IVR reads Completed.
fn transfer_pays_and_tonegate_hangs_up(events: bool) {
    let Some(bin) = sipp_bin() else { return };
    let (gw, sip) = sip_gateway("", "");
    let dir = tempfile::tempdir().unwrap();
    let (session, link_id, number) = start_session(&gw, "ivr-call-1");
    assert_eq!(number, "+442079460000");
    let phone = Phone::new();
    let call_id = "transfer-1@127.0.0.1";
    let mut ivr = sipp(
        &bin,
        dir.path(),
        &scenario(&number, phone.port(), "", End::AwaitBye),
        sip,
        free_port(),
        call_id,
    );
    let leg = caller_leg(&gw, call_id);
    let mut keys = KeyingLeg::new(phone.sock.try_clone().unwrap(), leg);
    keys.events = events.then_some(101);
    // The caller keys the link id the IVR read out, then the card, field by field as the
    // prompts ask.
    keys.key(&link_id, 21);
    phone.wait_prompts(1);
    keys.key("4242424242424242#", 22);
    phone.wait_prompts(2);
    keys.key("1230#", 23);
    phone.wait_prompts(3);
    keys.key("737", 24);
    if let Err(out) = ivr.finished() {
        panic!("tonegate did not hang up: {out}");
    }
    // Processing, approved, goodbye: all heard before the BYE.
    assert!(phone.prompts() >= 6, "{} prompts heard", phone.prompts());
    assert!(phone.loudest() > 2000, "the prompts were silence");
    assert_eq!(session_state(&gw, &session, true), "Completed");
    assert_eq!(relay_calls_left(&gw), 0);
    let m = metrics(&gw);
    assert!(m.contains("tonegate_sip_calls_answered_total 1\n"), "{m}");
    assert!(m.contains("tonegate_sip_calls_hung_up_total 1\n"), "{m}");
}

#[test]
fn an_ivr_transfer_keyed_in_band_pays_and_tonegate_hangs_up() {
    transfer_pays_and_tonegate_hangs_up(false);
}

#[test]
fn an_ivr_transfer_keyed_as_rfc4733_events_pays_and_tonegate_hangs_up() {
    transfer_pays_and_tonegate_hangs_up(true);
}

/// 20 ms packets in prompt `name` of prompt set `set`.
fn prompt_packets(set: &str, name: &str) -> usize {
    let wav = root().join(format!("config/prompts/{set}/{name}.wav"));
    (hound::WavReader::open(wav).unwrap().duration() as usize).div_ceil(160)
}

#[test]
fn three_wrong_link_ids_are_told_and_end_the_call() {
    three_wrong_link_ids("en", "");
}

/// An account with the German prompt set hears "invalid entry" in German too.
#[test]
fn a_wrong_link_id_is_told_in_the_accounts_language() {
    let account = "[[accounts]]\nid = \"dev-account\"\npsp = \"sandbox\"\nprompts = \"de\"\ndtmf_fallback_number = \"+442079460000\"\n";
    // Told apart by length: the German clip is far longer than the test's margin.
    assert!(
        prompt_packets("de", "invalid_entry").abs_diff(prompt_packets("en", "invalid_entry")) > 6
    );
    three_wrong_link_ids("de", account);
}

/// Three wrong link ids keyed on a call to the fallback number: "invalid entry" in prompt
/// set `set` each time, then tonegate hangs up.
fn three_wrong_link_ids(set: &str, extra: &str) {
    let Some(bin) = sipp_bin() else { return };
    let (gw, sip) = sip_gateway("", extra);
    let dir = tempfile::tempdir().unwrap();
    let (session, link_id, number) = start_session(&gw, "ivr-call-2");
    let phone = Phone::new();
    let call_id = "transfer-wrong@127.0.0.1";
    let mut ivr = sipp(
        &bin,
        dir.path(),
        &scenario(&number, phone.port(), "", End::AwaitBye),
        sip,
        free_port(),
        call_id,
    );
    let mut keys = KeyingLeg::new(phone.sock.try_clone().unwrap(), caller_leg(&gw, call_id));
    for i in 0..3u8 {
        // A typo in a different place each time.
        let mut wrong = link_id.clone().into_bytes();
        let at = usize::from(i) + 1;
        wrong[at] = b'0' + (wrong[at] - b'0' + 1) % 10;
        keys.key(std::str::from_utf8(&wrong).unwrap(), 40 + u32::from(i));
        // "Invalid entry", each time.
        phone.wait_prompts(usize::from(i) + 1);
    }
    if let Err(out) = ivr.finished() {
        panic!("tonegate did not hang up after three wrong ids: {out}");
    }
    // The first "invalid entry" was heard whole (another came after it), in `set`'s voice:
    // the prompt sets' clips differ in length by far more than this margin.
    let (heard, want) = (
        phone.clip_lengths()[0],
        prompt_packets(set, "invalid_entry"),
    );
    assert!(
        heard.abs_diff(want) <= 3,
        "heard a prompt of {heard} packets, the {set} one has {want}"
    );
    assert_eq!(session_state(&gw, &session, false), "Created");
    assert_eq!(relay_calls_left(&gw), 0);
    let m = metrics(&gw);
    assert!(m.contains("tonegate_link_calls_limited_total 1\n"), "{m}");
}

#[test]
fn a_cancel_while_ringing_is_answered_487_and_sets_nothing_up() {
    let Some(bin) = sipp_bin() else { return };
    // Ringing for a minute: the CANCEL comes well within it.
    let (gw, sip) = sip_gateway("ring_ms = 60000", "");
    let dir = tempfile::tempdir().unwrap();
    let phone = Phone::new();
    let mut ivr = sipp(
        &bin,
        dir.path(),
        &scenario("+442079460000", phone.port(), "", End::Cancel),
        sip,
        free_port(),
        "transfer-cancel@127.0.0.1",
    );
    if let Err(out) = ivr.finished() {
        panic!("CANCEL was not answered 200 + 487: {out}");
    }
    assert_eq!(relay_calls_left(&gw), 0);
    let m = metrics(&gw);
    assert!(m.contains("tonegate_sip_calls_answered_total 0\n"), "{m}");
}

/// Sends the sipp caller on `uac` the INFO its scenario waits for before it hangs up.
fn trigger_hang_up(uac: u16, call_id: &str) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = s.local_addr().unwrap();
    let info = format!(
        "INFO sip:ivr@127.0.0.1:{uac} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKtrigger\r\nFrom: <sip:test@127.0.0.1>;tag=t\r\nTo: <sip:ivr@127.0.0.1:{uac}>;tag=x\r\nCall-ID: {call_id}\r\nCSeq: 9 INFO\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    s.send_to(info.as_bytes(), ("127.0.0.1", uac)).unwrap();
}

pub(crate) fn wait_session(gw: &Gateway, id: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = gw.state.sessions.get_any(id).unwrap().state;
        if now.as_str() == state {
            return;
        }
        assert!(Instant::now() < deadline, "session stayed {}", now.as_str());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_callers_bye_mid_card_wipes_it_and_the_session_can_be_retried() {
    let Some(bin) = sipp_bin() else { return };
    let (gw, sip) = sip_gateway("", "");
    let dir = tempfile::tempdir().unwrap();
    let (session, link_id, number) = start_session(&gw, "ivr-call-3");
    // The IVR passes the link id with the transfer: the call links at once.
    let header = format!("X-Tonegate-Link-Id: {link_id}\n");
    let phone = Phone::new();
    let (call_id, uac) = ("transfer-bye@127.0.0.1", free_port());
    let mut ivr = sipp(
        &bin,
        dir.path(),
        &scenario(&number, phone.port(), &header, End::ByeOnTrigger),
        sip,
        uac,
        call_id,
    );
    let mut keys = KeyingLeg::new(phone.sock.try_clone().unwrap(), caller_leg(&gw, call_id));
    // "Enter your card number" with no key pressed: linked by the header.
    phone.wait_prompts(1);
    wait_session(&gw, &session, "Capturing");
    keys.key("42424242", 51);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tonegate::card::memory::stats().in_use == 0 {
        assert!(Instant::now() < deadline, "no card digits held");
        std::thread::sleep(Duration::from_millis(20));
    }
    trigger_hang_up(uac, call_id);
    if let Err(out) = ivr.finished() {
        panic!("the caller's BYE was not answered: {out}");
    }
    // Back to waiting for a call, the half-keyed card gone from memory.
    wait_session(&gw, &session, "Created");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tonegate::card::memory::stats().in_use != 0 {
        assert!(Instant::now() < deadline, "card digits still held");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(relay_calls_left(&gw), 0);
    // The IVR transfers again: the same session captures on the new call.
    let phone = Phone::new();
    let (call_id, uac) = ("transfer-again@127.0.0.1", free_port());
    let mut again = sipp(
        &bin,
        dir.path(),
        &scenario(&number, phone.port(), &header, End::ByeOnTrigger),
        sip,
        uac,
        call_id,
    );
    phone.wait_prompts(1);
    wait_session(&gw, &session, "Capturing");
    trigger_hang_up(uac, call_id);
    if let Err(out) = again.finished() {
        panic!("{out}");
    }
}

#[test]
fn requests_from_outside_allow_get_nothing() {
    let (gw, sip) = sip_gateway("allow = [\"192.0.2.0/24\"]", "");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let options = format!(
        "OPTIONS sip:+442079460000@127.0.0.1:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKo\r\nFrom: <sip:p@127.0.0.1>;tag=1\r\nTo: <sip:+442079460000@127.0.0.1>\r\nCall-ID: ping-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        s.local_addr().unwrap()
    );
    s.send_to(options.as_bytes(), ("127.0.0.1", sip)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics(&gw).contains("tonegate_sip_dropped_foreign_source_total 1\n") {
        assert!(
            Instant::now() < deadline,
            "the datagram was not counted: {}",
            metrics(&gw)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Counted and dropped: nothing came back (the drop happens before any answer is made).
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        s.recv_from(&mut buf).is_err(),
        "a foreign peer got an answer"
    );
    // TCP too: the connection is closed unanswered.
    let mut t = std::net::TcpStream::connect(("127.0.0.1", sip)).unwrap();
    use std::io::{Read, Write};
    let _ = t.write_all(options.as_bytes());
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(
        t.read(&mut buf).unwrap_or(0),
        0,
        "a foreign peer got an answer"
    );
}

#[test]
fn bad_requests_get_clear_answers_over_udp_and_tcp() {
    let (gw, sip) = sip_gateway("", "");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let me = s.local_addr().unwrap();
    let msg = |method: &str, user: &str, call: &str, extra: &str, body: &str| {
        format!(
            "{method} sip:{user}@127.0.0.1:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call}\r\nFrom: <sip:p@127.0.0.1>;tag=1\r\nTo: <sip:{user}@127.0.0.1>\r\nCall-ID: {call}\r\nCSeq: 1 {method}\r\nContact: <sip:p@{me}>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let sdp = |proto: &str| {
        format!("v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n")
    };
    let ct = "Content-Type: application/sdp\r\n";
    let cases = [
        (msg("OPTIONS", "x", "o1", "", ""), "SIP/2.0 200 OK"),
        (
            msg("INVITE", "+15550100", "i1", ct, &sdp("RTP/AVP")),
            "SIP/2.0 404 ",
        ),
        (
            msg("INVITE", "+442079460000", "i2", ct, &sdp("RTP/SAVP")),
            "SIP/2.0 488 ",
        ),
        (msg("REGISTER", "x", "r1", "", ""), "SIP/2.0 405 "),
        (msg("FROBNICATE", "x", "f1", "", ""), "SIP/2.0 501 "),
        (
            msg("INVITE", "x", "m1", "", "").replace("CSeq: 1 INVITE", "CSeq: x"),
            "SIP/2.0 400 ",
        ),
        (
            msg(
                "OPTIONS",
                "x",
                "big",
                &format!("X-Pad: {}\r\n", "a".repeat(20_000)),
                "",
            ),
            "SIP/2.0 513 ",
        ),
    ];
    let mut buf = [0u8; 65536];
    for (m, want) in &cases {
        s.send_to(m.as_bytes(), ("127.0.0.1", sip)).unwrap();
        let (n, _) = s
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{want}: no answer: {e}"));
        let got = String::from_utf8_lossy(&buf[..n]);
        // A 100 Trying may come first for an INVITE the endpoint works on.
        assert!(got.starts_with(want), "{want}: {got}");
    }
    // The same over TCP, framed by Content-Length, two requests in one write.
    use std::io::{Read, Write};
    let mut t = std::net::TcpStream::connect(("127.0.0.1", sip)).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let two = format!("{}{}", cases[0].0, cases[3].0).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    t.write_all(two.as_bytes()).unwrap();
    let mut got = String::new();
    while got.matches("SIP/2.0 ").count() < 2 {
        let n = t.read(&mut buf).expect("no answer over TCP");
        assert!(n > 0, "closed: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.starts_with("SIP/2.0 200 OK"), "{got}");
    assert!(got.contains("SIP/2.0 405 "), "{got}");
    let m = metrics(&gw);
    for line in [
        "tonegate_sip_calls_not_found_total 1\n",
        "tonegate_sip_calls_not_acceptable_total 1\n",
        "tonegate_sip_bad_method_total 3\n",
        "tonegate_sip_malformed_total 1\n",
        "tonegate_sip_too_large_total 1\n",
    ] {
        assert!(m.contains(line), "{line}{m}");
    }
}

/// Kamailio on `port` routing the fallback number to tonegate's SIP listener on `tonegate`,
/// as README "The fallback number" shows (record-routed, so in-dialog requests pass it too).
fn kamailio_routing(
    bin: &Path,
    dir: &Path,
    port: u16,
    tonegate: u16,
) -> crate::common::kamailio::Proc {
    let cfg = format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
listen=udp:127.0.0.1:{port}
mpath="{modules}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) t_relay(); exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) t_relay(); exit; }}
    t_check_trans();
    if (is_method("INVITE") && $rU =~ "^[+]?442079460000$") {{
        record_route();
        $du = "sip:127.0.0.1:{tonegate}";
        t_relay();
        exit;
    }}
    sl_send_reply("404", "Not here");
}}
"#,
        modules = crate::common::kamailio::modules_dir().display()
    );
    let path = dir.join("kamailio-fallback.cfg");
    std::fs::write(&path, cfg).unwrap();
    let child = Command::new(bin)
        .args(["-f", path.to_str().unwrap(), "-D", "-E", "-w"])
        .arg(dir)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("kamailio-fallback.log")).unwrap())
        .spawn()
        .expect("starting kamailio");
    let k = crate::common::kamailio::Proc(child);
    crate::common::kamailio::wait_listening(port, "kamailio");
    k
}

#[test]
fn kamailio_routes_the_fallback_number_to_tonegate_and_its_bye_back() {
    let Some((kam, bin)) = crate::common::kamailio::tools() else {
        return;
    };
    let (gw, sip) = sip_gateway("", "");
    let dir = tempfile::tempdir().unwrap();
    let proxy = free_port();
    let _k = kamailio_routing(&kam, dir.path(), proxy, sip);
    let (session, link_id, number) = start_session(&gw, "ivr-call-kamailio");
    let phone = Phone::new();
    let call_id = "transfer-kamailio@127.0.0.1";
    // The IVR sends the transfer to the proxy, with the session's link id.
    let mut ivr = sipp(
        &bin,
        dir.path(),
        &scenario(
            &number,
            phone.port(),
            &format!("X-Tonegate-Link-Id: {link_id}\n"),
            End::AwaitBye,
        ),
        proxy,
        free_port(),
        call_id,
    );
    let mut keys = KeyingLeg::new(phone.sock.try_clone().unwrap(), caller_leg(&gw, call_id));
    phone.wait_prompts(1);
    keys.key("4242424242424242#", 61);
    phone.wait_prompts(2);
    keys.key("1230#", 62);
    phone.wait_prompts(3);
    keys.key("737", 63);
    if let Err(out) = ivr.finished() {
        panic!(
            "tonegate's BYE did not reach the caller through Kamailio: {out}\n{}",
            std::fs::read_to_string(dir.path().join("kamailio-fallback.log")).unwrap_or_default()
        );
    }
    assert_eq!(session_state(&gw, &session, true), "Completed");
    assert_eq!(relay_calls_left(&gw), 0);
}

/// A draining node (SIGTERM, `ctl drain`) takes no new calls on the fallback number either: an
/// INVITE gets 503 with Retry-After, so the carrier or proxy tries another node.
#[test]
fn a_draining_node_answers_new_invites_503_with_retry_after() {
    let (gw, sip) = sip_gateway("", "");
    gw.state.relay.start_draining();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let me = s.local_addr().unwrap();
    let sdp = "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
    let invite = format!(
        "INVITE sip:+442079460000@127.0.0.1:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKdrain1\r\nFrom: <sip:p@127.0.0.1>;tag=1\r\nTo: <sip:+442079460000@127.0.0.1>\r\nCall-ID: drain-1\r\nCSeq: 1 INVITE\r\nContact: <sip:p@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    s.send_to(invite.as_bytes(), ("127.0.0.1", sip)).unwrap();
    let mut buf = [0u8; 65536];
    let final_answer = loop {
        let (n, _) = s.recv_from(&mut buf).expect("no answer to the INVITE");
        let got = String::from_utf8_lossy(&buf[..n]).to_string();
        if !got.starts_with("SIP/2.0 1") {
            break got;
        }
    };
    assert!(
        final_answer.starts_with("SIP/2.0 503 ")
            && final_answer
                .to_ascii_lowercase()
                .contains("\r\nretry-after: "),
        "{final_answer}"
    );
    assert_eq!(relay_calls_left(&gw), 0, "no call set up while draining");
}

/// RFC 4028 with tonegate refreshing: a caller that asks tonegate to refresh
/// (`refresher=uas`) and allows UPDATE gets an UPDATE at half the 90 s interval; the sipp
/// caller checks it says so and answers it, and the call carries on until the caller hangs up.
#[test]
fn tonegate_refreshes_the_session_with_update_when_asked_to() {
    let Some(bin) = sipp_bin() else { return };
    // Media never flows in this call: the media timeout must not end it first.
    let (gw, sip) = sip_gateway("", "[relay]\nmedia_timeout_s = 300");
    let dir = tempfile::tempdir().unwrap();
    // A session waiting for the caller's link id (two minutes), so the call stays up.
    let (_, _, number) = start_session(&gw, "ivr-call-refresh");
    let phone = Phone::new();
    let call_id = "transfer-refresh@127.0.0.1";
    let mut ivr = sipp(
        &bin,
        dir.path(),
        &scenario(
            &number,
            phone.port(),
            "Session-Expires: 90;refresher=uas\nAllow: INVITE, ACK, CANCEL, BYE, UPDATE\n",
            End::AnswerRefresh,
        ),
        sip,
        free_port(),
        call_id,
    );
    if let Err(out) = ivr.finished() {
        panic!("no session refresh as asked: {out}");
    }
    assert_eq!(relay_calls_left(&gw), 0);
    let m = metrics(&gw);
    assert!(
        m.contains("tonegate_sip_session_refreshes_total 1\n"),
        "{m}"
    );
    assert!(m.contains("tonegate_sip_sessions_expired_total 0\n"), "{m}");
}

/// A call waiting for its caller's link id, and sipp as that caller waiting for tonegate's
/// BYE; then `stop` stops the gateway some way: the caller must hear the BYE.
fn stopping_byes_the_call(name: &str, extra: &str, stop: impl FnOnce(&mut Gateway)) {
    let Some(bin) = sipp_bin() else { return };
    let (mut gw, sip) = sip_gateway("", extra);
    let dir = tempfile::tempdir().unwrap();
    let (_, _, number) = start_session(&gw, &format!("ivr-call-{name}"));
    let phone = Phone::new();
    let call_id = format!("transfer-{name}@127.0.0.1");
    let mut ivr = sipp(
        &bin,
        dir.path(),
        &scenario(&number, phone.port(), "", End::AwaitBye),
        sip,
        free_port(),
        &call_id,
    );
    caller_leg(&gw, &call_id);
    stop(&mut gw);
    if let Err(out) = ivr.finished() {
        panic!("the caller heard no BYE as tonegate stopped: {out}");
    }
    assert!(
        gw.wait_stopped(Duration::from_secs(60)),
        "tonegate did not stop"
    );
}

/// Stopping at once (a second SIGTERM, SIGINT) hangs up the fallback number's calls with a
/// BYE rather than leaving the caller in silence until its own timers notice.
#[test]
fn stopping_tonegate_sends_bye_to_its_sip_calls() {
    stopping_byes_the_call("stop", "", Gateway::begin_stop);
}

/// A drain whose `server.drain_calls_s` runs out with a SIP call still up stops the gateway,
/// and that call hears a BYE.
#[test]
fn a_drain_that_runs_out_sends_bye_to_its_sip_calls() {
    let sock = tempfile::tempdir().unwrap();
    let socket = sock.path().join("ctl.sock");
    let extra = format!(
        "[server]\ncontrol_socket = \"{}\"\ndrain_calls_s = 1",
        socket.display()
    );
    stopping_byes_the_call("drain", &extra, |_| {
        let out = tonegate(&["ctl", "--socket", socket.to_str().unwrap(), "drain"]);
        assert!(
            out.status.success(),
            "ctl drain: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// `after_payment = "refer"`: once the caller has paid, tonegate transfers it back to the IVR
/// (REFER to `refer_to`); the IVR (sipp) accepts, reports the transfer done (NOTIFY with a
/// sipfrag 200) and tonegate leaves the call with a BYE.
#[test]
fn after_the_payment_tonegate_refers_the_caller_back_and_then_hangs_up() {
    let Some(bin) = sipp_bin() else { return };
    let refer = format!("after_payment = \"refer\"\nrefer_to = \"{REFER_TO}\"");
    let (gw, sip) = sip_gateway(&refer, "");
    let dir = tempfile::tempdir().unwrap();
    let (session, link_id, number) = start_session(&gw, "ivr-call-refer");
    let phone = Phone::new();
    let call_id = "transfer-refer@127.0.0.1";
    let mut ivr = sipp(
        &bin,
        dir.path(),
        &scenario(
            &number,
            phone.port(),
            &format!("X-Tonegate-Link-Id: {link_id}\n"),
            End::AcceptRefer,
        ),
        sip,
        free_port(),
        call_id,
    );
    let mut keys = KeyingLeg::new(phone.sock.try_clone().unwrap(), caller_leg(&gw, call_id));
    phone.wait_prompts(1);
    keys.key("4242424242424242#", 71);
    phone.wait_prompts(2);
    keys.key("1230#", 72);
    phone.wait_prompts(3);
    keys.key("737", 73);
    if let Err(out) = ivr.finished() {
        panic!("no REFER back, or no BYE after its NOTIFY: {out}");
    }
    assert_eq!(session_state(&gw, &session, true), "Completed");
    assert_eq!(relay_calls_left(&gw), 0);
    let m = metrics(&gw);
    assert!(m.contains("tonegate_sip_calls_hung_up_total 1\n"), "{m}");
}

/// A REFER the IVR declines ends the call with a BYE (here the call ends with no session
/// waiting for it, after the prompt that says so).
#[test]
fn a_declined_refer_back_ends_the_call_with_bye() {
    let Some(bin) = sipp_bin() else { return };
    let refer = format!("after_payment = \"refer\"\nrefer_to = \"{REFER_TO}\"");
    let (gw, sip) = sip_gateway(&refer, "");
    let dir = tempfile::tempdir().unwrap();
    let phone = Phone::new();
    let mut ivr = sipp(
        &bin,
        dir.path(),
        &scenario("+442079460000", phone.port(), "", End::DeclineRefer),
        sip,
        free_port(),
        "transfer-declined@127.0.0.1",
    );
    if let Err(out) = ivr.finished() {
        panic!("no BYE after the declined REFER: {out}");
    }
    assert_eq!(relay_calls_left(&gw), 0);
}

/// SIP over TLS (`[sip] tls_listen`, the certificate of `[sip.tls]`): a caller that connects
/// with TLS, trusting only tonegate's certificate, is answered on that connection (the Contact
/// says `transport=tls`), and tonegate's BYE comes back over it (here no session is waiting,
/// so the call ends after the prompt that says so).
#[test]
fn a_call_over_tls_is_answered_and_hung_up_on_the_same_connection() {
    use base64::Engine;
    use std::io::{Read, Write};
    use tokio_rustls::rustls;
    let cert = common::tls::TestCert::new();
    let tls_port = free_port();
    let (_gw, _sip) = sip_gateway(
        &format!(
            "tls_listen = \"127.0.0.1:{tls_port}\"\n[sip.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            cert.cert_file.display().to_string(),
            cert.key_file.display().to_string()
        ),
        "",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let tcp = loop {
        match std::net::TcpStream::connect(("127.0.0.1", tls_port)) {
            Ok(t) => break t,
            Err(e) => assert!(Instant::now() < deadline, "no TLS listener: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    let b64: String = cert
        .cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    roots
        .add(rustls::pki_types::CertificateDer::from(der))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let local = tls.sock.local_addr().unwrap();
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sdp = format!(
        "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        media.local_addr().unwrap().port()
    );
    let head = |method: &str, branch: &str, to_tag: &str| {
        format!(
            "{method} sip:+442079460000@127.0.0.1:{tls_port};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch={branch}\r\nFrom: <sip:ivr@127.0.0.1>;tag=ivr1\r\nTo: <sip:+442079460000@127.0.0.1>{to_tag}\r\nCall-ID: tls-1\r\nCSeq: 1 {method}\r\nContact: <sip:ivr@{local};transport=tls>\r\nMax-Forwards: 70\r\n"
        )
    };
    let invite = format!(
        "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        head("INVITE", "z9hG4bKtls1", ""),
        sdp.len()
    );
    tls.write_all(invite.as_bytes()).unwrap();
    // Reads messages off the stream until one starts with `start`.
    let mut got = String::new();
    let mut read_until = |tls: &mut rustls::StreamOwned<_, _>, start: &str| -> String {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(at) = got.find(start) {
                let msg = got[at..].to_string();
                if let Some(end) = msg.find("\r\n\r\n") {
                    got = got[at + end + 4..].to_string();
                    return msg[..end + 4].to_string();
                }
            }
            let n = tls
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("waiting for {start}: {e}: {got}"));
            assert!(n > 0, "closed while waiting for {start}: {got}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    let ok = read_until(&mut tls, "SIP/2.0 200 ");
    assert!(ok.contains("transport=tls>"), "{ok}");
    let tag = ok
        .lines()
        .find(|l| l.starts_with("To:"))
        .and_then(|l| l.split(";tag=").nth(1))
        .unwrap()
        .trim()
        .to_string();
    let ack = format!(
        "{}Content-Length: 0\r\n\r\n",
        head("ACK", "z9hG4bKtls2", &format!(";tag={tag}"))
    );
    tls.write_all(ack.as_bytes()).unwrap();
    // No session waits for this call: after the prompt, tonegate's BYE, on this connection.
    let bye = read_until(&mut tls, "BYE ");
    assert!(bye.contains("Via: SIP/2.0/TLS "), "{bye}");
    assert!(bye.contains("Call-ID: tls-1\r\n"), "{bye}");
    let copied: String = bye
        .lines()
        .filter(|l| {
            ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                .iter()
                .any(|h| l.starts_with(h))
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    tls.write_all(format!("SIP/2.0 200 OK\r\n{copied}Content-Length: 0\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(relay_calls_left(&_gw), 0);
}
