//! The rate budgets of each exchange, as the exchanges scope them, and the
//! errors for calls held back. A call that would break a budget, or come
//! before a `Retry-After` lapsed, fails at once with a retryable
//! `RATE_LIMITED` instead of reaching the exchange, which escalates (Binance
//! bans last from 2 minutes to 3 days; Kraken locks accounts out).
//!
//! - Binance: request weight per egress IP and environment, 6,000 per
//!   minute (raised to what `X-MBX-USED-WEIGHT-1M` reports); 429/418 hold
//!   every call from that IP.
//! - Kraken: the key's call counter (Starter: max 15, −0.33/s unless
//!   `KRAKEN_TIER` says otherwise); Kraken's waits (`Retry-After`, throttling,
//!   lockouts) hold the key.
//! - Coinbase: 30 requests/s per key (Coinbase says "per user"; a key belongs
//!   to one user, so per key is the same or stricter). Kite: 10 requests/s per
//!   API key. A 429/503 `Retry-After` holds the key. Public, unsigned calls
//!   are held per exchange.
//!
//! A call that fits after a short wait (at most [`MAX_WAIT`]) waits instead
//! of failing. The numbers live in a [`BudgetStore`](super::shared::BudgetStore),
//! shared through Redis when configured.

use super::shared::{KeyId, Limit, Refusal, StoreError};
use crate::domain::{Environment, ExchangeErrorCode};
use crate::exchange::ExchangeError;
use std::time::Duration;

/// The longest a call waits for its budget before being refused.
pub const MAX_WAIT: Duration = Duration::from_secs(2);
/// How long to pause when an exchange says "slow down" without saying how long.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(30);
/// What a refusal for an unreachable store asks callers to wait.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// `REQUEST_WEIGHT` per minute per IP, shared by REST and the WebSocket API.
pub const BINANCE_WEIGHT_PER_MINUTE: u32 = 6000;
pub const BINANCE_WEIGHT: Limit = Limit::PerMinute {
    limit: BINANCE_WEIGHT_PER_MINUTE,
};
/// Coinbase private REST: 30 requests/s (exchanges.md marks it unverified;
/// counting per key is the safe reading either way).
pub const COINBASE_PER_KEY: Limit = Limit::Decaying {
    max: 30.0,
    decay_per_sec: 30.0,
};
/// Kite: 10 requests/s per API key for everything but quotes and history.
pub const KITE_PER_KEY: Limit = Limit::Decaying {
    max: 10.0,
    decay_per_sec: 10.0,
};

/// Kraken's verification tiers, which set the key's call counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KrakenTier {
    /// Max 15, −0.33 per second: the safe assumption.
    #[default]
    Starter,
    /// Max 20, −0.5 per second.
    Intermediate,
    /// Max 20, −1 per second.
    Pro,
}

impl KrakenTier {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "starter" => Some(Self::Starter),
            "intermediate" => Some(Self::Intermediate),
            "pro" => Some(Self::Pro),
            _ => None,
        }
    }

    pub fn limit(self) -> Limit {
        let (max, decay_per_sec) = match self {
            Self::Starter => (15.0, 0.33),
            Self::Intermediate => (20.0, 0.5),
            Self::Pro => (20.0, 1.0),
        };
        Limit::Decaying { max, decay_per_sec }
    }
}

/// What one call takes, and from which budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Store scope; names keys only by digest.
    pub scope: String,
    pub limit: Limit,
    pub cost: u32,
    /// How long to hold the scope after a rate-limit answer without
    /// `Retry-After` (Binance's 429/418); `None`: only when the exchange says.
    pub default_hold: Option<Duration>,
}

impl Budget {
    /// Binance: weight per egress IP and environment.
    pub fn binance(egress: &str, environment: Environment, weight: u32) -> Self {
        Self {
            scope: format!("binance:{egress}:{environment}"),
            limit: BINANCE_WEIGHT,
            cost: weight,
            default_hold: Some(DEFAULT_BACKOFF),
        }
    }

    /// A signed call with one API key.
    pub fn per_key(exchange: &str, api_key: &str, limit: Limit, cost: u32) -> Self {
        Self {
            scope: format!("{exchange}:key:{}", KeyId::of(api_key).short_hex()),
            limit,
            cost,
            default_hold: None,
        }
    }

    /// An unsigned call: only a hold the exchange imposed stops it.
    pub fn public(exchange: &str) -> Self {
        Self {
            scope: format!("{exchange}:public"),
            limit: Limit::None,
            cost: 0,
            default_hold: None,
        }
    }

    /// How long an answer's error holds this scope, if it does: a rate limit
    /// or an outage for which the exchange named a wait.
    pub fn hold_for(&self, error: &ExchangeError) -> Option<Duration> {
        match error.code {
            ExchangeErrorCode::RateLimited => error.retry_after.or(self.default_hold),
            ExchangeErrorCode::ExchangeUnavailable => error.retry_after,
            _ => None,
        }
        .filter(|wait| !wait.is_zero())
    }
}

