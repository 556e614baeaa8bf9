//! Talking to the gateway: the attacked client's credentials, tokens, periodic work.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub const HASHED_CLIENT: &str = "load-hashed";
pub const HASHED_SECRET: &str = "load-hashed-secret";

/// An argon2 hash of `secret`, from the binary itself.
pub fn hash_secret(binary: &str, secret: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = std::process::Command::new(binary)
        .arg("hash-secret")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {binary} hash-secret"))?;
    writeln!(child.stdin.take().context("stdin")?, "{secret}")?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "hash-secret failed");
    let text = String::from_utf8(out.stdout)?;
    text.split_whitespace()
        .find(|w| w.starts_with("$argon2"))
        .map(str::to_string)
        .context("no hash in hash-secret's output")
}

pub async fn token(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    secret: &str,
    scope: &str,
) -> anyhow::Result<String> {
    let v: serde_json::Value = http
        .post(format!("{base}/auth/connect/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
            ("scope", scope),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(v["access_token"]
        .as_str()
        .context("access_token")?
        .to_string())
}

/// Runs `f` every `period` until `stop`, at most `limit` times.
pub async fn every<F, Fut>(period: Duration, stop: Arc<AtomicBool>, limit: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n = 0;
    while !stop.load(Relaxed) && n < limit {
        tick.tick().await;
        tokio::spawn(f());
        n += 1;
    }
}
