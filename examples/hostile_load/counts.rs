//! What the run counts: each window's loss, latency and probes, and the attack's outcome.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// Loss and latency of one measuring window, plus the probes' results.
#[derive(Default)]
pub struct Window {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub latency_ns: Mutex<Vec<u64>>,
    pub healthz_ns: Mutex<Vec<u64>>,
    pub healthz_failed: AtomicU64,
    pub tokens_ok: AtomicU64,
    pub tokens_failed: AtomicU64,
    pub tokens_ns: Mutex<Vec<u64>>,
    pub sessions_ok: AtomicU64,
    pub sessions_failed: AtomicU64,
}

/// Which window packets and probes count in (0: none, 1: quiet, 2: hostile).
pub struct Phase {
    pub current: AtomicUsize,
    pub windows: [Window; 3],
}

impl Phase {
    pub fn now(&self) -> Option<&Window> {
        match self.current.load(Relaxed) {
            0 => None,
            i => Some(&self.windows[i]),
        }
    }
}

/// The attack's own outcome.
#[derive(Default)]
pub struct Attack {
    pub connects: AtomicU64,
    pub connect_failed: AtomicU64,
    pub closed_by_server: AtomicU64,
    pub open_now: AtomicU64,
    pub bad_tokens: AtomicU64,
    pub answered_401: AtomicU64,
    pub answered_429: AtomicU64,
    pub answered_503: AtomicU64,
    pub answered_other: AtomicU64,
}
