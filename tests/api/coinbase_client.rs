//! The Coinbase client against the mock Coinbase: every key format signs a
//! JWT the mock accepts, permissions map field by field, every failure class,
//! clock correction (a mock clock 90 s off, a 401 that re-measures), shape
//! checks, and that no private key or JWT ever shows in an error. Also checks
//! the mock itself with JWTs made by `jsonwebtoken`, since the lead's API
//! tests rely on it.

use crate::mock::coinbase::{
    EcTestKey, Ed25519TestKey, KEY_PERMISSIONS_PATH, MockCoinbase, MockFailure, MockScopes, TIME_PATH, cdp_key_name,
};
use exchange_connections::crypto::SecretString;
use exchange_connections::domain::{Environment, ExchangeErrorCode, Permissions};
use exchange_connections::exchange::coinbase::CoinbaseClient;
use exchange_connections::exchange::{Credentials, ExchangeClient, ExchangeError};
use std::time::{Duration, Instant};

const EGRESS_IPS: [&str; 2] = ["203.0.113.20", "203.0.113.21"];

fn creds(name: &str, secret: &str) -> Credentials {
    Credentials {
        access_token: None,
        api_key: SecretString::new(name),
        api_secret: SecretString::new(secret),
        passphrase: None,
    }
}

fn client_for(mock: &MockCoinbase) -> CoinbaseClient {
    CoinbaseClient::new(reqwest::Client::new(), mock.base_url.clone())
        .with_egress_ips(EGRESS_IPS.iter().map(|ip| ip.to_string()).collect())
}

/// A mock holding one fresh EC key with `scopes`, and its credentials.
async fn with_ec_key(scopes: MockScopes) -> (MockCoinbase, CoinbaseClient, Credentials) {
    let mock = MockCoinbase::start().await;
    let key = EcTestKey::generate();
    let name = cdp_key_name();
    mock.add_ec_key(&name, &key.public_key, scopes);
    let client = client_for(&mock);
    (mock, client, creds(&name, &key.sec1_pem))
}

async fn test_err(client: &CoinbaseClient, credentials: &Credentials) -> ExchangeError {
    match client.test(Environment::Production, credentials).await {
        Ok(report) => panic!("expected an error, got {report:?}"),
        Err(e) => e,
    }
}

async fn failing_with(failure: MockFailure) -> (MockCoinbase, ExchangeError) {
    let (mock, client, credentials) = with_ec_key(MockScopes::default()).await;
    mock.set_failure(Some(failure));
    let err = test_err(&client, &credentials).await;
    (mock, err)
}

fn default_permissions() -> Permissions {
    Permissions {
        can_read: true,
        can_trade: true,
        can_withdraw: false,
        ip_restricted: None,
        trading_expires_at: None,
    }
}

