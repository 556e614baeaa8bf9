//! Hostile and heavy HTTP traffic (issue 15): slow clients are cut off, the connection cap
//! holds, and shutdown has a deadline even with event streams open.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::gateway::{http, Gateway};
use serde_json::json;

/// Reads from `s` until the peer closes (or `limit` passes): what arrived, and whether it
/// closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

/// Panics unless a connection opened at `opened` was closed at a time consistent with a 1 s
/// header timeout: not before it (0.9 s, for timer granularity) and well before the 10 s
/// default (3 s, for a loaded machine), so a gateway ignoring the setting fails.
fn assert_closed_at_one_second(what: &str, closed: bool, opened: Instant) {
    let took = opened.elapsed();
    assert!(closed, "{what} was still open after {took:?}");
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_secs(3),
        "{what} was closed after {took:?}, with header_timeout_s = 1"
    );
}

#[test]
fn headers_sent_slowly_are_cut_off_at_the_header_timeout() {
    let gw = Gateway::start("[server]\nheader_timeout_s = 1\n");
    // A slowloris client: one header byte every 300 ms, never finishing.
    let opened = Instant::now();
    let mut slow = TcpStream::connect(gw.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let mut closed = false;
    while opened.elapsed() < Duration::from_secs(6) {
        if slow.write_all(b"a").is_err() {
            closed = true;
            break;
        }
        let (_, c) = read_until_closed(&mut slow, Duration::from_millis(300));
        if c {
            closed = true;
            break;
        }
    }
    assert_closed_at_one_second("a connection dribbling its headers", closed, opened);
    // One that sends nothing at all is closed too.
    let opened = Instant::now();
    let mut idle = TcpStream::connect(gw.addr).unwrap();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(6));
    assert_closed_at_one_second("an idle connection", closed, opened);
    // A client that finishes its headers in time is served as usual.
    let r = http().get(gw.url("/healthz")).send().unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn a_body_sent_slowly_is_answered_408_at_the_request_timeout() {
    let gw = Gateway::start("[server]\nrequest_timeout_s = 1\n");
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(
        b"POST /auth/connect/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\ngrant_type=client_credentials",
    )
    .unwrap();
    let (resp, _) = read_until_closed(&mut s, Duration::from_secs(6));
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp:?}");
}

