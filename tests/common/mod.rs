//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The project root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture path under `fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

/// Runs the `tonegate` binary with `args`.
pub fn tonegate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tonegate"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("running tonegate")
}

/// Keys printed by `tonegate detect FILE`, as a string; panics unless it exits 0.
pub fn detect_keys(file: &Path) -> String {
    let out = tonegate(&["detect", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "detect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_keys(&String::from_utf8(out.stdout).unwrap())
}

/// Digits from `tonegate detect` JSON lines.
pub fn parse_keys(stdout: &str) -> String {
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v["digit"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Keys multimon-ng (Debian, an independent decoder) hears in a WAV file, in order.
///
/// multimon-ng reads raw 22.05 kHz audio, so sox resamples first. Panics if either tool is
/// missing: `scripts/test` installs them.
pub fn multimon_keys(file: &Path) -> String {
    let mut sox = Command::new("sox")
        .args([
            file.to_str().unwrap(),
            "-t",
            "raw",
            "-r",
            "22050",
            "-e",
            "signed",
            "-b",
            "16",
            "-c",
            "1",
            "-",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("sox is needed (scripts/test installs it)");
    let out = Command::new("multimon-ng")
        .args(["-q", "-c", "-a", "DTMF", "-t", "raw", "-"])
        .stdin(sox.stdout.take().unwrap())
        .output()
        .expect("multimon-ng is needed (scripts/test installs it)");
    assert!(
        sox.wait().expect("waiting for sox").success(),
        "sox failed on {}",
        file.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("DTMF: "))
        .filter_map(|k| k.chars().next())
        .collect()
}

/// Keys listed in a fixture's JSON truth file.
pub fn truth_keys(json: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    v["keys"].as_str().unwrap().to_string()
}

#[path = "../../media/tests/stream/mod.rs"]
mod stream;
pub use stream::*;

/// A caller's RTP leg keying on a relay call in pieces, sequence numbers and timestamps
/// continuing across them; about 1 ms between packets, faster than real time.
pub struct KeyingLeg {
    pub sock: std::net::UdpSocket,
    pub relay: std::net::SocketAddr,
    /// Key as RFC 4733 events of this payload type only (no tones), as many phones do.
    pub events: Option<u8>,
    seq: u16,
    ts: u32,
}

impl KeyingLeg {
    /// A leg sending from `sock` to the relay's caller port `relay`.
    pub fn new(sock: std::net::UdpSocket, relay: std::net::SocketAddr) -> KeyingLeg {
        KeyingLeg {
            sock,
            relay,
            events: None,
            seq: 100,
            ts: 8000,
        }
    }

    /// Keys `keys` as a person would (timing and level varied by `seed`), as in-band audio
    /// (or as events only, with `events`): the number of packets sent.
    pub fn key(&mut self, keys: &str, seed: u32) -> usize {
        let signal = tonegate_dsp::generator::human_keying(keys, seed, Some(30.0));
        let opts = StreamOptions {
            first_seq: self.seq,
            first_ts: self.ts,
            events_pt: self.events,
            events_replace_audio: self.events.is_some(),
            ..Default::default()
        };
        let packets = rtp_stream(&signal, opts);
        for p in &packets {
            self.sock.send_to(&p.bytes, self.relay).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.seq = self.seq.wrapping_add(packets.len() as u16);
        self.ts = self
            .ts
            .wrapping_add((signal.samples.len() / 160 * 160) as u32);
        packets.len()
    }
}

/// Panics unless the agent leg received at least 95 % of the `sent` audio packets (PCMU or
/// PCMA): "the agent heard no key" means something only if the agent heard the caller at all,
/// so a relay that drops the agent leg fails here.
pub fn assert_agent_heard_audio(received: &[Vec<u8>], sent: usize) {
    let audio = received
        .iter()
        .filter(|p| {
            tonegate_media::rtp::RtpHeader::parse(p)
                .is_ok_and(|h| h.payload_type == 0 || h.payload_type == 8)
        })
        .count();
    assert!(
        sent > 0 && audio * 100 >= sent * 95,
        "the agent leg carried {audio} audio packets of the {sent} the caller sent"
    );
}

/// Fails if `bytes` hold the test card keyed: its PAN (whole, its first twelve, grouped by
/// spaces or dashes), or its expiry (1230, 12/30) or CVV (737) standing alone.
pub fn assert_no_card_digits(what: &str, bytes: &[u8]) {
    for needle in [
        &b"4242424242424242"[..],
        b"424242424242",
        b"4242 4242 4242",
        b"4242-4242-4242",
    ] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{what} contain the PAN"
        );
    }
    for token in [&b"1230"[..], b"12/30", b"737"] {
        for i in 0..bytes.len().saturating_sub(token.len() - 1) {
            if &bytes[i..i + token.len()] == token {
                let before = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
                let after = i + token.len() >= bytes.len()
                    || !bytes[i + token.len()].is_ascii_alphanumeric();
                assert!(
                    !(before && after),
                    "{what} contain {:?} at byte {i}",
                    String::from_utf8_lossy(token)
                );
            }
        }
    }
}

pub mod axe;
pub mod cluster;
pub mod gateway;
pub mod kamailio;
pub mod localstripe;
pub mod postgres;
pub mod serve;
pub mod tls;
pub mod webdriver;

/// Keys spandsp's `dtmf_rx` reads in a WAV file: at its defaults, or tuned as permissively as
/// its API allows (20 dB twist either way, -60 dBm0) — the leak battery's two spandsp decoders,
/// built from `tools/` into `target/spandsp-decoders` (again only when the source is newer). Panics if gcc or
/// libspandsp-dev is missing: `scripts/test` installs them.
pub fn spandsp_keys(file: &Path, permissive: bool) -> String {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let dir = root().join("target/spandsp-decoders");
        std::fs::create_dir_all(&dir).unwrap();
        for (src, bin) in [
            ("tools/dtmf-battery/spandsp_detect.c", "spandsp_detect"),
            (
                "tools/leak-battery/spandsp_permissive.c",
                "spandsp_permissive",
            ),
        ] {
            // Test processes run side by side (cargo-nextest): each builds into a file of its own
            // and renames it into place, so none ever runs a half-written decoder; one already
            // built from the same source is kept.
            let src = root().join(src);
            let target = dir.join(bin);
            let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            if modified(&target).is_some_and(|t| Some(t) >= modified(&src)) {
                continue;
            }
            let tmp = dir.join(format!("{bin}.{}.tmp", std::process::id()));
            let out = Command::new("gcc")
                .args(["-O2", "-o"])
                .arg(&tmp)
                .arg(&src)
                .args(["-lspandsp", "-lm"])
                .output()
                .expect("gcc is needed to build spandsp's decoder (scripts/test installs it)");
            assert!(
                out.status.success(),
                "building {bin} failed (libspandsp-dev is needed; scripts/test installs it): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::rename(&tmp, &target).unwrap();
        }
        dir
    });
    let bin = dir.join(if permissive {
        "spandsp_permissive"
    } else {
        "spandsp_detect"
    });
    let out = Command::new(bin).arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "spandsp decoder failed on {}",
        file.display()
    );
    parse_keys(&String::from_utf8_lossy(&out.stdout))
}

/// Skips a test (or part of one) that this machine cannot run: a failure under
/// `TONEGATE_REQUIRE_TOOLS` (a full run proves everything), else a loud SKIPPED line.
pub fn skip(what: &str, why: &str) {
    assert!(
        std::env::var_os("TONEGATE_REQUIRE_TOOLS").is_none(),
        "{what} cannot run here, and TONEGATE_REQUIRE_TOOLS is set: {why}"
    );
    eprintln!("SKIPPED ({what}): {why}");
}

/// The path of a third-party tool the test drives (Kamailio, sipp, rtpengine-ng-client).
/// Missing: with `TONEGATE_REQUIRE_TOOLS=1` (set by `scripts/test`, which installs them) the
/// test fails; otherwise it says loudly that it is skipped.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("TONEGATE_REQUIRE_TOOLS").is_none(),
            "{name} is not installed (scripts/test installs it)"
        );
        eprintln!("SKIPPED: {name} is not installed; run scripts/test to install it");
    }
    found
}

