//! Request budgets shared by every call this process makes to one exchange
//! environment from its egress IP: the weight the exchange reports as used in
//! the current minute, and bans (`Retry-After`, Binance's 418). A call that
//! would break the budget fails at once with a retryable `RATE_LIMITED`
//! instead of reaching the exchange, which escalates bans (Binance: from
//! 2 minutes to 3 days). In-process for now; shared through Redis later.

use crate::domain::{Environment, ExchangeErrorCode};
use crate::exchange::ExchangeError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When the exchange says "slow down" without saying how long.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    /// Minutes since the epoch of the window `used` belongs to.
    minute: i64,
    used: u32,
    blocked_until: Option<Instant>,
}

/// Weight per minute per environment, as Binance counts it per IP.
#[derive(Debug)]
pub struct WeightBudget {
    exchange: &'static str,
    limit_per_minute: u32,
    windows: Mutex<HashMap<Environment, Window>>,
}

impl WeightBudget {
    pub fn new(exchange: &'static str, limit_per_minute: u32) -> Self {
        Self {
            exchange,
            limit_per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn minute_now() -> i64 {
        chrono::Utc::now().timestamp().div_euclid(60)
    }

    /// Takes `weight` from this minute's budget, or says how long to wait.
    pub fn reserve(&self, environment: Environment, weight: u32) -> Result<(), ExchangeError> {
        let now = Instant::now();
        let minute = Self::minute_now();
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let window = windows.entry(environment).or_default();
        if let Some(until) = window.blocked_until {
            if until > now {
                return Err(self.refusal(until - now, "the exchange asked us to pause"));
            }
            window.blocked_until = None;
        }
        if window.minute != minute {
            *window = Window {
                minute,
                used: 0,
                blocked_until: None,
            };
        }
        if window.used.saturating_add(weight) > self.limit_per_minute {
            let seconds_left = 60 - chrono::Utc::now().timestamp().rem_euclid(60) as u64;
            return Err(self.refusal(
                Duration::from_secs(seconds_left.max(1)),
                "this minute's request budget is spent",
            ));
        }
        window.used += weight;
        Ok(())
    }

    /// Records the weight the exchange reports as used this minute (it counts
    /// every process behind the same IP, so it may exceed our own count).
    pub fn observe_used(&self, environment: Environment, used: u32) {
        let minute = Self::minute_now();
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let window = windows.entry(environment).or_default();
        if window.minute != minute {
            *window = Window {
                minute,
                used: 0,
                blocked_until: window.blocked_until,
            };
        }
        window.used = window.used.max(used);
    }

    /// Stops every call until `retry_after` has passed (429, 418 bans).
    pub fn block_for(&self, environment: Environment, retry_after: Option<Duration>) {
        let until = Instant::now() + retry_after.unwrap_or(DEFAULT_BACKOFF);
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let window = windows.entry(environment).or_default();
        window.blocked_until = Some(window.blocked_until.map_or(until, |current| current.max(until)));
        metrics::counter!("exchange_budget_blocks_total", "exchange" => self.exchange).increment(1);
    }

    fn refusal(&self, wait: Duration, why: &str) -> ExchangeError {
        metrics::counter!("exchange_calls_refused_total", "exchange" => self.exchange, "reason" => "budget")
            .increment(1);
        let seconds = wait.as_secs().max(1);
        ExchangeError::new(
            ExchangeErrorCode::RateLimited,
            format!("not sent: {why}; try again in {seconds} s"),
        )
        .with_hint("The service shares the exchange's rate limit among all its users; the request was held back to avoid an IP ban.")
        .with_retry_after(Some(Duration::from_secs(seconds)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_is_refused_past_the_limit() {
        let budget = WeightBudget::new("test", 50);
        budget.reserve(Environment::Production, 20).unwrap();
        budget.reserve(Environment::Production, 20).unwrap();
        let err = budget.reserve(Environment::Production, 20).unwrap_err();
        assert_eq!(err.code, ExchangeErrorCode::RateLimited);
        assert!(err.retryable());
        assert!(err.retry_after.is_some_and(|d| d <= Duration::from_secs(60)));
        // Another environment has its own budget.
        budget.reserve(Environment::Testnet, 20).unwrap();
    }

    #[test]
    fn reported_usage_counts_other_processes() {
        let budget = WeightBudget::new("test", 100);
        budget.observe_used(Environment::Production, 95);
        assert!(budget.reserve(Environment::Production, 10).is_err());
        assert!(budget.reserve(Environment::Production, 5).is_ok());
    }

    #[test]
    fn a_ban_blocks_until_it_lapses() {
        let budget = WeightBudget::new("test", 6000);
        budget.block_for(Environment::Production, Some(Duration::from_millis(50)));
        let err = budget.reserve(Environment::Production, 1).unwrap_err();
        assert!(err.message.contains("pause"), "{err}");
        std::thread::sleep(Duration::from_millis(60));
        budget.reserve(Environment::Production, 1).unwrap();
        // A shorter block never shortens a longer one.
        budget.block_for(Environment::Production, Some(Duration::from_secs(120)));
        budget.block_for(Environment::Production, Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(budget.reserve(Environment::Production, 1).is_err());
    }
}
