//! Hostile-traffic load tool: masked calls carry on while the HTTP port is attacked.
//!
//! Against a `tonegate serve` child on loopback it holds N masked calls (20 ms PCMU, 50
//! packets/s each, caller → agent, secure from the first packet) and measures two windows of
//! the same length in one run: *quiet* (calls and the legitimate probes only), then *hostile*,
//! with, at the same time,
//! - idle and slow (one header byte every 2 s) HTTP connections, reopened when closed, from
//!   `--attack-addresses` loopback addresses;
//! - token requests with wrong secrets for an argon2-hashed client, at a fixed rate;
//! - digital sessions created and cancelled at a fixed rate (legitimate work);
//!
//! and in both windows `/healthz` probes (20/s, each on a new connection) and legitimate token requests for the attacked
//! client (2/s) from an address it has used before. Reports per window: audio loss and the
//! latency the relay adds (p50/p99), `/healthz` p99, legitimate token success and p99, session
//! success; the attack's own outcome; the process's open files and memory at the end.
//!
//! `--mode` picks the attack (issue 23):
//! - `mixed` (the default): as above;
//! - `shared`: the wrong secrets come from 127.0.0.1, the legitimate client's own address, for
//!   its own client id (behind a NAT or a TLS proxy everyone shares one address), 16 requests
//!   in flight at a time, and no idle connections;
//! - `hold`: `--attack-addresses` (4) addresses each open every keep-alive connection they can
//!   (`--idle` in all) and send one request on each every 8 s, to keep the connection table
//!   full; no token guessing.
//!
//! Before the hostile window, `--method-flood N` (0) requests with made-up methods are sent,
//! and the gateway's memory and `/metrics` size are printed before and after them.
//!
//!     cargo build --release && cargo run --release --example hostile_load -- --calls 500
//!
//! Options: --mode mixed|shared|hold, --calls N (500), --seconds S per window (15), --idle N
//! (5000; hold: 4000), --bad-tokens N per second (200), --sessions N per second (20),
//! --attack-addresses N (1; hold: 4), --method-flood N (0), --per-address N (the gateway's
//! `server.max_connections_per_address`; unset: its default), --engine io_uring|tokio
//! (io_uring), --binary PATH (target/release/tonegate). Every loop is bounded by count and
//! time.

mod args;
mod client;
mod counts;
mod method_flood;
#[allow(unsafe_code)] // sysconf and kill through libc (std has no safe wrappers)
#[path = "../support/mod.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;

use args::{args, Mode};
use client::{every, hash_secret, token, HASHED_CLIENT, HASHED_SECRET};
use counts::{Attack, Phase};
use method_flood::method_flood;

