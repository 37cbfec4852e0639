//! The Binance client against the mock Binance: HMAC, Ed25519 and RSA keys,
//! permissions and warnings on production and testnet, clock-skew
//! correction, every failure class, shape checks, and that no secret ever
//! shows in an error. Also checks the mock itself against Binance's
//! documented signed examples and OpenSSL-made signatures, since the lead's
//! API tests rely on it.

use crate::mock::binance::{MockBinance, MockFailure, MockPermissions, decode_base64_param, hmac_hex, signed_payload};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use exchange_connections::crypto::SecretString;
use exchange_connections::domain::{Environment, ExchangeErrorCode, Permissions};
use exchange_connections::exchange::binance::BinanceClient;
use exchange_connections::exchange::{Credentials, ExchangeClient, ExchangeError};
use std::time::{Duration, Instant};

const KEY: &str = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz01";
const SECRET: &str = "ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210ZyXwVuTsRqPoNmLkJiHgFeDcBa98";
/// A valid-shaped secret that must never be seen outside the client.
const CANARY: &str = "CaNaRyCaNaRyCaNaRyCaNaRyCaNaRyCaNaRyCaNaRyCaNaRyCaNaRyCaNaRyCaNa";
const EGRESS_IPS: [&str; 2] = ["203.0.113.10", "203.0.113.11"];

// The documentation's HMAC example (exchanges.md §0).
const DOC_KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
const DOC_SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
const DOC_TIMESTAMP: i64 = 1499827319559;
const DOC_QUERY: &str =
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";

// Throwaway keys and signatures made with OpenSSL (tests/fixtures/binance/README.md).
const ED25519_FIXTURE: &str = include_str!("../fixtures/binance/ed25519.pem");
const ED25519_FIXTURE_SIG: &str = include_str!("../fixtures/binance/ed25519.doc-query.sig.b64");
const RSA_FIXTURE: &str = include_str!("../fixtures/binance/rsa2048.pem");
const RSA_FIXTURE_SIG: &str = include_str!("../fixtures/binance/rsa2048.doc-query.sig.b64");
const RSA_PKCS1_FIXTURE: &str = include_str!("../fixtures/binance/rsa2048-pkcs1.pem");
const EC_FIXTURE: &str = include_str!("../fixtures/binance/ec-p256-sec1.pem");

const TIME: &str = "/api/v3/time";
const ACCOUNT: &str = "/api/v3/account";
const RESTRICTIONS: &str = "/sapi/v1/account/apiRestrictions";

fn creds(key: &str, secret: &str) -> Credentials {
    Credentials {
        access_token: None,
        api_key: SecretString::new(key),
        api_secret: SecretString::new(secret),
        passphrase: None,
    }
}

fn client_for(mock: &MockBinance) -> BinanceClient {
    BinanceClient::new(reqwest::Client::new(), mock.base_url.clone(), mock.base_url.clone())
        .with_egress_ips(EGRESS_IPS.iter().map(|ip| ip.to_string()).collect())
}

/// A production mock holding `KEY`/`SECRET` with `perms`.
async fn production(perms: MockPermissions) -> (MockBinance, BinanceClient) {
    let mock = MockBinance::start().await;
    mock.add_hmac_key(KEY, SECRET, perms);
    let client = client_for(&mock);
    (mock, client)
}

fn paths(mock: &MockBinance) -> Vec<String> {
    mock.requests().into_iter().map(|r| r.path).collect()
}

fn to_pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// The DER inside a PEM file (test input is well formed).
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

/// A fresh Ed25519 key: (PKCS#8 PEM private key, raw public key).
fn new_ed25519_key() -> (String, Vec<u8>) {
    let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let public = Ed25519KeyPair::from_pkcs8(der.as_ref())
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    (to_pem(der.as_ref()), public)
}

/// A fresh 2048-bit RSA key: (PKCS#8 PEM private key, PKCS#1 DER public key).
fn new_rsa_key() -> (String, Vec<u8>) {
    let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let der = key.as_der().unwrap();
    (to_pem(der.as_ref()), key.public_key().as_ref().to_vec())
}

async fn test_err(client: &BinanceClient, env: Environment, credentials: &Credentials) -> ExchangeError {
    match client.test(env, credentials).await {
        Ok(report) => panic!("expected an error, got {report:?}"),
        Err(e) => e,
    }
}

async fn failing_with(failure: MockFailure) -> ExchangeError {
    let (mock, client) = production(MockPermissions::default()).await;
    mock.set_failure(Some(failure));
    test_err(&client, Environment::Production, &creds(KEY, SECRET)).await
}

#[tokio::test]
async fn production_reads_the_key_permissions_from_api_restrictions() {
    let perms = MockPermissions {
        reading: true,
        spot_trading: false,
        withdrawals: true,
        ip_restrict: true,
    };
    let (mock, client) = production(perms).await;

    let report = client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();

    assert_eq!(
        report.permissions,
        Permissions {
            trading_expires_at: None,
            can_read: true,
            can_trade: false,
            can_withdraw: true,
            ip_restricted: Some(true)
        }
    );
    assert_eq!(report.warnings, Vec::<String>::new());
    let usage = report.usage.expect("X-MBX-USED-WEIGHT-1M is reported");
    // The clock read (weight 1) and the account (weight 20).
    assert_eq!((usage.weight_used, usage.weight_limit), (21, 6000));
    assert!(report.latency > Duration::ZERO);

    let requests = mock.requests();
    assert_eq!(paths(&mock), [TIME, ACCOUNT, RESTRICTIONS]);
    assert!(requests.iter().all(|r| r.ok));
    // The clock read is public: no key, no parameters.
    assert_eq!((requests[0].api_key.as_deref(), requests[0].query.as_str()), (None, ""));
    let signed = &requests[1..];
    assert!(signed.iter().all(|r| r.api_key.as_deref() == Some(KEY)));
    assert!(
        signed[0]
            .query
            .starts_with("omitZeroBalances=true&recvWindow=5000&timestamp=")
    );
    assert!(signed[1].query.starts_with("recvWindow=5000&timestamp="));
    assert!(signed.iter().all(|r| r.query.contains("&signature=")));
}

