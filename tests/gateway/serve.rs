//! `tonegate serve` (design.md contract 2): starts from a config, logs the address it listens
//! on, answers `/healthz`, and stops cleanly on SIGTERM.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type Lines = std::io::Lines<BufReader<std::process::ChildStderr>>;

/// Reads the child's log up to its "listening on" line: the address, the lines before it,
/// and the rest of the log.
fn listening(child: &mut std::process::Child) -> (String, Vec<String>, Lines) {
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut early = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no listening line: {early:?}");
        let line = lines.next().expect("stderr closed").unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            return (addr, early, lines);
        }
        early.push(line);
    }
}

#[test]
fn serves_healthz_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    let db = dir.path().join("t.db");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nsqlite_path = {:?}\n",
            db.display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tonegate"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, early, lines) = listening(&mut child);
    // Card digits have their locked, non-dumpable region before any call (root here, or a
    // memlock limit that fits: locked; else the warning names the limit).
    assert!(early.iter().any(|l| l.contains("card memory")), "{early:?}");
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", child.id())).unwrap();
    let mut size_kb = 0;
    let mut card_region = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("Size:") => size_kb = f.next().unwrap().parse::<u64>().unwrap(),
            Some("VmFlags:") if size_kb == 2048 && line.split(' ').any(|f| f == "dd") => {
                card_region = Some(line.to_string())
            }
            _ => {}
        }
    }
    let card_region = card_region.expect("no 2 MiB MADV_DONTDUMP mapping");
    // Where the child may lock it (root, or an RLIMIT_MEMLOCK it inherits from us that fits
    // 2 MiB), the region is locked ("lo"); elsewhere the run says it could not prove that.
    if may_lock_card_memory() {
        if !card_region.split(' ').any(|f| f == "lo") {
            let _ = child.kill();
            panic!("card memory is not locked: {card_region}");
        }
    } else {
        common::skip(
            "card memory lock",
            "not root and RLIMIT_MEMLOCK is below 2 MiB: the gateway cannot lock card memory here",
        );
    }
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"status\":\"ok\""), "{resp}");
    // No core file can carry card data out of the running gateway.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], &["0", "0"], "{core}");
    // The database is its owner's alone.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("tonegate stopped")),
        "{rest:?}"
    );
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[server]\nlisten = 12\n").unwrap();
    let out = common::tonegate(&["serve", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("listen"), "{err}");

    let out = common::tonegate(&["serve", "--config", "/nonexistent/tonegate.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config"));
}

#[test]
fn shipped_config_loads() {
    tonegate::config::Config::load(&common::fixture("../config/tonegate.toml")).unwrap();
}

/// Started under a low open-file limit, the gateway says at start-up how many calls that
/// allows, and refuses the call that would need more with that reason, not "ports exhausted".
#[test]
fn a_low_open_file_limit_is_named_at_start_and_in_the_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    let shipped = std::fs::read_to_string(common::root().join("config/tonegate.toml")).unwrap();
    let mut t: toml::Table = toml::from_str(&shipped).unwrap();
    t["server"]["listen"] = toml::Value::String("127.0.0.1:0".into());
    t["store"]["sqlite_path"] = toml::Value::String(dir.path().join("t.db").display().to_string());
    t["relay"]["port_min"] = toml::Value::Integer(46000);
    t["relay"]["port_max"] = toml::Value::Integer(46999);
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    // `ulimit -n` sets the hard limit too, so the gateway cannot raise it.
    let mut child = Command::new("bash")
        .args([
            "-c",
            "ulimit -n 128 && exec \"$0\" serve --config \"$1\"",
            env!("CARGO_BIN_EXE_tonegate"),
            cfg.to_str().unwrap(),
        ])
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, early, lines) = listening(&mut child);
    let warned = early
        .iter()
        .any(|l| l.contains("open-file limit allows about"));
    std::thread::spawn(move || lines.for_each(drop));
    let http = common::gateway::http();
    let base = format!("http://{addr}");
    let tok: serde_json::Value = http
        .post(format!("{base}/auth/connect/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", common::gateway::DEV_CLIENT.0),
            ("client_secret", common::gateway::DEV_CLIENT.1),
            ("scope", "relay"),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let tok = tok["access_token"].as_str().unwrap().to_string();
    let mut refusal = None;
    // 128 descriptors hold at most 32 calls' sockets: the limit is met well before 100.
    for i in 0..100 {
        let r = http
            .post(format!("{base}/relay/v1/calls"))
            .bearer_auth(&tok)
            .json(&serde_json::json!({"call_guid": format!("fd-{i}"), "codec": "PCMU", "caller": {}, "agent": {}}))
            .send()
            .unwrap();
        if r.status() != 201 && r.status() != 200 {
            refusal = Some((i, r.status().as_u16(), r.text().unwrap()));
            break;
        }
    }
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    assert!(warned, "no start-up warning about the open-file limit");
    let (made, status, body) = refusal.expect("never refused");
    assert!(made > 0, "no call at all fitted: {status} {body}");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("open-file limit"), "{body}");
}

/// The shipped systemd unit parses (systemd-analyze, with ExecStart on the built binary) and
/// keeps core files off.
#[test]
fn the_systemd_unit_verifies() {
    let Some(analyze) = common::tool("systemd-analyze") else {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    };
    let unit = std::fs::read_to_string(common::root().join("config/tonegate.service")).unwrap();
    assert!(unit.lines().any(|l| l == "LimitCORE=0"), "core files off");
    assert!(
        unit.lines().any(|l| l == "LimitMEMLOCK=8M"),
        "room to lock the card memory"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tonegate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/tonegate", env!("CARGO_BIN_EXE_tonegate")),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Without a running systemd (containers) verify still parses every directive, and a
    // directive it cannot parse ("Failed to parse resource value, ignoring") is a problem.
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("tonegate.service"))
        .collect();
    assert!(
        out.status.success() && problems.is_empty(),
        "systemd-analyze verify: {}\n{text}",
        out.status
    );
}

/// Whether a process started by this one may lock the 2 MiB card region: root, or a memlock
/// limit that fits it.
fn may_lock_card_memory() -> bool {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the rlimit we pass; geteuid takes nothing.
    unsafe {
        libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut l) == 0
            && (libc::geteuid() == 0 || l.rlim_cur >= 2 << 20)
    }
}

/// The whole error chain of a request that must have failed (panics if it was answered, or
/// if it only timed out).
fn refusal(r: reqwest::Result<reqwest::blocking::Response>) -> String {
    let e = match r {
        Ok(r) => panic!("answered with {}", r.status()),
        Err(e) => e,
    };
    assert!(!e.is_timeout(), "timed out rather than refused: {e:?}");
    let mut why = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        why += &format!(": {s}");
        source = s.source();
    }
    why
}

/// A production configuration that passes every check (TLS at a proxy in front).
const PRODUCTION: &str = include_str!("../../fixtures/config/production.toml");

