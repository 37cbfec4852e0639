//! The Kite Connect client against the mock Kite: the full login (login URL,
//! redirect, session, profile), single-use and expiring request tokens, bad
//! secrets, expired and replaced sessions, every failure class, shape checks,
//! and that no secret or token ever shows in an error. Also checks the mock
//! itself against Kite's documented rules, since the lead's API tests rely
//! on it.

use crate::mock::kite::{MockFailure, MockKite, kite_checksum};
use exchange_connections::crypto::SecretString;
use exchange_connections::domain::{Environment, Exchange, ExchangeErrorCode, Permissions};
use exchange_connections::exchange::kite::{KiteClient, KiteSession, check_request_token, next_kite_expiry};
use exchange_connections::exchange::{Credentials, ExchangeClient, ExchangeEndpoints, ExchangeError, ExchangeRegistry};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use url::Url;

const KEY: &str = "kitefront0123456";
const SECRET: &str = "s3cr3tS3CR3Ts3cr3tS3CR3Ts3cr3tAB";
/// A valid-shaped secret that must never be seen outside the client.
const CANARY: &str = "CaNaRyCaNaRyCaNaRyCaNaRyCaNaRy42";
const EGRESS_IPS: [&str; 2] = ["203.0.113.10", "203.0.113.11"];

fn secret(value: &str) -> SecretString {
    SecretString::new(value)
}

fn creds(key: &str, secret: &str, access_token: Option<&str>) -> Credentials {
    Credentials {
        api_key: SecretString::new(key),
        api_secret: SecretString::new(secret),
        passphrase: None,
        access_token: access_token.map(SecretString::new),
    }
}

fn client_for(mock: &MockKite) -> KiteClient {
    KiteClient::new(reqwest::Client::new(), mock.base_url.clone(), mock.login_url.clone())
        .with_egress_ips(EGRESS_IPS.iter().map(|ip| ip.to_string()).collect())
}

/// A mock holding the app `KEY`/`SECRET`, and a client for it.
async fn app() -> (MockKite, KiteClient) {
    let mock = MockKite::start().await;
    mock.add_app(KEY, SECRET);
    let client = client_for(&mock);
    (mock, client)
}

/// A session made the way the service makes one, without the browser.
async fn logged_in(mock: &MockKite, client: &KiteClient) -> KiteSession {
    let request_token = mock.issue_request_token(KEY);
    client
        .create_session(&secret(KEY), &secret(SECRET), &request_token)
        .await
        .expect("session")
}

async fn session_err(client: &KiteClient, key: &str, api_secret: &str, request_token: &str) -> ExchangeError {
    match client
        .create_session(&secret(key), &secret(api_secret), request_token)
        .await
    {
        Ok(session) => panic!("expected an error, got {session:?}"),
        Err(e) => e,
    }
}

async fn test_err(client: &KiteClient, credentials: &Credentials) -> ExchangeError {
    match client.test(Environment::Production, credentials).await {
        Ok(report) => panic!("expected an error, got {report:?}"),
        Err(e) => e,
    }
}

/// Follows the login URL like a browser would, up to Kite's redirect, and
/// returns the redirect's query parameters.
async fn log_in_with_browser(login_url: &Url) -> HashMap<String, String> {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = browser.get(login_url.clone()).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 302, "the login page redirects");
    let location = response.headers()["location"].to_str().unwrap();
    Url::parse(location).unwrap().query_pairs().into_owned().collect()
}