/// The error for a call held back by a budget or a hold.
pub fn refusal(exchange: &'static str, wait: Duration, why: Refusal) -> ExchangeError {
    let reason = match why {
        Refusal::Held => "held",
        Refusal::Spent => "budget",
    };
    metrics::counter!("exchange_calls_refused_total", "exchange" => exchange, "reason" => reason).increment(1);
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let (message, hint) = match why {
        Refusal::Held => (
            format!("not sent: the exchange asked us to pause; try again in {seconds} s"),
            "The exchange answered an earlier call with a rate limit or a ban and named a wait; calls are held back \
             until it lapses so the ban is not extended.",
        ),
        Refusal::Spent => (
            format!("not sent: the request budget is spent; try again in {seconds} s"),
            "The service keeps within the exchange's rate limit (shared by every call with this key, or from this \
             service's IP address); the request was held back to avoid a ban.",
        ),
    };
    ExchangeError::new(ExchangeErrorCode::RateLimited, message)
        .with_hint(hint)
        .with_retry_after(Some(Duration::from_secs(seconds)))
}

/// The error for a call that needs the shared store while it is unreachable:
/// retryable, naming the cause, never sent unaccounted.
pub fn store_unavailable(exchange: &'static str, error: &StoreError) -> ExchangeError {
    metrics::counter!("exchange_calls_refused_total", "exchange" => exchange, "reason" => "store").increment(1);
    ExchangeError::new(ExchangeErrorCode::RateLimited, format!("not sent: {error}"))
        .with_hint(
            "The service could not check the exchange's shared rate budget, so it did not call the exchange. This \
             is a problem on our side; the check is retried automatically.",
        )
        .with_retry_after(Some(STORE_RETRY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_name_keys_by_digest_only() {
        let key = "my-secret-looking-api-key-0123456789";
        let budget = Budget::per_key("kraken", key, KrakenTier::default().limit(), 1);
        assert!(budget.scope.starts_with("kraken:key:"));
        assert!(!budget.scope.contains(key));
        assert_eq!(budget.scope, Budget::per_key("kraken", key, KITE_PER_KEY, 1).scope);
        assert_ne!(budget.scope, Budget::per_key("kraken", "other", KITE_PER_KEY, 1).scope);
        assert_eq!(
            Budget::binance("203.0.113.7", Environment::Testnet, 20).scope,
            "binance:203.0.113.7:TESTNET"
        );
    }

    #[test]
    fn kraken_tiers_parse_and_default_to_starter() {
        assert_eq!(KrakenTier::default(), KrakenTier::Starter);
        assert_eq!(KrakenTier::parse(" Pro "), Some(KrakenTier::Pro));
        assert_eq!(KrakenTier::parse("intermediate"), Some(KrakenTier::Intermediate));
        assert_eq!(KrakenTier::parse("gold"), None);
        assert_eq!(
            KrakenTier::Starter.limit(),
            Limit::Decaying {
                max: 15.0,
                decay_per_sec: 0.33
            }
        );
    }

    #[test]
    fn only_rate_limits_and_outages_with_a_wait_hold() {
        let limited = ExchangeError::new(ExchangeErrorCode::RateLimited, "slow down");
        let wait = Some(Duration::from_secs(7));
        let binance = Budget::binance("ip", Environment::Production, 1);
        let key = Budget::per_key("coinbase", "k", COINBASE_PER_KEY, 1);
        assert_eq!(binance.hold_for(&limited), Some(DEFAULT_BACKOFF));
        assert_eq!(key.hold_for(&limited), None);
        assert_eq!(key.hold_for(&limited.clone().with_retry_after(wait)), wait);
        let down = ExchangeError::new(ExchangeErrorCode::ExchangeUnavailable, "503");
        assert_eq!(key.hold_for(&down), None);
        assert_eq!(key.hold_for(&down.with_retry_after(wait)), wait);
        let bad = ExchangeError::new(ExchangeErrorCode::InvalidCredentials, "no").with_retry_after(wait);
        assert_eq!(binance.hold_for(&bad), None);
    }

    #[test]
    fn refusals_are_retryable_and_say_when() {
        let held = refusal("test", Duration::from_millis(2500), Refusal::Held);
        assert_eq!(held.code, ExchangeErrorCode::RateLimited);
        assert!(held.retryable());
        assert_eq!(held.retry_after, Some(Duration::from_secs(3)));
        assert!(held.message.contains("pause"), "{held}");
        let spent = refusal("test", Duration::from_millis(10), Refusal::Spent);
        assert_eq!(spent.retry_after, Some(Duration::from_secs(1)));
        assert!(spent.message.contains("budget"), "{spent}");
        let store = store_unavailable(
            "test",
            &StoreError {
                store: "redis",
                reason: "connect failed".into(),
            },
        );
        assert!(store.retryable() && store.message.contains("redis"), "{store}");
    }
}
