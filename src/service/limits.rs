//! Per-user limits on the mutations that call an exchange, so nobody can
//! turn the service into a hammer against an exchange (or against an
//! account's lockout counter).

use crate::error::{AppError, AppResult};
use governor::clock::DefaultClock;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use uuid::Uuid;

/// Exchange calls a user may trigger: a burst, then a steady rate per minute.
pub struct ExchangeCallLimiter {
    limiter: RateLimiter<Uuid, DashMapStateStore<Uuid>, DefaultClock>,
}

impl ExchangeCallLimiter {
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
        }
    }

    /// `RATE_LIMITED` when the user is over the limit.
    pub fn check(&self, user_id: Uuid) -> AppResult<()> {
        self.limiter.check_key(&user_id).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&DefaultClock::default()));
            metrics::counter!("user_rate_limited_total", "what" => "exchange_tests").increment(1);
            AppError::RateLimited(format!(
                "too many exchange tests; try again in {} s",
                wait.as_secs().max(1)
            ))
        })?;
        // Forget idle users now and then so the map stays small.
        if self.limiter.len() > 10_000 {
            self.limiter.retain_recent();
        }
        Ok(())
    }
}

impl Default for ExchangeCallLimiter {
    fn default() -> Self {
        Self::new(30, 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_user_separately() {
        let limiter = ExchangeCallLimiter::new(1, 3);
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..3 {
            limiter.check(alice).unwrap();
        }
        let err = limiter.check(alice).unwrap_err();
        assert_eq!(err.code(), "RATE_LIMITED");
        assert!(err.to_string().contains("try again"));
        limiter.check(bob).unwrap();
    }
}
