//! The Kraken client against the mock Kraken: permissions by probing, every
//! failure class, nonce order under concurrency, lockout protection, shape
//! checks, and that no secret ever shows in an error. Also checks the mock
//! itself against Kraken's documented signing example.

use crate::mock::kraken::{MockKraken, MockKrakenFailure, MockKrakenPerms, api_sign};
use exchange_connections::crypto::SecretString;
use exchange_connections::domain::{Environment, Exchange, ExchangeErrorCode, Permissions};
use exchange_connections::exchange::kraken::{KeyId, KrakenClient, NonceError, NonceLease, NonceSource};
use exchange_connections::exchange::shared::Limit;
use exchange_connections::exchange::{Credentials, ExchangeClient, ExchangeEndpoints, ExchangeError, ExchangeRegistry};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "KrakenTestApiKey0123456789abcdefghijklmnopqrstuvwxyz+/AB";
/// base64 of 64 bytes.
const SECRET: &str = "a3Jha2VuLXRlc3Qtc2VjcmV0LTAxMjM0NTY3ODktYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXotQUJDREVGRw==";
/// A valid-shaped private key that must never be seen outside the client.
const CANARY: &str = "Q0FOQVJZLVNFQ1JFVC1DQU5BUlktU0VDUkVULUNBTkFSWS1TRUNSRVQtQ0FOQVJZLVNFQ1JFVC1DQU5BUlktUw==";
const EGRESS_IPS: [&str; 2] = ["203.0.113.20", "203.0.113.21"];

// The documentation's example (exchanges.md §0).
const DOC_PRIVATE_KEY: &str =
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";
const DOC_NONCE: &str = "1616492376594";
const DOC_PAYLOAD: &str = "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25";
const DOC_PATH: &str = "/0/private/AddOrder";
const DOC_API_SIGN: &str = "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ==";

fn creds(key: &str, secret: &str) -> Credentials {
    Credentials {
        access_token: None,
        api_key: SecretString::new(key),
        api_secret: SecretString::new(secret),
        passphrase: None,
    }
}

fn with_otp(mut credentials: Credentials, otp: &str) -> Credentials {
    credentials.passphrase = Some(SecretString::new(otp));
    credentials
}

fn client_for(mock: &MockKraken) -> KrakenClient {
    KrakenClient::new(reqwest::Client::new(), mock.base_url.clone())
        .with_egress_ips(EGRESS_IPS.iter().map(|ip| ip.to_string()).collect())
}

async fn kraken(perms: MockKrakenPerms) -> (MockKraken, KrakenClient) {
    let mock = MockKraken::start().await;
    mock.add_key(KEY, SECRET, perms);
    let client = client_for(&mock);
    (mock, client)
}

async fn test_err(client: &KrakenClient, credentials: &Credentials) -> ExchangeError {
    match client.test(Environment::Production, credentials).await {
        Ok(report) => panic!("expected an error, got {report:?}"),
        Err(e) => e,
    }
}

async fn failing_with(failure: MockKrakenFailure) -> (MockKraken, ExchangeError) {
    let (mock, client) = kraken(MockKrakenPerms::default()).await;
    mock.set_failure(Some(failure));
    let err = test_err(&client.with_timeout(Duration::from_millis(300)), &creds(KEY, SECRET)).await;
    (mock, err)
}

const ALL_PERMS: MockKrakenPerms = MockKrakenPerms {
    query_funds: true,
    withdraw: true,
};

#[test]
fn test_constants_have_kraken_shapes() {
    assert_eq!(KEY.len(), 56);
}

