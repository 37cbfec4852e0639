//! Nonces for Kraken's private API. Kraken rejects a nonce not greater than
//! the last one it accepted for the key, so nonces must grow per key *and*
//! reach Kraken in that order: a caller holds a [`NonceLease`] for the whole
//! request, which serializes the calls made with one key.
//!
//! [`NonceSource`] is the seam for running several replicas: the Redis store
//! (`exchange::shared::redis`, a per-key lock plus a stored last nonce)
//! replaces [`InProcessNonces`], which only orders the calls of this process.

pub use crate::exchange::shared::KeyId;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// The right to make one request with a key, and the nonce to send. The key
/// stays reserved until the lease is dropped, so drop it only once the answer
/// has been read.
pub struct NonceLease {
    nonce: u64,
    _hold: Box<dyn Send + Sync>,
}

impl NonceLease {
    /// `hold` is whatever keeps the key reserved (a lock guard); dropping it
    /// releases the key.
    pub fn new(nonce: u64, hold: impl Send + Sync + 'static) -> Self {
        Self {
            nonce,
            _hold: Box::new(hold),
        }
    }

    pub fn nonce(&self) -> u64 {
        self.nonce
    }
}

impl fmt::Debug for NonceLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceLease").field("nonce", &self.nonce).finish()
    }
}

/// The nonce source could not serve (e.g. its store is unreachable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no nonce could be reserved: {0}")]
pub struct NonceError(pub String);

/// Issues strictly increasing nonces per key, one request at a time per key.
#[async_trait::async_trait]
pub trait NonceSource: Send + Sync {
    /// Waits until no other request holds `key`, then returns a nonce greater
    /// than every nonce issued before for `key`. Callers bound the wait.
    async fn acquire(&self, key: &KeyId) -> Result<NonceLease, NonceError>;
}

/// Once this many keys are tracked, entries that no longer matter are dropped.
const PRUNE_AT: usize = 10_000;

type Clock = Box<dyn Fn() -> u64 + Send + Sync>;

/// One async mutex per key holding the last nonce issued; the nonce is
/// max(now in microseconds, last + 1), so it keeps growing even if the clock
/// steps back.
pub struct InProcessNonces {
    keys: Mutex<HashMap<KeyId, Arc<tokio::sync::Mutex<u64>>>>,
    clock: Clock,
}

impl Default for InProcessNonces {
    fn default() -> Self {
        Self::with_clock(Box::new(now_micros))
    }
}

impl InProcessNonces {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_clock(clock: Clock) -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn slot(&self, key: &KeyId) -> Arc<tokio::sync::Mutex<u64>> {
        // A panic elsewhere must not stop every later Kraken call.
        let mut keys = self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if keys.len() >= PRUNE_AT && !keys.contains_key(key) {
            let now = (self.clock)();
            // An idle key whose last nonce is behind the clock would get a
            // larger nonce from the clock anyway, so forgetting it is safe.
            keys.retain(|_, slot| Arc::strong_count(slot) > 1 || slot.try_lock().map_or(true, |last| *last >= now));
        }
        keys.entry(*key).or_default().clone()
    }
}

#[async_trait::async_trait]
impl NonceSource for InProcessNonces {
    async fn acquire(&self, key: &KeyId) -> Result<NonceLease, NonceError> {
        let mut last = self.slot(key).lock_owned().await;
        let nonce = (self.clock)().max(last.saturating_add(1));
        *last = nonce;
        Ok(NonceLease::new(nonce, last))
    }
}

fn now_micros() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    fn fixed_clock(at: Arc<AtomicU64>) -> Clock {
        Box::new(move || at.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn nonces_follow_the_clock_and_never_repeat_or_go_back() {
        let clock = Arc::new(AtomicU64::new(1_000));
        let nonces = InProcessNonces::with_clock(fixed_clock(clock.clone()));
        let key = KeyId::of("k");
        let mut issued = Vec::new();
        for now in [1_000, 1_000, 5_000, 2_000, 2_000] {
            clock.store(now, Ordering::SeqCst);
            issued.push(nonces.acquire(&key).await.unwrap().nonce());
        }
        assert_eq!(issued, [1_000, 1_001, 5_000, 5_001, 5_002]);
        // Another key has its own sequence.
        assert_eq!(nonces.acquire(&KeyId::of("other")).await.unwrap().nonce(), 2_000);
    }

    #[tokio::test]
    async fn a_key_is_held_until_its_lease_is_dropped() {
        let nonces = InProcessNonces::new();
        let key = KeyId::of("k");
        let lease = nonces.acquire(&key).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), nonces.acquire(&key)).await;
        assert!(waiting.is_err(), "a second lease while the first is held");
        // Other keys are not blocked.
        assert!(nonces.acquire(&KeyId::of("other")).await.is_ok());
        let first = lease.nonce();
        drop(lease);
        let next = nonces.acquire(&key).await.unwrap().nonce();
        assert!(next > first);
    }

    #[tokio::test]
    async fn concurrent_leases_are_strictly_increasing_in_grant_order() {
        let nonces = Arc::new(InProcessNonces::new());
        let key = KeyId::of("k");
        let granted = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (nonces, granted) = (nonces.clone(), granted.clone());
                tokio::spawn(async move {
                    let lease = nonces.acquire(&key).await.unwrap();
                    granted.lock().unwrap().push(lease.nonce());
                    tokio::task::yield_now().await;
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let granted = granted.lock().unwrap();
        assert_eq!(granted.len(), 50);
        assert!(granted.windows(2).all(|w| w[0] < w[1]), "{granted:?}");
    }

    #[tokio::test]
    async fn pruning_keeps_keys_whose_last_nonce_is_ahead_of_the_clock() {
        let clock = Arc::new(AtomicU64::new(100));
        let nonces = InProcessNonces::with_clock(fixed_clock(clock.clone()));
        let ahead = KeyId::of("ahead");
        // Push "ahead" far past the clock, then fill the map with idle keys.
        for _ in 0..10 {
            nonces.acquire(&ahead).await.unwrap();
        }
        for i in 0..PRUNE_AT {
            nonces.acquire(&KeyId::of(&i.to_string())).await.unwrap();
        }
        clock.store(105, Ordering::SeqCst);
        nonces.acquire(&KeyId::of("new")).await.unwrap();
        let tracked = nonces.keys.lock().unwrap().len();
        assert!(tracked < 10, "idle keys behind the clock were dropped: {tracked}");
        // "ahead" (last nonce 109) was kept, so it continues above it.
        assert_eq!(nonces.acquire(&ahead).await.unwrap().nonce(), 110);
    }
}
