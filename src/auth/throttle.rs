//! Failed-login throttling for the token endpoint, with back-off.
//!
//! Failures are counted per (client id, source address) pair in a fixed window; reaching the
//! limit locks that pair out, for twice as long each time it happens again (up to a ceiling),
//! and a locked-out request is answered 429 without checking its secret, so guessing costs the
//! gateway nothing. Neither an address nor a client id is locked as a whole: client ids are not
//! secrets (they sit in IVR definitions) and behind a NAT or a proxy many clients share one
//! address, so either lock would let anyone deny a tenant its tokens. A client that has
//! presented its right secret recently is answered from the verified-secret cache
//! ([`super::verified`]) before the throttle is asked at all, so even a locked pair does not
//! shut out the client that shares it with an attacker.
//!
//! Hand-written rather than `governor`: that crate limits request rates, while this counts
//! failures only and needs escalating lockouts. Sans-IO: callers pass `now`.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Duration;

/// Limits for [`LoginThrottle`].
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Failures naming one client id from one address within `window` that lock that pair out.
    pub failures_per_address: u32,
    /// The counting window.
    pub window: Duration,
    /// The first lockout; each further one doubles, up to `max_lockout`.
    pub lockout: Duration,
    /// The longest lockout.
    pub max_lockout: Duration,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        ThrottleLimits {
            failures_per_address: 10,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(900),
        }
    }
}

/// Most pairs remembered; past it, the stalest are forgotten.
const MAX_KEYS: usize = 65_536;

#[derive(Debug, Clone, Copy, Default)]
struct Strikes {
    window_start: Duration,
    failures: u32,
    locked_until: Duration,
    lockouts: u32,
    last_seen: Duration,
}

impl Strikes {
    /// Records a failure at `now`; true when it starts a lockout.
    fn fail(&mut self, now: Duration, limit: u32, l: &ThrottleLimits) -> bool {
        if now.saturating_sub(self.window_start) >= l.window {
            self.window_start = now;
            self.failures = 0;
        }
        // A key that stayed clean for the longest lockout starts its back-off again.
        if self.lockouts > 0 && now.saturating_sub(self.locked_until) >= l.max_lockout {
            self.lockouts = 0;
        }
        self.last_seen = now;
        self.failures += 1;
        if self.failures < limit {
            return false;
        }
        let factor = 1u32 << self.lockouts.min(16);
        let lock = l.lockout.saturating_mul(factor).min(l.max_lockout);
        self.locked_until = now + lock;
        self.lockouts += 1;
        self.failures = 0;
        self.window_start = now;
        true
    }

    fn wait(&self, now: Duration) -> Option<Duration> {
        (self.locked_until > now).then(|| self.locked_until - now)
    }
}

/// Why a token request was turned away before its secret was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// How long until a retry can succeed (the `Retry-After` answer).
    pub retry_after: Duration,
}

/// The key an address is counted under: IPv4 as is, IPv6 by its /64 (one subscriber's
/// allocation, so rotating through it gains nothing).
pub(crate) fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// Counts failed token requests and decides which are refused unchecked.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    limits: ThrottleLimits,
    /// By (keyed hash of the client id, address key): a fixed size whatever id is sent (ids
    /// come from unauthenticated requests); a collision only merges two ids' counts.
    by_pair: HashMap<(u64, IpAddr), Strikes>,
    ids: std::collections::hash_map::RandomState,
}

impl LoginThrottle {
    /// A throttle with `limits`.
    pub fn new(limits: ThrottleLimits) -> Self {
        LoginThrottle {
            limits,
            ..Default::default()
        }
    }

    fn key(&self, client: &str, addr: IpAddr) -> (u64, IpAddr) {
        (self.ids.hash_one(client), address_key(addr))
    }

    /// Whether a request from `addr` naming `client` may have its secret checked at `now`.
    pub fn check(&self, client: &str, addr: IpAddr, now: Duration) -> Result<(), Throttled> {
        match self
            .by_pair
            .get(&self.key(client, addr))
            .and_then(|s| s.wait(now))
        {
            Some(w) => Err(Throttled {
                retry_after: w.max(Duration::from_secs(1)),
            }),
            None => Ok(()),
        }
    }

    /// Records a wrong secret (or unknown client) from `addr` naming `client`.
    pub fn failed(&mut self, client: &str, addr: IpAddr, now: Duration) {
        let key = self.key(client, addr);
        let l = self.limits;
        Self::prune(&mut self.by_pair, now, l.max_lockout);
        let s = self.by_pair.entry(key).or_default();
        if s.fail(now, l.failures_per_address, &l) {
            tracing::warn!(client, addr = %key.1, lockouts = s.lockouts, "token requests for this client from this address locked out after repeated failures (a client whose secret was verified recently is still answered)");
        }
    }