#[test]
fn connections_over_the_cap_are_closed_and_counted_when_every_one_is_busy() {
    let gw = Gateway::start("[server]\nmax_connections = 20\nmax_connections_per_address = 0\n");
    // Twenty requests in flight: bodies promised and never sent. hyper says `100 Continue`
    // once the handler reads the body, so each is being answered when this goes on.
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.write_all(
            b"POST /auth/connect/token HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\n",
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        held.push(s);
    }
    // None of them may be evicted: the 21st is closed unanswered.
    let mut extra = TcpStream::connect(gw.addr).unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let (resp, closed) = read_until_closed(&mut extra, Duration::from_secs(5));
    assert!(closed && resp.is_empty(), "the 21st connection: {resp:?}");
    assert!(
        gw.state
            .http_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    // Once slots free, requests are served again, and the refusals are in the metrics.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    let body = loop {
        if let Ok(r) = http().get(gw.url("/metrics")).send() {
            if r.status() == 200 {
                break r.text().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no slot came free");
        std::thread::sleep(Duration::from_millis(50));
    };
    let line = body
        .lines()
        .find(|l| l.starts_with("tonegate_http_connections_refused_total"))
        .expect("refusal metric");
    let n: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(n >= 1, "{line}");
}

/// Sends `GET /healthz` on a keep-alive connection and reads its whole answer.
fn healthz_keep_alive(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    healthz_on(s)
}

/// [`healthz_keep_alive`] on any stream (TLS too) whose reads time out.
pub(crate) fn healthz_on(s: &mut (impl Read + Write)) -> String {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_full_table_of_idle_connections_makes_room_for_a_health_check() {
    let gw = Gateway::start("[server]\nmax_connections = 64\nmax_connections_per_address = 16\n");
    // Four hosts hold every connection they may: keep-alive, one request each, then quiet
    // (the attack sends one request per connection every few seconds).
    let mut held = Vec::new();
    for host in 2..=5 {
        for _ in 0..16 {
            let mut s = connect_from(&gw, &format!("127.0.0.{host}"));
            let r = healthz_keep_alive(&mut s);
            assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
            held.push(s);
        }
    }
    // A new client (the load balancer's health check) gets in.
    for _ in 0..3 {
        let mut probe = connect_from(&gw, "127.0.0.9");
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (resp, _) = read_until_closed(&mut probe, Duration::from_secs(5));
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
    }
    // Room was made by closing held idle connections, and that is counted.
    let mut closed = 0;
    for s in &mut held {
        if read_until_closed(s, Duration::from_millis(50)).1 {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no held connection was closed");
    assert!(
        gw.state
            .http_evicted
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[test]
fn the_per_address_cap_defaults_to_a_sixteenth_of_the_connection_cap() {
    let gw = Gateway::start("[server]\nmax_connections = 64\n");
    let _held = sixteenth_then_refused(&gw, "127.0.0.2");
}

/// With `max_connections = 64`: `from` gets its four connections (each served), and a fifth
/// is closed unanswered. Returns the four, still open.
fn sixteenth_then_refused(gw: &Gateway, from: &str) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = connect_from(gw, from);
        assert!(healthz_keep_alive(&mut s).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut fifth = connect_from(gw, from);
    let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let (resp, closed) = read_until_closed(&mut fifth, Duration::from_secs(5));
    assert!(closed && resp.is_empty(), "a fifth from {from}: {resp:?}");
    held
}

/// A connection to `gw` from source address `from`.
fn connect_from(gw: &Gateway, from: &str) -> TcpStream {
    let addr = gw.addr;
    let from: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    gw.runtime
        .block_on(async move {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(from)?;
            s.connect(addr).await
        })
        .unwrap()
        .into_std()
        .inspect(|s| s.set_nonblocking(false).unwrap())
        .unwrap()
}

#[test]
fn one_address_cannot_take_every_connection() {
    let gw = Gateway::start("[server]\nmax_connections = 100\nmax_connections_per_address = 10\n");
    let held: Vec<TcpStream> = (0..10).map(|_| connect_from(&gw, "127.0.0.2")).collect();
    // The eleventh from that address is closed unanswered, once the ten are accepted.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut extra = connect_from(&gw, "127.0.0.2");
        let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let (resp, closed) = read_until_closed(&mut extra, Duration::from_secs(2));
        if closed && resp.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the eleventh connection was served"
        );
    }
    // Another address is served meanwhile.
    let mut other = connect_from(&gw, "127.0.0.3");
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (resp, _) = read_until_closed(&mut other, Duration::from_secs(5));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    drop(held);
}

/// Kills the gateway this test started if the test fails before it exits.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn sigterm_with_an_open_event_stream_exits_within_the_drain_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    let shipped = std::fs::read_to_string(common::root().join("config/tonegate.toml")).unwrap();
    let mut base: toml::Table = toml::from_str(&shipped).unwrap();
    let server = base["server"].as_table_mut().unwrap();
    server.insert("listen".into(), "127.0.0.1:0".into());
    server.insert("drain_timeout_s".into(), 3.into());
    base["store"].as_table_mut().unwrap().insert(
        "sqlite_path".into(),
        dir.path().join("t.db").display().to_string().into(),
    );
    std::fs::write(&cfg, toml::to_string(&base).unwrap()).unwrap();
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_tonegate"))
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .current_dir(common::root())
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("stderr closed").unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let base = format!("http://{addr}");
    let tok = http()
        .post(format!("{base}/auth/connect/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", common::gateway::DEV_CLIENT.0),
            ("client_secret", common::gateway::DEV_CLIENT.1),
            ("scope", "globalpci"),
        ])
        .send()
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let v: serde_json::Value = http()
        .post(format!("{base}/globalpci/v1/agentsession"))
        .bearer_auth(&tok)
        .json(
            &json!({"AccountConfigurationId": "dev-account", "CallGuid": "call-drain",
            "PaymentData": {"merchantTxnRef": "DRAIN-1", "amount": "1.00"}}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = v["sessionId"].as_str().expect("session").to_string();
    let page = http()
        .get(format!(
            "{}?code={}",
            v["paymentUiUrl"].as_str().unwrap(),
            v["paymentUiCredentials"]["accessCode"].as_str().unwrap()
        ))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let ui = page
        .split("data-token=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("UI token in the page")
        .to_string();
    // The event stream, held open by a client that never stops reading.
    let mut sse = TcpStream::connect(&addr).unwrap();
    write!(
        sse,
        "GET /pay/agent/{id}/events?token={ui} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut first = [0u8; 256];
    let n = sse.read(&mut first).unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );

    let signalled = Instant::now();
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if signalled.elapsed() > Duration::from_secs(8) {
            panic!(
                "still running 8 s after SIGTERM with an event stream open (drain deadline 3 s)"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    // The stream was ended by the gateway, not left hanging.
    let (_, closed) = read_until_closed(&mut sse, Duration::from_secs(2));
    assert!(closed, "the event stream was not closed");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("tonegate stopped")),
        "{rest:?}"
    );
}

/// A token request for the development client from source address `from`: status and
/// `Retry-After`.
fn token_from(gw: &Gateway, from: [u8; 4], secret: &str) -> (u16, Option<u64>) {
    let client = reqwest::blocking::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let r = client
        .post(gw.url("/auth/connect/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", common::gateway::DEV_CLIENT.0),
            ("client_secret", secret),
        ])
        .send()
        .unwrap();
    let after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (r.status().as_u16(), after)
}

const THROTTLE: &str = "[auth]\nfailures_per_address = 4\nlockout_s = 30\n";

#[test]
fn an_address_guessing_secrets_is_answered_429_and_others_still_get_tokens() {
    let gw = Gateway::start(THROTTLE);
    let good = common::gateway::DEV_CLIENT.1;
    for _ in 0..4 {
        assert_eq!(token_from(&gw, [127, 0, 0, 2], "guess").0, 401);
    }
    let (status, after) = token_from(&gw, [127, 0, 0, 2], "guess");
    assert_eq!(status, 429);
    let after = after.expect("Retry-After");
    assert!((1..=30).contains(&after), "{after}");
    // While locked out the secret is not even checked: the right one is refused too.
    assert_eq!(token_from(&gw, [127, 0, 0, 2], good).0, 429);
    // Another address gets its token.
    assert_eq!(token_from(&gw, [127, 0, 0, 1], good).0, 200);
    let metrics = http()
        .get(gw.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("tonegate_token_requests_throttled_total "))
        .unwrap();
    assert_eq!(line, "tonegate_token_requests_throttled_total 2");
}

#[test]
fn guesses_from_many_addresses_lock_out_no_other_address() {
    let gw = Gateway::start(THROTTLE);
    let good = common::gateway::DEV_CLIENT.1;
    // Twelve attacking addresses, three guesses each: none reaches its own limit (36 guesses
    // for the id in all: over the whole-id lock the gateway used to have).
    for a in 10..22 {
        for _ in 0..3 {
            assert_eq!(token_from(&gw, [127, 0, 0, a], "guess").0, 401);
        }
    }
    // The client id is not locked: an address it has never used gets its token.
    assert_eq!(token_from(&gw, [127, 0, 0, 20], good).0, 200);
}

/// A token request to `url` from `from` for `client`, with an `X-Forwarded-For` header if given: the
/// status.
fn token_via(url: &str, from: [u8; 4], client: &str, secret: &str, xff: Option<&str>) -> u16 {
    let c = reqwest::blocking::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut r = c.post(url).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", client),
        ("client_secret", secret),
    ]);
    if let Some(x) = xff {
        r = r.header("x-forwarded-for", x);
    }
    r.send().unwrap().status().as_u16()
}

#[test]
fn a_right_secret_gets_its_token_while_wrong_ones_flood_in_for_its_id_from_its_address() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let hash = tonegate::auth::hash_secret("tenant-secret");
    let gw = Gateway::start(&format!(
        "[auth]\nfailures_per_address = 4\nlockout_s = 30\nhash_concurrency = 1\n\
         [[auth.clients]]\nid = \"tenant\"\nsecret_hash = \"{hash}\"\nscopes = [\"globalpci\"]\naccounts = [\"*\"]\n"
    ));
    let me = [127, 0, 0, 1];
    let tok_url = gw.url("/auth/connect/token");
    // The integration is running: it has had a token before the attack starts.
    assert_eq!(
        token_via(&tok_url, me, "tenant", "tenant-secret", None),
        200
    );
    let stop = AtomicBool::new(false);
    let (throttled, healthz_ok, healthz_bad) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let started = Instant::now();
    let mut legit = Vec::new();
    std::thread::scope(|s| {
        // Sixteen attackers: the same client id, the same address, wrong secrets.
        for t in 0..16 {
            let (tok_url, stop, throttled) = (&tok_url, &stop, &throttled);
            s.spawn(move || {
                for i in 0..2000 {
                    if stop.load(Relaxed) || started.elapsed() > Duration::from_secs(90) {
                        break;
                    }
                    if token_via(tok_url, me, "tenant", &format!("guess-{t}-{i}"), None) == 429 {
                        throttled.fetch_add(1, Relaxed);
                    }
                }
            });
        }
        // The load balancer's health check, meanwhile.
        {
            let health = gw.url("/healthz");
            let (stop, ok, bad) = (&stop, &healthz_ok, &healthz_bad);
            s.spawn(move || {
                let c = http();
                for _ in 0..100_000 {
                    if stop.load(Relaxed) || started.elapsed() > Duration::from_secs(90) {
                        break;
                    }
                    match c.get(&health).send() {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Relaxed),
                        _ => bad.fetch_add(1, Relaxed),
                    };
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        // The pair (tenant, 127.0.0.1) gets locked by the guesses...
        let deadline = Instant::now() + Duration::from_secs(60);
        while throttled.load(Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // ...and the integration keeps getting its tokens all the same.
        for _ in 0..20 {
            legit.push(token_via(&tok_url, me, "tenant", "tenant-secret", None));
        }
        stop.store(true, Relaxed);
    });
    assert!(
        throttled.load(Relaxed) > 0,
        "the guesses never locked the pair out: the test proved nothing"
    );
    assert!(
        legit.iter().all(|s| *s == 200),
        "legitimate requests: {legit:?}"
    );
    assert!(healthz_ok.load(Relaxed) > 0);
    assert_eq!(
        healthz_bad.load(Relaxed),
        0,
        "/healthz failed during the flood"
    );
}

#[test]
fn x_forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let gw = Gateway::start(&format!(
        "{THROTTLE}[server]\ntrusted_proxies = [\"127.0.0.5/32\"]\n"
    ));
    let (id, good) = common::gateway::DEV_CLIENT;
    let tok_url = gw.url("/auth/connect/token");
    // Not a proxy: whatever it claims, it is counted as itself.
    for _ in 0..4 {
        assert_eq!(
            token_via(&tok_url, [127, 0, 0, 2], id, "guess", Some("10.0.0.1")),
            401
        );
    }
    assert_eq!(
        token_via(&tok_url, [127, 0, 0, 2], id, "guess", Some("10.0.0.2")),
        429,
        "a new X-Forwarded-For from an untrusted peer escaped its lock"
    );
    // The proxy: each client it forwards is counted as that client.
    for _ in 0..4 {
        assert_eq!(
            token_via(&tok_url, [127, 0, 0, 5], id, "guess", Some("10.0.0.1")),
            401
        );
    }
    assert_eq!(
        token_via(&tok_url, [127, 0, 0, 5], id, "guess", Some("10.0.0.1")),
        429
    );
    // A forged hop to the left of the real one changes nothing.
    assert_eq!(
        token_via(
            &tok_url,
            [127, 0, 0, 5],
            id,
            "guess",
            Some("10.0.0.2, 10.0.0.1")
        ),
        429
    );
    // Another client behind the same proxy is not locked out.
    assert_eq!(
        token_via(&tok_url, [127, 0, 0, 5], id, "guess", Some("10.0.0.2")),
        401
    );
    assert_eq!(
        token_via(&tok_url, [127, 0, 0, 5], id, good, Some("10.0.0.2")),
        200
    );
}

#[test]
fn unknown_client_ids_are_refused_like_wrong_secrets_and_count_the_same() {
    let hash = tonegate::auth::hash_secret("s3cret");
    let gw = Gateway::start(&format!(
        "{THROTTLE}[[auth.clients]]\nid = \"hashed\"\nsecret_hash = \"{hash}\"\nscopes = [\"globalpci\"]\naccounts = [\"*\"]\n"
    ));
    let ask = |id: &str, secret: &str| {
        let r = http()
            .post(gw.url("/auth/connect/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
            ])
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().unwrap())
    };
    let (s1, b1) = ask("hashed", "wrong");
    let (s2, b2) = ask("no-such-client", "wrong");
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(b1, b2, "the answers tell the two apart");
    assert_eq!(ask("hashed", "s3cret").0, 200);
    // A body over the token endpoint's 8 KiB limit is refused before it is read.
    let big = "x".repeat(9 * 1024);
    assert_eq!(ask("hashed", &big).0, 413);
}

/// A burst of call set-ups (the relay creating calls faster than sessions link them) loses no
/// link: every waiting session captures on its call, and every call is in secure mode.
#[test]
fn a_burst_of_one_thousand_call_setups_links_every_waiting_session() {
    use tonegate::relay::Access;
    use tonegate::session::model::SessionState;
    const CALLS: usize = 1000;
    let gw = Gateway::start("[relay]\nengine = \"tokio\"\n");
    let tok = gw.token("globalpci");
    let text = std::fs::read_to_string(common::fixture("globalpci/agentsession.json")).unwrap();
    // The sessions first, over HTTP (four clients at once), all waiting for their calls.
    let url = gw.url("/globalpci/v1/agentsession");
    std::thread::scope(|s| {
        for part in 0..4 {
            let (url, tok, text) = (&url, &tok, &text);
            s.spawn(move || {
                let client = http();
                for i in (part..CALLS).step_by(4) {
                    let body = text.replace("CALL-GUID-PLACEHOLDER", &format!("burst-{i}"));
                    let r = client
                        .post(url)
                        .bearer_auth(tok)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
                }
            });
        }
    });
    let store = gw.state.sessions.store();
    assert_eq!(
        store.in_states(&[SessionState::Created]).unwrap().len(),
        CALLS
    );
    // Then every call at once, in one tight loop on the runtime.
    let relay = gw.state.relay.clone();
    let ids: Vec<String> = gw.runtime.block_on(async {
        (0..CALLS)
            .map(|i| dev_call(&gw, &format!("burst-{i}")))
            .collect()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let capturing = loop {
        let n = store.in_states(&[SessionState::Capturing]).unwrap().len();
        if n == CALLS || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(capturing, CALLS, "sessions that linked to their call");
    let insecure: Vec<&String> = ids
        .iter()
        .filter(|id| !relay.get(id, Access::Admin("test")).unwrap().secure)
        .collect();
    assert!(
        insecure.is_empty(),
        "calls not in secure mode: {insecure:?}"
    );
}

/// A relay call for the development client on `dev-account` (call inside the runtime).
fn dev_call(gw: &Gateway, call_guid: &str) -> String {
    gw.state
        .relay
        .create_call(tonegate::relay::NewCall {
            call_guid: call_guid.into(),
            law: tonegate_dsp::G711Law::Ulaw,
            event_pt: Some(101),
            caller_remote: tonegate::media::call::RemoteRule::Any,
            agent_remote: tonegate::media::call::RemoteRule::Any,
            rtcp_mux: true,
            ipv6: false,
            masking: None,
            owner: common::gateway::DEV_CLIENT.0.into(),
            account: Some("dev-account".into()),
            policy: gw.state.config.relay.dtmf_masking,
        })
        .unwrap()
        .id
}

/// Shutdown ends a capture in progress cleanly: its session goes back to Created (ready for
/// the call to come back), the audit says the gateway stopped it, and nothing waits for the
/// payment deadline.
#[test]
fn shutdown_ends_captures_and_says_so_in_the_audit() {
    use tonegate::session::model::SessionState;
    let mut gw = Gateway::start("[server]\npayment_drain_s = 60\n");
    let tok = gw.token("globalpci");
    let text = std::fs::read_to_string(common::fixture("globalpci/agentsession.json")).unwrap();
    let r = http()
        .post(gw.url("/globalpci/v1/agentsession"))
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .body(text.replace("CALL-GUID-PLACEHOLDER", "stopping-1"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<serde_json::Value>().unwrap()["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    gw.runtime.block_on(async { dev_call(&gw, "stopping-1") });
    let sessions = gw.state.sessions.clone();
    let state = |id: &str| sessions.store().get(id).unwrap().unwrap().state;
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&id) != SessionState::Capturing && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(state(&id), SessionState::Capturing);
    let started = Instant::now();
    gw.begin_stop();
    assert!(
        gw.wait_stopped(Duration::from_secs(30)),
        "the gateway stopped"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "shutdown waited for the payment deadline with no payment running"
    );
    assert_eq!(state(&id), SessionState::Created);
    let audit = sessions.store().audit(&id).unwrap();
    let last = audit.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.from.as_deref(), last.to.as_str()),
        ("gateway:shutdown", Some("Capturing"), "Created"),
        "{audit:?}"
    );
}

#[test]
fn a_trusted_proxy_is_not_held_to_one_addresss_share_of_connections() {
    // A sixteenth of 64: four connections per address, but the proxy carries many clients.
    let gw = Gateway::start("[server]\nmax_connections = 64\ntrusted_proxies = [\"127.0.0.5\"]\n");
    let mut held = Vec::new();
    for _ in 0..12 {
        let mut s = connect_from(&gw, "127.0.0.5");
        let r = healthz_keep_alive(&mut s);
        assert!(
            r.starts_with("HTTP/1.1 200"),
            "connection {}: {r:?}",
            held.len() + 1
        );
        held.push(s);
    }
    // Anyone else still gets a sixteenth.
    let _others = sixteenth_then_refused(&gw, "127.0.0.2");
}

/// The `(labels)` of every `tonegate_http_request_duration_seconds_count` sample.
fn http_label_sets(metrics: &str) -> std::collections::BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("tonegate_http_request_duration_seconds_count"))
        .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
        .collect()
}

#[test]
fn made_up_methods_and_paths_do_not_grow_the_metrics() {
    let gw = Gateway::start("");
    let scrape = || {
        http()
            .get(gw.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    // Two rounds of 1,000 unauthenticated requests, each with a method and a path never seen
    // before (four clients at once).
    let flood = |round: usize| {
        std::thread::scope(|s| {
            for part in 0..4 {
                let base = gw.url("");
                s.spawn(move || {
                    let c = http();
                    for i in (part..1000).step_by(4) {
                        let method =
                            reqwest::Method::from_bytes(format!("ZQ{round}X{i}").as_bytes())
                                .unwrap();
                        let path = if i % 2 == 0 {
                            "/healthz".to_string()
                        } else {
                            format!("/zq-{round}-{i}")
                        };
                        let r = c.request(method, format!("{base}{path}")).send().unwrap();
                        assert!(r.status().is_client_error(), "{}", r.status());
                    }
                });
            }
        })
    };
    scrape();
    flood(1);
    let first = scrape();
    flood(2);
    let second = scrape();
    for text in [&first, &second] {
        assert!(!text.contains("ZQ"), "a made-up method became a label");
        assert!(!text.contains("/zq-"), "a raw path became a label");
    }
    let labels = http_label_sets(&second);
    assert!(
        labels.iter().any(|l| l.contains("method=\"other\"")),
        "{labels:?}"
    );
    // The second thousand added no series: the scrape does not grow with the attack.
    assert_eq!(http_label_sets(&first), labels);
    assert!(second.len() < 64 * 1024, "{} bytes", second.len());
}

/// A free loopback TCP port (bound and let go: the gateway binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn with_an_internal_listener_metrics_and_admin_are_served_there_only() {
    let port = free_port();
    let gw = Gateway::start(&format!(
        "[server.internal]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    let internal = format!("http://127.0.0.1:{port}");
    let admin = gw.token("admin");
    // The public listener: 404 for both, the rest as before.
    assert_eq!(http().get(gw.url("/metrics")).send().unwrap().status(), 404);
    let r = http()
        .get(gw.url("/admin/v1/outbox"))
        .bearer_auth(&admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(http().get(gw.url("/healthz")).send().unwrap().status(), 200);
    // The internal listener (it is bound as the server starts: wait for it, bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        match http().get(format!("{internal}/metrics")).send() {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("internal listener: {e}"),
        }
    };
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .text()
        .unwrap()
        .contains("tonegate_http_connections_refused_total"));
    let r = http()
        .get(format!("{internal}/admin/v1/outbox"))
        .bearer_auth(&admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // It still wants an admin token, and serves nothing public.
    let r = http()
        .get(format!("{internal}/admin/v1/outbox"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http()
        .post(format!("{internal}/auth/connect/token"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}
