//! Criterion benchmarks for the per-request cost of the abuse limits
//! (issue 5 "Performance"): the rate limiters a request passes (per client
//! IP, the bad-token brake, per user), and the GraphQL depth, complexity and
//! alias limits, measured as the same document run through the schema with
//! and without them. The document is the frontend's connection list with two
//! aliases; without services its resolver fails after validation, so both
//! runs do the same work except the limits.

use criterion::{Criterion, criterion_group, criterion_main};
use exchange_connections::graphql::bare_schema;
use exchange_connections::http::{RateLimits, RequestLimits};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use uuid::Uuid;

const CONNECTIONS: &str = r#"
query Dashboard {
  mine: connections {
    ...Row
  }
  again: connections {
    id
    status
  }
}
fragment Row on Connection {
  id exchange label environment status apiKeyHint createdAt updatedAt sessionExpiresAt
  health { consecutiveFailures lastCheckedAt lastSuccessAt latencyMs lastError { code message hint retryable } }
  permissions { canRead canTrade canWithdraw ipRestricted tradingExpiresAt }
}
"#;

fn rate_limits(c: &mut Criterion) {
    let limits = RequestLimits::new(RateLimits {
        per_ip_per_minute: u32::MAX,
        per_user_per_minute: u32::MAX,
        auth_failures_per_ip_per_minute: u32::MAX,
    });
    // Many clients, as in production: the keyed stores hold 10,000 of each.
    let ips: Vec<IpAddr> = (0..10_000u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        .collect();
    let users: Vec<Uuid> = (0..10_000).map(|_| Uuid::new_v4()).collect();
    let mut n = 0usize;
    c.bench_function("limits/rate_limits_per_request", |b| {
        b.iter(|| {
            n = (n + 1) % ips.len();
            let ip = ips[n];
            assert!(limits.check_ip(black_box(ip)).is_ok());
            assert!(limits.auth_brake(ip).is_none());
            assert!(limits.check_user(black_box(users[n])).is_ok());
        })
    });
}

fn graphql_limits(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let messages = |limited: bool| -> Vec<String> {
        let response = runtime.block_on(bare_schema(limited).execute(CONNECTIONS));
        response.errors.into_iter().map(|e| e.message).collect()
    };
    // Both fail the same way, in the resolver (no services): the limits let
    // the document through, so the rows differ only by the limits' checks.
    let unlimited = messages(false);
    assert!(!unlimited.is_empty());
    assert_eq!(messages(true), unlimited);
    for (name, limited) in [("without_limits", false), ("with_limits", true)] {
        let schema = bare_schema(limited);
        c.bench_function(&format!("limits/graphql_document_{name}"), |b| {
            b.iter(|| black_box(runtime.block_on(schema.execute(black_box(CONNECTIONS)))))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = rate_limits, graphql_limits
}
criterion_main!(benches);
