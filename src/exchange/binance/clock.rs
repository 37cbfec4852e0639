//! The offset between this service's clock and Binance's, per environment.
//! Binance refuses a signed request whose `timestamp` is 1 s ahead of its
//! clock or older than `recvWindow` (-1021), so signed requests carry
//! `local time + offset`. The offset is measured with `GET /api/v3/time` on
//! first use, again after a -1021, and when it is older than the refresh
//! interval (clocks drift).

use crate::domain::Environment;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Offsets measured so far. Shared by all calls of one client.
#[derive(Debug)]
pub struct ClockOffsets {
    refresh: Duration,
    measured: Mutex<HashMap<Environment, Measured>>,
}

#[derive(Debug, Clone, Copy)]
struct Measured {
    offset_ms: i64,
    at: Instant,
}

impl ClockOffsets {
    /// Offsets older than `refresh` count as unknown.
    pub fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            measured: Mutex::new(HashMap::new()),
        }
    }

    /// The offset (Binance's clock minus ours, ms) if measured less than the
    /// refresh interval before `now`.
    pub fn get(&self, environment: Environment, now: Instant) -> Option<i64> {
        let measured = *self.lock().get(&environment)?;
        (now.saturating_duration_since(measured.at) < self.refresh).then_some(measured.offset_ms)
    }

    pub fn set(&self, environment: Environment, offset_ms: i64, at: Instant) {
        self.lock().insert(environment, Measured { offset_ms, at });
    }

    /// Drops a measurement Binance has just proved wrong.
    pub fn forget(&self, environment: Environment) {
        self.lock().remove(&environment);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Environment, Measured>> {
        // The map is always consistent; a panic elsewhere must not stop signing.
        self.measured.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Binance's clock minus ours, from a `serverTime` read between `sent_ms`
/// and `received_ms` (our clock): the server read its clock about halfway
/// through the round trip.
pub fn offset_ms(sent_ms: i64, received_ms: i64, server_ms: i64) -> i64 {
    let midpoint = sent_ms + (received_ms - sent_ms) / 2;
    server_ms.saturating_sub(midpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn offsets_are_per_environment_and_expire() {
        let clock = ClockOffsets::new(10 * MINUTE);
        let t0 = Instant::now();
        assert_eq!(clock.get(Environment::Production, t0), None);

        clock.set(Environment::Production, 3_000, t0);
        assert_eq!(clock.get(Environment::Production, t0), Some(3_000));
        assert_eq!(clock.get(Environment::Testnet, t0), None);
        assert_eq!(clock.get(Environment::Production, t0 + 9 * MINUTE), Some(3_000));
        // Ten minutes old: measured again.
        assert_eq!(clock.get(Environment::Production, t0 + 10 * MINUTE), None);

        clock.set(Environment::Testnet, -10_000, t0);
        clock.forget(Environment::Production);
        assert_eq!(clock.get(Environment::Production, t0), None);
        assert_eq!(clock.get(Environment::Testnet, t0), Some(-10_000));
    }

    #[test]
    fn offset_is_taken_at_the_round_trip_midpoint() {
        // Sent at 1000, answered at 1100 (our clock); Binance said 4050.
        assert_eq!(offset_ms(1_000, 1_100, 4_050), 3_000);
        assert_eq!(offset_ms(20_000, 20_000, 10_000), -10_000);
        assert_eq!(offset_ms(0, 0, 0), 0);
    }
}