/// A port from `range`, `step` apart (free for UDP and TCP), for a tool that binds it itself
/// (Kamailio, sipp, chromedriver).
/// Ports come from blocks of 100 that this process claims with an exclusive `flock` on a file
/// under `target/test-ports/` (held until the process ends), so test processes running side by
/// side (cargo-nextest runs each test as its own process) never draw the same port; each port
/// is also checked free before it is handed out.
pub fn claimed_port(range: std::ops::Range<u16>, step: u16) -> u16 {
    use std::collections::HashMap;
    use std::os::fd::AsRawFd;
    use std::sync::Mutex;
    const BLOCK: u16 = 100;
    // range start → (next port, end of the claimed block)
    static CLAIMED: Mutex<Option<HashMap<u16, (u16, u16)>>> = Mutex::new(None);
    let mut claimed = CLAIMED.lock().unwrap();
    let mine = claimed.get_or_insert_with(HashMap::new);
    loop {
        let (next, end) = mine.get(&range.start).copied().unwrap_or((0, 0));
        if next != 0 && next < end {
            mine.insert(range.start, (next + step, end));
            if std::net::UdpSocket::bind(("127.0.0.1", next)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", next)).is_ok()
            {
                return next;
            }
            continue;
        }
        // Claim the next free block after the one just used up.
        let dir = root().join("target/test-ports");
        std::fs::create_dir_all(&dir).unwrap();
        let mut start = if next == 0 { range.start } else { end };
        loop {
            assert!(
                start + BLOCK <= range.end,
                "no free block of ports left in {range:?}"
            );
            let f = std::fs::File::create(dir.join(format!("{start}.lock"))).unwrap();
            // SAFETY: flock on a descriptor this function owns; on success the file is leaked so
            // the lock lasts as long as the process.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                std::mem::forget(f);
                mine.insert(range.start, (start, start + BLOCK));
                break;
            }
            start += BLOCK;
        }
    }
}
