//! `dtmfLinkId`: the id a caller keys to link the call to a waiting self-service session.
//!
//! Ids end in a Luhn check digit, so a mistyped id is refused before any lookup. Guessing is
//! bounded three ways, each a counter on `/metrics`: a call gets `tries_per_call` wrong ids;
//! every failed lookup within a client counts against each of that client's waiting sessions,
//! which lock (for linking by id; CallGuid still links) after `tries_per_session`; and the
//! gateway as a whole looks up at most `tries_per_minute` ids a minute. Locking fails closed:
//! a caller guessing ids can stop a session from being found by id, never find one.
//!
//! Sans-IO: the time comes in as an argument.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::card::luhn_valid;
use crate::config::LinkConfig;

/// A new link id of `digits` digits (Luhn check digit last), from `rng`.
pub fn generate(digits: usize, rng: &mut impl rand::Rng) -> String {
    let mut d: Vec<u8> = (0..digits - 1).map(|_| rng.gen_range(0..10)).collect();
    // The check digit that makes the whole id pass Luhn.
    d.push(0);
    for c in 0..10 {
        *d.last_mut().expect("at least one digit") = c;
        if luhn_valid(&d) {
            break;
        }
    }
    d.iter().map(|&x| (b'0' + x) as char).collect()
}

/// Whether `id` (digits only) carries a valid check digit.
pub fn check_digit_ok(id: &str) -> bool {
    let d: Vec<u8> = id.bytes().map(|b| b.wrapping_sub(b'0')).collect();
    d.iter().all(|&x| x < 10) && luhn_valid(&d)
}

/// Counts of link-id tries by outcome (the metrics).
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Ids that linked a call.
    pub linked: AtomicU64,
    /// Ids with a wrong check digit (no lookup made).
    pub bad_check: AtomicU64,
    /// Ids that passed the check but named no waiting session of the call's client.
    pub not_found: AtomicU64,
    /// Calls that used up their tries.
    pub call_limit: AtomicU64,
    /// Sessions locked after too many failed tries against them.
    pub sessions_locked: AtomicU64,
    /// Tries refused by the gateway-wide rate limit.
    pub rate_limited: AtomicU64,
}

/// What to do with a keyed id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Look it up.
    Lookup,
    /// Wrong check digit: a wrong try, no lookup.
    BadCheck,
    /// Over the gateway-wide rate: a wrong try, no lookup.
    RateLimited,
}

/// The limits' state: per-session failure counts and the per-minute window.
#[derive(Debug)]
pub struct LinkGuard {
    cfg: LinkConfig,
    /// Failed tries counted against each waiting session, by session id.
    failures: HashMap<String, u32>,
    window_start: u64,
    window_tries: u32,
}

impl LinkGuard {
    /// A guard with `cfg`'s limits.
    pub fn new(cfg: LinkConfig) -> Self {
        LinkGuard {
            cfg,
            failures: HashMap::new(),
            window_start: 0,
            window_tries: 0,
        }
    }

    /// Whether `id`, keyed at `now` (Unix seconds), may be looked up.
    pub fn admit(&mut self, id: &str, now: u64, counters: &LinkCounters) -> Admission {
        if !check_digit_ok(id) {
            counters.bad_check.fetch_add(1, Relaxed);
            return Admission::BadCheck;
        }
        if now >= self.window_start + 60 {
            self.window_start = now;
            self.window_tries = 0;
        }
        if self.window_tries >= self.cfg.tries_per_minute {
            counters.rate_limited.fetch_add(1, Relaxed);
            return Admission::RateLimited;
        }
        self.window_tries += 1;
        Admission::Lookup
    }

    /// Whether session `id` is locked for linking by id.
    pub fn locked(&self, id: &str) -> bool {
        self.failures
            .get(id)
            .is_some_and(|&n| n >= self.cfg.tries_per_session)
    }

    /// A lookup failed while `waiting` (the client's waiting sessions) waited: each of them
    /// counts it; those reaching the limit lock.
    pub fn failed<'a>(
        &mut self,
        waiting: impl IntoIterator<Item = &'a str>,
        counters: &LinkCounters,
    ) {
        counters.not_found.fetch_add(1, Relaxed);
        for id in waiting {
            let n = self.failures.entry(id.to_string()).or_insert(0);
            *n += 1;
            if *n == self.cfg.tries_per_session {
                counters.sessions_locked.fetch_add(1, Relaxed);
                tracing::warn!(session = %id, "session locked for linking by dtmfLinkId after too many failed tries");
            }
        }
    }

    /// Forgets a session (it linked, or ended).
    pub fn forget(&mut self, id: &str) {
        self.failures.remove(id);
    }

    /// The per-call limit.
    pub fn tries_per_call(&self) -> u32 {
        self.cfg.tries_per_call
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_pass_the_check_and_one_typo_never_does() {
        let mut rng = rand::thread_rng();
        for digits in [8, 12, 16] {
            for _ in 0..200 {
                let id = generate(digits, &mut rng);
                assert_eq!(id.len(), digits);
                assert!(check_digit_ok(&id), "{id}");
                // Any single wrong digit fails Luhn.
                for i in 0..digits {
                    let mut b = id.clone().into_bytes();
                    b[i] = b'0' + (b[i] - b'0' + 1) % 10;
                    assert!(!check_digit_ok(std::str::from_utf8(&b).unwrap()));
                }
            }
        }
        assert!(!check_digit_ok("12a45678"));
    }

    #[test]
    fn limits_lock_sessions_and_rate() {
        let cfg = LinkConfig {
            digits: 8,
            tries_per_call: 3,
            tries_per_session: 2,
            tries_per_minute: 3,
        };
        let c = LinkCounters::default();
        let mut g = LinkGuard::new(cfg);
        let good = generate(8, &mut rand::thread_rng());
        let mut bad = good.clone().into_bytes();
        bad[0] = b'0' + (bad[0] - b'0' + 1) % 10;
        assert_eq!(
            g.admit(std::str::from_utf8(&bad).unwrap(), 0, &c),
            Admission::BadCheck
        );
        for _ in 0..3 {
            assert_eq!(g.admit(&good, 10, &c), Admission::Lookup);
        }
        assert_eq!(g.admit(&good, 20, &c), Admission::RateLimited);
        assert_eq!(g.admit(&good, 70, &c), Admission::Lookup, "a new minute");
        g.failed(["s1", "s2"], &c);
        assert!(!g.locked("s1"));
        g.failed(["s1"], &c);
        assert!(g.locked("s1") && !g.locked("s2"));
        g.forget("s1");
        assert!(!g.locked("s1"));
        assert_eq!(c.bad_check.load(Relaxed), 1);
        assert_eq!(c.rate_limited.load(Relaxed), 1);
        assert_eq!(c.not_found.load(Relaxed), 2);
        assert_eq!(c.sessions_locked.load(Relaxed), 1);
    }
}
