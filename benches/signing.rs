//! Criterion benchmarks for request signing (issue 3 "Performance"): the real
//! signers each client runs per request, on throwaway fixture keys. Aims:
//! HMAC under 5 µs, Ed25519 under 60 µs, ES256 JWT under 150 µs.
//!
//! `sign/*` rows take a key already loaded; `per_request/*` rows add what the
//! clients redo on every test call (loading the pasted secret), so the two
//! together show where the time goes.

use criterion::{Criterion, criterion_group, criterion_main};
use exchange_connections::crypto::SecretString;
use exchange_connections::exchange::binance::signer::Signer;
use exchange_connections::exchange::coinbase::{jwt, key::SigningKey};
use exchange_connections::exchange::kite::session;
use exchange_connections::exchange::kraken::signer as kraken;
use std::hint::black_box;

/// Binance's documented HMAC example secret (rest-api.md), not a real key.
const BINANCE_HMAC_SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
const BINANCE_ED25519: &str = include_str!("../tests/fixtures/binance/ed25519.pem");
const BINANCE_RSA2048: &str = include_str!("../tests/fixtures/binance/rsa2048.pem");
/// What the Binance client signs for its test call, `GET /api/v3/account`.
const ACCOUNT_QUERY: &str = "omitZeroBalances=true&recvWindow=5000&timestamp=1700000000000";

/// Kraken's documented example private key (docs.kraken.com spot-rest-auth).
const KRAKEN_SECRET: &str = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";
const KRAKEN_PATH: &str = "/0/private/Balance";
const KRAKEN_NONCE: u64 = 1_700_000_000_000;
const KRAKEN_BODY: &str = "nonce=1700000000000";

/// Throwaway keys from the test fixtures, in the forms Coinbase issues:
/// a SEC 1 EC P-256 PEM (ES256) and a PKCS#8 Ed25519 PEM (EdDSA).
const COINBASE_EC: &str = include_str!("../tests/fixtures/binance/ec-p256-sec1.pem");
const COINBASE_ED25519: &str = include_str!("../tests/fixtures/binance/ed25519.pem");
const COINBASE_KEY_NAME: &str =
    "organizations/3f1c3b0e-8d2a-4a44-9d4e-0c8f2b7a1e55/apiKeys/5b2e7c10-1a3d-4f6b-8e9c-2d4f6a8b0c1e";
const COINBASE_PATH: &str = "/api/v3/brokerage/key_permissions";

fn binance_signer(secret: &str) -> Signer {
    Signer::from_secret(&SecretString::new(secret)).expect("fixture key loads")
}

fn binance(c: &mut Criterion) {
    let mut group = c.benchmark_group("binance");
    for (name, secret) in [
        ("hmac", BINANCE_HMAC_SECRET),
        ("ed25519", BINANCE_ED25519),
        ("rsa2048", BINANCE_RSA2048),
    ] {
        let signer = binance_signer(secret);
        assert!(!signer.sign(ACCOUNT_QUERY, "").expect("signs").is_empty());
        group.bench_function(format!("sign/{name}"), |b| {
            b.iter(|| signer.sign(black_box(ACCOUNT_QUERY), "").expect("signs"))
        });
        let pasted = SecretString::new(secret);
        group.bench_function(format!("per_request/{name}"), |b| {
            b.iter(|| {
                let signer = Signer::from_secret(black_box(&pasted)).expect("fixture key loads");
                signer.sign(ACCOUNT_QUERY, "").expect("signs")
            })
        });
    }
    group.finish();
}

fn kraken(c: &mut Criterion) {
    let mut group = c.benchmark_group("kraken");
    let key = kraken::decode_private_key(KRAKEN_SECRET).expect("documented key decodes");
    group.bench_function("sign/api_sign", |b| {
        b.iter(|| kraken::api_sign(&key, black_box(KRAKEN_PATH), KRAKEN_NONCE, black_box(KRAKEN_BODY)))
    });
    // The client decodes the pasted secret on every signed call.
    group.bench_function("per_request/api_sign", |b| {
        b.iter(|| {
            let key = kraken::decode_private_key(black_box(KRAKEN_SECRET)).expect("decodes");
            kraken::api_sign(&key, KRAKEN_PATH, KRAKEN_NONCE, KRAKEN_BODY)
        })
    });
    group.finish();
}

fn coinbase(c: &mut Criterion) {
    let mut group = c.benchmark_group("coinbase");
    let base_url = url::Url::parse("https://api.coinbase.com").expect("URL");
    for (name, pem) in [("es256", COINBASE_EC), ("eddsa", COINBASE_ED25519)] {
        let key = SigningKey::parse(pem).expect("fixture key loads");
        assert!(
            key.algorithm().eq_ignore_ascii_case(name),
            "{name} fixture is {}",
            key.algorithm()
        );
        // A fresh JWT per request, as the client builds it: uri claim, random
        // nonce, header and claims serialised, signed.
        let fresh_jwt = |key: &SigningKey| {
            let uri = jwt::request_uri("GET", &base_url, COINBASE_PATH).expect("host");
            let now = chrono::Utc::now().timestamp();
            jwt::build(key, COINBASE_KEY_NAME, &uri, now, &jwt::nonce()).expect("signs")
        };
        group.bench_function(format!("jwt/{name}"), |b| b.iter(|| fresh_jwt(black_box(&key))));
        group.bench_function(format!("per_request/{name}"), |b| {
            b.iter(|| fresh_jwt(&SigningKey::parse(black_box(pem)).expect("fixture key loads")))
        });
    }
    group.finish();
}

fn kite(c: &mut Criterion) {
    let secret = SecretString::new("abcdefghijklmnopqrstuvwxyz012345");
    c.bench_function("kite/checksum", |b| {
        b.iter(|| {
            session::checksum(
                black_box("kiteapikey0123456"),
                black_box("requesttoken0123456789abcdefghij"),
                &secret,
            )
        })
    });
}

criterion_group!(benches, binance, kraken, coinbase, kite);
criterion_main!(benches);
