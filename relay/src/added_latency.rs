//! The relay's added latency — how long a datagram spends in tonegate, from the engine having
//! it to its forwarded copy being handed to the kernel — as a histogram operators can scrape.
//!
//! prometheus-client's `Histogram::observe` takes a lock, which the packet path must not.
//! Each engine loop (an io_uring worker; a tokio call task) records into buckets of its own:
//! a few relaxed atomic adds, nothing shared between threads on the packet path. `/metrics`
//! merges every live recorder and what ended ones left behind at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bucket upper bounds are 1 µs × 2^i for i in `0..BOUNDS` (1 µs to ~33 ms), then +Inf.
const BOUNDS: usize = 16;

/// One engine loop's buckets. Written by that loop only; read at scrape time.
#[derive(Debug, Default)]
pub(super) struct LatencyRecorder {
    /// Counts per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; BOUNDS + 1],
    /// Sum of every recorded latency, in nanoseconds.
    sum_ns: AtomicU64,
}

/// The bucket of a latency of `ns` nanoseconds: the first whose bound is at least it.
fn bucket(ns: u64) -> usize {
    let us = ns.div_ceil(1000);
    if us <= 1 {
        0
    } else {
        ((64 - (us - 1).leading_zeros()) as usize).min(BOUNDS)
    }
}

impl LatencyRecorder {
    /// Records `n` datagrams that each spent at most `took` in the relay.
    pub fn record(&self, took: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket(ns)].fetch_add(n, Relaxed);
        self.sum_ns.fetch_add(ns.saturating_mul(n), Relaxed);
    }

    fn add_to(&self, total: &mut LatencySnapshot) {
        for (t, b) in total.buckets.iter_mut().zip(&self.buckets) {
            *t += b.load(Relaxed);
        }
        total.sum_ns += self.sum_ns.load(Relaxed);
    }
}

/// The merged histogram at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    buckets: [u64; BOUNDS + 1],
    sum_ns: u64,
}

impl LatencySnapshot {
    /// Datagrams recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Sum of their latencies, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// `(upper bound in seconds, count in that bucket)`, not cumulative, the last bound
    /// `f64::MAX` (+Inf): what prometheus-client's histogram encoder takes.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let bound = if i < BOUNDS {
                    (1u64 << i) as f64 * 1e-6
                } else {
                    f64::MAX
                };
                (bound, n)
            })
            .collect()
    }
}

/// Every recorder the relay has handed out, and what those that ended had counted.
#[derive(Debug, Default)]
pub(super) struct AddedLatency {
    live: Mutex<Vec<Arc<LatencyRecorder>>>,
    ended: Mutex<LatencySnapshot>,
}

impl AddedLatency {
    /// A recorder for a new engine loop (per worker or per call, not per packet).
    pub fn recorder(&self) -> Arc<LatencyRecorder> {
        let r = Arc::new(LatencyRecorder::default());
        self.live.lock().expect("latency lock").push(r.clone());
        r
    }

    /// The loop that owned `r` has ended: its counts move to the ended total.
    pub fn retire(&self, r: &Arc<LatencyRecorder>) {
        let mut live = self.live.lock().expect("latency lock");
        if let Some(i) = live.iter().position(|x| Arc::ptr_eq(x, r)) {
            live.swap_remove(i);
            r.add_to(&mut self.ended.lock().expect("latency lock"));
        }
    }

    /// Everything recorded so far.
    pub fn snapshot(&self) -> LatencySnapshot {
        let live = self.live.lock().expect("latency lock");
        let mut total = self.ended.lock().expect("latency lock").clone();
        for r in live.iter() {
            r.add_to(&mut total);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_latency_lands_in_the_first_bucket_that_holds_it() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1_000), 0, "1 µs is within the 1 µs bound");
        assert_eq!(bucket(1_001), 1);
        assert_eq!(bucket(2_000), 1);
        assert_eq!(bucket(2_001), 2);
        assert_eq!(bucket(4_000), 2);
        assert_eq!(bucket(150_000), 8, "150 µs: within 256 µs, over 128");
        assert_eq!(bucket(32_768_000), 15, "the last finite bound");
        assert_eq!(bucket(32_768_001), BOUNDS, "+Inf");
        assert_eq!(bucket(u64::MAX), BOUNDS);
    }

    #[test]
    fn live_and_ended_recorders_merge_and_nothing_is_counted_twice() {
        let all = AddedLatency::default();
        let a = all.recorder();
        let b = all.recorder();
        a.record(Duration::from_micros(3), 10);
        b.record(Duration::from_micros(100), 2);
        b.record(Duration::from_millis(50), 1);
        b.record(Duration::from_micros(5), 0);
        all.retire(&b);
        all.retire(&b);
        let s = all.snapshot();
        assert_eq!(s.count(), 13);
        assert!((s.sum_seconds() - (30e-6 + 200e-6 + 50e-3)).abs() < 1e-12);
        let buckets = s.buckets();
        assert_eq!(buckets.len(), BOUNDS + 1);
        assert_eq!(buckets[2], (4e-6, 10));
        assert_eq!(buckets[7], (128e-6, 2));
        assert_eq!(buckets[BOUNDS], (f64::MAX, 1));
        // After retiring, a's later counts still show; b's were moved once.
        a.record(Duration::from_micros(3), 1);
        assert_eq!(all.snapshot().count(), 14);
    }
}
