//! Wall time: the one trait the relay and the gateway read it through. The gateway's
//! adjustable `Clock` implements it (and reads the system through [`SystemClock`]), so the
//! relay's call times and release hold-off move with the gateway's clock.

/// Wall-clock time for the relay's two needs of it: a call's `created_at` and the release
/// hold-off after a key. The gateway passes its own clock ([`Relay::with_wall_clock`](crate::Relay::with_wall_clock)), so a
/// test that moves the gateway's clock moves the hold-off too; [`SystemClock`] otherwise.
pub trait WallClock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn unix_ms(&self) -> u64;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn unix_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}