#[tokio::test]
async fn production_default_permissions_map_field_by_field() {
    let (_mock, client) = production(MockPermissions::default()).await;
    let report = client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    assert_eq!(
        report.permissions,
        Permissions {
            trading_expires_at: None,
            can_read: true,
            can_trade: true,
            can_withdraw: false,
            ip_restricted: Some(true)
        }
    );

    let (_mock, client) = production(MockPermissions {
        reading: false,
        spot_trading: false,
        withdrawals: false,
        ip_restrict: false,
    })
    .await;
    let report = client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    assert_eq!(
        report.permissions,
        Permissions {
            trading_expires_at: None,
            can_read: false,
            can_trade: false,
            can_withdraw: false,
            ip_restricted: Some(false)
        }
    );
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
}

#[tokio::test]
async fn testnet_falls_back_to_the_account_flags_without_sapi() {
    let mock = MockBinance::start_testnet().await;
    mock.add_hmac_key(
        KEY,
        SECRET,
        MockPermissions {
            reading: true,
            spot_trading: true,
            withdrawals: true,
            ip_restrict: true,
        },
    );
    // Production points nowhere useful: the testnet must not touch it.
    let client = BinanceClient::new(
        reqwest::Client::new(),
        url::Url::parse("http://127.0.0.1:9/").unwrap(),
        mock.base_url.clone(),
    );

    let report = client.test(Environment::Testnet, &creds(KEY, SECRET)).await.unwrap();

    assert_eq!(
        report.permissions,
        Permissions {
            trading_expires_at: None,
            can_read: true,
            can_trade: true,
            can_withdraw: true,
            ip_restricted: None
        }
    );
    assert!(report.usage.is_some());
    // The testnet says nothing about IP restrictions, so there is no warning.
    assert_eq!(report.warnings, Vec::<String>::new());
    assert_eq!(paths(&mock), [TIME, ACCOUNT]);
}

#[tokio::test]
async fn production_client_against_a_testnet_fails_instead_of_guessing_permissions() {
    // /sapi answers 404 on the testnet: never a silent success.
    let mock = MockBinance::start_testnet().await;
    mock.add_hmac_key(KEY, SECRET, MockPermissions::default());
    let err = test_err(&client_for(&mock), Environment::Production, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::UnexpectedResponse);
    assert!(err.message.contains("HTTP 404"), "{err}");
}

#[tokio::test]
async fn wrong_secret_is_invalid_credentials_after_a_bad_signature() {
    let (mock, client) = production(MockPermissions::default()).await;
    let err = test_err(&client, Environment::Production, &creds(KEY, CANARY)).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert!(err.message.contains("secret does not match"), "{err}");
    assert_eq!(
        paths(&mock),
        [TIME, ACCOUNT],
        "no permission read after a failed account call"
    );
    assert_eq!(mock.requests()[1].error_code, Some(-1022));
}

#[tokio::test]
async fn unknown_key_gets_the_three_cause_hint_with_the_egress_ips() {
    let (mock, client) = production(MockPermissions::default()).await;
    let other_key = KEY.replace('A', "B");
    let err = test_err(&client, Environment::Production, &creds(&other_key, SECRET)).await;

    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert!(!err.retryable());
    let hint = err.hint.as_deref().unwrap();
    for needle in [
        "wrong or was deleted",
        "IP whitelist",
        "lacks the permission",
        "203.0.113.10, 203.0.113.11",
    ] {
        assert!(hint.contains(needle), "{needle:?} missing from {hint:?}");
    }
    assert_eq!(mock.requests().last().unwrap().error_code, Some(-2015));
}

