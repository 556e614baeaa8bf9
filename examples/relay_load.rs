//! Load tool for the relay: N concurrent calls on loopback, 20 ms PCMU (50 packets/s per call),
//! caller → agent, plain forwarding and secure mode (masking on), against a `tonegate serve`
//! child process. Reports the relay process's CPU time per relayed packet, loss, and the
//! latency the relay adds (p50/p99).
//!
//!     cargo build --release && cargo run --release --example relay_load -- --calls 100 --seconds 10
//!
//! Options: --calls N (100), --seconds S (10), --mode plain|secure|both (both),
//! --engine io_uring|tokio|both (both: the tokio engine is the baseline in the same run),
//! --binary PATH (target/release/tonegate). Every loop is bounded by count and time.

#[allow(unsafe_code)] // sysconf and kill through libc (std has no safe wrappers)
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::net::UdpSocket;

struct Args {
    calls: usize,
    seconds: u64,
    modes: Vec<bool>,
    engines: Vec<&'static str>,
    binary: String,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        calls: 100,
        seconds: 10,
        modes: vec![false, true],
        engines: vec!["tokio", "io_uring"],
        binary: "target/release/tonegate".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--calls" => a.calls = v()?.parse()?,
            "--seconds" => a.seconds = v()?.parse()?,
            "--mode" => {
                a.modes = match v()?.as_str() {
                    "plain" => vec![false],
                    "secure" => vec![true],
                    "both" => vec![false, true],
                    m => bail!("unknown mode {m}"),
                }
            }
            "--engine" => {
                a.engines = match v()?.as_str() {
                    "io_uring" => vec!["io_uring"],
                    "tokio" => vec!["tokio"],
                    "both" => vec!["tokio", "io_uring"],
                    e => bail!("unknown engine {e}"),
                }
            }
            "--binary" => a.binary = v()?,
            "-h" | "--help" => {
                println!("relay_load [--calls N] [--seconds S] [--mode plain|secure|both] [--engine io_uring|tokio|both] [--binary PATH]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(a.calls > 0 && a.calls <= 20_000, "--calls must be 1-20000");
    anyhow::ensure!(a.seconds > 0 && a.seconds <= 600, "--seconds must be 1-600");
    Ok(a)
}

struct CallEnds {
    caller: Arc<UdpSocket>,
    agent: Arc<UdpSocket>,
    relay_caller: SocketAddr,
    sent_at: Arc<Vec<AtomicU64>>,
}

const SEQ_RING: usize = 1024;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let speech = tonegate::wav::read_pcm8k(std::path::Path::new("fixtures/speech/speech_en.wav"))?;
    let mut frames: Vec<[u8; 160]> = Vec::new();
    for c in speech.chunks_exact(160) {
        let mut p = [0u8; 160];
        tonegate_dsp::G711Law::Ulaw.encode_into(c, &mut p);
        frames.push(p);
    }
    let frames = Arc::new(frames);
    println!(
        "| engine | mode | calls | packets/s | relay CPU-µs per packet | loss | added latency p50 | p99 | relay's histogram p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let runs: Vec<(&str, bool)> = a
        .engines
        .iter()
        .flat_map(|&e| a.modes.iter().map(move |&m| (e, m)))
        .collect();
    for (engine, secure) in runs {
        // The shipped policy masks every call for its whole life ("call"): the plain rows
        // would be masked too. "session" leaves secure mode to the API, as this tool drives it.
        let gw = support::start_gateway(&a.binary, a.calls, engine, |t| {
            t["relay"]["dtmf_masking"] = toml::Value::String("session".into());
            Ok(())
        })?;
        let http = reqwest::Client::new();
        let base = format!("http://{}", gw.addr);
        let tok: serde_json::Value = http
            .post(format!("{base}/auth/connect/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "tonegate-dev"),
                ("client_secret", "tonegate-dev-secret"),
                ("scope", "relay"),
            ])
            .send()
            .await?
            .json()
            .await?;
        let tok = tok["access_token"].as_str().context("token")?.to_string();
        let mut ends = Vec::with_capacity(a.calls);
        for i in 0..a.calls {
            let caller = UdpSocket::bind("127.0.0.1:0").await?;
            let agent = UdpSocket::bind("127.0.0.1:0").await?;
            let body = serde_json::json!({
                "call_guid": format!("load-{i}"), "codec": "PCMU",
                "caller": {"remote": caller.local_addr()?.to_string()},
                "agent": {"remote": agent.local_addr()?.to_string()},
            });
            let r: serde_json::Value = http
                .post(format!("{base}/relay/v1/calls"))
                .bearer_auth(&tok)
                .json(&body)
                .send()
                .await?
                .json()
                .await?;
            let id = r["id"]
                .as_str()
                .with_context(|| format!("create call: {r}"))?
                .to_string();
            if secure {
                http.post(format!("{base}/relay/v1/calls/{id}/secure"))
                    .bearer_auth(&tok)
                    .json(&serde_json::json!({"enabled": true}))
                    .send()
                    .await?
                    .error_for_status()?;
            }
            ends.push(CallEnds {
                caller: Arc::new(caller),
                agent: Arc::new(agent),
                relay_caller: r["caller"]["local"].as_str().context("local")?.parse()?,
                sent_at: Arc::new((0..SEQ_RING).map(|_| AtomicU64::new(0)).collect()),
            });
        }
        let epoch = Instant::now();
        // Packets count when *sent* inside the window [window.0, window.1] (ns since epoch).
        let window = Arc::new((AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)));
        let measuring = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let mut receivers = Vec::new();
        for (i, e) in ends.iter().enumerate() {
            // Sender: one packet every 20 ms, phases spread over the 20 ms.
            let (sock, to, times, frames) = (
                e.caller.clone(),
                e.relay_caller,
                e.sent_at.clone(),
                frames.clone(),
            );
            let (stop_s, measuring_s, sent_s) = (stop.clone(), measuring.clone(), sent.clone());
            let offset = Duration::from_micros((i as u64 * 20_000) / a.calls as u64);
            tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                let mut pkt = [0u8; 172];
                let mut seq: u16 = 0;
                let mut ts: u32 = 0;
                while !stop_s.load(Relaxed) {
                    tick.tick().await;
                    let f = &frames[(seq as usize) % frames.len()];
                    let n = tonegate::media::rtp::write_packet(
                        &mut pkt,
                        0,
                        false,
                        seq,
                        ts,
                        0x5EED + i as u32,
                        f,
                    );
                    times[seq as usize % SEQ_RING]
                        .store(epoch.elapsed().as_nanos() as u64, Relaxed);
                    if sock.send_to(&pkt[..n], to).await.is_ok() && measuring_s.load(Relaxed) {
                        sent_s.fetch_add(1, Relaxed);
                    }
                    seq = seq.wrapping_add(1);
                    ts = ts.wrapping_add(160);
                }
            });
            let (sock, times) = (e.agent.clone(), e.sent_at.clone());
            let (stop_r, window_r, received_r) = (stop.clone(), window.clone(), received.clone());
            receivers.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut buf = [0u8; 2048];
                while !stop_r.load(Relaxed) {
                    let Ok(Ok((n, _))) =
                        tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf))
                            .await
                    else {
                        continue;
                    };
                    if n < 12 {
                        continue;
                    }
                    let seq = u16::from_be_bytes([buf[2], buf[3]]);
                    let sent_ns = times[seq as usize % SEQ_RING].load(Relaxed);
                    if sent_ns < window_r.0.load(Relaxed) || sent_ns > window_r.1.load(Relaxed) {
                        continue;
                    }
                    let now = epoch.elapsed().as_nanos() as u64;
                    received_r.fetch_add(1, Relaxed);
                    lat.push(now.saturating_sub(sent_ns));
                }
                lat
            }));
        }
        // Warm up, then measure.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pid = gw.child.id();
        let cpu0 = support::cpu_seconds(pid)?;
        let hist0 = relay_histogram(&http, &base).await?;
        window.0.store(epoch.elapsed().as_nanos() as u64, Relaxed);
        measuring.store(true, Relaxed);
        tokio::time::sleep(Duration::from_secs(a.seconds)).await;
        measuring.store(false, Relaxed);
        window.1.store(epoch.elapsed().as_nanos() as u64, Relaxed);
        let cpu1 = support::cpu_seconds(pid)?;
        let hist1 = relay_histogram(&http, &base).await?;
        // Let packets in flight land before counting loss.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Relaxed);
        let mut lat: Vec<u64> = Vec::new();
        for r in receivers {
            lat.extend(r.await?);
        }
        lat.sort_unstable();
        let (s, r) = (sent.load(Relaxed), received.load(Relaxed));
        let pct = |q: f64| support::quantile_ms(&lat, q);
        // In secure mode each packet waits for the next one (look-ahead of one 20 ms frame).
        let hold_ms = if secure { 20.0 } else { 0.0 };
        // What the relay itself counted in the window (`/metrics`), as bucket bounds.
        let window_counts: Vec<(f64, u64)> = hist1
            .iter()
            .zip(&hist0)
            .map(|(&(le, n1), &(_, n0))| (le, n1.saturating_sub(n0)))
            .collect();
        let own = |q: f64| bucket_quantile_ms(&window_counts, q);
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.3} % | {:.3} ms | {:.3} ms | ≤ {} | ≤ {} |",
            engine,
            if secure { "secure (masking)" } else { "plain" },
            a.calls,
            r as f64 / a.seconds as f64,
            (cpu1 - cpu0) * 1e6 / r.max(1) as f64,
            (s.saturating_sub(r)) as f64 * 100.0 / s.max(1) as f64,
            pct(0.5) - hold_ms,
            pct(0.99) - hold_ms,
            own(0.5),
            own(0.99),
        );
        drop(gw);
    }
    Ok(())
}

/// The relay's own added-latency histogram from `/metrics`: `(le in seconds, cumulative count)`.
async fn relay_histogram(http: &reqwest::Client, base: &str) -> anyhow::Result<Vec<(f64, u64)>> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let prefix = "tonegate_relay_added_latency_seconds_bucket{le=\"";
    let buckets: Vec<(f64, u64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(prefix)?;
            let (le, n) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, n.trim().parse().ok()?))
        })
        .collect();
    if buckets.is_empty() {
        bail!("no tonegate_relay_added_latency_seconds in /metrics");
    }
    Ok(buckets)
}

/// The bound of the first bucket holding quantile `q` of cumulative `buckets`, in ms.
fn bucket_quantile_ms(buckets: &[(f64, u64)], q: f64) -> String {
    let total = buckets.last().map_or(0, |b| b.1);
    if total == 0 {
        return "-".into();
    }
    let want = (q * total as f64).ceil() as u64;
    match buckets.iter().find(|b| b.1 >= want) {
        Some(&(le, _)) if le.is_finite() => format!("{:.3} ms", le * 1e3),
        _ => "+Inf".into(),
    }
}
