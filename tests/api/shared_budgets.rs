//! The Redis budget store against a real Redis (`TEST_REDIS_URL`): two store
//! instances stand for two replicas sharing one budget, one set of holds,
//! one nonce sequence and one lock per Kraken key. Each test uses its own key
//! prefix. An unreachable Redis fails fast with a retryable error.

use exchange_connections::exchange::budget::{Budget, COINBASE_PER_KEY, KrakenTier};
use exchange_connections::exchange::call::Gate;
use exchange_connections::exchange::kraken::{KeyId, NonceSource};
use exchange_connections::exchange::shared::redis::RedisStore;
use exchange_connections::exchange::shared::{Admission, BudgetStore, Limit, Refusal};
use exchange_connections::exchange::{ExchangeError, ExchangeRegistry};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const TWO_SECONDS: Duration = Duration::from_secs(2);

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Two stores on one Redis under a fresh prefix: two replicas.
pub async fn two_replicas() -> (RedisStore, RedisStore) {
    let prefix = format!("ec-test:{}:", Uuid::new_v4().simple());
    let a = RedisStore::open(&redis_url(), &prefix).expect("TEST_REDIS_URL is usable");
    let b = RedisStore::open(&redis_url(), &prefix).expect("TEST_REDIS_URL is usable");
    // Fail, never skip, when Redis is not there.
    if let Err(e) = a.take("ping", Limit::None, 0, Duration::ZERO).await {
        panic!(
            "Redis is not reachable at TEST_REDIS_URL ({}): {e}. Start it (see README).",
            redis_url()
        );
    }
    (a, b)
}

/// A store shared by clients standing for two replicas.
pub async fn shared_store() -> Arc<dyn BudgetStore> {
    Arc::new(two_replicas().await.0)
}

fn go(admission: Admission) -> Duration {
    match admission {
        Admission::Go { after } => after,
        refused => panic!("expected Go, got {refused:?}"),
    }
}