#[tokio::test]
async fn a_working_key_reads_funds_and_probes_withdrawals() {
    let (mock, client) = kraken(ALL_PERMS).await;

    let report = client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();

    assert_eq!(
        report.permissions,
        Permissions {
            can_read: true,
            can_trade: false,
            can_withdraw: true,
            ip_restricted: None,
            trading_expires_at: None,
        }
    );
    assert_eq!(report.usage, None);
    assert!(report.latency > Duration::ZERO);

    let requests = mock.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/0/private/Balance", "/0/private/WithdrawMethods"]);
    for r in &requests {
        assert!(r.ok, "{r:?}");
        assert_eq!(r.method, "POST");
        assert_eq!(r.api_key.as_deref(), Some(KEY));
        assert!(r.user_agent.as_deref().unwrap().starts_with("exchange-connections/"));
        assert_eq!(r.content_type.as_deref(), Some("application/x-www-form-urlencoded"));
        assert_eq!(r.body, format!("nonce={}", r.nonce.unwrap()));
        assert_eq!(r.otp, None);
    }
    // Microsecond nonces, increasing.
    let (first, second) = (requests[0].nonce.unwrap(), requests[1].nonce.unwrap());
    let now_us = chrono::Utc::now().timestamp_micros() as u64;
    assert!(first < second && second <= now_us && now_us - first < 60_000_000);
}

#[tokio::test]
async fn without_withdraw_permission_can_withdraw_is_false() {
    let (mock, client) = kraken(MockKrakenPerms::default()).await;
    let report = client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    assert!(report.permissions.can_read);
    assert!(!report.permissions.can_withdraw);
    assert!(!report.permissions.can_trade);
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].errors, ["EGeneral:Permission denied"]);
}

#[tokio::test]
async fn missing_query_funds_is_permission_denied() {
    let (mock, client) = kraken(MockKrakenPerms {
        query_funds: false,
        withdraw: true,
    })
    .await;
    let err = test_err(&client, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::PermissionDenied);
    let hint = err.hint.as_deref().unwrap();
    assert!(
        hint.contains("Query Funds") && hint.contains("203.0.113.20, 203.0.113.21"),
        "{hint}"
    );
    assert_eq!(
        mock.request_count(),
        1,
        "no withdrawal probe after a failed balance call"
    );
    // Not a credential failure: the next call still goes out.
    test_err(&client, &creds(KEY, SECRET)).await;
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn two_factor_password_is_sent_as_otp() {
    let (mock, client) = kraken(ALL_PERMS).await;
    mock.set_otp(KEY, Some("static pass&word"));

    let report = client
        .test(
            Environment::Production,
            &with_otp(creds(KEY, SECRET), "static pass&word"),
        )
        .await
        .unwrap();
    assert!(report.permissions.can_withdraw);
    let requests = mock.requests();
    assert!(requests.iter().all(|r| r.otp.as_deref() == Some("static pass&word")));
    assert!(
        requests[0].body.ends_with("&otp=static+pass%26word"),
        "{}",
        requests[0].body
    );

    let err = test_err(&client, &with_otp(creds(KEY, SECRET), "wrong password")).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert!(err.hint.as_deref().unwrap().contains("passphrase"), "{err:?}");
    assert!(!format!("{err:?}").contains("wrong password"));
}

#[tokio::test]
async fn wrong_secret_is_invalid_credentials_and_is_not_retried() {
    let (mock, client) = kraken(MockKrakenPerms::default()).await;
    let wrong = creds(KEY, CANARY);

    let err = test_err(&client, &wrong).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert!(err.message.contains("does not match"), "{err}");
    assert!(!err.retryable());
    assert_eq!(mock.request_count(), 1);
    assert_eq!(mock.requests()[0].errors, ["EAPI:Invalid signature"]);

    // The same credentials again: refused here, with the same error.
    assert_eq!(test_err(&client, &wrong).await, err);
    assert_eq!(mock.request_count(), 1);

    // The corrected secret is tried, and works.
    client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    assert_eq!(mock.request_count(), 3);
}

#[tokio::test]
async fn unknown_key_is_refused_without_calling_kraken_again() {
    let (mock, client) = kraken(MockKrakenPerms::default()).await;
    let unknown = KEY.replace('K', "Q");

    let err = test_err(&client, &creds(&unknown, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    let hint = err.hint.as_deref().unwrap();
    assert!(hint.contains("IP allowlist") && hint.contains("203.0.113.20"), "{hint}");
    assert_eq!(mock.request_count(), 1);
    assert_eq!(mock.requests()[0].errors, ["EAPI:Invalid key"]);

    // Lockout protection: neither a retry nor another secret reaches Kraken.
    assert_eq!(test_err(&client, &creds(&unknown, SECRET)).await, err);
    assert_eq!(test_err(&client, &creds(&unknown, CANARY)).await, err);
    assert_eq!(mock.request_count(), 1);
    // Other keys are unaffected.
    client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    assert_eq!(mock.request_count(), 3);

    // Once the user acts (here: the key now exists), it is tried again.
    mock.add_key(&unknown, SECRET, MockKrakenPerms::default());
    client.forget_failure(&SecretString::new(unknown.clone()));
    client
        .test(Environment::Production, &creds(&unknown, SECRET))
        .await
        .unwrap();
    assert_eq!(mock.request_count(), 5);
}

#[tokio::test]
async fn a_key_deleted_at_kraken_stops_being_used() {
    let (mock, client) = kraken(MockKrakenPerms::default()).await;
    client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    mock.remove_key(KEY);
    let err = test_err(&client, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert_eq!(test_err(&client, &creds(KEY, SECRET)).await, err);
    assert_eq!(mock.request_count(), 3);
}

#[tokio::test]
async fn fifty_concurrent_calls_with_one_key_send_strictly_increasing_nonces() {
    let (mock, client) = kraken(ALL_PERMS).await;
    // Requests sent at once would overtake each other.
    mock.set_jitter(Some(Duration::from_millis(5)));
    // 100 calls at once are far beyond a real key's call counter.
    let generous = Limit::Decaying {
        max: 1000.0,
        decay_per_sec: 1000.0,
    };
    let client = Arc::new(client.with_call_counter(generous));
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.test(Environment::Production, &creds(KEY, SECRET)).await })
        })
        .collect();
    for call in calls {
        let report = call.await.unwrap().expect("every call succeeds");
        assert!(report.permissions.can_withdraw);
    }

    let requests = mock.requests();
    assert_eq!(requests.len(), 100);
    assert!(requests.iter().all(|r| r.ok), "no request was refused by the mock");
    // In the order the mock received them.
    let nonces: Vec<u64> = requests.iter().map(|r| r.nonce.unwrap()).collect();
    assert!(nonces.windows(2).all(|w| w[0] < w[1]), "{nonces:?}");
}

