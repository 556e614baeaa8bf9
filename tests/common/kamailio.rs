//! Kamailio (Debian's, its `rtpengine` module driving tonegate's ng port) and sipp (a caller
//! keying a card, an agent whose media is the test's recorder), as the calls through Kamailio
//! run them, on one node or on a set of them.

use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonegate_dsp::G711Law;

use super::{agent_audio, claimed_port, detect_keys, multimon_keys, tool};

/// A UDP port for Kamailio or sipp. Not a kernel-chosen one released for the tool to bind (any
/// other socket on the machine could take it in between): each comes from 28000-28999, a range no
/// other test uses (below the relay's 30000-39999, the tests' fixed relay ranges at 29000+, and
/// the kernel's ephemeral ports), claimed per test process, four apart (sipp's media takes the
/// ports above the one it is given: RTCP, video), and checked free.
pub fn free_port() -> u16 {
    claimed_port(28000..29000, 4)
}

/// Whether some socket has UDP `port` bound on IPv4 (read from /proc/net/udp, so probing binds
/// nothing the tool could then fail to bind).
pub fn udp_port_bound(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp");
    let suffix = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|local| local.ends_with(&suffix))
}

/// Waits until `what` (Kamailio, a sipp UAS) listens on UDP `port`: readiness, not a sleep.
pub fn wait_listening(port: u16, what: &str) {
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
pub fn tools() -> Option<(PathBuf, PathBuf)> {
    let k = tool("kamailio").or_else(|| {
        let p = PathBuf::from("/usr/sbin/kamailio");
        p.is_file().then_some(p)
    })?;
    let s = tool("sipp")?;
    Some((k, s))
}

pub fn modules_dir() -> PathBuf {
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
pub struct Proc(pub Child);

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
pub fn kamailio(bin: &Path, dir: &Path, sip: u16, socks: &str, uas: u16) -> (Proc, PathBuf) {
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
pub struct Caller<'a> {
    /// The Call-ID ("" lets sipp make one per call).
    pub call_id: &'a str,
    /// Offers telephone-event (payload type 101) beside PCMU.
    pub events: bool,
    /// Raw µ-law audio sipp streams after the ACK.
    pub ulaw: Option<&'a Path>,
    /// How long the call stays up after the ACK, ms.
    pub pause_ms: u32,
    /// Sends an in-dialog INFO expecting this answer.
    pub info_code: Option<u16>,
    /// Offers RTP/SAVP (and expects 488).
    pub srtp: bool,
}

pub fn uac_scenario(c: &Caller) -> String {
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
pub fn uas_scenario(rec: u16, events: bool) -> String {
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
pub fn record(sock: UdpSocket, until: Duration) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
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

pub fn agent_keys(packets: &[Vec<u8>]) -> String {
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
pub fn sipp(bin: &Path, dir: &Path, name: &str, scenario: &str, args: &[String]) -> Child {
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

/// The agent's sipp (`name`, answering `calls` calls on UDP `port`, its media at the recorder
/// on `rec`), once it listens.
pub fn sipp_agent(
    bin: &Path,
    dir: &Path,
    name: &str,
    port: u16,
    rec: u16,
    events: bool,
    calls: u32,
) -> Proc {
    let p = Proc(sipp(
        bin,
        dir,
        name,
        &uas_scenario(rec, events),
        &[
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            calls.to_string(),
        ],
    ));
    wait_listening(port, "the sipp agent");
    p
}

/// The caller's sipp (`name`) calling through Kamailio on `sip` as `c` says, from free ports,
/// with `extra` arguments (e.g. `-m` and `-r` for many calls).
pub fn sipp_caller(
    bin: &Path,
    dir: &Path,
    name: &str,
    sip: u16,
    c: &Caller,
    extra: &[String],
) -> Proc {
    let mut args = vec![format!("127.0.0.1:{sip}")];
    if !c.call_id.is_empty() {
        args.extend(["-cid_str".into(), c.call_id.to_string()]);
    }
    args.extend([
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        free_port().to_string(),
        "-mp".into(),
        free_port().to_string(),
    ]);
    args.extend_from_slice(extra);
    Proc(sipp(bin, dir, name, &uac_scenario(c), &args))
}