#[tokio::test]
async fn a_key_deleted_at_the_exchange_is_invalid_credentials() {
    let (mock, client) = production(MockPermissions::default()).await;
    client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    mock.remove_key(KEY);
    let err = test_err(&client, Environment::Production, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert_eq!(mock.requests().last().unwrap().error_code, Some(-2015));
}

#[tokio::test]
async fn server_error_is_exchange_unavailable() {
    let err = failing_with(MockFailure::ServerError).await;
    assert_eq!(err.code, ExchangeErrorCode::ExchangeUnavailable);
    assert!(err.message.contains("503") && err.message.contains("-1008"), "{err}");
    assert!(err.retryable());
}

#[tokio::test]
async fn rate_limited_carries_retry_after() {
    let err = failing_with(MockFailure::RateLimited { retry_after_secs: 7 }).await;
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn a_ban_holds_back_every_following_call_until_it_lapses() {
    let (mock, client) = production(MockPermissions::default()).await;
    mock.set_failure(Some(MockFailure::IpBanned { retry_after_secs: 120 }));
    let first = test_err(&client, Environment::Production, &creds(KEY, SECRET)).await;
    assert_eq!(first.code, ExchangeErrorCode::RateLimited);
    mock.set_failure(None);
    let sent = mock.request_count();
    let held = test_err(&client, Environment::Production, &creds(KEY, SECRET)).await;
    assert_eq!(held.code, ExchangeErrorCode::RateLimited);
    assert!(held.retryable());
    assert!(
        held.retry_after
            .is_some_and(|d| d > Duration::from_secs(100) && d <= Duration::from_secs(120))
    );
    assert_eq!(mock.request_count(), sent, "nothing reaches a banning exchange");
    // The testnet is another host with its own budget.
    assert!(client.server_time(Environment::Testnet).await.is_ok());
}

#[tokio::test]
async fn ip_ban_is_rate_limited_with_retry_after() {
    let err = failing_with(MockFailure::IpBanned { retry_after_secs: 120 }).await;
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    assert!(err.message.contains("banned"), "{err}");
    assert_eq!(err.retry_after, Some(Duration::from_secs(120)));
}

#[tokio::test]
async fn waf_block_is_rate_limited() {
    let err = failing_with(MockFailure::WafBlocked).await;
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    assert!(err.message.contains("firewall"), "{err}");
    assert!(!err.message.contains("html"));
}

#[tokio::test]
async fn ip_not_allowed_is_invalid_credentials_with_the_whitelist_hint() {
    let err = failing_with(MockFailure::IpNotAllowed).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert!(err.hint.as_deref().unwrap().contains("203.0.113.10"));
}

#[tokio::test]
async fn garbage_is_unexpected_response_naming_the_status() {
    let err = failing_with(MockFailure::Garbage).await;
    assert_eq!(err.code, ExchangeErrorCode::UnexpectedResponse);
    assert!(err.message.contains("HTTP 200"), "{err}");
    assert!(!err.message.contains("maintenance"));
}

#[tokio::test]
async fn hang_times_out_as_network_error() {
    let (mock, client) = production(MockPermissions::default()).await;
    let client = client.with_timeout(Duration::from_millis(300));
    mock.set_failure(Some(MockFailure::Hang));
    let started = Instant::now();
    let err = test_err(&client, Environment::Production, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::NetworkError);
    assert!(err.message.contains("300 ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn connection_refused_is_network_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let client = BinanceClient::new(reqwest::Client::new(), url.clone(), url);
    let err = test_err(&client, Environment::Production, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::NetworkError);
    assert!(!err.message.contains("127.0.0.1"), "no URL in messages: {err}");
}

#[tokio::test]
async fn unreadable_restrictions_are_permission_denied() {
    let (mock, client) = production(MockPermissions::default()).await;
    mock.set_failure(Some(MockFailure::RestrictionsDenied));
    let err = test_err(&client, Environment::Production, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::PermissionDenied);
    assert!(err.message.contains("could not read the key's permissions"), "{err}");
    let oks: Vec<bool> = mock.requests().iter().map(|r| r.ok).collect();
    assert_eq!(oks, [true, true, false]);
}

#[tokio::test]
async fn shape_errors_name_each_field() {
    let mock = MockBinance::start().await;
    let client = client_for(&mock);
    let check = |c: &Credentials| {
        client
            .check_credentials(Environment::Production, c)
            .err()
            .map(|e| e.field)
    };

    assert_eq!(check(&creds(KEY, SECRET)), None);
    assert_eq!(
        client.check_credentials(Environment::Testnet, &creds(KEY, SECRET)),
        Ok(())
    );
    assert_eq!(check(&creds("short", SECRET)), Some("apiKey"));
    assert_eq!(check(&creds(&KEY.replace('A', "-"), SECRET)), Some("apiKey"));
    assert_eq!(check(&creds(KEY, "short")), Some("apiSecret"));
    // A PKCS#8 Ed25519 key is a valid secret; a PKCS#1 RSA key is not.
    let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----";
    assert_eq!(check(&creds(KEY, pem)), None);
    let err = client
        .check_credentials(Environment::Production, &creds(KEY, RSA_PKCS1_FIXTURE))
        .unwrap_err();
    assert_eq!(err.field, "apiSecret");
    assert!(err.message.contains("PKCS#1"), "{err}");
    let mut with_passphrase = creds(KEY, SECRET);
    with_passphrase.passphrase = Some(SecretString::new("hunter22"));
    assert_eq!(check(&with_passphrase), Some("passphrase"));
    with_passphrase.passphrase = Some(SecretString::new(""));
    assert_eq!(check(&with_passphrase), None);

    // test() refuses malformed credentials without spending request weight.
    let err = test_err(&client, Environment::Production, &creds("short", SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert!(err.message.starts_with("apiKey:"), "{err}");
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn the_canary_secret_never_appears_in_any_error() {
    let mut errors = Vec::new();
    // Registered with the canary: signatures verify, failures are injected.
    let mock = MockBinance::start().await;
    mock.add_hmac_key(KEY, CANARY, MockPermissions::default());
    let client = client_for(&mock).with_timeout(Duration::from_millis(300));
    let good = creds(KEY, CANARY);
    for failure in [
        MockFailure::ServerError,
        MockFailure::RateLimited { retry_after_secs: 1 },
        MockFailure::IpBanned { retry_after_secs: 1 },
        MockFailure::WafBlocked,
        MockFailure::IpNotAllowed,
        MockFailure::Garbage,
        MockFailure::Hang,
        MockFailure::RestrictionsDenied,
    ] {
        mock.set_failure(Some(failure));
        // A fresh client each time: a ban would otherwise hold back the next calls.
        let client = client_for(&mock).with_timeout(Duration::from_millis(300));
        errors.push(test_err(&client, Environment::Production, &good).await);
    }
    mock.set_failure(Some(MockFailure::RejectTimestamps));
    errors.push(test_err(&client, Environment::Production, &good).await);
    mock.set_failure(None);
    // The canary as a wrong secret, and as malformed input.
    mock.add_hmac_key(&KEY.replace('A', "C"), SECRET, MockPermissions::default());
    errors.push(test_err(&client, Environment::Production, &creds(&KEY.replace('A', "C"), CANARY)).await);
    errors.push(test_err(&client, Environment::Production, &creds(KEY, &format!("{CANARY}!"))).await);
    errors.push(test_err(&client, Environment::Production, &creds(CANARY, SECRET)).await);

    // Infrastructure failures stop at the clock read, before anything is signed.
    assert_no_secret_in(&errors, &mock, &[CANARY, KEY], 6);
    assert!(!format!("{good:?}").contains(CANARY));
}

/// No error shows a secret, the signed query, or any signature the mock saw
/// (of which there must be at least `min_signatures`).
fn assert_no_secret_in(errors: &[ExchangeError], mock: &MockBinance, secrets: &[&str], min_signatures: usize) {
    let signatures: Vec<String> = mock
        .requests()
        .iter()
        .filter_map(|r| r.query.split("signature=").nth(1).map(str::to_owned))
        .collect();
    assert!(signatures.len() >= min_signatures, "{} signatures", signatures.len());
    for err in errors {
        let text = format!("{err} | {err:?} | {}", err.hint.as_deref().unwrap_or(""));
        for secret in secrets {
            assert!(!text.contains(secret), "{secret:?} in {text}");
        }
        assert!(!text.contains("signature="), "query in {text}");
        assert!(!text.contains("timestamp="), "query in {text}");
        for signature in &signatures {
            assert!(!text.contains(signature.as_str()), "signature in {text}");
            // Also as plain base64, as an asymmetric signature decodes.
            if let Some(raw) = decode_base64_param(signature) {
                assert!(!text.contains(&STANDARD.encode(raw)), "signature in {text}");
            }
        }
    }
}

#[tokio::test]
async fn a_canary_private_key_never_appears_in_any_error() {
    let mock = MockBinance::start().await;
    let client = client_for(&mock).with_timeout(Duration::from_millis(300));
    let (ed_pem, ed_public) = new_ed25519_key();
    let (rsa_pem, rsa_public) = new_rsa_key();
    mock.add_ed25519_key(KEY, &ed_public, MockPermissions::default());
    let rsa_key = KEY.replace('A', "R");
    mock.add_rsa_key(&rsa_key, &rsa_public, MockPermissions::default());

    let mut errors = Vec::new();
    for (key, pem) in [(KEY, &ed_pem), (rsa_key.as_str(), &rsa_pem)] {
        let good = creds(key, pem);
        for failure in [
            MockFailure::ServerError,
            MockFailure::IpNotAllowed,
            MockFailure::RestrictionsDenied,
            MockFailure::RejectTimestamps,
            MockFailure::Hang,
        ] {
            mock.set_failure(Some(failure));
            errors.push(test_err(&client, Environment::Production, &good).await);
        }
        mock.set_failure(None);
        // The key in formats Binance refuses, damaged, or cut short.
        for bad in [
            pem.replace("PRIVATE KEY", "RSA PRIVATE KEY"),
            pem.replace("PRIVATE KEY", "EC PRIVATE KEY"),
            pem.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"),
            pem[..pem.len() / 2].to_owned(),
            pem.replacen('M', "N", 1),
        ] {
            errors.push(test_err(&client, Environment::Production, &creds(key, &bad)).await);
        }
    }
    // Each key used with the other's API key: a signature that does not verify.
    errors.push(test_err(&client, Environment::Production, &creds(KEY, &rsa_pem)).await);
    errors.push(test_err(&client, Environment::Production, &creds(&rsa_key, &ed_pem)).await);
    assert_eq!(errors.last().unwrap().code, ExchangeErrorCode::InvalidCredentials);

    // Every line of both private keys' bodies is a secret.
    let lines: Vec<&str> = [ed_pem.as_str(), rsa_pem.as_str()]
        .iter()
        .flat_map(|pem| pem.lines())
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let mut secrets = lines.clone();
    secrets.extend([ed_pem.as_str(), rsa_pem.as_str(), KEY, rsa_key.as_str()]);
    assert_no_secret_in(&errors, &mock, &secrets, 10);
}

#[tokio::test]
async fn ed25519_key_passes_the_test_with_a_percent_encoded_signature() {
    let mock = MockBinance::start().await;
    let (pem, public) = new_ed25519_key();
    mock.add_ed25519_key(KEY, &public, MockPermissions::default());
    let client = client_for(&mock);

    let report = client.test(Environment::Production, &creds(KEY, &pem)).await.unwrap();

    assert!(report.permissions.can_read && report.permissions.can_trade);
    assert_eq!(paths(&mock), [TIME, ACCOUNT, RESTRICTIONS]);
    for request in &mock.requests()[1..] {
        let signature = request.query.split("&signature=").nth(1).unwrap();
        // base64 of 64 bytes ends in "==", sent as "%3D%3D".
        assert!(signature.ends_with("%3D%3D"), "{signature}");
        assert_eq!(decode_base64_param(signature).unwrap().len(), 64);
    }
}

#[tokio::test]
async fn rsa_key_passes_the_test() {
    let mock = MockBinance::start().await;
    let (pem, public) = new_rsa_key();
    mock.add_rsa_key(KEY, &public, MockPermissions::default());
    let client = client_for(&mock);

    let report = client.test(Environment::Production, &creds(KEY, &pem)).await.unwrap();

    assert!(report.permissions.can_read);
    assert_eq!(paths(&mock), [TIME, ACCOUNT, RESTRICTIONS]);
    let signature = mock.requests()[1].query.split("&signature=").nth(1).unwrap().to_owned();
    assert_eq!(
        decode_base64_param(&signature).unwrap().len(),
        256,
        "2048-bit signature"
    );
}

#[tokio::test]
async fn openssl_keys_pasted_with_escaped_newlines_pass_the_test() {
    let mock = MockBinance::start().await;
    let ed_public = Ed25519KeyPair::from_pkcs8(&pem_der(ED25519_FIXTURE))
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let rsa_public = RsaKeyPair::from_pkcs8(&pem_der(RSA_FIXTURE))
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let rsa_key = KEY.replace('A', "R");
    mock.add_ed25519_key(KEY, &ed_public, MockPermissions::default());
    mock.add_rsa_key(&rsa_key, &rsa_public, MockPermissions::default());
    let client = client_for(&mock);

    for (key, pem) in [(KEY, ED25519_FIXTURE), (rsa_key.as_str(), RSA_FIXTURE)] {
        // As copied out of a JSON string or an .env file.
        let escaped = pem.trim().replace('\n', "\\n");
        assert!(!escaped.contains('\n'));
        client
            .test(Environment::Production, &creds(key, &escaped))
            .await
            .unwrap();
        client.test(Environment::Testnet, &creds(key, pem)).await.unwrap();
    }
}

#[tokio::test]
async fn asymmetric_key_with_the_wrong_public_key_gets_a_bad_signature() {
    let mock = MockBinance::start().await;
    let (pem, _) = new_ed25519_key();
    let (_, other_public) = new_ed25519_key();
    mock.add_ed25519_key(KEY, &other_public, MockPermissions::default());
    let err = test_err(&client_for(&mock), Environment::Production, &creds(KEY, &pem)).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert_eq!(mock.requests().last().unwrap().error_code, Some(-1022));

    // An Ed25519 signature for a key registered as RSA fails too.
    let (_, rsa_public) = new_rsa_key();
    mock.add_rsa_key(KEY, &rsa_public, MockPermissions::default());
    let err = test_err(&client_for(&mock), Environment::Production, &creds(KEY, &pem)).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
}

#[tokio::test]
async fn pkcs1_and_ec_keys_are_refused_before_any_request() {
    let mock = MockBinance::start().await;
    let client = client_for(&mock);
    for (pem, needle) in [
        (RSA_PKCS1_FIXTURE, "openssl pkcs8 -topk8 -nocrypt"),
        (EC_FIXTURE, "EC key"),
    ] {
        let shape = client
            .check_credentials(Environment::Production, &creds(KEY, pem))
            .unwrap_err();
        assert_eq!(shape.field, "apiSecret");
        assert!(shape.message.contains(needle), "{shape}");
        assert!(shape.message.contains("PKCS#8"), "{shape}");
        let err = test_err(&client, Environment::Production, &creds(KEY, pem)).await;
        assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
        assert!(err.message.starts_with("apiSecret:"), "{err}");
    }
    assert_eq!(mock.request_count(), 0);
}

// ---- Clock skew ----

#[tokio::test]
async fn a_binance_clock_ahead_or_behind_is_corrected_for() {
    for offset_ms in [3_000, -10_000, 60_000, -60_000] {
        let (mock, client) = production(MockPermissions::default()).await;
        mock.set_clock_offset_ms(offset_ms);

        let report = client.test(Environment::Production, &creds(KEY, SECRET)).await;

        assert!(report.is_ok(), "offset {offset_ms}: {report:?}");
        assert_eq!(paths(&mock), [TIME, ACCOUNT, RESTRICTIONS], "offset {offset_ms}");
        assert!(mock.requests().iter().all(|r| r.ok));
    }
}

#[tokio::test]
async fn the_clock_is_read_once_per_environment() {
    let (mock, client) = production(MockPermissions::default()).await;
    client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    client.test(Environment::Testnet, &creds(KEY, SECRET)).await.unwrap();
    client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    client.test(Environment::Testnet, &creds(KEY, SECRET)).await.unwrap();
    assert_eq!(
        paths(&mock),
        [
            TIME,
            ACCOUNT,
            RESTRICTIONS,
            TIME,
            ACCOUNT,
            ACCOUNT,
            RESTRICTIONS,
            ACCOUNT
        ]
    );
}

#[tokio::test]
async fn a_1021_remeasures_the_clock_and_retries_once() {
    let (mock, client) = production(MockPermissions::default()).await;
    client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    // Binance's clock jumps after the offset was measured.
    mock.set_clock_offset_ms(30_000);

    client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();

    let requests = mock.requests();
    let seen: Vec<(&str, Option<i64>)> = requests[3..].iter().map(|r| (r.path.as_str(), r.error_code)).collect();
    assert_eq!(
        seen,
        [
            (ACCOUNT, Some(-1021)),
            (TIME, None),
            (ACCOUNT, None),
            (RESTRICTIONS, None)
        ]
    );
}

#[tokio::test]
async fn a_1021_after_the_retry_is_clock_skew_without_more_retries() {
    let (mock, client) = production(MockPermissions::default()).await;
    mock.set_failure(Some(MockFailure::RejectTimestamps));

    let err = test_err(&client, Environment::Production, &creds(KEY, SECRET)).await;

    assert_eq!(err.code, ExchangeErrorCode::ClockSkew);
    assert!(err.message.contains("outside of the recvWindow"), "{err}");
    assert!(err.retryable());
    assert_eq!(paths(&mock), [TIME, ACCOUNT, TIME, ACCOUNT]);

    // With an offset already known: the refused call, one re-measure, one retry.
    let (mock, client) = production(MockPermissions::default()).await;
    client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    mock.set_clock_offset_ms(30_000);
    mock.set_failure(Some(MockFailure::RejectTimestamps));
    let count = mock.request_count();
    let err = test_err(&client, Environment::Production, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::ClockSkew);
    assert_eq!(mock.request_count() - count, 3, "account, time, account");
}

#[tokio::test]
async fn the_clock_offset_is_measured_again_when_stale() {
    let (mock, client) = production(MockPermissions::default()).await;
    let client = client.with_clock_refresh(Duration::from_millis(300));
    client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    assert_eq!(paths(&mock).iter().filter(|p| *p == TIME).count(), 1);

    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = mock.request_count();
    client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    assert_eq!(paths(&mock)[before..], [TIME, ACCOUNT, RESTRICTIONS]);
}

#[tokio::test]
async fn server_time_reads_binances_clock() {
    let (mock, client) = production(MockPermissions::default()).await;
    mock.set_clock_offset_ms(3_000);
    let before = chrono::Utc::now();
    let time = client.server_time(Environment::Production).await.unwrap().unwrap();
    let after = chrono::Utc::now();
    let ahead = chrono::Duration::milliseconds(3_000);
    assert!(time >= before + ahead && time <= after + ahead, "{time} not 3 s ahead");
    // It also serves as the clock measurement for signed calls.
    client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    assert_eq!(paths(&mock), [TIME, ACCOUNT, RESTRICTIONS]);
    assert_eq!(mock.requests()[0].api_key, None);

    mock.set_server_time_ms(Some(DOC_TIMESTAMP));
    let time = client.server_time(Environment::Testnet).await.unwrap().unwrap();
    assert_eq!(time.timestamp_millis(), DOC_TIMESTAMP);
}

#[tokio::test]
async fn server_time_failures_are_classified() {
    let (mock, client) = production(MockPermissions::default()).await;
    mock.set_failure(Some(MockFailure::ServerError));
    let err = client.server_time(Environment::Production).await.unwrap_err();
    assert_eq!(err.code, ExchangeErrorCode::ExchangeUnavailable);
    mock.set_failure(Some(MockFailure::Garbage));
    let err = client.server_time(Environment::Production).await.unwrap_err();
    assert_eq!(err.code, ExchangeErrorCode::UnexpectedResponse);
    // A clock at or before 1970 is not a Binance answer.
    mock.set_failure(None);
    mock.set_server_time_ms(Some(0));
    let err = client.server_time(Environment::Production).await.unwrap_err();
    assert_eq!(err.code, ExchangeErrorCode::UnexpectedResponse);

    let url = url::Url::parse("http://127.0.0.1:9/").unwrap();
    let unreachable = BinanceClient::new(reqwest::Client::new(), url.clone(), url);
    let err = unreachable.server_time(Environment::Testnet).await.unwrap_err();
    assert_eq!(err.code, ExchangeErrorCode::NetworkError);
}

// ---- Warnings and trading expiry ----

#[tokio::test]
async fn a_key_without_ip_restriction_gets_the_30_day_warning_and_its_expiry() {
    let (mock, client) = production(MockPermissions {
        ip_restrict: false,
        ..MockPermissions::default()
    })
    .await;
    let expires_ms = 1_767_225_600_000; // 2026-01-01 00:00 UTC
    mock.set_trading_expiration_ms(Some(expires_ms));

    let report = client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();

    assert_eq!(report.permissions.ip_restricted, Some(false));
    assert_eq!(
        report.permissions.trading_expires_at.map(|t| t.timestamp_millis()),
        Some(expires_ms)
    );
    assert_eq!(report.warnings.len(), 1);
    let warning = &report.warnings[0];
    for needle in [
        "no IP restriction",
        "30 days",
        "2026-01-01 00:00 UTC",
        "whitelist",
        "203.0.113.10, 203.0.113.11",
    ] {
        assert!(warning.contains(needle), "{needle:?} missing from {warning:?}");
    }

    // Without the field, no expiry is invented; the warning stays.
    mock.set_trading_expiration_ms(None);
    let report = client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    assert_eq!(report.permissions.trading_expires_at, None);
    assert!(report.warnings[0].contains("30 days"));
}

#[tokio::test]
async fn an_ip_restricted_key_gets_no_warning() {
    let (mock, client) = production(MockPermissions::default()).await;
    mock.set_trading_expiration_ms(Some(1_767_225_600_000));
    let report = client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    assert_eq!(report.warnings, Vec::<String>::new());
    // Binance sent an expiry, so it is reported even so.
    assert!(report.permissions.trading_expires_at.is_some());
}

// ---- The mock itself, against Binance's documented examples ----

async fn send(
    mock: &MockBinance,
    method: reqwest::Method,
    path_and_query: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let url = mock.base_url.join(path_and_query).unwrap();
    let mut request = reqwest::Client::new().request(method, url).body(body.to_owned());
    if let Some(key) = key {
        request = request.header("X-MBX-APIKEY", key);
    }
    if !body.is_empty() {
        request = request.header("content-type", "application/x-www-form-urlencoded");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

#[test]
fn mock_signature_payload_follows_the_documentation() {
    let (payload, sig) = signed_payload("a=1&b=2&signature=ABC", "").unwrap();
    assert_eq!((payload.as_str(), sig.as_str()), ("a=1&b=2", "ABC"));
    let (payload, sig) = signed_payload("a=1", "b=2&signature=def").unwrap();
    assert_eq!((payload.as_str(), sig.as_str()), ("a=1b=2", "def"));
    assert!(signed_payload("a=1&xsignature=2", "").is_none());
    let query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
    assert_eq!(
        hmac_hex(DOC_SECRET, query),
        "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    );
}

#[tokio::test]
async fn mock_accepts_the_documented_signed_examples() {
    let mock = MockBinance::start().await;
    mock.add_hmac_key(DOC_KEY, DOC_SECRET, MockPermissions::default());
    mock.set_server_time_ms(Some(DOC_TIMESTAMP + 100));
    let post = reqwest::Method::POST;

    let query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
    let signed = format!(
        "/api/v3/order/test?{query}&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    );
    assert_eq!(send(&mock, post.clone(), &signed, Some(DOC_KEY), "").await.0, 200);
    // Binance accepts the hex signature in any letter case.
    let upper = format!(
        "/api/v3/order/test?{query}&signature={}",
        "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71".to_uppercase()
    );
    assert_eq!(send(&mock, post.clone(), &upper, Some(DOC_KEY), "").await.0, 200);

    let non_ascii = "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
    let signed = format!(
        "/api/v3/order/test?{non_ascii}&signature=e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
    );
    assert_eq!(send(&mock, post.clone(), &signed, Some(DOC_KEY), "").await.0, 200);

    let body = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559&signature=0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77";
    let path = "/api/v3/order/test?symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC";
    assert_eq!(send(&mock, post.clone(), path, Some(DOC_KEY), body).await.0, 200);

    // One changed character anywhere breaks the signature.
    let tampered = format!(
        "/api/v3/order/test?{}&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71",
        query.replace("price=0.1", "price=0.2")
    );
    let (status, body) = send(&mock, post, &tampered, Some(DOC_KEY), "").await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        serde_json::json!({"code": -1022, "msg": "Signature for this request is not valid."})
    );
    assert!(mock.requests().iter().take(4).all(|r| r.ok));
}

#[tokio::test]
async fn mock_rejects_like_binance() {
    let mock = MockBinance::start().await;
    mock.add_hmac_key(DOC_KEY, DOC_SECRET, MockPermissions::default());
    let get = reqwest::Method::GET;
    let now = chrono::Utc::now().timestamp_millis();
    let sign = |query: &str| format!("/api/v3/account?{query}&signature={}", hmac_hex(DOC_SECRET, query));

    let good = sign(&format!("timestamp={now}"));
    assert_eq!(send(&mock, get.clone(), &good, Some(DOC_KEY), "").await.0, 200);

    let (status, body) = send(&mock, get.clone(), &good, None, "").await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(-2015)));
    assert_eq!(body["msg"], "Invalid API-key, IP, or permissions for action.");
    let (status, body) = send(&mock, get.clone(), &good, Some("not-a-key"), "").await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(-2014)));
    let (status, body) = send(&mock, get.clone(), &good, Some(&DOC_KEY.replace('v', "w")), "").await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(-2015)));

    let stale = sign(&format!("timestamp={}", now - 6_000));
    let (status, body) = send(&mock, get.clone(), &stale, Some(DOC_KEY), "").await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(-1021)));
    assert_eq!(body["msg"], "Timestamp for this request is outside of the recvWindow.");
    // A wider recvWindow makes the same age acceptable; over 60000 is refused.
    let wide = sign(&format!("recvWindow=10000&timestamp={}", now - 6_000));
    assert_eq!(send(&mock, get.clone(), &wide, Some(DOC_KEY), "").await.0, 200);
    let too_wide = sign(&format!("recvWindow=60001&timestamp={now}"));
    let (_, body) = send(&mock, get.clone(), &too_wide, Some(DOC_KEY), "").await;
    assert_eq!(body["code"].as_i64(), Some(-1131));

    let (status, body) = send(&mock, get.clone(), &sign("omitZeroBalances=true"), Some(DOC_KEY), "").await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(-1102)));
    let (_, body) = send(
        &mock,
        get.clone(),
        &format!("/api/v3/account?timestamp={now}"),
        Some(DOC_KEY),
        "",
    )
    .await;
    assert_eq!(body["code"].as_i64(), Some(-1102));
    let wrong_secret = format!(
        "/api/v3/account?timestamp={now}&signature={}",
        hmac_hex(SECRET, &format!("timestamp={now}"))
    );
    let (status, body) = send(&mock, get.clone(), &wrong_secret, Some(DOC_KEY), "").await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(-1022)));

    let (status, body) = send(&mock, get, "/api/v3/time", None, "").await;
    assert_eq!(status, 200);
    assert!(body["serverTime"].as_i64().unwrap() >= now);
}

