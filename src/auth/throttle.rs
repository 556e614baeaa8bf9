//! Failed-login throttling for the token endpoint, with back-off.
//!
//! Failures are counted per source address and per client id in a fixed window; reaching a
//! limit locks the key out, for twice as long each time it happens again (up to a ceiling),
//! and a locked-out request is answered 429 without checking its secret, so guessing costs the
//! gateway nothing. A client id under attack is not denied to its owner: an address that has
//! presented the right secret for that client recently skips the client-id lock (OWASP's
//! "known device" exemption); only its own address limit applies to it.
//!
//! Hand-written rather than `governor`: that crate limits request rates, while this counts
//! failures only and needs the exemption and escalating lockouts. Sans-IO: callers pass `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Limits for [`LoginThrottle`].
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Failures from one address within `window` that lock it out.
    pub failures_per_address: u32,
    /// Failures naming one client id within `window` that lock the id out.
    pub failures_per_client: u32,
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
            failures_per_client: 30,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(900),
        }
    }
}

/// Most keys of each kind remembered; past it, the stalest are forgotten.
const MAX_KEYS: usize = 65_536;
/// How long a successful (client, address) pair stays exempt from the client-id lock.
const KNOWN_FOR: Duration = Duration::from_secs(24 * 3600);

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
    by_address: HashMap<IpAddr, Strikes>,
    by_client: HashMap<String, Strikes>,
    known: HashMap<(String, IpAddr), Duration>,
}

impl LoginThrottle {
    /// A throttle with `limits`.
    pub fn new(limits: ThrottleLimits) -> Self {
        LoginThrottle {
            limits,
            ..Default::default()
        }
    }

    /// Whether a request from `addr` naming `client` may have its secret checked at `now`.
    pub fn check(&self, client: &str, addr: IpAddr, now: Duration) -> Result<(), Throttled> {
        let addr = address_key(addr);
        let mut wait = self.by_address.get(&addr).and_then(|s| s.wait(now));
        let known = self
            .known
            .get(&(client.to_string(), addr))
            .is_some_and(|at| now.saturating_sub(*at) < KNOWN_FOR);
        if !known {
            let w = self.by_client.get(client).and_then(|s| s.wait(now));
            wait = wait.max(w);
        }
        match wait {
            Some(w) => Err(Throttled {
                retry_after: w.max(Duration::from_secs(1)),
            }),
            None => Ok(()),
        }
    }

    /// Records a wrong secret (or unknown client) from `addr` naming `client`.
    pub fn failed(&mut self, client: &str, addr: IpAddr, now: Duration) {
        let addr = address_key(addr);
        let l = self.limits;
        Self::prune(&mut self.by_address, now, l.max_lockout);
        let a = self.by_address.entry(addr).or_default();
        if a.fail(now, l.failures_per_address, &l) {
            tracing::warn!(%addr, lockouts = a.lockouts, "token requests from this address locked out after repeated failures");
        }
        if !self.by_client.contains_key(client) && self.by_client.len() >= MAX_KEYS {
            Self::prune(&mut self.by_client, now, l.max_lockout);
            if self.by_client.len() >= MAX_KEYS {
                // Only the address limit applies to ids past the table: unknown ids cost a
                // dummy hash each, and the address lock stops a flood of them.
                return;
            }
        }
        let c = self.by_client.entry(client.to_string()).or_default();
        if c.fail(now, l.failures_per_client, &l) {
            tracing::warn!(client, lockouts = c.lockouts, "token requests for this client locked out after repeated failures (addresses that used it successfully are exempt)");
        }
    }

    /// Records a right secret: the pair is exempt from the client-id lock from now on.
    pub fn succeeded(&mut self, client: &str, addr: IpAddr, now: Duration) {
        let addr = address_key(addr);
        if self.known.len() >= MAX_KEYS {
            self.known
                .retain(|_, at| now.saturating_sub(*at) < KNOWN_FOR);
            if self.known.len() >= MAX_KEYS {
                return;
            }
        }
        self.known.insert((client.to_string(), addr), now);
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
            failures_per_client: 5,
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
        assert!(t.check("other", ip(2), S(2)).is_ok());
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
    fn a_client_under_attack_stays_open_to_addresses_that_used_it_successfully() {
        let mut t = LoginThrottle::new(limits());
        t.succeeded("c", ip(9), S(0));
        // Five attackers, one failure each: the client id is locked.
        for a in 1..=5 {
            t.failed("c", ip(a), S(1));
        }
        assert!(
            t.check("c", ip(6), S(1)).is_err(),
            "a new address is refused"
        );
        assert!(
            t.check("c", ip(9), S(1)).is_ok(),
            "the known address is not"
        );
        assert!(t.check("d", ip(6), S(1)).is_ok(), "other clients are not");
        // The known address still has its own limit.
        for _ in 0..3 {
            t.failed("c", ip(9), S(2));
        }
        assert!(t.check("c", ip(9), S(2)).is_err());
    }

    #[test]
    fn addresses_in_one_ipv6_64_count_together() {
        let mut t = LoginThrottle::new(limits());
        for host in 1..=3u128 {
            let a = IpAddr::from(std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | host));
            t.failed("c", a, S(0));
        }
        let other_host = IpAddr::from(std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | 77));
        assert!(t.check("x", other_host, S(0)).is_err());
        let other_net = IpAddr::from(std::net::Ipv6Addr::from((0x2001_0db9u128 << 96) | 1));
        assert!(t.check("x", other_net, S(0)).is_ok());
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
        assert!(t.by_address.len() <= MAX_KEYS);
        assert!(t.by_client.len() <= MAX_KEYS);
    }
}