#[tokio::test]
async fn full_login_then_test() {
    let mock = MockKite::start().await;
    let user_id = mock.add_app(KEY, SECRET);
    let client = client_for(&mock);

    // The login URL: the configured page with v=3, the key, and the state
    // in redirect_params.
    let state = "st-7f3a&x=1";
    let login_url = client.login_url(KEY, state);
    assert_eq!(
        (login_url.host_str(), login_url.port(), login_url.path()),
        (mock.login_url.host_str(), mock.login_url.port(), "/connect/login")
    );
    let query: HashMap<String, String> = login_url.query_pairs().into_owned().collect();
    assert_eq!(query["v"], "3");
    assert_eq!(query["api_key"], KEY);
    assert_eq!(query["redirect_params"], "state=st-7f3a%26x%3D1");

    // Kite redirects back with a request token and our state.
    let redirect = log_in_with_browser(&login_url).await;
    assert_eq!(redirect["status"], "success");
    assert_eq!(redirect["state"], state);
    let request_token = &redirect["request_token"];
    assert_eq!(check_request_token(request_token), Ok(()));

    let before = chrono::Utc::now();
    let session = client
        .create_session(&secret(KEY), &secret(SECRET), request_token)
        .await
        .unwrap();
    assert_eq!(session.user_id, user_id);
    assert_eq!(session.expires_at, next_kite_expiry(before));
    assert!(session.expires_at > before && session.expires_at - before <= chrono::TimeDelta::hours(24));
    assert!(!format!("{session:?}").contains(session.access_token.expose()));

    let report = client
        .test(
            Environment::Production,
            &creds(KEY, SECRET, Some(session.access_token.expose())),
        )
        .await
        .unwrap();
    assert_eq!(
        report.permissions,
        Permissions {
            can_read: true,
            can_trade: true,
            can_withdraw: false,
            ip_restricted: None,
            trading_expires_at: Some(session.expires_at),
        }
    );
    assert_eq!(report.usage, None);
    assert!(report.latency > Duration::ZERO);
    assert_eq!(report.warnings.len(), 1);
    assert!(report.warnings[0].contains("203.0.113.10, 203.0.113.11 are registered"));

    // What went over the wire, as Kite documents it.
    let requests = mock.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/connect/login", "/session/token", "/user/profile"]);
    let (exchange, profile) = (&requests[1], &requests[2]);
    assert_eq!(exchange.method, "POST");
    assert_eq!(exchange.kite_version.as_deref(), Some("3"));
    assert_eq!(exchange.form["api_key"], KEY);
    assert_eq!(&exchange.form["request_token"], request_token);
    assert_eq!(exchange.form["checksum"], kite_checksum(KEY, request_token, SECRET));
    assert_eq!(exchange.form.len(), 3, "the secret itself is never sent");
    assert_eq!(profile.method, "GET");
    assert_eq!(profile.kite_version.as_deref(), Some("3"));
    assert_eq!(
        profile.authorization.as_deref(),
        Some(format!("token {KEY}:{}", session.access_token.expose()).as_str())
    );
    assert_eq!(requests[0].status, 302);
    assert!(requests[1..].iter().all(|r| r.ok));
}

#[tokio::test]
async fn a_user_without_products_cannot_trade_and_gets_no_reminder() {
    let (mock, client) = app().await;
    mock.set_trading(KEY, false);
    let session = logged_in(&mock, &client).await;
    let report = client
        .test(
            Environment::Production,
            &creds(KEY, SECRET, Some(session.access_token.expose())),
        )
        .await
        .unwrap();
    assert_eq!(
        report.permissions,
        Permissions {
            can_read: true,
            can_trade: false,
            can_withdraw: false,
            ip_restricted: None,
            trading_expires_at: None,
        }
    );
    assert!(report.warnings.is_empty());
}

#[tokio::test]
async fn a_reused_request_token_is_token_expired() {
    let (mock, client) = app().await;
    let request_token = mock.issue_request_token(KEY);
    client
        .create_session(&secret(KEY), &secret(SECRET), &request_token)
        .await
        .unwrap();

    let err = session_err(&client, KEY, SECRET, &request_token).await;
    assert_eq!(err.code, ExchangeErrorCode::TokenExpired);
    assert!(err.message.contains("Token is invalid or has expired."), "{err}");
    assert!(err.hint.as_deref().unwrap().contains("works once"));
    assert_eq!(mock.requests()[1].error_type.as_deref(), Some("TokenException"));
}