#[tokio::test]
async fn concurrent_calls_queued_behind_a_rejected_key_do_not_reach_kraken() {
    let (mock, client) = kraken(MockKrakenPerms::default()).await;
    let client = Arc::new(client);
    let unknown = KEY.replace('K', "Z");
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (client, unknown) = (client.clone(), unknown.clone());
            tokio::spawn(async move { client.test(Environment::Production, &creds(&unknown, SECRET)).await })
        })
        .collect();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    }
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn a_nonce_behind_another_application_is_invalid_nonce() {
    let (mock, client) = kraken(MockKrakenPerms::default()).await;
    // Another application already used nonces far ahead of ours.
    mock.set_last_nonce(KEY, u64::MAX / 2);
    let err = test_err(&client, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidNonce);
    assert!(err.retryable());
    assert!(err.hint.as_deref().unwrap().contains("dedicated API key"), "{err:?}");
    // Not remembered as a rejected key: the next check goes out.
    test_err(&client, &creds(KEY, SECRET)).await;
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn temporary_lockout_waits_fifteen_minutes_before_calling_again() {
    let (mock, client) = kraken(MockKrakenPerms::default()).await;
    mock.set_failure(Some(MockKrakenFailure::Lockout));
    let err = test_err(&client, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    assert_eq!(err.retry_after, Some(Duration::from_secs(15 * 60)));
    assert!(err.message.contains("Temporary lockout"), "{err}");

    // The lockout is over at Kraken, but the client waits as told.
    mock.set_failure(None);
    let again = test_err(&client, &creds(KEY, SECRET)).await;
    assert_eq!(again.code, ExchangeErrorCode::RateLimited);
    let left = again.retry_after.unwrap();
    assert!(
        left <= Duration::from_secs(900) && left > Duration::from_secs(890),
        "{left:?}"
    );
    assert_eq!(mock.request_count(), 1);

    // The user acting does not end Kraken's lockout: still not sent.
    client.forget_failure(&SecretString::new(KEY));
    let held = test_err(&client, &creds(KEY, SECRET)).await;
    assert_eq!(held.code, ExchangeErrorCode::RateLimited);
    assert!(held.retry_after.unwrap() > Duration::from_secs(890), "{held:?}");
    assert_eq!(mock.request_count(), 1);
    // Another key is not held.
    mock.add_key(&KEY.replace('K', "C"), SECRET, MockKrakenPerms::default());
    client
        .test(Environment::Production, &creds(&KEY.replace('K', "C"), SECRET))
        .await
        .unwrap();
}

#[tokio::test]
async fn rate_limit_exceeded_is_rate_limited() {
    let (_mock, err) = failing_with(MockKrakenFailure::RateLimited).await;
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    assert!(err.message.contains("Rate limit exceeded"), "{err}");
    assert_eq!(err.retry_after, None);
}

#[tokio::test]
async fn throttled_waits_until_the_given_time() {
    let until = chrono::Utc::now().timestamp() + 30;
    let (_mock, err) = failing_with(MockKrakenFailure::Throttled { until }).await;
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    let wait = err.retry_after.expect("a wait until the timestamp");
    assert!(
        wait <= Duration::from_secs(30) && wait >= Duration::from_secs(28),
        "{wait:?}"
    );
}

#[tokio::test]
async fn service_unavailable_is_exchange_unavailable() {
    let (_mock, err) = failing_with(MockKrakenFailure::Unavailable).await;
    assert_eq!(err.code, ExchangeErrorCode::ExchangeUnavailable);
    assert!(err.message.contains("EService:Unavailable"), "{err}");
    assert!(err.retryable());
}

#[tokio::test]
async fn server_error_is_exchange_unavailable() {
    let (_mock, err) = failing_with(MockKrakenFailure::ServerError).await;
    assert_eq!(err.code, ExchangeErrorCode::ExchangeUnavailable);
    assert!(err.message.contains("HTTP 502"), "{err}");
    assert!(!err.message.contains("html"));
}

#[tokio::test]
async fn garbage_is_unexpected_response() {
    let (_mock, err) = failing_with(MockKrakenFailure::Garbage).await;
    assert_eq!(err.code, ExchangeErrorCode::UnexpectedResponse);
    assert!(err.message.contains("HTTP 200"), "{err}");
    assert!(!err.message.contains("maintenance"));
}

#[tokio::test]
async fn hang_times_out_as_network_error() {
    let started = Instant::now();
    let (mock, err) = failing_with(MockKrakenFailure::Hang).await;
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
    let client = KrakenClient::new(reqwest::Client::new(), url);
    let err = test_err(&client, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::NetworkError);
    assert!(!err.message.contains("127.0.0.1"), "no URL in messages: {err}");
}

/// A nonce source that never grants a lease, or fails.
struct StuckNonces {
    fail: bool,
}

#[async_trait::async_trait]
impl NonceSource for StuckNonces {
    async fn acquire(&self, _key: &KeyId) -> Result<NonceLease, NonceError> {
        if self.fail {
            return Err(NonceError("store unreachable".into()));
        }
        std::future::pending().await
    }
}

#[tokio::test]
async fn the_nonce_source_is_pluggable_and_its_failures_are_bounded() {
    let (mock, client) = kraken(MockKrakenPerms::default()).await;
    let client = client
        .with_timeout(Duration::from_millis(200))
        .with_nonce_source(Arc::new(StuckNonces { fail: false }));
    let err = test_err(&client, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    assert!(err.message.contains("still running"), "{err}");

    let client = client.with_nonce_source(Arc::new(StuckNonces { fail: true }));
    let err = test_err(&client, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::NetworkError);
    assert!(
        !err.message.contains("store unreachable"),
        "internal detail stays in logs: {err}"
    );
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn shape_errors_name_each_field_and_nothing_is_sent() {
    let mock = MockKraken::start().await;
    let client = client_for(&mock);
    let check = |env: Environment, c: &Credentials| client.check_credentials(env, c).err().map(|e| e.field);

    assert_eq!(check(Environment::Production, &creds(KEY, SECRET)), None);
    assert_eq!(check(Environment::Testnet, &creds(KEY, SECRET)), Some("environment"));
    assert_eq!(check(Environment::Production, &creds("short", SECRET)), Some("apiKey"));
    assert_eq!(
        check(Environment::Production, &creds(&KEY.replace('K', "-"), SECRET)),
        Some("apiKey")
    );
    assert_eq!(
        check(Environment::Production, &creds(KEY, &SECRET[..40])),
        Some("apiSecret")
    );
    assert_eq!(
        check(Environment::Production, &with_otp(creds(KEY, SECRET), "a\nb")),
        Some("passphrase")
    );

    let err = client
        .test(Environment::Testnet, &creds(KEY, SECRET))
        .await
        .unwrap_err();
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert!(err.message.starts_with("environment:"), "{err}");
    let err = test_err(&client, &creds(KEY, "not base64!")).await;
    assert!(err.message.starts_with("apiSecret:"), "{err}");
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn the_canary_secret_never_appears_in_any_error() {
    let mut errors = Vec::new();
    // Registered with the canary: signatures verify, failures are injected.
    let mock = MockKraken::start().await;
    mock.add_key(KEY, CANARY, MockKrakenPerms::default());
    let client = client_for(&mock).with_timeout(Duration::from_millis(300));
    let good = creds(KEY, CANARY);
    for failure in [
        MockKrakenFailure::Lockout,
        MockKrakenFailure::RateLimited,
        MockKrakenFailure::Throttled {
            until: chrono::Utc::now().timestamp() + 5,
        },
        MockKrakenFailure::Unavailable,
        MockKrakenFailure::ServerError,
        MockKrakenFailure::Garbage,
        MockKrakenFailure::Hang,
    ] {
        mock.set_failure(Some(failure));
        // A fresh client each time: waits Kraken named hold the key in one.
        let client = client_for(&mock).with_timeout(Duration::from_millis(300));
        errors.push(test_err(&client, &good).await);
    }
    mock.set_failure(None);
    // Permission denied, a bad nonce, a wrong otp.
    mock.add_key(
        KEY,
        CANARY,
        MockKrakenPerms {
            query_funds: false,
            withdraw: false,
        },
    );
    errors.push(test_err(&client, &good).await);
    mock.set_last_nonce(KEY, u64::MAX / 2);
    errors.push(test_err(&client, &good).await);
    mock.add_key(KEY, CANARY, MockKrakenPerms::default());
    mock.set_otp(KEY, Some("right-password"));
    errors.push(test_err(&client, &with_otp(good.clone(), "wrong-password")).await);
    // The canary as a wrong secret (and refused again), and as malformed input.
    let other_key = KEY.replace('K', "C");
    mock.add_key(&other_key, SECRET, MockKrakenPerms::default());
    errors.push(test_err(&client, &creds(&other_key, CANARY)).await);
    errors.push(test_err(&client, &creds(&other_key, CANARY)).await);
    errors.push(test_err(&client, &creds(KEY, &format!("{CANARY}!"))).await);
    errors.push(test_err(&client, &creds(CANARY, SECRET)).await);

    let signatures: Vec<String> = mock.requests().into_iter().filter_map(|r| r.api_sign).collect();
    assert!(signatures.len() >= 10, "{}", signatures.len());
    for err in &errors {
        let text = format!("{err} | {err:?} | {}", err.hint.as_deref().unwrap_or(""));
        assert!(!text.contains(CANARY), "canary in {text}");
        assert!(!text.contains(KEY), "API key in {text}");
        assert!(
            !text.contains("wrong-password") && !text.contains("right-password"),
            "otp in {text}"
        );
        assert!(!text.contains("nonce="), "body in {text}");
        for signature in &signatures {
            assert!(!text.contains(signature.as_str()), "signature in {text}");
        }
    }
    assert!(!format!("{good:?}").contains(CANARY));
}

#[tokio::test]
async fn server_time_reads_the_public_clock() {
    let (mock, client) = kraken(MockKrakenPerms::default()).await;
    mock.set_server_time(Some(1_688_669_448));
    let time = client.server_time(Environment::Production).await.unwrap();
    assert_eq!(time.map(|t| t.timestamp()), Some(1_688_669_448));
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path.as_str()),
        ("GET", "/0/public/Time")
    );
    assert!(requests[0].api_key.is_none() && requests[0].user_agent.is_some());

    // No test environment, no clock; a failing Kraken is classified.
    assert_eq!(client.server_time(Environment::Testnet).await.unwrap(), None);
    mock.set_failure(Some(MockKrakenFailure::Unavailable));
    let err = client.server_time(Environment::Production).await.unwrap_err();
    assert_eq!(err.code, ExchangeErrorCode::ExchangeUnavailable);
}

#[tokio::test]
async fn the_registry_serves_kraken() {
    let mock = MockKraken::start().await;
    mock.add_key(KEY, SECRET, MockKrakenPerms::default());
    let endpoints = ExchangeEndpoints {
        kraken: mock.base_url.clone(),
        ..ExchangeEndpoints::default()
    };
    let registry = ExchangeRegistry::new(&endpoints, reqwest::Client::new(), &[]);
    assert!(registry.supported().contains(&Exchange::Kraken));
    let client = registry.get(Exchange::Kraken).unwrap();
    assert_eq!(client.exchange(), Exchange::Kraken);
    let report = client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    assert!(report.permissions.can_read);
}

// ---- The mock itself ----

#[test]
fn mock_signs_the_official_vector() {
    assert_eq!(
        api_sign(DOC_PRIVATE_KEY, DOC_PATH, DOC_NONCE, DOC_PAYLOAD).as_deref(),
        Some(DOC_API_SIGN)
    );
    assert_ne!(
        api_sign(DOC_PRIVATE_KEY, "/0/private/Balance", DOC_NONCE, DOC_PAYLOAD).as_deref(),
        Some(DOC_API_SIGN)
    );
}

/// A raw private request to the mock; `sign_with` signs it (or not).
async fn post(
    mock: &MockKraken,
    path: &str,
    key: &str,
    sign_with: Option<&str>,
    nonce: u64,
    user_agent: Option<&str>,
) -> (u16, serde_json::Value) {
    let body = format!("nonce={nonce}");
    let mut request = reqwest::Client::new()
        .post(mock.base_url.join(path).unwrap())
        .header("API-Key", key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone());
    if let Some(secret) = sign_with {
        request = request.header("API-Sign", api_sign(secret, path, &nonce.to_string(), &body).unwrap());
    }
    if let Some(user_agent) = user_agent {
        request = request.header("User-Agent", user_agent);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn mock_checks_like_kraken() {
    let mock = MockKraken::start().await;
    mock.add_key(KEY, SECRET, MockKrakenPerms::default());
    let ua = Some("test");
    let balance = "/0/private/Balance";
    let error = |body: &serde_json::Value| body["error"][0].as_str().unwrap_or_default().to_owned();

    let (status, body) = post(&mock, balance, KEY, Some(SECRET), 100, ua).await;
    assert_eq!(status, 200);
    assert_eq!(body["error"], serde_json::json!([]));
    assert_eq!(body["result"]["ZUSD"], "171288.6158");

    // Nonces must grow: equal or smaller is refused, larger accepted.
    for nonce in [100, 99] {
        let (status, body) = post(&mock, balance, KEY, Some(SECRET), nonce, ua).await;
        assert_eq!((status, error(&body)), (200, "EAPI:Invalid nonce".to_owned()));
    }
    assert_eq!(
        post(&mock, balance, KEY, Some(SECRET), 101, ua).await.1["error"],
        serde_json::json!([])
    );

    let (_, body) = post(&mock, balance, "UnknownKey", Some(SECRET), 200, ua).await;
    assert_eq!(error(&body), "EAPI:Invalid key");
    let (_, body) = post(&mock, balance, KEY, Some(CANARY), 201, ua).await;
    assert_eq!(error(&body), "EAPI:Invalid signature");
    let (_, body) = post(&mock, balance, KEY, None, 202, ua).await;
    assert_eq!(error(&body), "EAPI:Invalid signature");
    // A refused signature does not consume the nonce.
    assert_eq!(
        post(&mock, balance, KEY, Some(SECRET), 201, ua).await.1["error"],
        serde_json::json!([])
    );

    let (_, body) = post(&mock, "/0/private/WithdrawMethods", KEY, Some(SECRET), 300, ua).await;
    assert_eq!(error(&body), "EGeneral:Permission denied");
    let (status, _) = post(&mock, balance, KEY, Some(SECRET), 301, None).await;
    assert_eq!(status, 403, "a User-Agent is required");

    let time = reqwest::Client::new()
        .get(mock.base_url.join("/0/public/Time").unwrap())
        .header("User-Agent", "test")
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert!(time["result"]["unixtime"].as_i64().unwrap() >= chrono::Utc::now().timestamp() - 5);
    assert!(time["result"]["rfc1123"].as_str().unwrap().ends_with("+0000"));
}

#[tokio::test]
async fn a_retry_after_holds_the_key_so_the_next_test_is_not_sent() {
    let (mock, client) = kraken(ALL_PERMS).await;
    mock.set_failure(Some(MockKrakenFailure::TooManyRequests { retry_after_secs: 30 }));
    let err = test_err(&client, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    assert_eq!(err.retry_after, Some(Duration::from_secs(30)));
    assert_eq!(mock.request_count(), 1);

    mock.set_failure(None);
    let started = Instant::now();
    let held = test_err(&client, &creds(KEY, SECRET)).await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(held.code, ExchangeErrorCode::RateLimited);
    assert!(
        held.retry_after.is_some_and(|d| d > Duration::from_secs(25)),
        "{held:?}"
    );
    assert_eq!(mock.request_count(), 1, "the held call never reached Kraken");
}

#[tokio::test]
async fn the_call_counter_refuses_a_burst_beyond_the_starter_tier() {
    let (mock, client) = kraken(ALL_PERMS).await;
    // Each test makes two calls: seven tests fill 14 of 15.
    for _ in 0..7 {
        client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    }
    let err = test_err(&client, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    assert!(err.message.contains("budget"), "{err}");
    assert_eq!(mock.request_count(), 15, "the 16th call was not sent");
}

#[tokio::test]
async fn replicas_sharing_redis_share_nonces_counters_and_rejections() {
    let mock = MockKraken::start().await;
    mock.add_key(KEY, SECRET, ALL_PERMS);
    let store = crate::shared_budgets::shared_store().await;
    let (a, b) = (
        client_for(&mock).with_budget_store(store.clone()),
        client_for(&mock).with_budget_store(store),
    );
    for i in 0..4 {
        let client = if i % 2 == 0 { &a } else { &b };
        client.test(Environment::Production, &creds(KEY, SECRET)).await.unwrap();
    }
    let nonces: Vec<u64> = mock.requests().iter().map(|r| r.nonce.unwrap()).collect();
    assert!(nonces.windows(2).all(|w| w[0] < w[1]), "{nonces:?}");

    // A key Kraken does not know, rejected through one replica, is not sent
    // by the other until the user acts.
    let unknown = KEY.replace('K', "U");
    test_err(&a, &creds(&unknown, SECRET)).await;
    let sent = mock.request_count();
    let refused = test_err(&b, &creds(&unknown, SECRET)).await;
    assert_eq!(refused.code, ExchangeErrorCode::InvalidCredentials);
    assert_eq!(mock.request_count(), sent);
    b.forget_failure(&SecretString::new(&unknown));
    test_err(&b, &creds(&unknown, SECRET)).await;
    assert_eq!(mock.request_count(), sent + 1, "tried again after the user acted");
}
