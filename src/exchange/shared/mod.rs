//! The store behind every rate budget, held `Retry-After`, Kraken nonce and
//! Kraken lockout memory: one trait, [`BudgetStore`], with an in-process
//! implementation ([`memory`]) and one shared by every replica through Redis
//! ([`redis`]), picked by [`connect`] from `REDIS_URL`.
//!
//! Scopes name what a budget belongs to (`binance:<egress IP>:PRODUCTION`,
//! `kraken:key:<digest>`); an API key appears only as [`KeyId`], a digest.
//!
//! When Redis is unreachable every operation fails within about a second
//! with [`StoreError`]; callers turn that into a retryable `RATE_LIMITED`
//! naming the cause, so calls that need the shared budget are refused rather
//! than sent unaccounted, and nothing else in the service is affected.

pub mod memory;
pub mod redis;

use crate::exchange::kraken::NonceSource;
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Names an API key without holding it: SHA-256 of the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 32]);

impl KeyId {
    pub fn of(api_key: &str) -> Self {
        Self(Sha256::digest(api_key.as_bytes()).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 128 bits in hex: plenty to tell keys apart, used in store keys.
    pub fn short_hex(&self) -> String {
        hex::encode(&self.0[..16])
    }
}

impl fmt::Debug for KeyId {
    /// A short prefix: enough to tell keys apart in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({}…)", hex::encode(&self.0[..4]))
    }
}

/// The budget a call takes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Only a held `Retry-After` can stop the call (public endpoints).
    None,
    /// At most `limit` units per calendar minute (Binance request weight).
    PerMinute { limit: u32 },
    /// A counter that grows by each call's cost, decays by `decay_per_sec`,
    /// and must stay at or below `max` when a call is sent (Kraken's call
    /// counter; Coinbase's and Kite's per-second limits as `max = decay = N`).
    Decaying { max: f64, decay_per_sec: f64 },
}

/// The store's answer to a request for budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Taken: send after this delay (zero, or up to the caller's `max_wait`).
    Go { after: Duration },
    /// Not taken; the earliest time it could be.
    Refused { wait: Duration, why: Refusal },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The exchange asked for a pause (`Retry-After`, a ban) that has not lapsed.
    Held,
    /// The budget is spent for longer than the caller is willing to wait.
    Spent,
}

/// The store could not answer (Redis unreachable or confused). The message
/// never holds the store's URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the shared rate-limit store ({store}) is unavailable: {reason}")]
pub struct StoreError {
    pub store: &'static str,
    pub reason: String,
}

/// Budgets, holds and remembered facts, per scope.
#[async_trait::async_trait]
pub trait BudgetStore: Send + Sync {
    /// `in-process` or `redis`, for logs and errors.
    fn kind(&self) -> &'static str;

    /// Takes `cost` from `scope`'s budget unless a hold is in force. A
    /// decaying budget may reserve ahead, answering `Go { after }` when the
    /// wait is at most `max_wait`.
    async fn take(&self, scope: &str, limit: Limit, cost: u32, max_wait: Duration) -> Result<Admission, StoreError>;

    /// Raises this minute's use of a `PerMinute` budget to what the exchange
    /// reported (it counts every process behind the same IP).
    async fn observe_used(&self, scope: &str, used: u32) -> Result<(), StoreError>;

    /// Refuses every call in `scope` for `wait`; never shortens a longer hold.
    async fn hold(&self, scope: &str, wait: Duration) -> Result<(), StoreError>;

    /// Remembers `value` under `scope`/`field` for `ttl`.
    async fn remember(&self, scope: &str, field: &str, value: &str, ttl: Duration) -> Result<(), StoreError>;

    /// The remembered values of `fields` in `scope`, in order.
    async fn recall(&self, scope: &str, fields: &[&str]) -> Result<Vec<Option<String>>, StoreError>;

    /// Forgets everything remembered in `scope` (not its budget or holds).
    async fn forget(&self, scope: &str) -> Result<(), StoreError>;

    /// Kraken nonces and per-key serialization backed by this store.
    fn nonces(&self) -> Arc<dyn NonceSource>;
}

/// The store for this deployment: Redis when `redis_url` is set, else in
/// process. Never connects here (the first call does), so startup does not
/// wait for Redis; an unusable URL is an error naming the setting only.
pub fn connect(redis_url: Option<&str>) -> Result<Arc<dyn BudgetStore>, StoreError> {
    match redis_url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(url) => Ok(Arc::new(redis::RedisStore::open(url, "ec:")?)),
        None => Ok(Arc::new(memory::MemoryStore::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_hash_the_key_and_print_only_a_prefix() {
        let id = KeyId::of("some-api-key");
        assert_eq!(id, KeyId::of("some-api-key"));
        assert_ne!(id, KeyId::of("some-api-kez"));
        assert_eq!(id.as_bytes(), &<[u8; 32]>::from(Sha256::digest(b"some-api-key")));
        let shown = format!("{id:?}");
        assert!(shown.starts_with("KeyId(") && shown.len() < 20, "{shown}");
        assert!(!shown.contains("some-api-key"));
        assert_eq!(id.short_hex().len(), 32);
    }

    #[test]
    fn connect_picks_the_store_from_the_url() {
        assert_eq!(connect(None).unwrap().kind(), "in-process");
        assert_eq!(connect(Some("  ")).unwrap().kind(), "in-process");
        let err = connect(Some("nonsense://user:hunter2@host")).err().unwrap();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn connecting_to_a_dead_redis_does_not_wait() {
        let started = std::time::Instant::now();
        let store = connect(Some("redis://127.0.0.1:1")).unwrap();
        assert_eq!(store.kind(), "redis");
        assert!(started.elapsed() < Duration::from_millis(200));
    }
}