#[tokio::test]
async fn an_expired_or_foreign_request_token_is_token_expired() {
    let (mock, client) = app().await;
    mock.set_request_token_ttl(Duration::ZERO);
    let stale = mock.issue_request_token(KEY);
    assert_eq!(
        session_err(&client, KEY, SECRET, &stale).await.code,
        ExchangeErrorCode::TokenExpired
    );

    // A token Kite issued for another app.
    mock.set_request_token_ttl(Duration::from_secs(300));
    mock.add_app("otherapp0123456", SECRET);
    let foreign = mock.issue_request_token("otherapp0123456");
    assert_eq!(
        session_err(&client, KEY, SECRET, &foreign).await.code,
        ExchangeErrorCode::TokenExpired
    );
    // A made-up one.
    assert_eq!(
        session_err(&client, KEY, SECRET, "NeverIssued0123456789").await.code,
        ExchangeErrorCode::TokenExpired
    );
}

#[tokio::test]
async fn a_wrong_secret_fails_the_checksum_and_is_invalid_credentials() {
    let (mock, client) = app().await;
    let request_token = mock.issue_request_token(KEY);
    let err = session_err(&client, KEY, CANARY, &request_token).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert!(err.message.contains("Invalid `checksum`."), "{err}");
    assert!(err.hint.as_deref().unwrap().contains("Check the API secret"));
    assert!(!err.retryable());
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].status, 403);
}

#[tokio::test]
async fn an_unknown_api_key_is_invalid_credentials() {
    let (mock, client) = app().await;
    let request_token = mock.issue_request_token(KEY);
    let err = session_err(&client, "unknownkey012345", SECRET, &request_token).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert!(err.hint.as_deref().unwrap().contains("Check the API key"));
}

