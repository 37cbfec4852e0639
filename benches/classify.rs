//! Criterion benchmarks for classifying an exchange's error answer into an
//! `ExchangeError` (issue 3 "Performance"), through each client's real
//! classifier, on the bodies the exchanges send (as in the mocks under
//! `tests/api/mock/` and exchanges.md §5).

use criterion::{Criterion, criterion_group, criterion_main};
use exchange_connections::domain::ExchangeErrorCode;
use exchange_connections::exchange::ExchangeError;
use exchange_connections::exchange::binance::classify as binance;
use exchange_connections::exchange::coinbase::classify as coinbase;
use exchange_connections::exchange::kite::classify as kite;
use exchange_connections::exchange::kraken::{classify as kraken, model::Envelope};
use std::hint::black_box;
use std::time::Duration;

const NOW_MS: i64 = 1_700_000_000_000;

fn egress_ips() -> Vec<String> {
    vec!["203.0.113.7".to_owned()]
}

/// One error answer and the code it must classify as.
struct Case {
    name: &'static str,
    status: u16,
    body: &'static str,
    expected: ExchangeErrorCode,
}

const BINANCE: &[Case] = &[
    Case {
        name: "invalid_key_-2015",
        status: 401,
        body: r#"{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}"#,
        expected: ExchangeErrorCode::InvalidCredentials,
    },
    Case {
        name: "bad_signature_-1022",
        status: 400,
        body: r#"{"code":-1022,"msg":"Signature for this request is not valid."}"#,
        expected: ExchangeErrorCode::InvalidCredentials,
    },
    Case {
        name: "ip_banned_418",
        status: 418,
        body: r#"{"code":-1003,"msg":"Way too much request weight used; IP banned until 1700000120000. Please use WebSocket Streams for live updates to avoid bans."}"#,
        expected: ExchangeErrorCode::RateLimited,
    },
];

const COINBASE: &[Case] = &[
    Case {
        name: "unauthorized_401",
        status: 401,
        body: "Unauthorized\n",
        expected: ExchangeErrorCode::InvalidCredentials,
    },
    Case {
        name: "missing_scopes_403",
        status: 403,
        body: r#"{"error":"PERMISSION_DENIED","error_details":"Missing required scopes","message":"Missing required scopes"}"#,
        expected: ExchangeErrorCode::PermissionDenied,
    },
];

/// Kraken answers errors inside the JSON envelope, usually with HTTP 200.
const KRAKEN: &[Case] = &[
    Case {
        name: "invalid_key",
        status: 200,
        body: r#"{"error":["EAPI:Invalid key"],"result":{}}"#,
        expected: ExchangeErrorCode::InvalidCredentials,
    },
    Case {
        name: "invalid_nonce",
        status: 200,
        body: r#"{"error":["EAPI:Invalid nonce"]}"#,
        expected: ExchangeErrorCode::InvalidNonce,
    },
];

const KITE: &[Case] = &[Case {
    name: "token_exception_403",
    status: 403,
    body: r#"{"status":"error","message":"Incorrect `api_key` or `access_token`.","data":null,"error_type":"TokenException"}"#,
    expected: ExchangeErrorCode::TokenExpired,
}];

/// Kraken's path in the client: parse the envelope, keep the `E…` strings, classify.
fn classify_kraken(status: u16, body: &[u8], egress_ips: &[String]) -> ExchangeError {
    let envelope: Envelope = serde_json::from_slice(body).expect("fixture body is an envelope");
    kraken::kraken_errors(&envelope.errors(), status, None, egress_ips, NOW_MS / 1000).error
}

fn bench_cases(c: &mut Criterion, exchange: &str, cases: &[Case], classify: impl Fn(&Case) -> ExchangeError) {
    let mut group = c.benchmark_group(format!("classify/{exchange}"));
    for case in cases {
        let code = classify(case).code;
        assert_eq!(code, case.expected, "{exchange} {} classified as {code:?}", case.name);
        group.bench_function(case.name, |b| b.iter(|| classify(black_box(case))));
    }
    group.finish();
}

fn classify(c: &mut Criterion) {
    let ips = egress_ips();
    let retry = Some(Duration::from_secs(120));
    bench_cases(c, "binance", BINANCE, |case| {
        binance::http_failure(case.status, retry, case.body.as_bytes(), &ips, NOW_MS).error
    });
    bench_cases(c, "coinbase", COINBASE, |case| {
        coinbase::http_failure(case.status, None, case.body.as_bytes(), &ips)
    });
    bench_cases(c, "kraken", KRAKEN, |case| {
        classify_kraken(case.status, case.body.as_bytes(), &ips)
    });
    bench_cases(c, "kite", KITE, |case| {
        kite::http_failure(kite::Call::Authenticated, case.status, None, case.body.as_bytes())
    });
}

criterion_group!(benches, classify);
criterion_main!(benches);
