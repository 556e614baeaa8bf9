//! Wall-clock time for the gateway's IO layers: the sans-IO cores take time only as input,
//! and the shells (the API, sessions, the ng service, the outbox, and the relay) ask the
//! [`Clock`] in the app state. Wall time has one trait, the relay's [`WallClock`]: `Clock` is
//! the gateway's implementation of it, reading the system through [`SystemClock`] (this crate
//! reads the system's wall clock nowhere else outside tests). A development gateway started
//! with `server.adjustable_clock` lets its admin API move that clock forward, so tests of
//! expiries (tokens, links, sessions, the secure-mode hold-off) do not sleep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::relay::{SystemClock, WallClock};

/// The relay reads the same clock (a call's `created_at`, the release hold-off), so moving it
/// moves them too.
impl WallClock for Clock {
    fn unix_ms(&self) -> u64 {
        SystemClock
            .unix_ms()
            .saturating_add(self.skew_s().saturating_mul(1000))
    }
}

/// The gateway's wall clock: the system's, or (adjustable) the system's plus a skew that only
/// moves forward.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    skew: Option<Arc<AtomicU64>>,
}

/// [`Clock::advance`] on a clock that is not adjustable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the clock is the system's: start the gateway with server.adjustable_clock = true (development only)")]
pub struct FixedClock;

/// The most one [`Clock::advance`] moves the clock: a year.
pub const MAX_ADVANCE_S: u64 = 366 * 24 * 3600;

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { skew: None }
    }

    /// A clock that starts at the system's and that [`advance`](Self::advance) moves forward.
    pub fn adjustable() -> Clock {
        Clock {
            skew: Some(Arc::new(AtomicU64::new(0))),
        }
    }

    /// Whether [`advance`](Self::advance) works.
    pub fn is_adjustable(&self) -> bool {
        self.skew.is_some()
    }

    /// Seconds since the Unix epoch.
    pub fn unix_now(&self) -> u64 {
        (SystemClock.unix_ms() / 1000).saturating_add(self.skew_s())
    }

    fn skew_s(&self) -> u64 {
        self.skew.as_ref().map_or(0, |s| s.load(Ordering::Relaxed))
    }

    /// Moves the clock `secs` forward (never back: expiries already passed stay passed);
    /// returns the total skew from the system clock.
    pub fn advance(&self, secs: u64) -> Result<u64, FixedClock> {
        let skew = self.skew.as_ref().ok_or(FixedClock)?;
        let secs = secs.min(MAX_ADVANCE_S);
        Ok(skew.fetch_add(secs, Ordering::Relaxed).saturating_add(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system_now() -> u64 {
        SystemClock.unix_ms() / 1000
    }

    #[test]
    fn only_an_adjustable_clock_moves_and_only_forward() {
        let system = Clock::system();
        assert_eq!(system.advance(10), Err(FixedClock));
        let before = system_now();
        let c = Clock::adjustable();
        assert!(c.unix_now() >= before && c.unix_now() <= system_now() + 1);
        assert_eq!(c.advance(100), Ok(100));
        let clone = c.clone();
        assert_eq!(clone.advance(5), Ok(105));
        assert!(c.unix_now() >= before + 105);
        assert_eq!(system.advance(0), Err(FixedClock));
        // One call moves it at most a year.
        let d = Clock::adjustable();
        assert_eq!(d.advance(u64::MAX), Ok(MAX_ADVANCE_S));
    }

    #[test]
    fn the_relay_reads_the_same_clock_in_milliseconds() {
        let c = Clock::adjustable();
        let before = c.unix_ms();
        assert!(before / 1000 <= c.unix_now() && c.unix_now() <= before / 1000 + 1);
        c.advance(3).unwrap();
        let after = c.unix_ms();
        assert!(after >= before + 3000, "{before} -> {after}");
        assert!(c.unix_now() >= after / 1000);
    }
}
