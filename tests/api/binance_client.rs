//! The Binance client against the mock Binance: permissions on production and
//! testnet, every failure class, shape checks, and that no secret ever shows
//! in an error. Also checks the mock itself against Binance's documented
//! signed examples, since the lead's API tests rely on it.

use crate::mock::binance::{MockBinance, MockFailure, MockPermissions, hmac_hex, signed_payload};
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
    let usage = report.usage.expect("X-MBX-USED-WEIGHT-1M is reported");
    assert_eq!((usage.weight_used, usage.weight_limit), (20, 6000));
    assert!(report.latency > Duration::ZERO);

    let requests = mock.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/api/v3/account", "/sapi/v1/account/apiRestrictions"]);
    assert!(requests.iter().all(|r| r.ok && r.api_key.as_deref() == Some(KEY)));
    assert!(
        requests[0]
            .query
            .starts_with("omitZeroBalances=true&recvWindow=5000&timestamp=")
    );
    assert!(requests[1].query.starts_with("recvWindow=5000&timestamp="));
    assert!(requests.iter().all(|r| r.query.contains("&signature=")));
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
    let paths: Vec<String> = mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/api/v3/account"]);
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
    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "no permission read after a failed account call");
    assert_eq!(requests[0].error_code, Some(-1022));
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
    assert_eq!(mock.requests()[0].error_code, Some(-2015));
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
    assert_eq!(oks, [true, false]);
}

#[tokio::test]
async fn clock_skew_either_way_is_clock_skew() {
    let (mock, client) = production(MockPermissions::default()).await;
    let now = chrono::Utc::now().timestamp_millis();

    // Binance's clock a minute ahead: our timestamp is outside recvWindow.
    mock.set_server_time_ms(Some(now + 60_000));
    let err = test_err(&client, Environment::Production, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::ClockSkew);
    assert!(err.message.contains("outside of the recvWindow"), "{err}");

    // Binance's clock a minute behind: our timestamp is ahead of it.
    mock.set_server_time_ms(Some(now - 60_000));
    let err = test_err(&client, Environment::Production, &creds(KEY, SECRET)).await;
    assert_eq!(err.code, ExchangeErrorCode::ClockSkew);
    assert!(err.message.contains("ahead of the server's time"), "{err}");
    assert!(err.retryable());
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
    let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----";
    let err = client
        .check_credentials(Environment::Production, &creds(KEY, pem))
        .unwrap_err();
    assert_eq!(err.field, "apiSecret");
    assert!(err.message.contains("not supported yet"), "{err}");
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
        errors.push(test_err(&client, Environment::Production, &good).await);
    }
    mock.set_failure(None);
    mock.set_server_time_ms(Some(chrono::Utc::now().timestamp_millis() + 60_000));
    errors.push(test_err(&client, Environment::Production, &good).await);
    mock.set_server_time_ms(None);
    // The canary as a wrong secret, and as malformed input.
    mock.add_hmac_key(&KEY.replace('A', "C"), SECRET, MockPermissions::default());
    errors.push(test_err(&client, Environment::Production, &creds(&KEY.replace('A', "C"), CANARY)).await);
    errors.push(test_err(&client, Environment::Production, &creds(KEY, &format!("{CANARY}!"))).await);
    errors.push(test_err(&client, Environment::Production, &creds(CANARY, SECRET)).await);

    let signatures: Vec<String> = mock
        .requests()
        .iter()
        .filter_map(|r| r.query.split("signature=").nth(1).map(str::to_owned))
        .collect();
    assert!(signatures.len() >= 10);
    for err in &errors {
        let text = format!("{err} | {err:?} | {}", err.hint.as_deref().unwrap_or(""));
        assert!(!text.contains(CANARY), "canary in {text}");
        assert!(!text.contains(KEY), "API key in {text}");
        assert!(!text.contains("signature="), "query in {text}");
        assert!(!text.contains("timestamp="), "query in {text}");
        for signature in &signatures {
            assert!(!text.contains(signature.as_str()), "signature in {text}");
        }
    }
    assert!(!format!("{good:?}").contains(CANARY));
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