#[tokio::test]
async fn one_replicas_use_of_a_kraken_counter_is_seen_by_the_other() {
    let (a, b) = two_replicas().await;
    let starter = KrakenTier::Starter.limit();
    for _ in 0..8 {
        assert_eq!(go(a.take("k", starter, 1, TWO_SECONDS).await.unwrap()), Duration::ZERO);
    }
    for _ in 0..7 {
        assert_eq!(go(b.take("k", starter, 1, TWO_SECONDS).await.unwrap()), Duration::ZERO);
    }
    // 15 taken between them: the next needs ~3 s of decay, more than 2 s.
    for store in [&a, &b] {
        match store.take("k", starter, 1, TWO_SECONDS).await.unwrap() {
            Admission::Refused { wait, why } => {
                assert_eq!(why, Refusal::Spent);
                assert!(
                    wait > Duration::from_millis(2900) && wait <= Duration::from_millis(3100),
                    "{wait:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    // Another key is untouched.
    go(b.take("k2", starter, 1, TWO_SECONDS).await.unwrap());
}

#[tokio::test]
async fn a_per_second_budget_is_shared_and_waits_briefly() {
    let (a, b) = two_replicas().await;
    let per_second = Limit::Decaying {
        max: 4.0,
        decay_per_sec: 4.0,
    };
    for store in [&a, &b, &a, &b] {
        assert_eq!(
            go(store.take("c", per_second, 1, TWO_SECONDS).await.unwrap()),
            Duration::ZERO
        );
    }
    let after = go(a.take("c", per_second, 1, TWO_SECONDS).await.unwrap());
    assert!(
        after > Duration::from_millis(200) && after <= Duration::from_millis(260),
        "{after:?}"
    );
    // Without patience, refused.
    assert!(matches!(
        b.take("c", per_second, 1, Duration::ZERO).await.unwrap(),
        Admission::Refused {
            why: Refusal::Spent,
            ..
        }
    ));
    // Coinbase's budget parses through the script too.
    go(a.take("coinbase", COINBASE_PER_KEY, 1, TWO_SECONDS).await.unwrap());
}

#[tokio::test]
async fn binance_weight_and_reported_usage_are_shared() {
    let (a, b) = two_replicas().await;
    let limit = Limit::PerMinute { limit: 100 };
    go(a.take("w", limit, 40, TWO_SECONDS).await.unwrap());
    b.observe_used("w", 90).await.unwrap();
    // A lower report never lowers the count.
    a.observe_used("w", 10).await.unwrap();
    match a.take("w", limit, 20, TWO_SECONDS).await.unwrap() {
        Admission::Refused { wait, why } => {
            assert_eq!(why, Refusal::Spent);
            assert!(wait <= Duration::from_secs(60));
        }
        other => panic!("{other:?}"),
    }
    go(b.take("w", limit, 10, TWO_SECONDS).await.unwrap());
}

#[tokio::test]
async fn a_hold_set_by_one_replica_stops_the_other_until_it_lapses() {
    let (a, b) = two_replicas().await;
    a.hold("h", Duration::from_millis(400)).await.unwrap();
    // Never shortened by a shorter one.
    b.hold("h", Duration::from_millis(1)).await.unwrap();
    match b.take("h", Limit::None, 0, TWO_SECONDS).await.unwrap() {
        Admission::Refused { wait, why } => {
            assert_eq!(why, Refusal::Held);
            assert!(
                wait > Duration::from_millis(300) && wait <= Duration::from_millis(400),
                "{wait:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    go(b.take("other", Limit::None, 0, TWO_SECONDS).await.unwrap());
    tokio::time::sleep(Duration::from_millis(420)).await;
    go(b.take("h", KrakenTier::Starter.limit(), 1, TWO_SECONDS).await.unwrap());
}

#[tokio::test]
async fn remembered_facts_are_shared_and_forgotten_everywhere() {
    let (a, b) = two_replicas().await;
    a.remember("m", "unknown-key", "{\"x\":1}", Duration::from_secs(60))
        .await
        .unwrap();
    a.remember("m", "empty", "", Duration::from_secs(60)).await.unwrap();
    a.remember("m", "short", "gone", Duration::from_millis(30))
        .await
        .unwrap();
    assert_eq!(
        b.recall("m", &["unknown-key", "empty", "absent"]).await.unwrap(),
        [Some("{\"x\":1}".to_owned()), Some(String::new()), None]
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(b.recall("m", &["short"]).await.unwrap(), [None]);
    b.forget("m").await.unwrap();
    assert_eq!(a.recall("m", &["unknown-key"]).await.unwrap(), [None]);
}

#[tokio::test]
async fn nonces_from_two_replicas_strictly_increase() {
    let (a, b) = two_replicas().await;
    let (a, b): (Arc<dyn NonceSource>, Arc<dyn NonceSource>) = (a.nonces(), b.nonces());
    let key = KeyId::of("kraken-key");
    let mut issued = Vec::new();
    for i in 0..20 {
        let source = if i % 2 == 0 { &a } else { &b };
        let lease = source.acquire(&key).await.unwrap();
        issued.push(lease.nonce());
        drop(lease);
    }
    assert!(issued.windows(2).all(|w| w[0] < w[1]), "{issued:?}");
    // Microseconds since the epoch.
    let now_us = chrono::Utc::now().timestamp_micros() as u64;
    assert!(issued[0] <= now_us + 1_000_000 && now_us - issued[0] < 60_000_000);
}

#[tokio::test]
async fn concurrent_leases_across_replicas_are_granted_in_nonce_order() {
    let (a, b) = two_replicas().await;
    let sources: [Arc<dyn NonceSource>; 2] = [a.nonces(), b.nonces()];
    let key = KeyId::of("kraken-key");
    let granted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (source, granted) = (sources[i % 2].clone(), granted.clone());
            tokio::spawn(async move {
                let lease = source.acquire(&key).await.unwrap();
                granted.lock().unwrap().push(lease.nonce());
                tokio::time::sleep(Duration::from_millis(2)).await;
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let granted = granted.lock().unwrap();
    assert_eq!(granted.len(), 20);
    assert!(granted.windows(2).all(|w| w[0] < w[1]), "{granted:?}");
}

#[tokio::test]
async fn a_lock_held_by_one_replica_blocks_the_other_until_released() {
    let (a, b) = two_replicas().await;
    let key = KeyId::of("kraken-key");
    let lease = a.acquire(&key).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(150), b.acquire(&key)).await;
    assert!(waiting.is_err(), "a second lease while the first is held");
    // Other keys are free.
    b.acquire(&KeyId::of("other")).await.unwrap();
    let first = lease.nonce();
    drop(lease);
    let next = tokio::time::timeout(Duration::from_secs(1), b.acquire(&key))
        .await
        .expect("released")
        .unwrap();
    assert!(next.nonce() > first);
}

#[tokio::test]
async fn a_lock_whose_holder_vanished_expires() {
    let (a, b) = two_replicas().await;
    let (a, b) = (
        a.with_lock_ttl(Duration::from_millis(200)),
        b.with_lock_ttl(Duration::from_millis(200)),
    );
    let key = KeyId::of("kraken-key");
    // A holder that never releases (a crashed replica).
    let lease = a.acquire(&key).await.unwrap();
    let first = lease.nonce();
    std::mem::forget(lease);
    let started = Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(1), b.acquire(&key))
        .await
        .expect("the lock expired")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert!(next.nonce() > first);
}

#[tokio::test]
async fn an_unreachable_redis_fails_fast_with_a_retryable_error() {
    let started = Instant::now();
    let store = RedisStore::open("redis://127.0.0.1:1", "ec-test:").unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "opening does not connect"
    );

    let started = Instant::now();
    let err = store.take("x", Limit::None, 0, TWO_SECONDS).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(err.to_string().contains("redis"), "{err}");

    let error = store.acquire(&KeyId::of("k")).await.unwrap_err();
    assert!(error.to_string().contains("unavailable"), "{error}");

    // Through the call gate: a retryable RATE_LIMITED naming the cause, and
    // the call is not made.
    let gate = Gate::new("test", Arc::new(store));
    let mut sent = false;
    let refused = gate
        .run("/x", &Budget::public("test"), async {
            sent = true;
            Ok::<_, ExchangeError>(())
        })
        .await
        .unwrap_err();
    assert!(!sent);
    assert!(refused.retryable() && refused.message.contains("redis"), "{refused}");
}

#[tokio::test]
async fn a_registry_builds_on_a_dead_redis_without_waiting() {
    let started = Instant::now();
    let store = exchange_connections::exchange::shared::connect(Some("redis://127.0.0.1:1")).unwrap();
    let _registry = ExchangeRegistry::with_store(
        &Default::default(),
        reqwest::Client::new(),
        &[],
        store,
        KrakenTier::default(),
    );
    assert!(started.elapsed() < Duration::from_millis(200));
}