/// In production every answer tells browsers to use HTTPS only (HSTS); in development none.
#[test]
fn production_mode_sends_hsts() {
    use common::gateway::{http, Gateway};
    let hsts = |gw: &Gateway| {
        http()
            .get(gw.url("/healthz"))
            .send()
            .unwrap()
            .headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let gw = Gateway::start(PRODUCTION);
    assert_eq!(
        hsts(&gw).as_deref(),
        Some("max-age=31536000; includeSubDomains")
    );
    drop(gw);
    assert_eq!(hsts(&Gateway::start("")), None);
}

/// `serve` in production mode with the shipped (development) settings refuses to start and
/// names what is unsafe.
#[test]
fn production_mode_refuses_the_shipped_development_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.toml");
    let shipped = std::fs::read_to_string(common::root().join("config/tonegate.toml")).unwrap();
    std::fs::write(
        &cfg,
        shipped.replacen("mode = \"development\"", "mode = \"production\"", 1),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tonegate"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("production") && err.contains("\"tonegate-dev\" has a plain `secret`"),
        "{err}"
    );
}

/// With `[server.tls]` the listener speaks HTTPS only: production accepts it in place of a TLS
/// proxy, answers carry HSTS, plain HTTP and clients that do not trust the certificate get no
/// answer, and a client that never finishes its handshake is cut off at the header timeout.
#[test]
fn serve_with_a_certificate_speaks_https_only() {
    use common::gateway::{http, Gateway};
    use std::io::Read;
    let cert = common::tls::TestCert::new();
    let config = format!(
        "{}{}",
        PRODUCTION
            .replace("behind_tls_proxy = true\n", "")
            .replace("[server]\n", "[server]\nheader_timeout_s = 1\n"),
        cert.server_toml()
    );
    let gw = Gateway::start(&config);
    assert_eq!(gw.scheme, "https");
    let r = gw.client.get(gw.url("/healthz")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    // Each refusal is the one claimed, not a timeout or an unrelated failure.
    // Plain HTTP is answered with a TLS alert record (content type 21, version 3.x), which
    // an HTTP client cannot read as HTTP.
    let plain = http().get(format!("http://{}/healthz", gw.addr)).send();
    let why = refusal(plain);
    assert!(why.contains("invalid HTTP version"), "{why}");
    let mut raw = std::net::TcpStream::connect(gw.addr).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    std::io::Write::write_all(&mut raw, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    assert!(
        answer.len() >= 5 && answer[0] == 21 && answer[1] == 3,
        "plain HTTP was not answered with a TLS alert: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let untrusting = http().get(gw.url("/healthz")).send();
    let why = refusal(untrusting);
    assert!(
        why.contains("certificate") && why.contains("UnknownIssuer"),
        "a client without the certificate failed otherwise: {why}"
    );
    let mut silent = std::net::TcpStream::connect(gw.addr).unwrap();
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = silent.read(&mut buf);
    assert!(
        matches!(n, Ok(0))
            || matches!(&n, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "a silent client was not cut off: {n:?}"
    );
    // Production without either TLS setting is still refused.
    let err = tonegate::config::Config::parse(
        &PRODUCTION.replace("behind_tls_proxy = true\n", ""),
        std::path::Path::new("p.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("[server.tls]") && err.contains("behind_tls_proxy"),
        "{err}"
    );
}

/// Runs `serve` on `text` written to `p.toml` in `dir` with file mode `mode` (and the
/// environment variable `TONEGATE_TEST_STRIPE_KEY` set): whether it came up, and its log up to
/// then. A gateway that came up is stopped.
fn serve_production(dir: &std::path::Path, text: &str, mode: u32) -> (bool, String) {
    use std::os::unix::fs::PermissionsExt;
    let cfg = dir.join("p.toml");
    std::fs::write(&cfg, text).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(mode)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tonegate"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .env("TONEGATE_TEST_STRIPE_KEY", "sk_live_from_env")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = String::new();
    let up = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains("listening on") {
                    break true;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break false,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("neither up nor refused: {log}")
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    (up, log)
}

/// Production refuses a config file that group or others can open while it holds secrets
/// inline, a `file:` secret others can open, and `http://` webhook and SMS URLs; with its
/// secrets given as `env:NAME` and `file:PATH` the same file may stay world-readable.
#[test]
fn production_mode_guards_secrets_and_refuses_plain_http_urls() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "{}\n[store]\nsqlite_path = {:?}\n",
        PRODUCTION.replacen(
            "mode = \"production\"",
            "mode = \"production\"\nlisten = \"127.0.0.1:0\"",
            1
        ),
        dir.path().join("p.db").display().to_string()
    );
    let (up, log) = serve_production(dir.path(), &base, 0o644);
    assert!(
        !up && log.contains("chmod 600")
            && log.contains("auth.signing_key")
            && log.contains("stripe_secret_key")
            && !log.contains("sk_live_x"),
        "{log}"
    );
    let (up, log) = serve_production(dir.path(), &base, 0o600);
    assert!(up, "{log}");

    let key = dir.path().join("signing.key");
    std::fs::write(&key, "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let outside = base
        .replacen(
            "signing_key = \"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\"",
            &format!("signing_key = \"file:{}\"", key.display()),
            1,
        )
        .replacen("\"sk_live_x\"", "\"env:TONEGATE_TEST_STRIPE_KEY\"", 1);
    let (up, log) = serve_production(dir.path(), &outside, 0o644);
    assert!(up, "{log}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (up, log) = serve_production(dir.path(), &outside, 0o644);
    assert!(
        !up && log.contains("signing.key") && log.contains("chmod 600"),
        "{log}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let hook = outside.replacen(
        "stripe_secret_key =",
        "webhook_url = \"http://crm.example.com/hook\"\nstripe_secret_key =",
        1,
    );
    let (up, log) = serve_production(dir.path(), &hook, 0o600);
    assert!(!up && log.contains("webhook_url"), "{log}");
    let sms = outside.replacen(
        "[ng]",
        "[sms]\nprovider = \"twilio\"\ntwilio_base_url = \"http://api.twilio.com\"\n[ng]",
        1,
    );
    let (up, log) = serve_production(dir.path(), &sms, 0o600);
    assert!(!up && log.contains("sms.twilio_base_url"), "{log}");
}

/// SIGTERM (a drain, which live calls keep going), then SIGTERM again (stop at once), with
/// sessions in every live state — captures part-keyed and complete (agent and self-service,
/// prompts playing), a call waiting for a link id, a digital session — stops the gateway
/// cleanly: exit 0, and no task panics on the way down.
#[test]
fn stopping_with_live_sessions_panics_no_task() {
    use common::gateway::http;
    use serde_json::{json, Value};
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    let shipped = std::fs::read_to_string(common::root().join("config/tonegate.toml")).unwrap();
    let mut t: toml::Table = toml::from_str(&shipped).unwrap();
    t["server"]["listen"] = "127.0.0.1:0".into();
    t["store"]["sqlite_path"] = dir.path().join("t.db").display().to_string().into();
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tonegate"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .current_dir(common::root())
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, _, lines) = listening(&mut child);
    let base = format!("http://{addr}");
    let token = |scope| common::serve::dev_token(&base, scope);
    let (g, r) = (token("globalpci"), token("relay"));
    let post = |tok: &str, path: &str, body: Value| -> Value {
        let resp = http()
            .post(format!("{base}{path}"))
            .bearer_auth(tok)
            .json(&body)
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().unwrap()
    };
    // A call on the relay for `guid`, with a caller leg that can key.
    let call = |guid: &str| -> common::KeyingLeg {
        let caller = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let agent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let v = post(
            &r,
            "/relay/v1/calls",
            json!({"call_guid": guid, "codec": "PCMU",
                   "caller": {"remote": caller.local_addr().unwrap().to_string()},
                   "agent": {"remote": agent.local_addr().unwrap().to_string()}}),
        );
        let relay = v["caller"]["local"].as_str().unwrap().parse().unwrap();
        std::mem::forget(agent);
        common::KeyingLeg::new(caller, relay)
    };
    let session = |kind: &str, guid: Option<&str>| -> String {
        let mut body = json!({"AccountConfigurationId": "dev-account",
            "PaymentData": {"amount": "1.00", "CustomerPhoneNumber": "+447700900123"}});
        if let Some(g) = guid {
            body["CallGuid"] = g.into();
        }
        post(&g, &format!("/globalpci/v1/{kind}"), body)["sessionId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let state = |id: &str| -> String {
        let v: Value = http()
            .get(format!("{base}/globalpci/v1/session/{id}"))
            .bearer_auth(&g)
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["sessionState"].as_str().unwrap_or("").to_string()
    };
    let part = session("agentsession", Some("stop-part"));
    let full = session("agentsession", Some("stop-full"));
    session("selfservicesession", Some("stop-self"));
    session("selfservicesession", Some("stop-waiting"));
    session("digitalselfservicesession", None);
    let mut part_leg = call("stop-part");
    let mut full_leg = call("stop-full");
    let _self_leg = call("stop-self");
    let _unlinked = call("stop-unlinked");
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&part) != "Capturing" || state(&full) != "Capturing" {
        assert!(Instant::now() < deadline, "the calls never linked");
        std::thread::sleep(Duration::from_millis(50));
    }
    part_leg.key("4242", 3);
    full_leg.key("4242424242424242#1230#737#", 4);
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&full) != "ReadyToSubmit" {
        assert!(Instant::now() < deadline, "the card was never complete");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The first SIGTERM drains (the calls are live, so it carries on); the second stops at
    // once. Two signals sent together may arrive as one, so the second waits for the drain.
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut lines = lines.map_while(Result::ok);
    let mut rest: Vec<String> = Vec::new();
    for l in lines.by_ref() {
        rest.push(l);
        if rest.last().unwrap().contains("SIGTERM: draining") {
            break;
        }
    }
    assert!(
        rest.last().is_some_and(|l| l.contains("SIGTERM: draining")),
        "no drain on SIGTERM: {}",
        rest.join("\n")
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "stopped with calls live"
    );
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child, Duration::from_secs(20));
    rest.extend(lines);
    assert!(
        !rest.iter().any(|l| l.contains("panicked")),
        "{}",
        rest.join("\n")
    );
    assert!(status.success(), "{status:?}: {}", rest.join("\n"));
    assert!(
        rest.iter()
            .any(|l| l.contains("SIGTERM again: stopping now")),
        "{rest:?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("tonegate stopped")),
        "{rest:?}"
    );
}

/// SIGTERM while the session sweep is inside a database write (held up here by another
/// connection's write lock, as a slow disk would): the gateway still stops without a task
/// panicking. The sweep once carried on after the runtime's timers were gone and panicked
/// ("A Tokio 1.x context was found, but it is being shutdown").
#[test]
fn stopping_while_the_sweep_waits_on_the_database_panics_no_task() {
    use common::gateway::http;
    use serde_json::{json, Value};
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    let db = dir.path().join("t.db");
    let shipped = std::fs::read_to_string(common::root().join("config/tonegate.toml")).unwrap();
    let mut t: toml::Table = toml::from_str(&shipped).unwrap();
    t["server"]["listen"] = "127.0.0.1:0".into();
    t["store"]["sqlite_path"] = db.display().to_string().into();
    t["store"]["sweep_interval_s"] = 1.into();
    t["accounts"].as_array_mut().unwrap()[0]["session_ttl_s"] = 1.into();
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tonegate"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .current_dir(common::root())
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, _, lines) = listening(&mut child);
    let base = format!("http://{addr}");
    let tok: Value = http()
        .post(format!("{base}/auth/connect/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "tonegate-dev"),
            ("client_secret", "tonegate-dev-secret"),
            ("scope", "globalpci"),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let r = http()
        .post(format!("{base}/globalpci/v1/agentsession"))
        .bearer_auth(tok["access_token"].as_str().unwrap())
        .json(
            &json!({"AccountConfigurationId": "dev-account", "CallGuid": "sweep-1",
                      "PaymentData": {"amount": "1.00"}}),
        )
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    // The session expires within a second; the sweep's write that marks it waits on this lock
    // (up to the store's 5 s busy timeout), on a worker moved off the runtime for it.
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(1000));
    lock.execute_batch("ROLLBACK").unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        !rest.iter().any(|l| l.contains("panicked")),
        "{}",
        rest.join("\n")
    );
    assert!(status.success(), "{status:?}: {}", rest.join("\n"));
}

/// Waits up to `limit` for `child` (started by this test, and signalled to stop) to exit.
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `dir/t.toml`: the shipped config with `server_extra` merged into `[server]`, HTTP
/// on a free loopback port, the database and the control socket (`ctl.sock`) given relative
/// to `dir`.
fn served_config(dir: &std::path::Path, server_extra: &str) -> std::path::PathBuf {
    served_config_with(dir, server_extra, "")
}

/// As [`served_config`], with the tables in `tables` merged in too (`[ng]`, `[cluster]`…).
fn served_config_with(
    dir: &std::path::Path,
    server_extra: &str,
    tables: &str,
) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(common::root().join("config/tonegate.toml")).unwrap();
    let mut base: toml::Table = toml::from_str(&shipped).unwrap();
    for (name, table) in toml::from_str::<toml::Table>(tables).unwrap() {
        let toml::Value::Table(table) = table else {
            panic!("{name} is not a table")
        };
        match base.get_mut(&name) {
            Some(toml::Value::Table(t)) => t.extend(table),
            _ => {
                base.insert(name, table.into());
            }
        }
    }
    let extra: toml::Table = toml::from_str(server_extra).unwrap();
    let server = base["server"].as_table_mut().unwrap();
    server.insert("listen".into(), "127.0.0.1:0".into());
    server.insert("control_socket".into(), "ctl.sock".into());
    server.extend(extra);
    base["store"]
        .as_table_mut()
        .unwrap()
        .insert("sqlite_path".into(), "state/t.db".into());
    let cfg = dir.join("t.toml");
    std::fs::write(&cfg, toml::to_string(&base).unwrap()).unwrap();
    cfg
}

/// A `tonegate serve` child started from `/` (relative paths in its config are its
/// directory's), its HTTP address and its log lines as they come.
struct Served {
    child: std::process::Child,
    http: String,
    log: std::sync::mpsc::Receiver<String>,
    /// Lines read so far (the listening line and what came before).
    seen: Vec<String>,
}

impl Served {
    /// Starts the shipped config with `server_extra` TOML merged into `[server]`, the database
    /// and the control socket (`ctl.sock`) named relative to the config's directory `dir`.
    fn start(dir: &std::path::Path, server_extra: &str, env: &[(&str, &str)]) -> Served {
        Self::start_with(dir, server_extra, "", env)
    }

    /// As [`Served::start`], with `tables` merged into the config too.
    fn start_with(
        dir: &std::path::Path,
        server_extra: &str,
        tables: &str,
        env: &[(&str, &str)],
    ) -> Served {
        let cfg = served_config_with(dir, server_extra, tables);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tonegate"));
        cmd.args(["serve", "--config", cfg.to_str().unwrap()])
            .current_dir("/")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::watch(cmd.spawn().unwrap())
    }

    fn watch(mut child: std::process::Child) -> Served {
        let (tx, log) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Served {
            child,
            http: String::new(),
            log,
            seen: Vec::new(),
        };
        // http:// or, with [server.tls], https://.
        let line = s.wait_line(|l| l.contains("listening on http"));
        s.http = line
            .split("listening on ")
            .nth(1)
            .and_then(|l| l.split("://").nth(1))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        s
    }

    /// Reads the log up to a line `matches` (20 s at most) and returns it.
    fn wait_line(&mut self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if matches(&l) {
                        return l;
                    }
                }
                Err(e) => panic!("no such log line ({e:?}): {}", self.seen.join("\n")),
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `tonegate ctl --socket SOCKET ARGS…`.
fn ctl(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tonegate"))
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

/// `ctl` that must succeed: its stdout.
fn ctl_ok(socket: &std::path::Path, args: &[&str]) -> String {
    let out = ctl(socket, args);
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ctl_json(socket: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ctl_ok(socket, &a)).unwrap()
}

/// A relay call between two loopback UDP sockets of the test's; `(call, caller, agent)`.
fn relay_call(
    gw: &Served,
    tok: &str,
    guid: &str,
) -> Result<(serde_json::Value, std::net::UdpSocket, std::net::UdpSocket), (u16, String)> {
    let caller = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let agent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    agent
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let r = common::gateway::http()
        .post(gw.url("/relay/v1/calls"))
        .bearer_auth(tok)
        .json(&serde_json::json!({
            "call_guid": guid, "codec": "PCMU",
            "caller": {"remote": caller.local_addr().unwrap().to_string()},
            "agent": {"remote": agent.local_addr().unwrap().to_string()},
        }))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().unwrap();
    if status != 201 {
        return Err((status, body));
    }
    Ok((serde_json::from_str(&body).unwrap(), caller, agent))
}

/// Sends RTP with sequence numbers `seqs` from the caller to the call, waits until the agent
/// hears some of it (the secure path may hold the last packet back as look-ahead) and the
/// relay has counted `total` packets in from the caller.
fn send_rtp(
    gw: &Served,
    tok: &str,
    call: &serde_json::Value,
    (caller, agent): (&std::net::UdpSocket, &std::net::UdpSocket),
    seqs: &[u16],
    total: u64,
) {
    let to = call["caller"]["local"].as_str().unwrap();
    let mut buf = [0u8; 200];
    for &seq in seqs {
        let n = tonegate::media::rtp::write_packet(
            &mut buf,
            0,
            false,
            seq,
            u32::from(seq) * 160,
            0x5eed,
            &[0xFF; 160],
        );
        caller.send_to(&buf[..n], to).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.recv_from(&mut buf).is_err() {
        assert!(Instant::now() < deadline, "the agent heard nothing");
    }
    let url = gw.url(&format!("/relay/v1/calls/{}", call["id"].as_str().unwrap()));
    loop {
        let info: serde_json::Value = common::gateway::http()
            .get(&url)
            .bearer_auth(tok)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if info["counters"]["caller_rtp_in"] == total {
            return;
        }
        assert!(Instant::now() < deadline, "not all packets arrived: {info}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tonegate ctl` against a real gateway with real relay calls: the list shows each call's
/// owner, age, node, secure flag, codec, packets and loss; show, terminate, totals, the call
/// limit, the log level and a drain all act on the running gateway; with no gateway the
/// error says so.
#[test]
fn ctl_operates_a_running_gateway_over_its_control_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Served::start(dir.path(), "", &[]);
    gw.wait_line(|l| l.contains("control socket"));
    let socket = dir.path().join("ctl.sock");
    // Paths relative to the config's directory, though the gateway runs in /.
    assert!(dir.path().join("state/t.db").exists());
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o660,
        "owner and group only"
    );

    let tok = served_token(&gw, "relay admin");
    let (one, c1, a1) = relay_call(&gw, &tok, "ctl-one").unwrap();
    let (two, c2, a2) = relay_call(&gw, &tok, "ctl-two").unwrap();
    // Ten packets with 4 and 5 missing: 8 in, 2 lost.
    send_rtp(&gw, &tok, &one, (&c1, &a1), &[1, 2, 3, 6, 7, 8, 9, 10], 8);
    send_rtp(&gw, &tok, &two, (&c2, &a2), &[1, 2, 3], 3);
    let id = one["id"].as_str().unwrap();

    let list = ctl_json(&socket, &["list"]);
    let calls = list["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{list}");
    let c = calls.iter().find(|c| c["id"] == id).unwrap();
    assert_eq!(c["owner"], common::gateway::DEV_CLIENT.0, "{c}");
    assert_eq!(c["codec"], "PCMU");
    assert_eq!(c["secure"], one["secure"], "as the relay says");
    assert_eq!(c["packets_in"], 8, "{c}");
    assert_eq!(c["packets_lost"], 2, "{c}");
    assert_eq!(c["loss_percent"], 20.0, "{c}");
    assert!(c["age_s"].as_u64().is_some() && !c["node"].as_str().unwrap().is_empty());
    let table = ctl_ok(&socket, &["list"]);
    for head in [
        "ID", "OWNER", "AGE", "NODE", "SECURE", "CODEC", "PACKETS", "LOSS",
    ] {
        assert!(table.contains(head), "{table}");
    }
    let row = table.lines().find(|l| l.starts_with(id)).expect(&table);
    assert!(row.contains("PCMU") && row.contains("20.0%"), "{row}");

    let shown = ctl_json(&socket, &["show", id]);
    assert_eq!(shown["counters"]["caller_rtp_lost"], 2, "{shown}");
    assert_eq!(shown["caller"]["local"], one["caller"]["local"]);
    let shown = ctl_ok(&socket, &["show", id]);
    assert!(shown.contains("counters.caller_rtp_lost: 2"), "{shown}");
    let missing = ctl(&socket, &["show", "no-such-call"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such call"));

    let totals = ctl_json(&socket, &["totals"]);
    assert_eq!(totals["calls_active"], 2, "{totals}");
    assert_eq!(totals["draining"], false);

    // The call limit: at 2, a third call is refused; at 3 it is set up.
    ctl_ok(&socket, &["max-calls", "2"]);
    assert_eq!(ctl_json(&socket, &["totals"])["max_calls"], 2);
    let (status, body) = relay_call(&gw, &tok, "ctl-three").unwrap_err();
    assert_eq!(status, 503, "{body}");
    let over = ctl(&socket, &["max-calls", "0"]);
    assert!(!over.status.success());
    assert!(String::from_utf8_lossy(&over.stderr).contains("max calls must be"));
    ctl_ok(&socket, &["max-calls", "3"]);
    let (three, _c3, _a3) = relay_call(&gw, &tok, "ctl-three").unwrap();

    // Terminate: the call is gone from the relay API too, and the audit trail names the
    // operator by uid.
    let out = ctl_ok(&socket, &["terminate", id]);
    assert!(out.contains("terminated"), "{out}");
    let r = common::gateway::http()
        .get(gw.url(&format!("/relay/v1/calls/{id}")))
        .bearer_auth(&tok)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    // SAFETY: getuid takes nothing.
    let me = format!("admin:ctl:uid={}", unsafe { libc::getuid() });
    // The relay audit is written off the request path (a writer thread): poll, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let audit: serde_json::Value = common::gateway::http()
            .get(gw.url(&format!("/admin/v1/audit/relay?call={id}")))
            .bearer_auth(&tok)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let named = audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["actor"] == me.as_str() && r["action"] == "delete");
        if named {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no delete by {me} in the relay audit after 10 s: {audit}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The log level changes at run time: debug lines appear, a bad filter is refused.
    assert!(!gw.seen.iter().any(|l| l.contains("DEBUG")));
    ctl_ok(&socket, &["log-level", "debug"]);
    ctl_ok(&socket, &["totals"]);
    common::gateway::http()
        .get(gw.url("/healthz"))
        .send()
        .unwrap();
    gw.wait_line(|l| l.contains("DEBUG"));
    let bad = ctl(&socket, &["log-level", "tonegate=loud"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad log filter"));
    ctl_ok(&socket, &["log-level", "info"]);

    // A drain: no new calls, /healthz 503 "draining", live calls keep their media; the
    // gateway stops by itself when the last one ends.
    let out = ctl_ok(&socket, &["drain"]);
    assert!(out.contains("draining"), "{out}");
    let h = common::gateway::http()
        .get(gw.url("/healthz"))
        .send()
        .unwrap();
    assert_eq!(h.status(), 503);
    assert_eq!(h.json::<serde_json::Value>().unwrap()["status"], "draining");
    let (status, body) = relay_call(&gw, &tok, "ctl-four").unwrap_err();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"), "{body}");
    send_rtp(&gw, &tok, &two, (&c2, &a2), &[4, 5, 6], 6);
    assert_eq!(ctl_json(&socket, &["totals"])["draining"], true);
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "stopped with calls live"
    );
    ctl_ok(&socket, &["terminate", two["id"].as_str().unwrap()]);
    ctl_ok(&socket, &["terminate", three["id"].as_str().unwrap()]);
    let status = wait_exit(&mut gw.child, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "the socket is removed at exit");

    let gone = ctl(&socket, &["list"]);
    assert!(!gone.status.success());
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains("no gateway at"), "{err}");
}

/// A socket in `dir` to hear systemd notifications on, as NOTIFY_SOCKET: its path and the
/// socket (reads wait up to 20 s).
fn notify_socket(dir: &std::path::Path) -> (std::path::PathBuf, std::os::unix::net::UnixDatagram) {
    let path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (path, socket)
}

/// `Type=notify`: with NOTIFY_SOCKET set, READY=1 comes once every listener (HTTP, internal,
/// control socket) already accepts; the watchdog pings while it runs (WATCHDOG_USEC); a
/// drain sends STOPPING=1.
#[test]
fn systemd_hears_ready_only_once_every_listener_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let (notify_path, notify) = notify_socket(dir.path());
    let next = || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).expect("no notification within 20 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // The internal listener on a port the kernel picks, named in the log.
    let cfg = served_config(dir.path(), "[internal]\nlisten = \"127.0.0.1:0\"\n");
    // WATCHDOG_PID must be the gateway's own: a shell that execs it keeps its pid.
    let child = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" serve --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_tonegate"))
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = next();
    // Everything bound is logged before READY is sent; read the addresses now.
    let mut gw = Served::watch(child);
    let internal = gw.wait_line(|l| l.contains("internal listener"));
    let internal = internal
        .split("http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(first.trim(), "READY=1", "the first notification");
    // READY=1 was already sent: each listener accepts now.
    TcpStream::connect(&gw.http).expect("HTTP accepts");
    TcpStream::connect(&internal).expect("the internal listener accepts");
    let socket = dir.path().join("ctl.sock");
    std::os::unix::net::UnixStream::connect(&socket).expect("the control socket accepts");
    // Pings every 100 ms while it runs.
    for _ in 0..3 {
        assert_eq!(next().trim(), "WATCHDOG=1");
    }
    ctl_ok(&socket, &["drain"]);
    let mut stopping = false;
    for _ in 0..50 {
        if next().trim() == "STOPPING=1" {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1 after the drain");
    let status = wait_exit(&mut gw.child, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
}

/// The Debian package (scripts/deb, cargo-deb) from this build: lintian finds nothing; it
/// holds the unit, the config as a conffile, the man page, completions and no debug info in
/// the binary (that is in tonegate-dbgsym); its scripts create the user the unit runs as and
/// give that group read access to the config. Then it is installed and run by a real systemd
/// (`systemd::package_runs_under_systemd`).
#[test]
fn the_debian_package_passes_lintian_and_runs_under_systemd() {
    let (Some(lintian), Some(_)) = (common::tool("lintian"), common::tool("cargo-deb")) else {
        common::skip(
            "Debian package",
            "lintian or cargo-deb is not installed (scripts/test installs both)",
        );
        return;
    };
    let out_dir = tempfile::tempdir().unwrap();
    let built = Command::new(common::root().join("scripts/deb"))
        .args(["--profile", "dev", "--no-build", "-o"])
        .arg(out_dir.path())
        .env(
            "CARGO_TARGET_DIR",
            std::path::Path::new(env!("CARGO_BIN_EXE_tonegate"))
                .parent()
                .unwrap()
                .parent()
                .unwrap(),
        )
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = out_dir.path().join("tonegate_0.1.0-1_amd64.deb");
    let lint = Command::new(lintian)
        .args(["--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&lint.stdout);
    assert!(
        lint.status.success() && !said.lines().any(|l| l.starts_with(['E', 'W'])),
        "lintian: {said}{}",
        String::from_utf8_lossy(&lint.stderr)
    );
    let list = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for f in [
        "./usr/bin/tonegate",
        "./usr/lib/systemd/system/tonegate.service",
        "./etc/tonegate/tonegate.toml",
        "./usr/share/man/man1/tonegate.1.gz",
        "./usr/share/bash-completion/completions/tonegate",
        "./usr/share/tonegate/prompts/en/enter_card_number.wav",
    ] {
        assert!(list.contains(f), "{f} not in the package:\n{list}");
    }
    assert!(
        !list.contains("/usr/lib/debug/"),
        "debug info is in tonegate-dbgsym"
    );
    // Unpacks the package's control (-e) or data (-x) part into `name`.
    let unpack = |how: &str, name: &str| {
        let to = out_dir.path().join(name);
        let ok = Command::new("dpkg-deb")
            .arg(how)
            .arg(&deb)
            .arg(&to)
            .status()
            .unwrap();
        assert!(ok.success(), "dpkg-deb {how}");
        to
    };
    let ctrl = unpack("-e", "control");
    assert_eq!(
        std::fs::read_to_string(ctrl.join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/tonegate/tonegate.toml"
    );
    // The binary ships without debug sections.
    let data = unpack("-x", "data");
    let sections = Command::new("objdump")
        .arg("-h")
        .arg(data.join("usr/bin/tonegate"))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&sections.stdout).contains(".debug_info"));
    // The unit's user and group are the ones postinst creates and gives the config to.
    let unit =
        std::fs::read_to_string(data.join("usr/lib/systemd/system/tonegate.service")).unwrap();
    let postinst = std::fs::read_to_string(ctrl.join("postinst")).unwrap();
    assert!(
        unit.lines().any(|l| l == "User=tonegate") && unit.lines().any(|l| l == "Group=tonegate")
    );
    assert!(
        !unit.contains("DynamicUser=yes"),
        "a dynamic user could not read the config"
    );
    assert!(unit.lines().any(|l| l == "Type=notify"));
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    assert!(postinst.contains("chown root:tonegate /etc/tonegate /etc/tonegate/tonegate.toml"));
    assert!(postinst.contains("chmod 0640 /etc/tonegate/tonegate.toml"));
    // The packaged config names the control socket in the unit's RuntimeDirectory.
    let cfg = std::fs::read_to_string(data.join("etc/tonegate/tonegate.toml")).unwrap();
    assert!(
        cfg.contains("\"/run/tonegate/ctl.sock\"") && unit.contains("RuntimeDirectory=tonegate")
    );
    crate::systemd::package_runs_under_systemd(&deb);
}

/// A child process killed when dropped (a failed assertion leaves no gateway running).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tonegate serve` on the shipped config (HTTP on a free loopback port, its database
/// in `dir`), stderr piped; returns the child, its address and its log lines after the
/// listening line.
fn serve_shipped(dir: &std::path::Path) -> (Killed, String, Lines) {
    let shipped = std::fs::read_to_string(common::root().join("config/tonegate.toml")).unwrap();
    let db = dir.join("t.db").display().to_string();
    let prompts = common::root().join("config/prompts").display().to_string();
    // Relative paths are the config file's: the database goes in `dir`, the prompts are the
    // shipped ones.
    for shipped_line in [
        "listen = \"127.0.0.1:8080\"",
        "sqlite_path = \"../var/tonegate.db\"",
        "dir = \"prompts\"",
    ] {
        assert!(shipped.contains(shipped_line), "{shipped_line}");
    }
    let text = shipped
        .replacen("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"", 1)
        .replacen(
            "sqlite_path = \"../var/tonegate.db\"",
            &format!("sqlite_path = {db:?}"),
            1,
        )
        .replacen("dir = \"prompts\"", &format!("dir = {prompts:?}"), 1);
    let cfg = dir.join("t.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tonegate"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .current_dir(common::root())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, _, lines) = listening(&mut child);
    (Killed(child), addr, lines)
}

/// Creates an agent session (seed body, call `call_guid`) on the gateway at `addr` with the
/// development client, sending `X-Request-Id: request_id`; its id.
fn create_agent_session(
    client: &reqwest::blocking::Client,
    addr: &str,
    call_guid: &str,
    request_id: &str,
) -> String {
    let token: serde_json::Value = client
        .post(format!("http://{addr}/auth/connect/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "globalpci"),
            ("client_id", "tonegate-dev"),
            ("client_secret", "tonegate-dev-secret"),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let body = std::fs::read_to_string(common::fixture("globalpci/agentsession.json"))
        .unwrap()
        .replace("CALL-GUID-PLACEHOLDER", call_guid);
    let r = client
        .post(format!("http://{addr}/globalpci/v1/agentsession/"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .header("content-type", "application/json")
        .header("x-request-id", request_id)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let session: serde_json::Value = r.json().unwrap();
    session["sessionId"].as_str().unwrap().to_string()
}

/// The value of the sample `series` (name and labels exactly as written) in a scrape.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Runs promtool with `args`, `stdin` on its standard input; its exit status and output.
fn promtool(args: &[&str], stdin: &str) -> (bool, String) {
    let mut p = Command::new("promtool")
        .args(args)
        .current_dir(common::root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    p.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A live gateway's `/metrics` passes `promtool check metrics` with no finding, carries the
/// process, build, port, session, payment and webhook metrics, and every metric the shipped
/// alert rules and Grafana dashboard query is in it; the rules pass `promtool test rules`.
#[test]
fn metrics_pass_promtool_and_feed_the_shipped_alerts_and_dashboard() {
    if common::tool("promtool").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (mut child, addr, _lines) = serve_shipped(dir.path());
    let client = reqwest::blocking::Client::new();
    let scrape = || {
        let r = client.get(format!("http://{addr}/metrics")).send().unwrap();
        assert_eq!(r.headers()["content-type"], "text/plain; version=0.0.4");
        r.text().unwrap()
    };
    let metrics = scrape();
    let (ok, findings) = promtool(&["check", "metrics"], &metrics);
    assert!(ok && findings.trim().is_empty(), "{findings}\n{metrics}");
    // Counters are typed as counters under their sample's name.
    assert!(metrics.contains("# TYPE tonegate_relay_calls_created_total counter\n"));
    assert!(metrics.contains("# TYPE process_cpu_seconds_total counter\n"));
    let version = format!(
        "tonegate_build_info{{version=\"{}\",arch=\"{}\",profile=\"debug\"}}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    );
    let build = sample(&metrics, &version)
        .or_else(|| sample(&metrics, &version.replace("debug", "release")));
    assert_eq!(build, Some(1.0), "{metrics}");
    assert!(sample(&metrics, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&metrics, "process_open_fds").unwrap() >= 3.0);
    assert!(sample(&metrics, "process_max_fds").unwrap() >= 1024.0);
    assert!(sample(&metrics, "process_cpu_seconds_total").is_some());
    let start = sample(&metrics, "process_start_time_seconds").unwrap();
    assert!(start >= started.floor() - 2.0, "{start} vs {started}");
    // The shipped range, 30000-39999: 5,000 even ports, all free.
    assert_eq!(
        sample(&metrics, "tonegate_relay_port_pairs{state=\"free\"}"),
        Some(5000.0)
    );
    assert_eq!(
        sample(&metrics, "tonegate_relay_port_pairs{state=\"used\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, "tonegate_payments_total{outcome=\"completed\"}"),
        Some(0.0)
    );
    assert_eq!(sample(&metrics, "tonegate_webhooks_pending"), Some(0.0));
    assert_eq!(
        sample(&metrics, "tonegate_sessions_live{state=\"Created\"}"),
        Some(0.0)
    );

    // A session created through the API shows as live.
    create_agent_session(&client, &addr, "metrics-call", "metrics-1");
    let metrics = scrape();
    assert_eq!(
        sample(&metrics, "tonegate_sessions_live{state=\"Created\"}"),
        Some(1.0),
        "{metrics}"
    );

    // Every metric the alerts and the dashboard read is served (histograms by their series).
    let rules =
        std::fs::read_to_string(common::root().join("config/prometheus/tonegate.rules.yml"))
            .unwrap();
    let dashboard =
        std::fs::read_to_string(common::root().join("config/grafana/tonegate-dashboard.json"))
            .unwrap();
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    let mut named = std::collections::BTreeSet::new();
    for text in [&rules, &dashboard] {
        for (i, _) in text
            .match_indices("tonegate_")
            .chain(text.match_indices("process_"))
        {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Prose mentions (`tonegate_build_info` in a description) are metric names too.
            named.insert(name);
        }
    }
    assert!(named.len() > 20, "{named:?}");
    // A family is served when it has a sample or is declared (a labelled histogram has no
    // series before its first observation).
    let declared = |name: &str| {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        metrics.lines().any(|l| {
            l.starts_with(&format!("{name} "))
                || l.starts_with(&format!("{name}{{"))
                || l.starts_with(&format!("# TYPE {name} "))
                || l == format!("# TYPE {base} histogram")
        })
    };
    for name in &named {
        assert!(
            declared(name),
            "{name} is queried by the shipped alerts or dashboard but not served"
        );
    }
    let (ok, out) = promtool(
        &["check", "rules", "config/prometheus/tonegate.rules.yml"],
        "",
    );
    assert!(ok, "{out}");
    let (ok, out) = promtool(
        &["test", "rules", "config/prometheus/tonegate.rules.test.yml"],
        "",
    );
    assert!(ok, "{out}");

    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert!(wait_exit(&mut child.0, Duration::from_secs(10)).success());
}

/// Logs to a pipe carry no colour codes; each request gets an id (the client's `X-Request-Id`
/// when safe, else a new one), echoed on the response and named by every line the request
/// logs; one access line per request names the route template, never the path's ids or the
/// query string.
#[test]
fn logs_are_plain_and_each_request_has_an_id_and_an_access_line() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, lines) = serve_shipped(dir.path());
    let client = reqwest::blocking::Client::new();
    let get = |path: &str, id: Option<&str>| {
        let mut r = client.get(format!("http://{addr}{path}"));
        if let Some(id) = id {
            r = r.header("x-request-id", id);
        }
        let r = r.send().unwrap();
        let echoed = r.headers()["x-request-id"].to_str().unwrap().to_string();
        (r.status().as_u16(), echoed)
    };
    assert_eq!(
        get(
            "/globalpci/v1/session/s-123?note=4111111111111111",
            Some("req-42")
        ),
        (401, "req-42".to_string())
    );
    // Made here when missing, unsafe to log, too long or card-like.
    let is_made = |id: &str| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    for given in [None, Some("two words"), Some("4111111111111111")] {
        let (status, id) = get("/healthz", given);
        assert_eq!(status, 200);
        assert!(is_made(&id), "{given:?} -> {id}");
    }
    let long = "a".repeat(129);
    assert!(is_made(&get("/healthz", Some(&long)).1));

    // A create logs inside its request: that line names the request's id.
    let session_id = create_agent_session(&client, &addr, "logs-call", "create-7");

    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert!(wait_exit(&mut child.0, Duration::from_secs(10)).success());
    let log: Vec<String> = lines.map_while(Result::ok).collect();
    let text = log.join("\n");
    assert!(
        !text.contains('\x1b'),
        "colour codes in a piped log:\n{text}"
    );
    let access: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("tonegate::access"))
        .collect();
    let line = access
        .iter()
        .find(|l| l.contains("request_id=req-42"))
        .unwrap_or_else(|| panic!("no access line for req-42:\n{text}"));
    for part in [
        "method=GET",
        "route=/globalpci/v1/session/{id}",
        "status=401",
        "duration_ms=",
    ] {
        assert!(line.contains(part), "{part} missing: {line}");
    }
    assert!(
        !text.contains("s-123") && !text.contains("note=") && !text.contains("4111111111111111")
    );
    // One access line per request: five GETs, the token and the create.
    assert_eq!(access.len(), 7, "{access:#?}");
    let created = log
        .iter()
        .find(|l| l.contains("session created") && l.contains(&session_id))
        .unwrap_or_else(|| panic!("no creation line:\n{text}"));
    assert!(created.contains("request_id=create-7"), "{created}");
}

/// A token of the development client for `scope` from a served gateway.
fn served_token(gw: &Served, scope: &str) -> String {
    common::serve::dev_token(&gw.url(""), scope)
}

/// What reaches `agent` while `send` runs (which answers how many packets it sent): read
/// as it comes (a socket buffer holds only a few hundred packets) until 95 % of them are in
/// (the look-ahead may hold the last back); panics after 30 s without them.
fn heard_while(agent: &std::net::UdpSocket, send: impl FnOnce() -> usize) -> Vec<Vec<u8>> {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let rx = agent.try_clone().unwrap();
    let want = std::sync::Arc::new(AtomicUsize::new(usize::MAX));
    let wanted = want.clone();
    let reader = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while got.len() * 100 < wanted.load(SeqCst).saturating_mul(95) {
            if Instant::now() > deadline {
                break;
            }
            if let Ok((n, _)) = rx.recv_from(&mut buf) {
                got.push(buf[..n].to_vec());
            }
        }
        got
    });
    let sent = send();
    want.store(sent, SeqCst);
    let got = reader.join().unwrap();
    common::assert_agent_heard_audio(&got, sent);
    got
}

/// The keys tonegate's detector hears in agent-leg packets (placed by their own timestamps).
fn keys_heard(packets: &[Vec<u8>]) -> String {
    let first_ts = packets
        .iter()
        .map(|p| tonegate::media::rtp::RtpHeader::parse(p).unwrap().timestamp)
        .min()
        .unwrap();
    common::keys_in(&common::agent_audio(
        packets,
        tonegate_dsp::G711Law::Ulaw,
        first_ts,
    ))
}

/// A bencoded ng offer for a new call (`supports load limit` when `load_limit`), its reply.
fn ng_offer(port: u16, call_id: &str, load_limit: bool) -> String {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0\r\n";
    let supports = if load_limit {
        "8:supportsl10:load limite"
    } else {
        ""
    };
    let msg = format!(
        "c1 d7:call-id{}:{call_id}7:command5:offer8:from-tag1:a3:sdp{}:{sdp}{supports}e",
        call_id.len(),
        sdp.len()
    );
    sock.send_to(msg.as_bytes(), ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("no ng reply");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// SIGTERM drains: a live call keeps its media, masking and capture (the card keyed after
/// the signal completes; the agent hears the caller and no key); `/healthz` is 503
/// `draining` naming the node; a new relay call is 503 with Retry-After; a new ng offer is
/// refused as rtpengine refuses one over its session limit; systemd hears STOPPING=1 and has
/// its stop timeout extended. Ending the last call ends the process, exit 0.
#[test]
fn sigterm_drains_live_calls_and_exits_when_the_last_one_ends() {
    use serde_json::{json, Value};
    let dir = tempfile::tempdir().unwrap();
    let (notify_path, notify) = notify_socket(dir.path());
    let ng_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut gw = Served::start_with(
        dir.path(),
        "",
        &format!("[cluster]\nnode = \"drain-a\"\n[ng]\nlisten = \"127.0.0.1:{ng_port}\"\n"),
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    let tok = served_token(&gw, "relay globalpci");
    let http = common::gateway::http();
    let health = http.get(gw.url("/healthz")).send().unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().unwrap()["node"], "drain-a");

    // An agent session capturing on a live call.
    let session: Value = http
        .post(gw.url("/globalpci/v1/agentsession"))
        .bearer_auth(&tok)
        .json(
            &json!({"AccountConfigurationId": "dev-account", "CallGuid": "drain-live",
                      "PaymentData": {"amount": "1.00"}}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let sid = session["sessionId"].as_str().unwrap().to_string();
    let (call, caller, agent) = relay_call(&gw, &tok, "drain-live").unwrap();
    let call_url = gw.url(&format!("/relay/v1/calls/{}", call["id"].as_str().unwrap()));
    let session_url = gw.url(&format!("/globalpci/v1/session/{sid}"));
    let state = || -> Value {
        http.get(&session_url)
            .bearer_auth(&tok)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let wait_state = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = state();
            if v["sessionState"] == want {
                return;
            }
            assert!(Instant::now() < deadline, "never {want}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_state("Capturing");
    // The node's name where operators look.
    assert!(
        gw.seen
            .iter()
            .any(|l| l.contains("listening on") && l.contains("node=drain-a")),
        "{:?}",
        gw.seen
    );
    let calls = ctl_json(&dir.path().join("ctl.sock"), &["list"]);
    assert_eq!(calls["calls"][0]["node"], "drain-a", "{calls}");
    let metrics = http.get(gw.url("/metrics")).send().unwrap().text().unwrap();
    assert_eq!(
        sample(&metrics, "tonegate_node_info{node=\"drain-a\"}"),
        Some(1.0)
    );
    let info: Value = http
        .get(&call_url)
        .bearer_auth(&tok)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(info["secure"], true, "{info}");
    let relay_addr = call["caller"]["local"].as_str().unwrap().parse().unwrap();
    let mut leg = common::KeyingLeg::new(caller, relay_addr);
    let heard_before = heard_while(&agent, || leg.key("4242", 1));
    assert_eq!(keys_heard(&heard_before), "", "keys reached the agent");

    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(gw.child.id() as i32, libc::SIGTERM) };
    gw.wait_line(|l| l.contains("SIGTERM: draining"));

    // The live call: media, masking and capture carry on.
    let heard_after = heard_while(&agent, || leg.key("424242424242#1230#737#", 2));
    assert_eq!(keys_heard(&heard_after), "", "keys reached the agent");
    wait_state("ReadyToSubmit");

    // Load balancers move away; new calls go elsewhere.
    let health = http.get(gw.url("/healthz")).send().unwrap();
    assert_eq!(health.status(), 503);
    let h: Value = health.json().unwrap();
    assert_eq!(
        (h["status"].as_str(), h["node"].as_str()),
        (Some("draining"), Some("drain-a")),
        "{h}"
    );
    let refused = http
        .post(gw.url("/relay/v1/calls"))
        .bearer_auth(&tok)
        .json(&json!({"call_guid": "drain-new", "codec": "PCMU",
                      "caller": {"remote": null}, "agent": {"remote": null}}))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"], "draining", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("drain-a"),
        "{body}"
    );
    let reply = ng_offer(ng_port, "ng-new", true);
    assert!(
        reply.contains("6:result10:load limit") && reply.contains("Parallel session limit reached"),
        "{reply}"
    );
    let reply = ng_offer(ng_port, "ng-new", false);
    assert!(
        reply.contains("12:error-reason30:Parallel session limit reached"),
        "{reply}"
    );

    // systemd: stopping, and more time while calls run.
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !(seen.iter().any(|m: &String| m.contains("STOPPING=1"))
        && seen.iter().any(|m| m.starts_with("EXTEND_TIMEOUT_USEC=")))
    {
        let n = notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{e}: only {seen:?}"));
        seen.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
    }
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "stopped with a call live"
    );

    // The last call ends: the gateway stops by itself.
    let r = http.delete(&call_url).bearer_auth(&tok).send().unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let status = wait_exit(&mut gw.child, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    gw.wait_line(|l| l.contains("tonegate stopped"));
}

/// SIGINT stops at once, live call or not (as SIGTERM did before drains).
#[test]
fn sigint_stops_at_once_with_a_call_live() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Served::start(dir.path(), "", &[]);
    let tok = served_token(&gw, "relay");
    let _call = relay_call(&gw, &tok, "int-live").unwrap();
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(gw.child.id() as i32, libc::SIGINT) };
    let status = wait_exit(&mut gw.child, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    gw.wait_line(|l| l.contains("SIGINT: stopping now"));
    gw.wait_line(|l| l.contains("tonegate stopped"));
}

/// A TLS client that trusts `roots`: connects to `addr` and answers with the certificate
/// the server presented.
struct TlsConn {
    stream: tokio_rustls::rustls::StreamOwned<tokio_rustls::rustls::ClientConnection, TcpStream>,
}

impl TlsConn {
    fn open(addr: &str, roots: &[&rcgen::CertifiedKey<rcgen::KeyPair>]) -> TlsConn {
        use tokio_rustls::rustls;
        let mut store = rustls::RootCertStore::empty();
        for r in roots {
            store.add(r.cert.der().clone()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
        let conn = rustls::ClientConnection::new(
            std::sync::Arc::new(config),
            "localhost".try_into().unwrap(),
        )
        .unwrap();
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = TlsConn {
            stream: rustls::StreamOwned::new(conn, tcp),
        };
        while c.stream.conn.is_handshaking() {
            c.stream.conn.complete_io(&mut c.stream.sock).unwrap();
        }
        c
    }

    /// The leaf certificate the server presented.
    fn served(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// `GET /healthz` on this connection (kept alive): the status line.
    fn healthz(&mut self) -> String {
        let answer = crate::hostile::healthz_on(&mut self.stream);
        answer.lines().next().unwrap_or_default().to_string()
    }
}

/// SIGHUP re-reads the TLS certificate and key: new connections get the new certificate, a
/// connection opened before carries on; files that do not load are refused (the log says
/// why) and the certificate served so far stays. `tonegate ctl reload-tls` does the same.
#[test]
fn sighup_serves_a_new_certificate_to_new_connections_and_keeps_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    let install = |ck: &rcgen::CertifiedKey<rcgen::KeyPair>,
                   key_of: &rcgen::CertifiedKey<rcgen::KeyPair>| {
        std::fs::write(dir.path().join("tls/cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("tls/key.pem"),
            key_of.signing_key.serialize_pem(),
        )
        .unwrap();
    };
    let make = || rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (old, new, third) = (make(), make(), make());
    install(&old, &old);
    let mut gw = Served::start(
        dir.path(),
        "tls = { cert_file = \"tls/cert.pem\", key_file = \"tls/key.pem\" }",
        &[],
    );
    let all = [&old, &new, &third];
    let mut before = TlsConn::open(&gw.http, &all);
    assert_eq!(before.served(), old.cert.der().to_vec());
    assert!(before.healthz().starts_with("HTTP/1.1 200"));

    install(&new, &new);
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(gw.child.id() as i32, libc::SIGHUP) };
    let line = gw.wait_line(|l| l.contains("TLS certificate reloaded"));
    assert!(
        line.contains("subject") && line.contains("not_after"),
        "{line}"
    );
    let mut fresh = TlsConn::open(&gw.http, &all);
    assert_eq!(
        fresh.served(),
        new.cert.der().to_vec(),
        "a new connection gets the new certificate"
    );
    assert!(fresh.healthz().starts_with("HTTP/1.1 200"));
    assert!(
        before.healthz().starts_with("HTTP/1.1 200"),
        "the open connection carries on"
    );

    // A renewal caught half-written: the old certificate beside the new key.
    install(&old, &third);
    // SAFETY: as above.
    unsafe { libc::kill(gw.child.id() as i32, libc::SIGHUP) };
    let line = gw.wait_line(|l| l.contains("TLS certificate not reloaded"));
    assert!(line.contains("does not fit"), "{line}");
    assert_eq!(
        TlsConn::open(&gw.http, &all).served(),
        new.cert.der().to_vec()
    );
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "SIGHUP stopped the gateway"
    );

    // The same through the control socket.
    let socket = dir.path().join("ctl.sock");
    std::fs::write(dir.path().join("tls/cert.pem"), "not a certificate").unwrap();
    let bad = ctl(&socket, &["reload-tls"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("still serving"), "{err}");
    install(&third, &third);
    let out = ctl_ok(&socket, &["reload-tls"]);
    assert!(out.contains("TLS certificate reloaded"), "{out}");
    assert_eq!(
        TlsConn::open(&gw.http, &all).served(),
        third.cert.der().to_vec()
    );
}