#[tokio::test]
async fn es256_sec1_key_reads_the_key_permissions_with_a_documented_jwt() {
    let (mock, client, credentials) = with_ec_key(MockScopes::default()).await;

    let report = client.test(Environment::Production, &credentials).await.unwrap();

    assert_eq!(report.permissions, default_permissions());
    let usage = report.usage.expect("x-ratelimit-* is reported");
    assert_eq!((usage.weight_used, usage.weight_limit), (1, 30));
    assert!(report.latency > Duration::ZERO);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    assert_eq!(mock.paths(), [TIME_PATH, KEY_PERMISSIONS_PATH]);
    let requests = mock.requests();
    assert!(requests[0].authorization.is_none(), "the time call is public");
    assert!(requests.iter().all(|r| r.ok && r.method == "GET"));
    let (header, claims) = requests[1].jwt().expect("a Bearer JWT");
    let name = credentials.api_key.expose();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], name);
    let nonce = header["nonce"].as_str().unwrap();
    assert!(
        nonce.len() == 64 && nonce.bytes().all(|b| b.is_ascii_hexdigit()),
        "{nonce}"
    );
    assert_eq!(claims["sub"], name);
    assert_eq!(claims["iss"], "cdp");
    let port = mock.base_url.port().unwrap();
    assert_eq!(
        claims["uri"],
        format!("GET 127.0.0.1:{port}/api/v3/brokerage/key_permissions")
    );
    let (nbf, exp) = (claims["nbf"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    assert_eq!(exp - nbf, 120);
    assert!((nbf - chrono::Utc::now().timestamp()).abs() <= 5);
}

#[tokio::test]
async fn es256_pkcs8_and_escaped_newline_pems_work() {
    let mock = MockCoinbase::start().await;
    let client = client_for(&mock);
    let key = EcTestKey::generate();
    let name = cdp_key_name();
    mock.add_ec_key(&name, &key.public_key, MockScopes::default());

    for secret in [
        key.pkcs8_pem.clone(),
        key.escaped_pem(),
        key.pkcs8_pem.replace('\n', "\\n"),
        format!("\n  {}  \n", key.sec1_pem),
    ] {
        let report = client.test(Environment::Production, &creds(&name, &secret)).await;
        assert_eq!(report.map(|r| r.permissions), Ok(default_permissions()), "{secret:?}");
    }
    assert!(mock.requests().iter().all(|r| r.ok));
}

#[tokio::test]
async fn ed25519_keys_in_every_pasted_form_sign_eddsa() {
    let mock = MockCoinbase::start().await;
    let client = client_for(&mock);
    let key = Ed25519TestKey::generate();
    // A bare key ID as the name, as newer CDP keys show.
    let name = uuid::Uuid::new_v4().to_string();
    mock.add_ed25519_key(&name, &key.public_key, MockScopes::default());

    for secret in [&key.base64_64, &key.base64_32, &key.pkcs8_pem] {
        let report = client.test(Environment::Production, &creds(&name, secret)).await;
        assert_eq!(report.map(|r| r.permissions), Ok(default_permissions()), "{secret:?}");
    }
    let requests = mock.requests();
    let signed: Vec<_> = requests.iter().filter_map(|r| r.jwt()).collect();
    assert_eq!(signed.len(), 3);
    assert!(signed.iter().all(|(header, _)| header["alg"] == "EdDSA"));
}

#[tokio::test]
async fn transfer_scope_maps_to_withdraw_with_a_warning() {
    let scopes = MockScopes {
        view: true,
        trade: false,
        transfer: true,
    };
    let (_mock, client, credentials) = with_ec_key(scopes).await;
    let report = client.test(Environment::Production, &credentials).await.unwrap();
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
    assert_eq!(report.warnings.len(), 1);
    assert!(report.warnings[0].contains("Transfer"), "{:?}", report.warnings);
}

#[tokio::test]
async fn clock_is_measured_once_and_every_request_gets_a_fresh_jwt() {
    let (mock, client, credentials) = with_ec_key(MockScopes::default()).await;
    for _ in 0..3 {
        client.test(Environment::Production, &credentials).await.unwrap();
    }
    assert_eq!(
        mock.paths(),
        [
            TIME_PATH,
            KEY_PERMISSIONS_PATH,
            KEY_PERMISSIONS_PATH,
            KEY_PERMISSIONS_PATH
        ]
    );
    let nonces: std::collections::HashSet<String> = mock
        .requests()
        .iter()
        .filter_map(|r| r.jwt())
        .map(|(header, _)| header["nonce"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(nonces.len(), 3, "a new nonce per request");

    // Past its maximum age the offset is measured again.
    let (mock, client, credentials) = with_ec_key(MockScopes::default()).await;
    let client = client.with_clock_max_age(Duration::ZERO);
    client.test(Environment::Production, &credentials).await.unwrap();
    client.test(Environment::Production, &credentials).await.unwrap();
    assert_eq!(
        mock.paths(),
        [TIME_PATH, KEY_PERMISSIONS_PATH, TIME_PATH, KEY_PERMISSIONS_PATH]
    );
}

#[tokio::test]
async fn mock_clock_90_seconds_ahead_or_behind_still_works() {
    for offset in [90, -90] {
        let (mock, client, credentials) = with_ec_key(MockScopes::default()).await;
        mock.set_clock_offset_secs(offset);
        let report = client.test(Environment::Production, &credentials).await;
        assert!(report.is_ok(), "offset {offset}: {report:?}");
        let (_, claims) = mock.requests()[1].jwt().unwrap();
        let skew = claims["nbf"].as_i64().unwrap() - chrono::Utc::now().timestamp();
        assert!((skew - offset).abs() <= 2, "nbf follows the mock's clock: {skew}");
    }
}

#[tokio::test]
async fn a_401_after_the_clock_moved_remeasures_and_retries_once() {
    let (mock, client, credentials) = with_ec_key(MockScopes::default()).await;
    client.test(Environment::Production, &credentials).await.unwrap();

    // Coinbase's clock jumps 90 s back: the cached offset makes nbf too early.
    mock.set_clock_offset_secs(-90);
    client.test(Environment::Production, &credentials).await.unwrap();

    assert_eq!(
        mock.paths(),
        [
            TIME_PATH,
            KEY_PERMISSIONS_PATH,
            KEY_PERMISSIONS_PATH,
            TIME_PATH,
            KEY_PERMISSIONS_PATH
        ]
    );
    let requests = mock.requests();
    assert_eq!(requests[2].status, 401);
    assert!(
        requests[2].rejection.as_deref().unwrap().contains("in the future"),
        "{:?}",
        requests[2].rejection
    );
    assert!(requests[4].ok);
}

#[tokio::test]
async fn server_time_reads_coinbase_clock() {
    let mock = MockCoinbase::start().await;
    mock.set_clock_offset_secs(3600);
    let client = client_for(&mock);
    let time = client.server_time(Environment::Production).await.unwrap().unwrap();
    let ahead = time - chrono::Utc::now();
    assert!((ahead.num_seconds() - 3600).abs() <= 2, "{ahead}");
    assert_eq!(client.server_time(Environment::Testnet).await, Ok(None));
    assert_eq!(mock.paths(), [TIME_PATH]);

    mock.set_failure(Some(MockFailure::ServerError));
    let err = client.server_time(Environment::Production).await.unwrap_err();
    assert_eq!(err.code, ExchangeErrorCode::ExchangeUnavailable);
}

#[tokio::test]
async fn a_key_the_mock_does_not_know_is_invalid_credentials_with_every_cause() {
    let (mock, client, credentials) = with_ec_key(MockScopes::default()).await;
    let other = creds(&cdp_key_name(), credentials.api_secret.expose());
    let err = test_err(&client, &other).await;

    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert!(!err.retryable());
    let hint = err.hint.as_deref().unwrap();
    for needle in [
        "not from the same key",
        "deleted",
        "IP allowlist",
        "203.0.113.20, 203.0.113.21",
    ] {
        assert!(hint.contains(needle), "{needle:?} missing from {hint:?}");
    }
    let last = mock.requests().pop().unwrap();
    assert_eq!(last.rejection.as_deref(), Some("unknown key"));
}

#[tokio::test]
async fn a_private_key_that_is_not_the_registered_one_is_invalid_credentials() {
    let (mock, client, credentials) = with_ec_key(MockScopes::default()).await;
    let wrong = creds(credentials.api_key.expose(), &EcTestKey::generate().sec1_pem);
    let err = test_err(&client, &wrong).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    let rejection = mock.requests().pop().unwrap().rejection.unwrap();
    assert!(rejection.contains("signature"), "{rejection}");

    // An Ed25519 key under a name registered as ECDSA: the alg is wrong.
    let ed = creds(credentials.api_key.expose(), &Ed25519TestKey::generate().base64_64);
    let err = test_err(&client, &ed).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    let rejection = mock.requests().pop().unwrap().rejection.unwrap();
    assert!(rejection.contains("does not match the key type"), "{rejection}");
}

#[tokio::test]
async fn a_key_deleted_at_the_exchange_is_invalid_credentials() {
    let (mock, client, credentials) = with_ec_key(MockScopes::default()).await;
    client.test(Environment::Production, &credentials).await.unwrap();
    mock.remove_key(credentials.api_key.expose());
    let err = test_err(&client, &credentials).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    // The 401 made the client re-read the clock, which had not moved: no retry.
    assert_eq!(
        mock.paths(),
        [TIME_PATH, KEY_PERMISSIONS_PATH, KEY_PERMISSIONS_PATH, TIME_PATH]
    );
}

#[tokio::test]
async fn missing_view_scope_is_permission_denied() {
    let scopes = MockScopes {
        view: false,
        trade: true,
        transfer: false,
    };
    let (mock, client, credentials) = with_ec_key(scopes).await;
    let err = test_err(&client, &credentials).await;
    assert_eq!(err.code, ExchangeErrorCode::PermissionDenied);
    assert!(err.message.contains("Missing required scopes"), "{err}");
    assert!(err.hint.as_deref().unwrap().contains("View"), "{err:?}");
    assert_eq!(mock.requests().pop().unwrap().status, 403);
}

#[tokio::test]
async fn server_error_is_exchange_unavailable() {
    let (_mock, err) = failing_with(MockFailure::ServerError).await;
    assert_eq!(err.code, ExchangeErrorCode::ExchangeUnavailable);
    assert!(err.message.contains("503"), "{err}");
    assert!(err.retryable());
}

#[tokio::test]
async fn rate_limited_carries_retry_after() {
    let (_mock, err) = failing_with(MockFailure::RateLimited { retry_after_secs: 7 }).await;
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn garbage_is_unexpected_response_naming_the_status() {
    let (mock, err) = failing_with(MockFailure::Garbage).await;
    assert_eq!(err.code, ExchangeErrorCode::UnexpectedResponse);
    assert!(err.message.contains("HTTP 200"), "{err}");
    assert!(!err.message.contains("maintenance"));
    // An unreadable clock does not stop the signed call, which tells the real story.
    assert_eq!(mock.paths(), [TIME_PATH, KEY_PERMISSIONS_PATH]);
}

#[tokio::test]
async fn ip_not_allowed_is_invalid_credentials_quoting_the_egress_ips() {
    let (_mock, err) = failing_with(MockFailure::IpNotAllowed).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert!(err.hint.as_deref().unwrap().contains("203.0.113.20"), "{err:?}");
}

#[tokio::test]
async fn hang_times_out_as_network_error() {
    let (mock, client, credentials) = with_ec_key(MockScopes::default()).await;
    let client = client.with_timeout(Duration::from_millis(300));
    mock.set_failure(Some(MockFailure::Hang));
    let started = Instant::now();
    let err = test_err(&client, &credentials).await;
    assert_eq!(err.code, ExchangeErrorCode::NetworkError);
    assert!(err.message.contains("300 ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // An unreachable clock stops the test before the signed call.
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn connection_refused_is_network_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let client = CoinbaseClient::new(reqwest::Client::new(), url);
    let key = EcTestKey::generate();
    let err = test_err(&client, &creds(&cdp_key_name(), &key.sec1_pem)).await;
    assert_eq!(err.code, ExchangeErrorCode::NetworkError);
    assert!(!err.message.contains("127.0.0.1"), "no URL in messages: {err}");
}

#[tokio::test]
async fn shape_errors_name_each_field_and_cost_no_request() {
    let mock = MockCoinbase::start().await;
    let client = client_for(&mock);
    let key = EcTestKey::generate();
    let name = cdp_key_name();
    let field = |c: &Credentials, env: Environment| client.check_credentials(env, c).err().map(|e| e.field);

    assert_eq!(field(&creds(&name, &key.sec1_pem), Environment::Production), None);
    assert_eq!(
        field(&creds(&name, &key.sec1_pem), Environment::Testnet),
        Some("environment")
    );
    let testnet = client
        .check_credentials(Environment::Testnet, &creds(&name, &key.sec1_pem))
        .unwrap_err();
    assert!(
        testnet
            .message
            .contains("Coinbase has no testnet that can validate keys"),
        "{testnet}"
    );

    // Legacy keys: a 16-character name and a 32-character secret.
    let legacy_name = "aB3dE6gH9jK2mN5p";
    let legacy_secret = "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF";
    for (c, expected) in [
        (creds(legacy_name, legacy_secret), "apiKey"),
        (creds(legacy_name, &key.sec1_pem), "apiKey"),
        (creds(&name, legacy_secret), "apiSecret"),
    ] {
        let err = client.check_credentials(Environment::Production, &c).unwrap_err();
        assert_eq!(err.field, expected);
        assert!(err.message.contains("legacy"), "{err}");
        assert!(err.message.contains("portal.cdp.coinbase.com"), "{err}");
    }
    // Garbage PEMs and other shapes.
    for secret in [
        "-----BEGIN EC PRIVATE KEY-----\nnot base64 at all\n-----END EC PRIVATE KEY-----\n",
        &key.sec1_pem[..key.sec1_pem.len() - 30],
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n",
        "hunter2",
        "",
    ] {
        let err = client
            .check_credentials(Environment::Production, &creds(&name, secret))
            .unwrap_err();
        assert_eq!(err.field, "apiSecret", "{secret:?}");
        assert!(err.message.contains("create a CDP API key"), "{err}");
    }
    let mut with_passphrase = creds(&name, &key.sec1_pem);
    with_passphrase.passphrase = Some(SecretString::new("hunter22"));
    assert_eq!(field(&with_passphrase, Environment::Production), Some("passphrase"));
    with_passphrase.passphrase = Some(SecretString::new(""));
    assert_eq!(field(&with_passphrase, Environment::Production), None);

    // test() refuses malformed credentials without calling Coinbase.
    let err = test_err(&client, &creds(legacy_name, legacy_secret)).await;
    assert_eq!(err.code, ExchangeErrorCode::InvalidCredentials);
    assert!(err.message.starts_with("apiKey:"), "{err}");
    let err = client
        .test(Environment::Testnet, &creds(&name, &key.sec1_pem))
        .await
        .unwrap_err();
    assert!(err.message.starts_with("environment:"), "{err}");
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn the_canary_private_key_never_appears_in_any_error() {
    let canary = EcTestKey::generate();
    let canary_ed = Ed25519TestKey::generate();
    let name = cdp_key_name();
    let mock = MockCoinbase::start().await;
    mock.add_ec_key(&name, &canary.public_key, MockScopes::default());
    let client = client_for(&mock).with_timeout(Duration::from_millis(300));
    let good = creds(&name, &canary.sec1_pem);

    let mut errors = Vec::new();
    for failure in [
        MockFailure::ServerError,
        MockFailure::RateLimited { retry_after_secs: 1 },
        MockFailure::Garbage,
        MockFailure::IpNotAllowed,
        MockFailure::Hang,
    ] {
        mock.set_failure(Some(failure));
        // A fresh client each time: a Retry-After holds the key in one.
        let client = client_for(&mock).with_timeout(Duration::from_millis(300));
        errors.push(test_err(&client, &good).await);
    }
    mock.set_failure(None);
    // Wrong keys, an unknown name, a missing scope, malformed input.
    let stranger = EcTestKey::generate();
    errors.push(test_err(&client, &creds(&name, &stranger.sec1_pem)).await);
    errors.push(test_err(&client, &creds(&name, &canary_ed.base64_64)).await);
    errors.push(test_err(&client, &creds(&cdp_key_name(), &canary.sec1_pem)).await);
    mock.add_ec_key(
        &name,
        &canary.public_key,
        MockScopes {
            view: false,
            ..MockScopes::default()
        },
    );
    errors.push(test_err(&client, &good).await);
    let damaged = canary.sec1_pem.replace("-----END", "-----FIN");
    errors.push(test_err(&client, &creds(&name, &damaged)).await);
    errors.push(test_err(&client, &creds(&canary.sec1_pem, &canary.sec1_pem)).await);
    errors.push(test_err(&client, &creds(&name, &canary_ed.base64_64[..40])).await);

    let tokens: Vec<String> = mock.requests().iter().filter_map(|r| r.authorization.clone()).collect();
    assert!(tokens.len() >= 4, "{}", tokens.len());
    let mut needles: Vec<String> = canary
        .sec1_pem
        .lines()
        .chain(canary.pkcs8_pem.lines())
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_owned)
        .collect();
    needles.push(canary_ed.base64_64.clone());
    needles.push(canary_ed.base64_64[..40].to_owned());
    needles.extend(tokens.iter().cloned());
    needles.extend(tokens.iter().filter_map(|t| t.rsplit('.').next().map(str::to_owned)));
    for err in &errors {
        let text = format!("{err} | {err:?} | {}", err.hint.as_deref().unwrap_or(""));
        assert!(!text.contains("Bearer"), "authorization header in {text}");
        for needle in &needles {
            assert!(!text.contains(needle.as_str()), "{needle:?} in {text}");
        }
    }
    assert!(!format!("{good:?}").contains(&needles[0]));
}

// ---- The mock itself, with JWTs made by jsonwebtoken ----

mod mock_checks {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};

    struct Forge {
        mock: MockCoinbase,
        name: String,
        ec: EcTestKey,
        ed: Ed25519TestKey,
        ed_name: String,
    }

    impl Forge {
        async fn start() -> Self {
            let mock = MockCoinbase::start().await;
            let (ec, ed) = (EcTestKey::generate(), Ed25519TestKey::generate());
            let (name, ed_name) = (cdp_key_name(), cdp_key_name());
            mock.add_ec_key(&name, &ec.public_key, MockScopes::default());
            mock.add_ed25519_key(&ed_name, &ed.public_key, MockScopes::default());
            Self {
                mock,
                name,
                ec,
                ed,
                ed_name,
            }
        }

        fn uri(&self) -> String {
            format!(
                "GET 127.0.0.1:{}{KEY_PERMISSIONS_PATH}",
                self.mock.base_url.port().unwrap()
            )
        }

        fn claims(&self, name: &str) -> Value {
            let now = chrono::Utc::now().timestamp();
            json!({"sub": name, "iss": "cdp", "nbf": now, "exp": now + 120, "uri": self.uri()})
        }

        fn header(&self, alg: Algorithm, kid: &str) -> Header {
            let mut header = Header::new(alg);
            header.kid = Some(kid.to_owned());
            header.nonce = Some("ab".repeat(32));
            header
        }

        fn sign_ec(&self, header: &Header, claims: &Value) -> String {
            jsonwebtoken::encode(header, claims, &EncodingKey::from_ec_der(&self.ec.pkcs8_der)).unwrap()
        }

        fn sign_ed(&self, header: &Header, claims: &Value) -> String {
            jsonwebtoken::encode(header, claims, &EncodingKey::from_ed_der(&self.ed.pkcs8_der)).unwrap()
        }

        /// Status, body and the mock's reason for refusing.
        async fn send(&self, authorization: Option<String>) -> (u16, String, Option<String>) {
            let url = self.mock.base_url.join(KEY_PERMISSIONS_PATH).unwrap();
            let mut request = reqwest::Client::new().get(url);
            if let Some(a) = authorization {
                request = request.header("authorization", a);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            (status, body, self.mock.requests().pop().unwrap().rejection)
        }

        async fn send_jwt(&self, jwt: String) -> (u16, String, Option<String>) {
            self.send(Some(format!("Bearer {jwt}"))).await
        }

        /// Expects Coinbase's plain 401 for a reason containing `why`.
        async fn refuses(&self, jwt: String, why: &str) {
            let (status, body, rejection) = self.send_jwt(jwt).await;
            assert_eq!((status, body.as_str()), (401, "Unauthorized\n"), "{why}");
            let rejection = rejection.unwrap_or_default();
            assert!(rejection.contains(why), "expected {why:?}, got {rejection:?}");
        }
    }

    #[tokio::test]
    async fn accepts_standard_es256_and_eddsa_jwts() {
        let f = Forge::start().await;
        let jwt = f.sign_ec(&f.header(Algorithm::ES256, &f.name), &f.claims(&f.name));
        let (status, body, _) = f.send_jwt(jwt).await;
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (&body["can_view"], &body["can_trade"], &body["can_transfer"]),
            (&json!(true), &json!(true), &json!(false))
        );
        assert_eq!(body["portfolio_type"], "DEFAULT");

        let jwt = f.sign_ed(&f.header(Algorithm::EdDSA, &f.ed_name), &f.claims(&f.ed_name));
        assert_eq!(f.send_jwt(jwt).await.0, 200);

        // Within the leeway either side of the mock's clock.
        let mut claims = f.claims(&f.name);
        claims["nbf"] = json!(claims["nbf"].as_i64().unwrap() + 4);
        claims["exp"] = json!(claims["nbf"].as_i64().unwrap() + 120);
        assert_eq!(
            f.send_jwt(f.sign_ec(&f.header(Algorithm::ES256, &f.name), &claims))
                .await
                .0,
            200
        );
    }

    #[tokio::test]
    async fn refuses_every_broken_rule_with_a_plain_401() {
        let f = Forge::start().await;
        let es = f.header(Algorithm::ES256, &f.name);
        let now = chrono::Utc::now().timestamp();

        assert_eq!(f.send(None).await.2.as_deref(), Some("no Bearer token"));
        let good = f.sign_ec(&es, &f.claims(&f.name));
        assert_eq!(f.send(Some(good.clone())).await.2.as_deref(), Some("no Bearer token"));

        // alg must match the registered key type.
        let ed_as_ec_name = f.sign_ed(&f.header(Algorithm::EdDSA, &f.name), &f.claims(&f.name));
        f.refuses(ed_as_ec_name, "does not match the key type").await;
        // Unknown kid, kid and sub apart, wrong issuer, no nonce.
        let stranger = cdp_key_name();
        f.refuses(
            f.sign_ec(&f.header(Algorithm::ES256, &stranger), &f.claims(&stranger)),
            "unknown key",
        )
        .await;
        f.refuses(f.sign_ec(&es, &f.claims(&f.ed_name)), "sub is not the kid")
            .await;
        let mut claims = f.claims(&f.name);
        claims["iss"] = json!("coinbase-cloud");
        f.refuses(f.sign_ec(&es, &claims), "iss").await;
        let mut no_nonce = es.clone();
        no_nonce.nonce = None;
        f.refuses(f.sign_ec(&no_nonce, &f.claims(&f.name)), "no nonce").await;
        // Times: in the future, expired, too long-lived, missing.
        let mut claims = f.claims(&f.name);
        claims["nbf"] = json!(now + 30);
        claims["exp"] = json!(now + 150);
        f.refuses(f.sign_ec(&es, &claims), "in the future").await;
        let mut claims = f.claims(&f.name);
        claims["nbf"] = json!(now - 200);
        claims["exp"] = json!(now - 80);
        f.refuses(f.sign_ec(&es, &claims), "expired").await;
        let mut claims = f.claims(&f.name);
        claims["nbf"] = json!(now);
        claims["exp"] = json!(now + 121);
        f.refuses(f.sign_ec(&es, &claims), "lifetime 121").await;
        let mut claims = f.claims(&f.name);
        claims.as_object_mut().unwrap().remove("nbf");
        f.refuses(f.sign_ec(&es, &claims), "nbf or exp missing").await;
        // The uri: no scheme, no query, this host and port, this path and method.
        let port = f.mock.base_url.port().unwrap();
        for uri in [
            format!("GET http://127.0.0.1:{port}{KEY_PERMISSIONS_PATH}"),
            format!("GET 127.0.0.1:{port}{KEY_PERMISSIONS_PATH}?x=1"),
            format!("GET 127.0.0.1{KEY_PERMISSIONS_PATH}"),
            format!("GET api.coinbase.com{KEY_PERMISSIONS_PATH}"),
            format!("GET 127.0.0.1:{port}/api/v3/brokerage/accounts"),
            format!("POST 127.0.0.1:{port}{KEY_PERMISSIONS_PATH}"),
        ] {
            let mut claims = f.claims(&f.name);
            claims["uri"] = json!(uri);
            f.refuses(f.sign_ec(&es, &claims), "uri").await;
        }
        // A changed claim under the original signature.
        let parts: Vec<&str> = good.split('.').collect();
        let mut claims = f.claims(&f.name);
        claims["exp"] = json!(now + 100);
        let other = f.sign_ec(&es, &claims);
        let spliced = format!("{}.{}.{}", parts[0], other.split('.').nth(1).unwrap(), parts[2]);
        f.refuses(spliced, "signature").await;
        // Another key's signature.
        let impostor = EcTestKey::generate();
        let forged =
            jsonwebtoken::encode(&es, &f.claims(&f.name), &EncodingKey::from_ec_der(&impostor.pkcs8_der)).unwrap();
        f.refuses(forged, "signature").await;

        // None of that reached a success.
        assert!(f.mock.requests().iter().all(|r| !r.ok));
    }

    #[tokio::test]
    async fn missing_view_is_coinbases_403_and_time_is_public() {
        let f = Forge::start().await;
        f.mock.add_ec_key(
            &f.name,
            &f.ec.public_key,
            MockScopes {
                view: false,
                trade: true,
                transfer: true,
            },
        );
        let jwt = f.sign_ec(&f.header(Algorithm::ES256, &f.name), &f.claims(&f.name));
        let (status, body, _) = f.send_jwt(jwt).await;
        assert_eq!(status, 403);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"error":"PERMISSION_DENIED","error_details":"Missing required scopes","message":"Missing required scopes"})
        );

        f.mock.set_clock_offset_secs(-3600);
        let url = f.mock.base_url.join(TIME_PATH).unwrap();
        let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        let millis: i64 = body["epochMillis"].as_str().unwrap().parse().unwrap();
        let seconds: i64 = body["epochSeconds"].as_str().unwrap().parse().unwrap();
        assert_eq!(millis / 1000, seconds);
        assert!((chrono::Utc::now().timestamp() - 3600 - seconds).abs() <= 2);
        assert!(body["iso"].as_str().unwrap().ends_with('Z'));
    }
}

#[tokio::test]
async fn a_retry_after_holds_the_key_so_the_next_test_is_not_sent() {
    let (mock, client, credentials) = with_ec_key(MockScopes::default()).await;
    // Measure the clock first, so only signed calls follow.
    client.server_time(Environment::Production).await.unwrap();
    mock.set_failure(Some(MockFailure::RateLimited { retry_after_secs: 30 }));
    let err = test_err(&client, &credentials).await;
    assert_eq!(err.code, ExchangeErrorCode::RateLimited);
    let sent = mock.request_count();

    mock.set_failure(None);
    let started = Instant::now();
    let held = test_err(&client, &credentials).await;
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
    assert_eq!(mock.request_count(), sent, "the held call never reached Coinbase");

    // Another replica sharing the store through Redis holds the key too.
    let store = crate::shared_budgets::shared_store().await;
    let (first, second) = (
        client_for(&mock).with_budget_store(store.clone()),
        client_for(&mock).with_budget_store(store),
    );
    first.server_time(Environment::Production).await.unwrap();
    second.server_time(Environment::Production).await.unwrap();
    mock.set_failure(Some(MockFailure::RateLimited { retry_after_secs: 30 }));
    test_err(&first, &credentials).await;
    mock.set_failure(None);
    let sent = mock.request_count();
    assert!(test_err(&second, &credentials).await.message.contains("pause"));
    assert_eq!(mock.request_count(), sent);
}