#[tokio::test]
async fn malformed_session_input_is_refused_without_a_request() {
    let (mock, client) = app().await;
    let token = mock.issue_request_token(KEY);
    for (key, api_secret, request_token, field) in [
        ("short", SECRET, token.as_str(), "apiKey"),
        (KEY, "bad secret", token.as_str(), "apiSecret"),
        (KEY, SECRET, "", "requestToken"),
        (KEY, SECRET, "abc&checksum=1", "requestToken"),
    ] {
        let err = session_err(&client, key, api_secret, request_token).await;
        assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
        assert!(err.message.starts_with(&format!("{field}:")), "{err}");
    }
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn an_expired_session_is_token_expired_with_the_relogin_hint() {
    let (mock, client) = app().await;
    let session = logged_in(&mock, &client).await;
    let credentials = creds(KEY, SECRET, Some(session.access_token.expose()));
    client.test(Environment::Production, &credentials).await.unwrap();

    mock.expire_sessions();
    let err = test_err(&client, &credentials).await;
    assert_eq!(err.code, ExchangeErrorCode::TokenExpired);
    assert!(!err.retryable());
    assert!(err.message.contains("Incorrect `api_key` or `access_token`."), "{err}");
    let hint = err.hint.as_deref().unwrap();
    assert!(hint.contains("06:00 IST") && hint.contains("beginKiteLogin"), "{hint}");
    assert_eq!(mock.requests().last().unwrap().status, 403);
}

#[tokio::test]
async fn a_newer_login_replaces_the_session() {
    let (mock, client) = app().await;
    let first = logged_in(&mock, &client).await;
    let second = logged_in(&mock, &client).await;
    assert_ne!(first.access_token, second.access_token);
    let err = test_err(&client, &creds(KEY, SECRET, Some(first.access_token.expose()))).await;
    assert_eq!(err.code, ExchangeErrorCode::TokenExpired);
    client
        .test(
            Environment::Production,
            &creds(KEY, SECRET, Some(second.access_token.expose())),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_token_from_another_app_or_garbage_is_token_expired() {
    let (mock, client) = app().await;
    mock.add_app("otherapp0123456", SECRET);
    let request_token = mock.issue_request_token("otherapp0123456");
    let other = client
        .create_session(&secret("otherapp0123456"), &secret(SECRET), &request_token)
        .await
        .unwrap();
    // KEY with the other app's token: Kite checks that they belong together.
    let err = test_err(&client, &creds(KEY, SECRET, Some(other.access_token.expose()))).await;
    assert_eq!(err.code, ExchangeErrorCode::TokenExpired);
    let err = test_err(&client, &creds(KEY, SECRET, Some("NotAToken0123456789"))).await;
    assert_eq!(err.code, ExchangeErrorCode::TokenExpired);
    // A token that cannot even go into a header is refused without a request.
    let before = mock.request_count();
    let err = test_err(&client, &creds(KEY, SECRET, Some("line\nbreak"))).await;
    assert_eq!(err.code, ExchangeErrorCode::TokenExpired);
    assert_eq!(mock.request_count(), before);
}

#[tokio::test]
async fn no_access_token_is_token_expired_without_any_request() {
    let (mock, client) = app().await;
    for credentials in [creds(KEY, SECRET, None), creds(KEY, SECRET, Some(""))] {
        let err = test_err(&client, &credentials).await;
        assert_eq!(err.code, ExchangeErrorCode::TokenExpired);
        assert!(err.message.contains("log in with Kite (beginKiteLogin)"), "{err}");
    }
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn shape_errors_name_each_field_and_testnet_is_refused() {
    let (mock, client) = app().await;
    let check = |env: Environment, c: &Credentials| client.check_credentials(env, c).err().map(|e| e.field);
    assert_eq!(check(Environment::Production, &creds(KEY, SECRET, None)), None);
    assert_eq!(
        check(Environment::Testnet, &creds(KEY, SECRET, None)),
        Some("environment")
    );
    assert_eq!(
        check(Environment::Production, &creds("kite key", SECRET, None)),
        Some("apiKey")
    );
    assert_eq!(
        check(Environment::Production, &creds(KEY, "s", None)),
        Some("apiSecret")
    );
    let mut with_passphrase = creds(KEY, SECRET, None);
    with_passphrase.passphrase = Some(SecretString::new("hunter22"));
    assert_eq!(check(Environment::Production, &with_passphrase), Some("passphrase"));

    // test() refuses them before spending a request, even with a session.
    let session = logged_in(&mock, &client).await;
    let before = mock.request_count();
    let err = client
        .test(
            Environment::Testnet,
            &creds(KEY, SECRET, Some(session.access_token.expose())),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert!(err.message.starts_with("environment:"), "{err}");
    assert_eq!(mock.request_count(), before);
}

/// A session, then `failure` on the profile call.
async fn profile_failing_with(failure: MockFailure) -> ExchangeError {
    let (mock, client) = app().await;
    let session = logged_in(&mock, &client).await;
    mock.set_failure(Some(failure));
    test_err(&client, &creds(KEY, SECRET, Some(session.access_token.expose()))).await
}

#[tokio::test]
async fn server_side_failures_are_exchange_unavailable() {
    for (failure, needle) in [
        (MockFailure::InternalError, "HTTP 500, GeneralException"),
        (MockFailure::OmsDown, "HTTP 502, NetworkException"),
        (MockFailure::ApiDown, "HTTP 503, NetworkException"),
        (MockFailure::GatewayTimeout, "HTTP 504"),
    ] {
        let err = profile_failing_with(failure).await;
        assert_eq!(err.code, ExchangeErrorCode::ExchangeUnavailable, "{failure:?}");
        assert!(err.message.contains(needle), "{failure:?}: {err}");
        assert!(!err.message.contains("html"), "{err}");
        assert!(err.retryable());
    }
    let err = profile_failing_with(MockFailure::ApiDown).await;
    assert_eq!(err.retry_after, Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn rate_limited_carries_retry_after_when_given() {
    let err = profile_failing_with(MockFailure::RateLimited {
        retry_after_secs: Some(4),
    })
    .await;
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    assert_eq!(err.retry_after, Some(Duration::from_secs(4)));
    let err = profile_failing_with(MockFailure::RateLimited { retry_after_secs: None }).await;
    assert_eq!((err.code, err.retry_after), (ExchangeErrorCode::RateLimited, None));
}

#[tokio::test]
async fn permission_and_account_problems_are_permission_denied() {
    let err = profile_failing_with(MockFailure::PermissionDenied).await;
    assert_eq!(err.code, ExchangeErrorCode::PermissionDenied);
    assert!(err.message.contains("PermissionException"), "{err}");
    let err = profile_failing_with(MockFailure::AccountBlocked).await;
    assert_eq!(err.code, ExchangeErrorCode::PermissionDenied);
    assert!(err.message.contains("UserException"), "{err}");
}

#[tokio::test]
async fn refused_input_and_garbage_are_unexpected_responses() {
    let err = profile_failing_with(MockFailure::EchoingInputError).await;
    assert_eq!(err.code, ExchangeErrorCode::UnexpectedResponse);
    assert!(err.message.contains("HTTP 400, InputException"), "{err}");
    let err = profile_failing_with(MockFailure::Garbage).await;
    assert_eq!(err.code, ExchangeErrorCode::UnexpectedResponse);
    assert!(err.message.contains("HTTP 200"), "{err}");
    assert!(!err.message.contains("maintenance"));
}

#[tokio::test]
async fn failures_while_creating_a_session_are_classified_too() {
    let (mock, client) = app().await;
    mock.set_failure(Some(MockFailure::ApiDown));
    let err = session_err(&client, KEY, SECRET, &mock.issue_request_token(KEY)).await;
    assert_eq!(err.code, ExchangeErrorCode::ExchangeUnavailable);
    // 503 with Retry-After: later calls with the key are held, not sent.
    let sent = mock.request_count();
    mock.set_failure(Some(MockFailure::Garbage));
    let err = session_err(&client, KEY, SECRET, &mock.issue_request_token(KEY)).await;
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    assert_eq!(mock.request_count(), sent);
    let client = client_for(&mock);
    mock.set_failure(Some(MockFailure::RateLimited {
        retry_after_secs: Some(2),
    }));
    let err = session_err(&client, KEY, SECRET, &mock.issue_request_token(KEY)).await;
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    let client = client_for(&mock);
    mock.set_failure(Some(MockFailure::Garbage));
    let err = session_err(&client, KEY, SECRET, &mock.issue_request_token(KEY)).await;
    assert_eq!(err.code, ExchangeErrorCode::UnexpectedResponse);
}

#[tokio::test]
async fn hang_times_out_as_network_error() {
    let (mock, client) = app().await;
    let client = client.with_timeout(Duration::from_millis(300));
    let session = logged_in(&mock, &client).await;
    mock.set_failure(Some(MockFailure::Hang));
    let started = Instant::now();
    let err = test_err(&client, &creds(KEY, SECRET, Some(session.access_token.expose()))).await;
    assert_eq!(err.code, ExchangeErrorCode::NetworkError);
    assert!(err.message.contains("300 ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.retryable());
}

#[tokio::test]
async fn connection_refused_is_network_error_without_the_url() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let client = KiteClient::new(reqwest::Client::new(), url.clone(), url);
    let err = test_err(&client, &creds(KEY, SECRET, Some("SomeAccessToken0123"))).await;
    assert_eq!(err.code, ExchangeErrorCode::NetworkError);
    assert!(!err.message.contains("127.0.0.1"), "{err}");
    let err = session_err(&client, KEY, SECRET, "SomeRequestToken0123").await;
    assert_eq!(err.code, ExchangeErrorCode::NetworkError);
}

#[tokio::test]
async fn kite_has_no_server_time() {
    let (mock, client) = app().await;
    assert_eq!(client.server_time(Environment::Production).await, Ok(None));
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn the_canary_secret_and_tokens_never_appear_in_any_error() {
    let mock = MockKite::start().await;
    mock.add_app(KEY, CANARY);
    let client = client_for(&mock).with_timeout(Duration::from_millis(300));
    let mut errors = Vec::new();

    // Session creation: the echoing failure quotes the form (checksum and
    // request token) back; a wrong secret; a reused token.
    mock.set_failure(Some(MockFailure::EchoingInputError));
    errors.push(session_err(&client, KEY, CANARY, &mock.issue_request_token(KEY)).await);
    mock.set_failure(None);
    errors.push(session_err(&client, KEY, &CANARY.to_lowercase(), &mock.issue_request_token(KEY)).await);
    let request_token = mock.issue_request_token(KEY);
    let session = client
        .create_session(&secret(KEY), &secret(CANARY), &request_token)
        .await
        .unwrap();
    errors.push(session_err(&client, KEY, CANARY, &request_token).await);

    // Profile calls: every failure, the echo of the Authorization header
    // included, then an expired session.
    let good = creds(KEY, CANARY, Some(session.access_token.expose()));
    for failure in [
        MockFailure::InternalError,
        MockFailure::OmsDown,
        MockFailure::ApiDown,
        MockFailure::GatewayTimeout,
        MockFailure::RateLimited {
            retry_after_secs: Some(1),
        },
        MockFailure::PermissionDenied,
        MockFailure::AccountBlocked,
        MockFailure::EchoingInputError,
        MockFailure::Garbage,
        MockFailure::Hang,
    ] {
        mock.set_failure(Some(failure));
        // A fresh client each time: a Retry-After holds the key in one.
        let client = client_for(&mock).with_timeout(Duration::from_millis(300));
        errors.push(test_err(&client, &good).await);
    }
    mock.set_failure(None);
    mock.expire_sessions();
    errors.push(test_err(&client, &good).await);
    // The canary as malformed input.
    errors.push(test_err(&client, &creds(KEY, &format!("{CANARY}!"), Some("x"))).await);
    errors.push(session_err(&client, KEY, SECRET, &format!("{CANARY}-")).await);

    let requests = mock.requests();
    let echoed: Vec<&str> = requests
        .iter()
        .filter(|r| r.error_type.as_deref() == Some("InputException"))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(echoed, ["/session/token", "/user/profile"], "both echoes happened");
    let mut sensitive = vec![
        CANARY.to_owned(),
        session.access_token.expose().to_owned(),
        format!("token {KEY}:{}", session.access_token.expose()),
    ];
    for r in &requests {
        sensitive.extend(r.form.get("checksum").cloned());
        sensitive.extend(r.form.get("request_token").cloned());
    }
    assert!(sensitive.len() >= 8);
    for err in &errors {
        let text = format!("{err} | {err:?} | {}", err.hint.as_deref().unwrap_or(""));
        assert!(!text.contains(KEY), "API key in {text}");
        for value in &sensitive {
            assert!(!text.contains(value.as_str()), "{value} in {text}");
        }
    }
    assert!(errors.iter().any(|e| e.message.contains("[REDACTED]")), "the scrub ran");
    assert!(!format!("{good:?} {session:?}").contains(CANARY));
    assert!(!format!("{session:?}").contains(session.access_token.expose()));
}

#[tokio::test]
async fn the_registry_serves_zerodha_with_both_kite_urls() {
    let mock = MockKite::start().await;
    mock.add_app(KEY, SECRET);
    let endpoints = ExchangeEndpoints {
        kite: mock.base_url.clone(),
        kite_login: mock.login_url.clone(),
        ..ExchangeEndpoints::default()
    };
    let registry = ExchangeRegistry::new(&endpoints, reqwest::Client::new(), &[]);
    let zerodha = registry.get(Exchange::Zerodha).unwrap();
    assert_eq!(zerodha.exchange(), Exchange::Zerodha);
    assert!(registry.supported().contains(&Exchange::Zerodha));

    // It talks to the configured KITE_BASE_URL.
    let session = logged_in(&mock, &client_for(&mock)).await;
    let report = zerodha
        .test(
            Environment::Production,
            &creds(KEY, SECRET, Some(session.access_token.expose())),
        )
        .await
        .unwrap();
    assert!(report.permissions.can_read);
    assert!(report.warnings[0].contains("this service's egress IP address is registered"));
}

// ---- The mock itself, against Kite's documented rules ----

async fn send(
    mock: &MockKite,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    form: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().request(method, mock.base_url.join(path).unwrap());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if !form.is_empty() {
        request = request.form(form);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

#[test]
fn mock_checksum_follows_the_documentation() {
    // exchanges.md §0: the docs' placeholders, computed locally.
    assert_eq!(
        kite_checksum("xxx", "yyy", "zzz"),
        "cc6c955cadf2cc09442c0848ce8e165b8f9aa5974916de7186a9e1b6c4e7937e"
    );
}

#[tokio::test]
async fn mock_session_exchange_checks_like_kite() {
    let mock = MockKite::start().await;
    let user_id = mock.add_app(KEY, SECRET);
    let version = [("X-Kite-Version", "3")];
    let post = reqwest::Method::POST;

    // Without the version header nothing is looked at, and the token stays.
    let token = mock.issue_request_token(KEY);
    let checksum = kite_checksum(KEY, &token, SECRET);
    let good = [("api_key", KEY), ("request_token", &token), ("checksum", &checksum)];
    let (status, body) = send(&mock, post.clone(), "/session/token", &[], &good).await;
    assert_eq!((status, body["error_type"].as_str()), (400, Some("InputException")));

    // The documented exchange works once and answers generate_session.json.
    let (status, body) = send(&mock, post.clone(), "/session/token", &version, &good).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "success");
    let data = &body["data"];
    assert_eq!(data["user_id"], user_id.as_str());
    assert_eq!(data["api_key"], KEY);
    assert_eq!(data["access_token"].as_str().unwrap().len(), 32);
    for field in [
        "user_type",
        "email",
        "user_name",
        "user_shortname",
        "broker",
        "exchanges",
        "products",
        "order_types",
        "avatar_url",
        "public_token",
        "enctoken",
        "refresh_token",
        "silo",
        "login_time",
        "meta",
    ] {
        assert!(data.get(field).is_some(), "{field} missing");
    }
    let login_time = data["login_time"].as_str().unwrap();
    assert!(chrono::NaiveDateTime::parse_from_str(login_time, "%Y-%m-%d %H:%M:%S").is_ok());
    let (status, body) = send(&mock, post.clone(), "/session/token", &version, &good).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (403, Some("Token is invalid or has expired."))
    );

    // The same inputs in another order give another checksum, which is refused.
    let token = mock.issue_request_token(KEY);
    let reordered = kite_checksum(SECRET, &token, KEY);
    let bad = [("api_key", KEY), ("request_token", &token), ("checksum", &reordered)];
    let (status, body) = send(&mock, post.clone(), "/session/token", &version, &bad).await;
    assert_eq!((status, body["message"].as_str()), (403, Some("Invalid `checksum`.")));
    assert_eq!(body["error_type"], "TokenException");

    let (status, body) = send(&mock, post, "/session/token", &version, &[("api_key", KEY)]).await;
    assert_eq!((status, body["error_type"].as_str()), (400, Some("InputException")));
}

#[tokio::test]
async fn mock_profile_and_logout_check_the_authorization_header() {
    let (mock, client) = app().await;
    let session = logged_in(&mock, &client).await;
    let token = session.access_token.expose();
    let authorization = format!("token {KEY}:{token}");
    let get = reqwest::Method::GET;

    let (status, body) = send(
        &mock,
        get.clone(),
        "/user/profile",
        &[("X-Kite-Version", "3"), ("Authorization", &authorization)],
        &[],
    )
    .await;
    assert_eq!(status, 200);
    for field in [
        "user_id",
        "user_type",
        "email",
        "exchanges",
        "products",
        "order_types",
        "meta",
    ] {
        assert!(body["data"].get(field).is_some(), "{field} missing");
    }

    for bad in [
        format!("Bearer {token}"),
        format!("token {token}"),
        format!("token {KEY}{token}"),
        format!("token otherkey:{token}"),
    ] {
        let (status, body) = send(
            &mock,
            get.clone(),
            "/user/profile",
            &[("X-Kite-Version", "3"), ("Authorization", &bad)],
            &[],
        )
        .await;
        assert_eq!(
            (status, body["error_type"].as_str()),
            (403, Some("TokenException")),
            "{bad}"
        );
    }
    let (status, _) = send(&mock, get, "/user/profile", &[("Authorization", &authorization)], &[]).await;
    assert_eq!(status, 400, "the version header is required");

    // Logging out ends the session.
    let logout = format!("/session/token?api_key={KEY}&access_token={token}");
    let (status, body) = send(&mock, reqwest::Method::DELETE, &logout, &[("X-Kite-Version", "3")], &[]).await;
    assert_eq!((status, &body["data"]), (200, &serde_json::json!(true)));
    let err = test_err(&client, &creds(KEY, SECRET, Some(token))).await;
    assert_eq!(err.code, ExchangeErrorCode::TokenExpired);
}

#[tokio::test]
async fn mock_login_page_refuses_unknown_apps_and_honours_the_redirect_url() {
    let (mock, client) = app().await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let unknown = client.login_url("unknownapp01234", "s");
    assert_eq!(browser.get(unknown).send().await.unwrap().status().as_u16(), 400);
    let mut no_version = mock.login_url.clone();
    no_version.set_query(Some(&format!("api_key={KEY}")));
    assert_eq!(browser.get(no_version).send().await.unwrap().status().as_u16(), 400);

    mock.set_redirect_url(KEY, Url::parse("https://app.example/kite/callback?x=1").unwrap());
    let redirect = browser.get(client.login_url(KEY, "abc")).send().await.unwrap();
    let location = Url::parse(redirect.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        (location.host_str(), location.path()),
        (Some("app.example"), "/kite/callback")
    );
    let query: HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!((query["x"].as_str(), query["state"].as_str()), ("1", "abc"));
    // The issued token is a working one.
    client
        .create_session(&secret(KEY), &secret(SECRET), &query["request_token"])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_retry_after_holds_the_key_so_the_next_test_is_not_sent() {
    let (mock, client) = app().await;
    let session = logged_in(&mock, &client).await;
    let good = creds(KEY, SECRET, Some(session.access_token.expose()));
    mock.set_failure(Some(MockFailure::RateLimited {
        retry_after_secs: Some(30),
    }));
    let err = test_err(&client, &good).await;
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    let sent = mock.request_count();

    mock.set_failure(None);
    let started = Instant::now();
    let held = test_err(&client, &good).await;
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
    assert_eq!(mock.request_count(), sent, "the held call never reached Kite");
    // Without a Retry-After nothing is held: the next call goes out.
    let (mock, client) = app().await;
    let session = logged_in(&mock, &client).await;
    let good = creds(KEY, SECRET, Some(session.access_token.expose()));
    mock.set_failure(Some(MockFailure::RateLimited { retry_after_secs: None }));
    test_err(&client, &good).await;
    mock.set_failure(None);
    client.test(Environment::Production, &good).await.unwrap();
}