    /// Forgets keys with nothing to remember once the table is full.
    fn prune<K>(map: &mut HashMap<K, Strikes>, now: Duration, max_lockout: Duration) {
        if map.len() < MAX_KEYS {
            return;
        }
        map.retain(|_, s| s.wait(now).is_some() || now.saturating_sub(s.last_seen) < max_lockout);
        if map.len() >= MAX_KEYS {
            // Still full of live entries: drop the stalest half.
            let mut seen: Vec<Duration> = map.values().map(|s| s.last_seen).collect();
            seen.sort_unstable();
            let cut = seen[seen.len() / 2];
            map.retain(|_, s| s.last_seen > cut || s.wait(now).is_some());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn limits() -> ThrottleLimits {
        ThrottleLimits {
            failures_per_address: 3,
            window: S(60),
            lockout: S(10),
            max_lockout: S(40),
        }
    }

    #[test]
    fn an_address_is_locked_out_at_its_limit_and_backs_off_doubling() {
        let mut t = LoginThrottle::new(limits());
        for i in 0..3 {
            assert!(t.check("c", ip(1), S(i)).is_ok());
            t.failed("c", ip(1), S(i));
        }
        let err = t.check("c", ip(1), S(2)).unwrap_err();
        assert_eq!(err.retry_after, S(10));
        // Another address is not affected.
        assert!(t.check("c", ip(2), S(2)).is_ok());
        // After the lockout, three more failures lock it for twice as long, then four times,
        // never more than the ceiling.
        let mut now = 12;
        for expect in [20, 40, 40] {
            assert!(t.check("c", ip(1), S(now)).is_ok());
            for _ in 0..3 {
                t.failed("c", ip(1), S(now));
            }
            assert_eq!(
                t.check("c", ip(1), S(now)).unwrap_err().retry_after,
                S(expect)
            );
            now += expect + 1;
        }
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let mut t = LoginThrottle::new(limits());
        for i in 0..10 {
            t.failed("c", ip(1), S(i * 30));
            assert!(t.check("c", ip(1), S(i * 30)).is_ok(), "at {}", i * 30);
        }
    }

    #[test]
    fn a_pair_locks_alone_neither_its_address_nor_its_client() {
        let mut t = LoginThrottle::new(limits());
        for _ in 0..3 {
            t.failed("c", ip(1), S(1));
        }
        assert!(t.check("c", ip(1), S(1)).is_err(), "the pair is locked");
        assert!(
            t.check("d", ip(1), S(1)).is_ok(),
            "another client from it is not"
        );
        assert!(
            t.check("c", ip(2), S(1)).is_ok(),
            "the client from elsewhere is not"
        );
        // Many addresses, a failure or two each, lock nothing.
        for a in 10..100 {
            t.failed("c", ip(a), S(2));
            t.failed("c", ip(a), S(2));
        }
        assert!(t.check("c", ip(200), S(2)).is_ok());
    }

    #[test]
    fn addresses_in_one_ipv6_64_count_together() {
        let mut t = LoginThrottle::new(limits());
        for host in 1..=3u128 {
            let a = IpAddr::from(std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | host));
            t.failed("c", a, S(0));
        }
        let other_host = IpAddr::from(std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | 77));
        assert!(t.check("c", other_host, S(0)).is_err());
        let other_net = IpAddr::from(std::net::Ipv6Addr::from((0x2001_0db9u128 << 96) | 1));
        assert!(t.check("c", other_net, S(0)).is_ok());
    }

    #[test]
    fn a_key_that_stays_clean_starts_its_back_off_again() {
        let mut t = LoginThrottle::new(limits());
        for round in 0..2u64 {
            let now = round * 100;
            for _ in 0..3 {
                t.failed("c", ip(1), S(now));
            }
            assert_eq!(t.check("c", ip(1), S(now)).unwrap_err().retry_after, S(10));
        }
    }

    #[test]
    fn the_tables_stay_bounded_under_a_flood_of_addresses_and_ids() {
        let mut t = LoginThrottle::new(limits());
        for i in 0..(MAX_KEYS as u32 + 5000) {
            let addr = IpAddr::from(std::net::Ipv6Addr::from(u128::from(i) << 64));
            t.failed(&format!("id{i}"), addr, S(u64::from(i) / 1000));
        }
        assert!(t.by_pair.len() <= MAX_KEYS);
    }
}
