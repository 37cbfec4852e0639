//! The in-process [`BudgetStore`]: right for a single replica, and the
//! fallback when `REDIS_URL` is unset. Same arithmetic as the Redis scripts,
//! on this process's monotonic clock.

use super::{Admission, BudgetStore, Limit, Refusal, StoreError};
use crate::exchange::kraken::{InProcessNonces, NonceSource};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Beyond this many scopes, the ones that no longer limit anything are dropped.
const PRUNE_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Minutes since the epoch of the window `used` belongs to.
    minute: i64,
    used: u32,
    /// Decaying counter, as of `at`.
    level: f64,
    at: Instant,
    held_until: Option<Instant>,
}

impl Slot {
    fn new(now: Instant) -> Self {
        Self {
            minute: 0,
            used: 0,
            level: 0.0,
            at: now,
            held_until: None,
        }
    }

    /// True while the slot still limits something.
    fn matters(&self, now: Instant, minute: i64) -> bool {
        self.held_until.is_some_and(|until| until > now) || self.minute == minute || self.level > 0.0
    }
}

#[derive(Default)]
struct State {
    slots: HashMap<String, Slot>,
    memos: HashMap<String, HashMap<String, (String, Instant)>>,
}

pub struct MemoryStore {
    state: Mutex<State>,
    nonces: Arc<InProcessNonces>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            nonces: Arc::new(InProcessNonces::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not stop every later exchange call.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes budget as of `now` and the wall-clock minute `minute`.
    fn take_at(
        &self,
        scope: &str,
        limit: Limit,
        cost: u32,
        max_wait: Duration,
        now: Instant,
        minute: i64,
    ) -> Admission {
        let mut state = self.lock();
        if state.slots.len() >= PRUNE_AT && !state.slots.contains_key(scope) {
            state.slots.retain(|_, slot| {
                decay(slot, limit, now);
                slot.matters(now, minute)
            });
        }
        let slot = state.slots.entry(scope.to_owned()).or_insert_with(|| Slot::new(now));
        if let Some(until) = slot.held_until {
            if until > now {
                return Admission::Refused {
                    wait: until - now,
                    why: Refusal::Held,
                };
            }
            slot.held_until = None;
        }
        match limit {
            Limit::None => Admission::Go { after: Duration::ZERO },
            Limit::PerMinute { limit } => {
                if slot.minute != minute {
                    slot.minute = minute;
                    slot.used = 0;
                }
                if slot.used.saturating_add(cost) > limit {
                    return Admission::Refused {
                        wait: until_next_minute(),
                        why: Refusal::Spent,
                    };
                }
                slot.used += cost;
                Admission::Go { after: Duration::ZERO }
            }
            Limit::Decaying { max, decay_per_sec } => {
                decay(slot, limit, now);
                let over = slot.level + f64::from(cost) - max;
                let wait = if over > 0.0 {
                    Duration::try_from_secs_f64(over / decay_per_sec).unwrap_or(Duration::MAX)
                } else {
                    Duration::ZERO
                };
                if wait > max_wait {
                    return Admission::Refused {
                        wait,
                        why: Refusal::Spent,
                    };
                }
                slot.level += f64::from(cost);
                Admission::Go { after: wait }
            }
        }
    }
}

/// Brings a decaying counter to `now`.
fn decay(slot: &mut Slot, limit: Limit, now: Instant) {
    if let Limit::Decaying { decay_per_sec, .. } = limit {
        let elapsed = now.saturating_duration_since(slot.at).as_secs_f64();
        slot.level = (slot.level - elapsed * decay_per_sec).max(0.0);
        slot.at = now;
    }
}

fn minute_now() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(60)
}

fn until_next_minute() -> Duration {
    let ms = chrono::Utc::now().timestamp_millis().rem_euclid(60_000);
    Duration::from_millis(u64::try_from(60_000 - ms).unwrap_or(60_000))
}

