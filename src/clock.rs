//! Wall-clock time for the IO layers: the one place outside tests that reads the system
//! clock for Unix seconds, so the sans-IO cores take time only as input.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
