//! A flood of requests with made-up methods, and the gateway's memory and `/metrics` size
//! either side of it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::support;

/// What a flood of made-up methods did.
pub struct MethodFlood {
    pub sent: u64,
    pub answered: u64,
    pub rss_before: f64,
    pub rss_after: f64,
    pub metrics_before: usize,
    pub metrics_after: usize,
}

/// Sends `n` unauthenticated requests, each with a method never seen before (16 in flight),
/// and measures the gateway's memory and `/metrics` size either side.
pub async fn method_flood(base: &str, pid: u32, n: u64) -> anyhow::Result<MethodFlood> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let scrape = || async {
        anyhow::Ok(
            http.get(format!("{base}/metrics"))
                .send()
                .await?
                .text()
                .await?
                .len(),
        )
    };
    let (rss_before, metrics_before) = (support::resident_mib(pid), scrape().await?);
    let answered = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (http, base, answered, next) = (
            http.clone(),
            base.to_string(),
            answered.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= n {
                    return;
                }
                let Ok(m) = reqwest::Method::from_bytes(format!("FLOOD{i}").as_bytes()) else {
                    continue;
                };
                if http
                    .request(m, format!("{base}/healthz"))
                    .send()
                    .await
                    .is_ok()
                {
                    answered.fetch_add(1, Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    Ok(MethodFlood {
        sent: n,
        answered: answered.load(Relaxed),
        rss_before,
        rss_after: support::resident_mib(pid),
        metrics_before,
        metrics_after: scrape().await?,
    })
}
