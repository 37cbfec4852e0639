//! Property-based tests (proptest): whatever a user pastes as credentials
//! (PEM-like text, base64 of any length, key names of any shape) and
//! whatever an exchange answers as an error body, the parsers return a
//! result and never panic, and no error they produce repeats the secret.

use exchange_connections::crypto::SecretString;
use exchange_connections::domain::Environment;
use exchange_connections::exchange::binance::BinanceClient;
use exchange_connections::exchange::coinbase::CoinbaseClient;
use exchange_connections::exchange::kite::KiteClient;
use exchange_connections::exchange::kraken::KrakenClient;
use exchange_connections::exchange::{Credentials, ExchangeClient, binance, coinbase, kite, kraken};
use proptest::prelude::*;
use std::time::Duration;

fn clients() -> Vec<Box<dyn ExchangeClient>> {
    exchange_connections::install_crypto_providers();
    let http = reqwest::Client::new();
    let url = |s: &str| url::Url::parse(s).expect("url");
    vec![
        Box::new(BinanceClient::new(
            http.clone(),
            url("http://127.0.0.1:9"),
            url("http://127.0.0.1:9"),
        )),
        Box::new(CoinbaseClient::new(http.clone(), url("http://127.0.0.1:9"))),
        Box::new(KrakenClient::new(http.clone(), url("http://127.0.0.1:9"))),
        Box::new(KiteClient::new(
            http,
            url("http://127.0.0.1:9"),
            url("http://127.0.0.1:9/login"),
        )),
    ]
}

/// Text shaped like what users paste: PEM blocks (whole, cut, with literal
/// `\n`s), base64 of any length, CDP key names, and anything at all.
fn pasted() -> impl Strategy<Value = String> {
    let label = prop::sample::select(vec![
        "PRIVATE KEY",
        "EC PRIVATE KEY",
        "RSA PRIVATE KEY",
        "PUBLIC KEY",
        "X",
    ]);
    let pem =
        (label, "[A-Za-z0-9+/=\n]{0,300}", any::<bool>(), any::<bool>()).prop_map(|(label, body, escaped, cut)| {
            let mut text = format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n");
            if cut {
                text.truncate(text.len() / 2);
            }
            if escaped { text.replace('\n', "\\n") } else { text }
        });
    prop_oneof![
        pem,
        "[A-Za-z0-9+/]{0,120}={0,3}",
        "[A-Za-z0-9_-]{0,120}",
        "organizations/[a-z0-9-]{0,40}/apiKeys/[a-z0-9-]{0,40}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn credential_checks_never_panic_nor_repeat_the_secret(
        key in pasted(),
        secret in pasted(),
        passphrase in proptest::option::of(pasted()),
        testnet in any::<bool>(),
    ) {
        let environment = if testnet { Environment::Testnet } else { Environment::Production };
        // The canary marks the secret: it must not come back in any message.
        let secret = format!("CANARY{secret}");
        let credentials = Credentials {
            api_key: SecretString::new(&key),
            api_secret: SecretString::new(&secret),
            passphrase: passphrase.as_deref().map(SecretString::new),
            access_token: None,
        };
        for client in clients() {
            if let Err(error) = client.check_credentials(environment, &credentials) {
                prop_assert!(!error.message.contains("CANARY"), "{:?}: {}", client.exchange(), error.message);
                prop_assert!(!error.message.is_empty());
            }
        }
    }

    #[test]
    fn error_bodies_never_panic_nor_echo_unstructured_text(
        status in prop_oneof![Just(400u16), Just(401), Just(403), Just(418), Just(429), Just(500), Just(503), 100u16..600],
        (body, structured) in prop_oneof![
            any::<Vec<u8>>().prop_map(|b| ([b"CANARY".to_vec(), b].concat(), false)),
            "[ -~]{0,200}".prop_map(|t| (format!("CANARY<html>{t}").into_bytes(), false)),
            (any::<i64>(), any::<String>()).prop_map(|(code, msg)| (serde_json::json!({"code": code, "msg": msg}).to_string().into_bytes(), true)),
            ("[A-Z_]{0,30}", any::<String>()).prop_map(|(e, m)| (serde_json::json!({"error": e, "message": m, "error_details": m}).to_string().into_bytes(), true)),
            ("[A-Za-z]{0,20}", any::<String>()).prop_map(|(t, m)| (serde_json::json!({"status": "error", "error_type": t, "message": m}).to_string().into_bytes(), true)),
        ],
        retry_after in proptest::option::of(0u64..100_000),
    ) {
        let retry_after = retry_after.map(Duration::from_secs);
        let egress = vec!["203.0.113.7".to_string()];
        let now_ms = 1_790_000_000_000;
        let binance = binance::classify::http_failure(status, retry_after, &body, &egress, now_ms).error;
        let coinbase = coinbase::classify::http_failure(status, retry_after, &body, &egress);
        let kite_login = kite::classify::http_failure(kite::classify::Call::CreateSession, status, retry_after, &body);
        let kite_call = kite::classify::http_failure(kite::classify::Call::Authenticated, status, retry_after, &body);
        for error in [binance, coinbase, kite_login, kite_call] {
            prop_assert!(!error.message.is_empty());
            let shown = format!("{} {}", error.message, error.hint.clone().unwrap_or_default());
            // A body that is not the exchange's error shape is never quoted;
            // a quoted exchange message is bounded and free of control characters.
            prop_assert!(structured || !shown.contains("CANARY"), "an unstructured body was echoed: {shown}");
            prop_assert!(error.message.chars().count() <= 600, "unbounded: {}", error.message);
            prop_assert!(!error.message.chars().any(char::is_control), "control characters: {:?}", error.message);
        }
    }

    #[test]
    fn kraken_error_arrays_never_panic(
        body in prop_oneof![
            any::<Vec<u8>>(),
            proptest::collection::vec("E[A-Za-z]{0,10}:[ -~]{0,40}", 0..4)
                .prop_map(|errors| serde_json::json!({ "error": errors, "result": {} }).to_string().into_bytes()),
            "[ -~]{0,200}".prop_map(String::into_bytes),
        ],
        status in 100u16..600,
        now in 0i64..4_000_000_000,
    ) {
        if let Ok(envelope) = serde_json::from_slice::<kraken::model::Envelope>(&body) {
            let classified = kraken::classify::kraken_errors(&envelope.errors(), status, None, &[], now);
            prop_assert!(!classified.error.message.is_empty());
        }
        let _ = kraken::classify::http_status(status, None);
    }
}