#[tokio::test]
async fn mock_reports_used_weight_and_testnet_has_no_sapi() {
    let mock = MockBinance::start_testnet().await;
    mock.add_hmac_key(KEY, SECRET, MockPermissions::default());
    let client = client_for(&mock);
    let first = client.test(Environment::Testnet, &creds(KEY, SECRET)).await.unwrap();
    let second = client.test(Environment::Testnet, &creds(KEY, SECRET)).await.unwrap();
    let (first, second) = (first.usage.unwrap().weight_used, second.usage.unwrap().weight_used);
    // Both calls may straddle a minute boundary, which resets the window.
    assert!(second == first + 20 || second == 20, "{first} then {second}");

    let now = chrono::Utc::now().timestamp_millis();
    let query = format!("timestamp={now}");
    let path = format!(
        "/sapi/v1/account/apiRestrictions?{query}&signature={}",
        hmac_hex(SECRET, &query)
    );
    assert_eq!(send(&mock, reqwest::Method::GET, &path, Some(KEY), "").await.0, 404);
}

#[tokio::test]
async fn mock_verifies_openssl_made_ed25519_and_rsa_signatures() {
    let mock = MockBinance::start().await;
    mock.set_server_time_ms(Some(DOC_TIMESTAMP + 100));
    let ed_public = Ed25519KeyPair::from_pkcs8(&pem_der(ED25519_FIXTURE))
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let rsa_public = RsaKeyPair::from_pkcs8(&pem_der(RSA_FIXTURE))
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let rsa_key = DOC_KEY.replace('v', "r");
    mock.add_ed25519_key(DOC_KEY, &ed_public, MockPermissions::default());
    mock.add_rsa_key(&rsa_key, &rsa_public, MockPermissions::default());
    let post = reqwest::Method::POST;
    let encode =
        |b64: &str| percent_encoding::utf8_percent_encode(b64.trim(), percent_encoding::NON_ALPHANUMERIC).to_string();

    for (key, sig) in [(DOC_KEY, ED25519_FIXTURE_SIG), (rsa_key.as_str(), RSA_FIXTURE_SIG)] {
        let signed = format!("/api/v3/order/test?{DOC_QUERY}&signature={}", encode(sig));
        assert_eq!(send(&mock, post.clone(), &signed, Some(key), "").await.0, 200, "{key}");

        // Not percent-encoded: refused, as Binance would misread a raw "+".
        let raw = format!("/api/v3/order/test?{DOC_QUERY}&signature={}", sig.trim());
        let (status, body) = send(&mock, post.clone(), &raw, Some(key), "").await;
        assert_eq!((status, body["code"].as_i64()), (400, Some(-1022)));

        // Another payload, or the other key's signature: refused.
        let tampered = format!(
            "/api/v3/order/test?{}&signature={}",
            DOC_QUERY.replace("price=0.1", "price=0.2"),
            encode(sig)
        );
        let (_, body) = send(&mock, post.clone(), &tampered, Some(key), "").await;
        assert_eq!(body["code"].as_i64(), Some(-1022));
        let other = if key == DOC_KEY {
            RSA_FIXTURE_SIG
        } else {
            ED25519_FIXTURE_SIG
        };
        let swapped = format!("/api/v3/order/test?{DOC_QUERY}&signature={}", encode(other));
        let (_, body) = send(&mock, post.clone(), &swapped, Some(key), "").await;
        assert_eq!(body["code"].as_i64(), Some(-1022));
        // An HMAC-style hex signature is no Ed25519/RSA signature.
        let hex = format!(
            "/api/v3/order/test?{DOC_QUERY}&signature={}",
            hmac_hex(DOC_SECRET, DOC_QUERY)
        );
        let (_, body) = send(&mock, post.clone(), &hex, Some(key), "").await;
        assert_eq!(body["code"].as_i64(), Some(-1022));
    }
}

