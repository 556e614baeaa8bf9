//! `dtmfLinkId`: the id a caller keys to link the call to a waiting self-service session.
//!
//! Ids end in a Luhn check digit, so a mistyped id is refused before any lookup. Guessing is
//! bounded three ways, each a counter on `/metrics`: a call gets `tries_per_call` wrong ids;
//! every failed lookup within a client counts against each of that client's waiting sessions,
//! which lock (for linking by id; CallGuid still links) after `tries_per_session`; and each
//! client's calls look up at most `tries_per_minute` ids a minute. Locking fails closed: a
//! caller guessing ids can stop a session from being found by id, never find one; and one
//! client's callers never use up another client's tries (the gateway-wide total is bounded by
//! the configured clients, each at its own rate).
//!
//! The state is bounded: a client's failure counts are dropped for sessions that no longer
//! wait, every count expires `entry_ttl_s` after its last failure (no session waits longer),
//! and past [`MAX_FAILURE_ENTRIES`] the unlocked counts go first.
//!
//! Sans-IO: the time comes in as an argument.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Deserialize;
use tonegate_card::luhn_valid;

/// How callers link a call to a self-service session by keying its `dtmfLinkId`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// Digits of a link id, its Luhn check digit (the last) included (8-16).
    pub digits: usize,
    /// Wrong ids a call may key before it stops listening.
    pub tries_per_call: u32,
    /// Failed tries within its client while a session waits, after which it is locked (it can
    /// still link by CallGuid).
    pub tries_per_session: u32,
    /// Link-id lookups per minute on each client's calls; beyond, that client's tries are
    /// refused (another client's are not).
    pub tries_per_minute: u32,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            digits: 8,
            tries_per_call: 3,
            tries_per_session: 10,
            tries_per_minute: 60,
        }
    }
}

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
    /// Tries refused by the client's rate limit.
    pub rate_limited: AtomicU64,
}

/// What to do with a keyed id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Look it up.
    Lookup,
    /// Wrong check digit: a wrong try, no lookup.
    BadCheck,
    /// Over the client's rate: a wrong try, no lookup.
    RateLimited,
}

/// Sessions with failure counts held at most; beyond, unlocked counts are dropped first.
pub const MAX_FAILURE_ENTRIES: usize = 100_000;

/// Failed tries counted against one waiting session.
#[derive(Debug)]
struct Failures {
    /// The session's client.
    client: String,
    count: u32,
    /// Unix seconds of the last failure.
    last: u64,
}

/// A client's current minute of lookups.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    tries: u32,
}

/// The limits' state: per-session failure counts and each client's per-minute window.
#[derive(Debug)]
pub struct LinkGuard {
    cfg: LinkConfig,
    /// Failure counts expire this long after their last failure, seconds.
    entry_ttl_s: u64,
    /// Failed tries counted against each waiting session, by session id.
    failures: HashMap<String, Failures>,
    /// Lookups in the current minute, by client.
    windows: HashMap<String, Window>,
}

impl LinkGuard {
    /// A guard with `cfg`'s limits; failure counts expire `entry_ttl_s` after their last
    /// failure (the longest a session waits).
    pub fn new(cfg: LinkConfig, entry_ttl_s: u64) -> Self {
        LinkGuard {
            cfg,
            entry_ttl_s,
            failures: HashMap::new(),
            windows: HashMap::new(),
        }
    }

    /// Whether `id`, keyed at `now` (Unix seconds) on a call of `client`, may be looked up.
    pub fn admit(
        &mut self,
        client: &str,
        id: &str,
        now: u64,
        counters: &LinkCounters,
    ) -> Admission {
        if !check_digit_ok(id) {
            counters.bad_check.fetch_add(1, Relaxed);
            return Admission::BadCheck;
        }
        let w = match self.windows.get_mut(client) {
            Some(w) => w,
            None => {
                // A new client's window: drop those of minutes gone by (clients are
                // configured, so this stays small anyway).
                self.windows.retain(|_, w| now < w.start + 60);
                self.windows.entry(client.to_string()).or_insert(Window {
                    start: now,
                    tries: 0,
                })
            }
        };
        if now >= w.start + 60 {
            *w = Window {
                start: now,
                tries: 0,
            };
        }
        if w.tries >= self.cfg.tries_per_minute {
            counters.rate_limited.fetch_add(1, Relaxed);
            return Admission::RateLimited;
        }
        w.tries += 1;
        Admission::Lookup
    }

    /// Whether session `id` is locked for linking by id.
    pub fn locked(&self, id: &str) -> bool {
        self.failures
            .get(id)
            .is_some_and(|f| f.count >= self.cfg.tries_per_session)
    }