const SEQ_RING: usize = 1024;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let hash = hash_secret(&a.binary, HASHED_SECRET)?;
    let per_address = a.per_address;
    let gw = support::start_gateway(&a.binary, a.calls, &a.engine, |t| {
        if let Some(n) = per_address {
            t["server"]
                .as_table_mut()
                .context("[server]")?
                .insert("max_connections_per_address".into(), n.into());
        }
        let auth = t["auth"].as_table_mut().context("[auth]")?;
        let clients = auth
            .get_mut("clients")
            .and_then(|c| c.as_array_mut())
            .context("[[auth.clients]]")?;
        let mut c = toml::Table::new();
        c.insert("id".into(), HASHED_CLIENT.into());
        c.insert("secret_hash".into(), hash.clone().into());
        c.insert(
            "scopes".into(),
            toml::Value::Array(vec!["globalpci".into()]),
        );
        c.insert("accounts".into(), toml::Value::Array(vec!["*".into()]));
        clients.push(toml::Value::Table(c));
        Ok(())
    })?;
    let base = gw.base();
    let pid = gw.child.id();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let relay_tok = token(&http, &base, "tonegate-dev", "tonegate-dev-secret", "relay").await?;
    let gpci_tok = token(
        &http,
        &base,
        "tonegate-dev",
        "tonegate-dev-secret",
        "globalpci",
    )
    .await?;
    // The attacked client has logged in from here before (that address stays welcome).
    token(&http, &base, HASHED_CLIENT, HASHED_SECRET, "globalpci").await?;

    // Calls: secure from the first packet (the shipped policy masks the whole call).
    let speech = tonegate::wav::read_pcm8k(std::path::Path::new("fixtures/speech/speech_en.wav"))?;
    let frames: Arc<Vec<[u8; 160]>> = Arc::new(
        speech
            .chunks_exact(160)
            .map(|c| {
                let mut p = [0u8; 160];
                tonegate_dsp::G711Law::Ulaw.encode_into(c, &mut p);
                p
            })
            .collect(),
    );
    eprintln!("setting up {} masked calls", a.calls);
    let mut ends = Vec::with_capacity(a.calls);
    for i in 0..a.calls {
        let caller = UdpSocket::bind("127.0.0.1:0").await?;
        let agent = UdpSocket::bind("127.0.0.1:0").await?;
        let r: serde_json::Value = http
            .post(format!("{base}/relay/v1/calls"))
            .bearer_auth(&relay_tok)
            .json(&serde_json::json!({
                "call_guid": format!("hostile-{i}"), "codec": "PCMU",
                "caller": {"remote": caller.local_addr()?.to_string()},
                "agent": {"remote": agent.local_addr()?.to_string()},
            }))
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(r["secure"] == true, "call {i} is not masked: {r}");
        let to: SocketAddr = r["caller"]["local"].as_str().context("local")?.parse()?;
        ends.push((Arc::new(caller), Arc::new(agent), to));
    }

    let phase = Arc::new(Phase {
        current: AtomicUsize::new(0),
        windows: Default::default(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let attacking = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let window_s = a.seconds;
    // Bound on any periodic loop: the whole run's length at its rate, plus slack.
    let run_ticks = |per_s: u64| per_s * (window_s * 2 + 10);

    for (i, (caller, agent, to)) in ends.iter().cloned().enumerate() {
        let sent_at: Arc<Vec<AtomicU64>> =
            Arc::new((0..SEQ_RING).map(|_| AtomicU64::new(0)).collect());
        let (times, frames, stop_s, phase_s) =
            (sent_at.clone(), frames.clone(), stop.clone(), phase.clone());
        let offset = Duration::from_micros((i as u64 * 20_000) / a.calls as u64);
        let limit = run_ticks(50);
        tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let (mut pkt, mut seq, mut ts, mut n) = ([0u8; 172], 0u16, 0u32, 0u64);
            while !stop_s.load(Relaxed) && n < limit {
                tick.tick().await;
                let f = &frames[seq as usize % frames.len()];
                let len = tonegate::media::rtp::write_packet(
                    &mut pkt,
                    0,
                    false,
                    seq,
                    ts,
                    0x5EED + i as u32,
                    f,
                );
                // The window a packet counts in is the one it was sent in.
                let w = phase_s.current.load(Relaxed) as u64;
                times[seq as usize % SEQ_RING]
                    .store((epoch.elapsed().as_nanos() as u64) << 2 | w, Relaxed);
                if caller.send_to(&pkt[..len], to).await.is_ok() && w > 0 {
                    phase_s.windows[w as usize].sent.fetch_add(1, Relaxed);
                }
                (seq, ts, n) = (seq.wrapping_add(1), ts.wrapping_add(160), n + 1);
            }
        });
        let (times, stop_r, phase_r) = (sent_at, stop.clone(), phase.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut lat: [Vec<u64>; 3] = Default::default();
            while !stop_r.load(Relaxed) {
                let Ok(Ok((n, _))) =
                    tokio::time::timeout(Duration::from_millis(200), agent.recv_from(&mut buf))
                        .await
                else {
                    continue;
                };
                if n < 12 {
                    continue;
                }
                let seq = u16::from_be_bytes([buf[2], buf[3]]);
                let stamp = times[seq as usize % SEQ_RING].load(Relaxed);
                let (sent_ns, w) = (stamp >> 2, (stamp & 3) as usize);
                if w == 0 {
                    continue;
                }
                phase_r.windows[w].received.fetch_add(1, Relaxed);
                lat[w].push((epoch.elapsed().as_nanos() as u64).saturating_sub(sent_ns));
            }
            for (w, l) in lat.into_iter().enumerate().skip(1) {
                phase_r.windows[w].latency_ns.lock().unwrap().extend(l);
            }
        });
    }

    // Probes, in both windows: /healthz at 20/s, the attacked client's own logins at 2/s.
    {
        // A health check opens a connection of its own each time, as a load balancer's does
        // (a pooled one would get through a full connection table on its old connection).
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()?;
        let (base, phase) = (base.clone(), phase.clone());
        tokio::spawn(every(
            Duration::from_millis(50),
            stop.clone(),
            run_ticks(20),
            move || {
                let (http, base, phase) = (http.clone(), base.clone(), phase.clone());
                async move {
                    let t = Instant::now();
                    let ok = matches!(http.get(format!("{base}/healthz")).send().await,
                        Ok(r) if r.status().is_success());
                    if let Some(w) = phase.now() {
                        if ok {
                            w.healthz_ns
                                .lock()
                                .unwrap()
                                .push(t.elapsed().as_nanos() as u64);
                        } else {
                            w.healthz_failed.fetch_add(1, Relaxed);
                        }
                    }
                }
            },
        ));
    }
    {
        let (http, base, phase) = (http.clone(), base.clone(), phase.clone());
        tokio::spawn(every(
            Duration::from_millis(500),
            stop.clone(),
            run_ticks(2),
            move || {
                let (http, base, phase) = (http.clone(), base.clone(), phase.clone());
                async move {
                    let t = Instant::now();
                    let ok = token(&http, &base, HASHED_CLIENT, HASHED_SECRET, "globalpci")
                        .await
                        .is_ok();
                    if let Some(w) = phase.now() {
                        let c = if ok { &w.tokens_ok } else { &w.tokens_failed };
                        c.fetch_add(1, Relaxed);
                        if ok {
                            w.tokens_ns
                                .lock()
                                .unwrap()
                                .push(t.elapsed().as_nanos() as u64);
                        }
                    }
                }
            },
        ));
    }

    // The attack, started for the hostile window, on a runtime of its own at low CPU priority:
    // on a small machine the attacker and the calls share cores, and what is measured is the
    // gateway, not this tool's own scheduling.
    let attack_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("attacker")
        .on_thread_start(|| {
            // SAFETY: setpriority on this thread (tid 0 = the caller) has no memory effects.
            #[allow(unsafe_code)] // libc's setpriority (std has no safe wrapper)
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, 10)
            };
        })
        .enable_all()
        .build()?;
    let ah = attack_rt.handle().clone();
    let attack = Arc::new(Attack::default());
    let attackers: Vec<IpAddr> = if a.mode == Mode::Shared {
        // The legitimate client's own address.
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
    } else {
        (0..a.attack_addresses)
            .map(|i| {
                IpAddr::V4(Ipv4Addr::new(
                    127,
                    0,
                    1 + (i / 250) as u8,
                    2 + (i % 250) as u8,
                ))
            })
            .collect()
    };
    let mode = a.mode;
    let attack_deadline = Duration::from_secs(window_s * 2 + 30);
    for n in 0..a.idle {
        let (att, from, addr, attacking, stop) = (
            attack.clone(),
            attackers[n % attackers.len()],
            gw.addr,
            attacking.clone(),
            stop.clone(),
        );
        ah.spawn(async move {
            while !attacking.load(Relaxed) && !stop.load(Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let started = Instant::now();
            // Reopens when the server closes it, a bounded number of times.
            for _ in 0..100 {
                if stop.load(Relaxed) || started.elapsed() > attack_deadline {
                    return;
                }
                let sock = match tokio::net::TcpSocket::new_v4() {
                    Ok(s) => s,
                    Err(_) => return,
                };
                if sock.bind(SocketAddr::new(from, 0)).is_err() {
                    return;
                }
                let Ok(mut s) = sock.connect(addr).await else {
                    att.connect_failed.fetch_add(1, Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                att.connects.fetch_add(1, Relaxed);
                att.open_now.fetch_add(1, Relaxed);
                let slow = mode != Mode::Hold && n % 2 == 1;
                let header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
                let mut i = 0usize;
                let mut probe = [0u8; 1];
                let mut answer = [0u8; 4096];
                loop {
                    if stop.load(Relaxed) || started.elapsed() > attack_deadline {
                        att.open_now.fetch_sub(1, Relaxed);
                        return;
                    }
                    if mode == Mode::Hold {
                        // One keep-alive request every 8 s holds the connection.
                        if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                            .await
                            .is_err()
                        {
                            break;
                        }
                        use tokio::io::AsyncReadExt;
                        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer))
                            .await
                        {
                            Ok(Ok(0)) | Ok(Err(_)) => break,
                            _ => {}
                        }
                        match tokio::time::timeout(Duration::from_secs(8), s.peek(&mut probe)).await
                        {
                            Ok(Ok(0)) | Ok(Err(_)) => break,
                            _ => continue,
                        }
                    }
                    if slow {
                        let byte = [header.get(i).copied().unwrap_or(b'a')];
                        if s.write_all(&byte).await.is_err() {
                            break;
                        }
                        i += 1;
                    }
                    // A read that ends (0 bytes or an error) means the server closed it.
                    match tokio::time::timeout(Duration::from_secs(2), s.peek(&mut probe)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        _ => {}
                    }
                }
                att.open_now.fetch_sub(1, Relaxed);
                att.closed_by_server.fetch_add(1, Relaxed);
                // A persistent attacker, not a tight loop on this machine's own CPUs.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    {
        let (att, base, attacking, stop) = (
            attack.clone(),
            base.clone(),
            attacking.clone(),
            stop.clone(),
        );
        let from = attackers.clone();
        let period = Duration::from_secs_f64(1.0 / a.bad_tokens.max(1) as f64);
        let limit = if a.bad_tokens == 0 {
            0
        } else {
            run_ticks(a.bad_tokens)
        };
        let clients: Vec<reqwest::Client> = from
            .iter()
            .map(|ip| {
                reqwest::Client::builder()
                    .local_address(*ip)
                    .timeout(Duration::from_secs(10))
                    .build()
            })
            .collect::<Result<_, _>>()?;
        let k = Arc::new(AtomicUsize::new(0));
        // Shared mode: like 16 threads, never more than 16 guesses in flight.
        let in_flight = Arc::new(tokio::sync::Semaphore::new(if mode == Mode::Shared {
            16
        } else {
            tokio::sync::Semaphore::MAX_PERMITS
        }));
        ah.spawn(async move {
            while !attacking.load(Relaxed) && !stop.load(Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            every(period, stop, limit, move || {
                let (att, base) = (att.clone(), base.clone());
                let c = clients[k.fetch_add(1, Relaxed) % clients.len()].clone();
                let in_flight = in_flight.clone();
                async move {
                    let Ok(_permit) = in_flight.try_acquire_owned() else {
                        return;
                    };
                    att.bad_tokens.fetch_add(1, Relaxed);
                    let r = c
                        .post(format!("{base}/auth/connect/token"))
                        .form(&[
                            ("grant_type", "client_credentials"),
                            ("client_id", HASHED_CLIENT),
                            ("client_secret", "not-the-secret"),
                            ("scope", "globalpci"),
                        ])
                        .send()
                        .await;
                    let counter = match r.map(|r| r.status().as_u16()) {
                        Ok(401) => &att.answered_401,
                        Ok(429) => &att.answered_429,
                        Ok(503) => &att.answered_503,
                        _ => &att.answered_other,
                    };
                    counter.fetch_add(1, Relaxed);
                }
            })
            .await;
        });
    }
    {
        // Legitimate work in the hostile window: sessions created and cancelled.
        let (http, base, phase, attacking, stop) = (
            http.clone(),
            base.clone(),
            phase.clone(),
            attacking.clone(),
            stop.clone(),
        );
        let period = Duration::from_secs_f64(1.0 / a.sessions.max(1) as f64);
        let limit = if a.sessions == 0 {
            0
        } else {
            run_ticks(a.sessions)
        };
        let tok = gpci_tok.clone();
        let k = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            while !attacking.load(Relaxed) && !stop.load(Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            every(period, stop, limit, move || {
                let (http, base, phase, tok) =
                    (http.clone(), base.clone(), phase.clone(), tok.clone());
                let n = k.fetch_add(1, Relaxed);
                async move {
                    let created = http
                        .post(format!("{base}/globalpci/v1/digitalselfservicesession"))
                        .bearer_auth(&tok)
                        .json(&serde_json::json!({"AccountConfigurationId": "dev-account",
                            "PaymentData": {"CustomerPhoneNumber": "+447700900123",
                            "amount": "1.00", "merchantTxnRef": format!("hostile-{n}")}}))
                        .send()
                        .await;
                    let id = match created {
                        Ok(r) if r.status().is_success() => r
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| v["sessionId"].as_str().map(str::to_string)),
                        _ => None,
                    };
                    let ok = match id {
                        Some(id) => http
                            .post(format!("{base}/globalpci/v1/session/{id}/cancel"))
                            .bearer_auth(&tok)
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success()),
                        None => false,
                    };
                    if let Some(w) = phase.now() {
                        let c = if ok {
                            &w.sessions_ok
                        } else {
                            &w.sessions_failed
                        };
                        c.fetch_add(1, Relaxed);
                    }
                }
            })
            .await;
        });
    }

    // Warm up, quiet window, the attack ramps up, hostile window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (files_quiet, rss_quiet) = (support::open_files(pid), support::resident_mib(pid));
    eprintln!("quiet window: {window_s} s");
    phase.current.store(1, Relaxed);
    tokio::time::sleep(Duration::from_secs(window_s)).await;
    phase.current.store(0, Relaxed);
    let method_flood = if a.method_flood > 0 {
        Some(method_flood(&base, pid, a.method_flood).await?)
    } else {
        None
    };
    eprintln!("attack starting; hostile window in 3 s");
    attacking.store(true, Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    phase.current.store(2, Relaxed);
    tokio::time::sleep(Duration::from_secs(window_s)).await;
    phase.current.store(0, Relaxed);
    let (files, rss) = (support::open_files(pid), support::resident_mib(pid));
    let held = attack.open_now.load(Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!(
        "| window | packets/s | loss | added latency p50 | p99 | /healthz p99 | /healthz failed | legit tokens ok | legit token p99 | sessions ok |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut p99 = [0.0; 3];
    for (i, name) in [(1, "quiet"), (2, "hostile")] {
        let w = &phase.windows[i];
        let mut lat = w.latency_ns.lock().unwrap().clone();
        lat.sort_unstable();
        let mut hz = w.healthz_ns.lock().unwrap().clone();
        hz.sort_unstable();
        let mut tk = w.tokens_ns.lock().unwrap().clone();
        tk.sort_unstable();
        let (s, r) = (w.sent.load(Relaxed), w.received.load(Relaxed));
        let ratio = |ok: &AtomicU64, bad: &AtomicU64| {
            let (o, b) = (ok.load(Relaxed), bad.load(Relaxed));
            if o + b == 0 {
                "—".to_string()
            } else {
                format!("{o}/{} ({:.1} %)", o + b, o as f64 * 100.0 / (o + b) as f64)
            }
        };
        // Masking holds each packet for one 20 ms frame of look-ahead: not the relay's cost.
        let hold = 20.0;
        p99[i] = support::quantile_ms(&lat, 0.99) - hold;
        println!(
            "| {name} | {:.0} | {:.3} % | {:.3} ms | {:.3} ms | {:.2} ms | {} | {} | {:.1} ms | {} |",
            r as f64 / window_s as f64,
            s.saturating_sub(r) as f64 * 100.0 / s.max(1) as f64,
            support::quantile_ms(&lat, 0.5) - hold,
            p99[i],
            support::quantile_ms(&hz, 0.99),
            w.healthz_failed.load(Relaxed),
            ratio(&w.tokens_ok, &w.tokens_failed),
            support::quantile_ms(&tk, 0.99),
            ratio(&w.sessions_ok, &w.sessions_failed),
        );
    }
    println!();
    println!(
        "added latency p99, hostile − quiet: {:.3} ms",
        p99[2] - p99[1]
    );
    println!(
        "attack: {} connections opened ({} refused or failed to connect, {} closed by the server, {} held open at the end) from {} address(es); {} wrong-secret token requests: {} answered 401, {} 429, {} 503, {} other",
        attack.connects.load(Relaxed),
        attack.connect_failed.load(Relaxed),
        attack.closed_by_server.load(Relaxed),
        held,
        a.attack_addresses,
        attack.bad_tokens.load(Relaxed),
        attack.answered_401.load(Relaxed),
        attack.answered_429.load(Relaxed),
        attack.answered_503.load(Relaxed),
        attack.answered_other.load(Relaxed),
    );
    println!(
        "gateway: {files_quiet} open files, {rss_quiet:.1} MiB resident with the calls up; \
         {files} and {rss:.1} MiB at the end of the hostile window"
    );
    if let Some(f) = method_flood {
        println!(
            "method flood: {} requests with made-up methods ({} answered); gateway {:.1} MiB \
             resident before, {:.1} MiB after; /metrics {} bytes before, {} after",
            f.sent, f.answered, f.rss_before, f.rss_after, f.metrics_before, f.metrics_after
        );
    }
    drop(gw);
    attack_rt.shutdown_background();
    Ok(())
}