#[tokio::test]
async fn mock_clock_runs_ahead_or_behind() {
    let mock = MockBinance::start().await;
    mock.add_hmac_key(DOC_KEY, DOC_SECRET, MockPermissions::default());
    let get = reqwest::Method::GET;
    let server_time = |body: serde_json::Value| body["serverTime"].as_i64().unwrap();

    mock.set_clock_offset_ms(-10_000);
    let now = chrono::Utc::now().timestamp_millis();
    let (_, body) = send(&mock, get.clone(), "/api/v3/time", None, "").await;
    let behind = server_time(body) - now;
    assert!((-10_000..-9_000).contains(&behind), "{behind}");
    // Our clock is now 10 s ahead of the mock's: refused.
    let query = format!("timestamp={now}");
    let signed = format!("/api/v3/account?{query}&signature={}", hmac_hex(DOC_SECRET, &query));
    let (_, body) = send(&mock, get.clone(), &signed, Some(DOC_KEY), "").await;
    assert_eq!(body["code"].as_i64(), Some(-1021));
    assert_eq!(
        body["msg"],
        "Timestamp for this request was 1000ms ahead of the server's time."
    );

    mock.set_clock_offset_ms(3_000);
    let (_, body) = send(&mock, get.clone(), "/api/v3/time", None, "").await;
    assert!(server_time(body) - chrono::Utc::now().timestamp_millis() > 2_000);
    // 3 s old on the mock's clock: still inside the default 5 s recvWindow.
    assert_eq!(send(&mock, get.clone(), &signed, Some(DOC_KEY), "").await.0, 200);
    mock.set_clock_offset_ms(6_000);
    let (_, body) = send(&mock, get, &signed, Some(DOC_KEY), "").await;
    assert_eq!(body["code"].as_i64(), Some(-1021));
    assert_eq!(body["msg"], "Timestamp for this request is outside of the recvWindow.");
}

#[tokio::test]
async fn a_429_seen_by_one_replica_holds_the_next_call_of_another_through_redis() {
    let store = crate::shared_budgets::shared_store().await;
    let mock = MockBinance::start().await;
    mock.add_hmac_key(KEY, SECRET, MockPermissions::default());
    let first = client_for(&mock).with_budget_store(store.clone());
    let second = client_for(&mock).with_budget_store(store);
    mock.set_failure(Some(MockFailure::RateLimited { retry_after_secs: 30 }));
    let err = first
        .test(Environment::Production, &creds(KEY, SECRET))
        .await
        .unwrap_err();
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    let sent = mock.request_count();

    mock.set_failure(None);
    let started = Instant::now();
    let held = second
        .test(Environment::Production, &creds(KEY, SECRET))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(held.code, ExchangeErrorCode::RateLimited);
    assert!(held.retryable());
    assert!(
        held.retry_after.is_some_and(|d| d > Duration::from_secs(25)),
        "{held:?}"
    );
    assert_eq!(mock.request_count(), sent, "the held call never reached Binance");
}