#[async_trait::async_trait]
impl BudgetStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "in-process"
    }

    async fn take(&self, scope: &str, limit: Limit, cost: u32, max_wait: Duration) -> Result<Admission, StoreError> {
        Ok(self.take_at(scope, limit, cost, max_wait, Instant::now(), minute_now()))
    }

    async fn observe_used(&self, scope: &str, used: u32) -> Result<(), StoreError> {
        let (now, minute) = (Instant::now(), minute_now());
        let mut state = self.lock();
        let slot = state.slots.entry(scope.to_owned()).or_insert_with(|| Slot::new(now));
        if slot.minute != minute {
            slot.minute = minute;
            slot.used = 0;
        }
        slot.used = slot.used.max(used);
        Ok(())
    }

    async fn hold(&self, scope: &str, wait: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let until = now + wait;
        let mut state = self.lock();
        let slot = state.slots.entry(scope.to_owned()).or_insert_with(|| Slot::new(now));
        slot.held_until = Some(slot.held_until.map_or(until, |current| current.max(until)));
        Ok(())
    }

    async fn remember(&self, scope: &str, field: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        if state.memos.len() >= PRUNE_AT && !state.memos.contains_key(scope) {
            state.memos.retain(|_, memo| {
                memo.retain(|_, (_, until)| *until > now);
                !memo.is_empty()
            });
        }
        state
            .memos
            .entry(scope.to_owned())
            .or_default()
            .insert(field.to_owned(), (value.to_owned(), now + ttl));
        Ok(())
    }

    async fn recall(&self, scope: &str, fields: &[&str]) -> Result<Vec<Option<String>>, StoreError> {
        let now = Instant::now();
        let state = self.lock();
        let memo = state.memos.get(scope);
        Ok(fields
            .iter()
            .map(|field| {
                memo.and_then(|m| m.get(*field))
                    .filter(|(_, until)| *until > now)
                    .map(|(value, _)| value.clone())
            })
            .collect())
    }

    async fn forget(&self, scope: &str) -> Result<(), StoreError> {
        self.lock().memos.remove(scope);
        Ok(())
    }

    fn nonces(&self) -> Arc<dyn NonceSource> {
        self.nonces.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KRAKEN_STARTER: Limit = Limit::Decaying {
        max: 15.0,
        decay_per_sec: 0.33,
    };
    const TWO_SECONDS: Duration = Duration::from_secs(2);

    fn go(admission: Admission) -> Duration {
        match admission {
            Admission::Go { after } => after,
            refused => panic!("expected Go, got {refused:?}"),
        }
    }

    #[test]
    fn a_decaying_counter_fills_refuses_and_decays() {
        let store = MemoryStore::new();
        let t0 = Instant::now();
        for _ in 0..15 {
            assert_eq!(
                go(store.take_at("k", KRAKEN_STARTER, 1, TWO_SECONDS, t0, 0)),
                Duration::ZERO
            );
        }
        // Full: the next unit needs 1 / 0.33 s ≈ 3 s of decay, more than the 2 s we wait.
        match store.take_at("k", KRAKEN_STARTER, 1, TWO_SECONDS, t0, 0) {
            Admission::Refused { wait, why } => {
                assert_eq!(why, Refusal::Spent);
                assert!(
                    wait > Duration::from_millis(3000) && wait < Duration::from_millis(3100),
                    "{wait:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        // After 2 s, 0.66 has decayed: one unit would need 1.03 s more, a short wait.
        let after = go(store.take_at("k", KRAKEN_STARTER, 1, TWO_SECONDS, t0 + TWO_SECONDS, 0));
        assert!(
            after > Duration::from_millis(1000) && after < Duration::from_millis(1100),
            "{after:?}"
        );
        // That wait was reserved: the next caller waits behind it, past 2 s.
        assert!(matches!(
            store.take_at("k", KRAKEN_STARTER, 1, TWO_SECONDS, t0 + TWO_SECONDS, 0),
            Admission::Refused { .. }
        ));
        // Long idle: fully refilled.
        let later = t0 + Duration::from_secs(120);
        for _ in 0..15 {
            assert_eq!(
                go(store.take_at("k", KRAKEN_STARTER, 1, TWO_SECONDS, later, 0)),
                Duration::ZERO
            );
        }
        // Another key has its own counter.
        assert_eq!(
            go(store.take_at("other", KRAKEN_STARTER, 1, TWO_SECONDS, t0, 0)),
            Duration::ZERO
        );
    }

    #[test]
    fn a_per_second_limit_waits_briefly_instead_of_refusing() {
        let store = MemoryStore::new();
        let per_second = Limit::Decaying {
            max: 10.0,
            decay_per_sec: 10.0,
        };
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(
                go(store.take_at("kite", per_second, 1, TWO_SECONDS, t0, 0)),
                Duration::ZERO
            );
        }
        let after = go(store.take_at("kite", per_second, 1, TWO_SECONDS, t0, 0));
        assert!(
            after >= Duration::from_millis(99) && after <= Duration::from_millis(101),
            "{after:?}"
        );
        // Without any patience the same request is refused.
        assert!(matches!(
            store.take_at("kite", per_second, 1, Duration::ZERO, t0, 0),
            Admission::Refused { .. }
        ));
        // A cost far above the maximum is refused even on a fresh counter.
        assert!(matches!(
            store.take_at("fresh", per_second, 40, TWO_SECONDS, t0, 0),
            Admission::Refused { .. }
        ));
    }

    #[test]
    fn a_minute_window_refuses_past_its_limit_and_resets_next_minute() {
        let store = MemoryStore::new();
        let limit = Limit::PerMinute { limit: 50 };
        let now = Instant::now();
        go(store.take_at("b", limit, 20, TWO_SECONDS, now, 7));
        go(store.take_at("b", limit, 20, TWO_SECONDS, now, 7));
        match store.take_at("b", limit, 20, TWO_SECONDS, now, 7) {
            Admission::Refused { wait, why } => {
                assert_eq!(why, Refusal::Spent);
                assert!(wait <= Duration::from_secs(60));
            }
            other => panic!("{other:?}"),
        }
        go(store.take_at("b", limit, 20, TWO_SECONDS, now, 8));
    }

    #[tokio::test]
    async fn reported_usage_counts_other_processes() {
        let store = MemoryStore::new();
        let limit = Limit::PerMinute { limit: 100 };
        store.observe_used("b", 95).await.unwrap();
        store.observe_used("b", 3).await.unwrap();
        assert!(matches!(
            store.take("b", limit, 10, TWO_SECONDS).await.unwrap(),
            Admission::Refused { .. }
        ));
        go(store.take("b", limit, 5, TWO_SECONDS).await.unwrap());
    }

    #[tokio::test]
    async fn a_hold_refuses_until_it_lapses_and_is_never_shortened() {
        let store = MemoryStore::new();
        store.hold("s", Duration::from_millis(50)).await.unwrap();
        for limit in [Limit::None, KRAKEN_STARTER, Limit::PerMinute { limit: 10 }] {
            match store.take("s", limit, 1, TWO_SECONDS).await.unwrap() {
                Admission::Refused { wait, why } => {
                    assert_eq!(why, Refusal::Held);
                    assert!(wait <= Duration::from_millis(50));
                }
                other => panic!("{other:?}"),
            }
        }
        go(store.take("other", Limit::None, 1, TWO_SECONDS).await.unwrap());
        tokio::time::sleep(Duration::from_millis(60)).await;
        go(store.take("s", Limit::None, 1, TWO_SECONDS).await.unwrap());
        store.hold("s", Duration::from_secs(120)).await.unwrap();
        store.hold("s", Duration::from_millis(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(matches!(
            store.take("s", Limit::None, 1, TWO_SECONDS).await.unwrap(),
            Admission::Refused { why: Refusal::Held, .. }
        ));
    }

    #[tokio::test]
    async fn memos_expire_and_are_forgotten_per_scope() {
        let store = MemoryStore::new();
        store.remember("s", "a", "1", Duration::from_secs(60)).await.unwrap();
        store.remember("s", "b", "2", Duration::from_millis(10)).await.unwrap();
        store.remember("t", "a", "3", Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            store.recall("s", &["a", "b", "c"]).await.unwrap(),
            [Some("1".to_owned()), Some("2".to_owned()), None]
        );
        tokio::time::sleep(Duration::from_millis(15)).await;
        assert_eq!(store.recall("s", &["b"]).await.unwrap(), [None]);
        store.forget("s").await.unwrap();
        assert_eq!(store.recall("s", &["a"]).await.unwrap(), [None]);
        assert_eq!(store.recall("t", &["a"]).await.unwrap(), [Some("3".to_owned())]);
    }
}
