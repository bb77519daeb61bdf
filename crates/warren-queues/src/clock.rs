//! The wall clock message deadlines are kept in.
//!
//! Deadlines are Unix milliseconds, not a monotonic instant: they are
//! written to disk with the message and must mean the same after a restart.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds (0 for a clock set before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The instant, on the runtime's monotonic clock, at which the Unix time
/// `deadline` will have passed (one millisecond late rather than early, so
/// a timer set for it never wakes to find it still ahead).
pub fn instant_of(deadline: u64) -> tokio::time::Instant {
    let wait = deadline.saturating_sub(unix_ms()).saturating_add(1);
    tokio::time::Instant::now() + std::time::Duration::from_millis(wait)
}