    /// A lookup on a call of `client` failed at `now` while `waiting` (the client's waiting
    /// sessions, all of them) waited: each of them counts it; those reaching the limit lock.
    /// Answers the sessions that locked with this failure (for the caller to log).
    pub fn failed<'a>(
        &mut self,
        client: &str,
        waiting: impl IntoIterator<Item = &'a str>,
        now: u64,
        counters: &LinkCounters,
    ) -> Vec<String> {
        counters.not_found.fetch_add(1, Relaxed);
        let mut locked = Vec::new();
        let waiting: Vec<&str> = waiting.into_iter().collect();
        let ttl = self.entry_ttl_s;
        // The client's sessions that stopped waiting, and counts past their time, go.
        self.failures.retain(|id, f| {
            now < f.last.saturating_add(ttl) && (f.client != client || waiting.contains(&&**id))
        });
        for id in waiting {
            let f = self.failures.entry(id.to_string()).or_insert(Failures {
                client: client.to_string(),
                count: 0,
                last: now,
            });
            f.count += 1;
            f.last = now;
            if f.count == self.cfg.tries_per_session {
                counters.sessions_locked.fetch_add(1, Relaxed);
                locked.push(id.to_string());
            }
        }
        self.bound();
        locked
    }

    /// Keeps at most [`MAX_FAILURE_ENTRIES`] counts: unlocked ones go first (a partial count
    /// protects least), then the locked ones failed longest ago.
    fn bound(&mut self) {
        if self.failures.len() <= MAX_FAILURE_ENTRIES {
            return;
        }
        let limit = self.cfg.tries_per_session;
        self.failures.retain(|_, f| f.count >= limit);
        let excess = self.failures.len().saturating_sub(MAX_FAILURE_ENTRIES);
        if excess > 0 {
            let mut by_age: Vec<(u64, String)> = self
                .failures
                .iter()
                .map(|(id, f)| (f.last, id.clone()))
                .collect();
            by_age.sort_unstable();
            for (_, id) in by_age.into_iter().take(excess) {
                self.failures.remove(&id);
            }
        }
    }

    /// Failure counts held now.
    pub fn tracked(&self) -> usize {
        self.failures.len()
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
    use rand::SeedableRng;

    /// Seeded, so a failure replays.
    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(0x7015_e6a7)
    }

    #[test]
    fn generated_ids_pass_the_check_and_one_typo_never_does() {
        let mut rng = rng();
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

    fn cfg() -> LinkConfig {
        LinkConfig {
            digits: 8,
            tries_per_call: 3,
            tries_per_session: 2,
            tries_per_minute: 3,
        }
    }

    #[test]
    fn limits_lock_sessions_and_rate() {
        let c = LinkCounters::default();
        let mut g = LinkGuard::new(cfg(), 3600);
        let good = generate(8, &mut rng());
        let mut bad = good.clone().into_bytes();
        bad[0] = b'0' + (bad[0] - b'0' + 1) % 10;
        assert_eq!(
            g.admit("a", std::str::from_utf8(&bad).unwrap(), 0, &c),
            Admission::BadCheck
        );
        for _ in 0..3 {
            assert_eq!(g.admit("a", &good, 10, &c), Admission::Lookup);
        }
        assert_eq!(g.admit("a", &good, 20, &c), Admission::RateLimited);
        assert_eq!(
            g.admit("a", &good, 70, &c),
            Admission::Lookup,
            "a new minute"
        );
        g.failed("a", ["s1", "s2"], 70, &c);
        assert!(!g.locked("s1"));
        g.failed("a", ["s1", "s2"], 71, &c);
        assert!(g.locked("s1") && g.locked("s2"));
        g.forget("s1");
        assert!(!g.locked("s1"));
        assert_eq!(c.bad_check.load(Relaxed), 1);
        assert_eq!(c.rate_limited.load(Relaxed), 1);
        assert_eq!(c.not_found.load(Relaxed), 2);
        assert_eq!(c.sessions_locked.load(Relaxed), 2);
    }

    #[test]
    fn one_clients_tries_never_use_up_anothers() {
        let c = LinkCounters::default();
        let mut g = LinkGuard::new(cfg(), 3600);
        let id = generate(8, &mut rng());
        for _ in 0..3 {
            assert_eq!(g.admit("attacker", &id, 5, &c), Admission::Lookup);
        }
        assert_eq!(g.admit("attacker", &id, 6, &c), Admission::RateLimited);
        for _ in 0..3 {
            assert_eq!(g.admit("victim", &id, 6, &c), Admission::Lookup);
        }
        assert_eq!(g.admit("victim", &id, 7, &c), Admission::RateLimited);
        // The attacker's failures count against its own waiting sessions only.
        g.failed("attacker", ["b1"], 7, &c);
        g.failed("attacker", ["b1"], 8, &c);
        assert!(g.locked("b1"));
        assert!(!g.locked("a1"));
        // Minutes gone by are forgotten: a new client's window prunes the stale ones.
        assert_eq!(g.admit("third", &id, 200, &c), Admission::Lookup);
        assert_eq!(g.windows.len(), 1);
    }

    #[test]
    fn failure_counts_are_pruned_and_bounded() {
        let c = LinkCounters::default();
        let mut g = LinkGuard::new(cfg(), 100);
        g.failed("a", ["s1", "s2"], 0, &c);
        g.failed("b", ["t1"], 0, &c);
        // s1 stopped waiting (linked, cancelled, expired): its count goes; b's are b's.
        g.failed("a", ["s2"], 10, &c);
        assert!(g.locked("s2"));
        assert_eq!(g.tracked(), 2, "s2 and t1");
        // A locked count holds while its session could still wait, then expires.
        g.failed("b", ["t2"], 105, &c);
        assert!(g.locked("s2"), "last failed at 10, expires at 110");
        assert!(!g.failures.contains_key("t1"), "t1 expired at 100");
        g.failed("b", ["t2"], 111, &c);
        assert!(!g.locked("s2"));
        assert_eq!(g.tracked(), 1);
        // However many sessions wait, the map stays bounded; locked counts are kept first.
        let mut g = LinkGuard::new(cfg(), 3600);
        g.failed("a", ["locked"], 0, &c);
        g.failed("a", ["locked"], 1, &c);
        let many: Vec<String> = (0..MAX_FAILURE_ENTRIES + 10)
            .map(|i| format!("w{i}"))
            .collect();
        g.failed("z", many.iter().map(String::as_str), 2, &c);
        assert!(g.tracked() <= MAX_FAILURE_ENTRIES);
        assert!(g.locked("locked"));
    }
}
