//! The offset between this host's clock and Coinbase's, measured from the
//! public `GET /api/v3/brokerage/time` and cached, so a JWT's `nbf`/`exp` are
//! right by Coinbase's clock even when ours drifts. Refreshed when older than
//! ten minutes or after a 401 (which a drifted clock would cause).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a measured offset is trusted.
pub const MAX_AGE: Duration = Duration::from_secs(600);

/// The cached offset (Coinbase's clock minus ours, in ms).
#[derive(Debug, Default)]
pub struct ClockCache {
    inner: Mutex<Cached>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Cached {
    offset_ms: i64,
    /// `None` before the first measurement and after [`ClockCache::invalidate`].
    measured_at: Option<Instant>,
}

impl ClockCache {
    /// The offset if it was measured less than `max_age` ago.
    pub fn fresh(&self, max_age: Duration) -> Option<i64> {
        let cached = *self.lock();
        cached
            .measured_at
            .filter(|at| at.elapsed() < max_age)
            .map(|_| cached.offset_ms)
    }

    /// The last measured offset however old (0 if never measured): better
    /// than nothing when Coinbase's clock cannot be read right now.
    pub fn last(&self) -> i64 {
        self.lock().offset_ms
    }

    pub fn store(&self, offset_ms: i64) {
        *self.lock() = Cached {
            offset_ms,
            measured_at: Some(Instant::now()),
        };
    }

    /// Forces the next request to measure again; keeps the value as [`Self::last`].
    pub fn invalidate(&self) {
        self.lock().measured_at = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        // The value is a plain number: a panic elsewhere cannot leave it half-written.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Coinbase's clock minus ours, assuming the server read its clock halfway
/// between our send (`sent_ms`) and our receipt (`received_ms`), Unix ms.
pub fn offset_ms(sent_ms: i64, received_ms: i64, server_ms: i64) -> i64 {
    let midpoint = sent_ms + (received_ms - sent_ms) / 2;
    server_ms - midpoint
}

/// Coinbase's current time in whole seconds, from our clock and the offset.
/// Rounded down so `nbf` is never ahead of Coinbase's clock by rounding.
pub fn corrected_secs(local_ms: i64, offset_ms: i64) -> i64 {
    (local_ms + offset_ms).div_euclid(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_uses_the_midpoint_of_the_round_trip() {
        assert_eq!(offset_ms(1_000, 1_200, 91_100), 90_000);
        assert_eq!(offset_ms(1_000, 1_000, 1_000), 0);
        assert_eq!(offset_ms(100_000, 100_400, 40_200), -60_000);
    }

    #[test]
    fn corrected_time_rounds_down_to_seconds() {
        assert_eq!(corrected_secs(1_700_000_000_999, 0), 1_700_000_000);
        assert_eq!(corrected_secs(1_700_000_000_000, 90_500), 1_700_000_090);
        assert_eq!(corrected_secs(1_700_000_000_000, -1), 1_699_999_999);
    }

    #[test]
    fn cache_is_fresh_until_max_age_or_invalidation() {
        let cache = ClockCache::default();
        assert_eq!(cache.fresh(MAX_AGE), None);
        assert_eq!(cache.last(), 0);
        cache.store(90_000);
        assert_eq!(cache.fresh(MAX_AGE), Some(90_000));
        assert_eq!(cache.fresh(Duration::ZERO), None, "older than max age");
        cache.invalidate();
        assert_eq!(cache.fresh(MAX_AGE), None);
        assert_eq!(cache.last(), 90_000, "kept as a fallback");
    }
}
