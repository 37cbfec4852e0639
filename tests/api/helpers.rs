//! Test harness: the real application on an ephemeral port, on SQLite or on
//! a fresh PostgreSQL database, with a mock of every exchange behind it.

use crate::mock::binance::MockBinance;
use crate::mock::coinbase::MockCoinbase;
use crate::mock::kite::MockKite;
use crate::mock::kraken::MockKraken;
use exchange_connections::config::Settings;
use exchange_connections::service::Services;
use exchange_connections::startup::{self, Application};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const JWT_SECRET: &str = "test-jwt-secret-that-is-long-enough-0123456789";
/// A fixed Fernet key for tests (urlsafe base64 of 32 bytes).
pub const ENCRYPTION_KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";

/// Where the tests find Redis (they fail, never skip, when it is not there).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Where the tests find PostgreSQL (a server-level URL; each test makes its own database).
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub struct TestApp {
    pub base_url: String,
    pub client: reqwest::Client,
    pub binance: MockBinance,
    pub coinbase: MockCoinbase,
    pub kraken: MockKraken,
    pub kite: MockKite,
    /// The app's database, for checks behind its back.
    pub db: DatabaseConnection,
    pub database_url: String,
    /// The app's service layer, for calls the API does not offer (worker leases).
    pub services: Services,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("ec-test-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Settings as a test deployment would set them.
pub fn test_settings(database_url: String, binance: &MockBinance, data_dir: &std::path::Path) -> Settings {
    Settings {
        database_url: Some(database_url),
        redis_url: None,
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        jwt_secret: Some(JWT_SECRET.into()),
        jwt_secret_file: None,
        jwt_jwks_url: None,
        jwt_audience: "authenticated".into(),
        jwt_issuer: None,
        encryption_keys: Some(ENCRYPTION_KEY.into()),
        encryption_keys_file: None,
        cors_origins: "https://app.example.com".into(),
        egress_ips: "203.0.113.7".into(),
        health_check_interval: "5m".into(),
        // Off so tests that count exchange requests are not disturbed; worker tests turn it on.
        run_worker: Some(false),
        data_dir: data_dir.to_path_buf(),
        max_body_bytes: 64 * 1024,
        binance_base_url: binance.base_url.as_str().trim_end_matches('/').into(),
        binance_testnet_base_url: binance.base_url.as_str().trim_end_matches('/').into(),
        ..Settings::default()
    }
}

/// A fresh, migrated database for one test.
pub async fn fresh_database(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("test.db").display()),
        Backend::Postgres => {
            let admin_url = postgres_admin_url();
            let admin = sea_orm::Database::connect(&admin_url).await.unwrap_or_else(|e| {
                panic!("PostgreSQL is not reachable at TEST_DATABASE_URL ({admin_url}): {e}. Start it (see README).")
            });
            let name = format!("ec_test_{}", Uuid::new_v4().simple());
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            admin.close().await.ok();
            let (base, _) = admin_url
                .rsplit_once('/')
                .expect("TEST_DATABASE_URL has a database name");
            let url = format!("{base}/{name}");
            let db = startup::connect_database(&url).await.expect("connect test database");
            startup::prepare_schema(&db, true).await.expect("migrate test database");
            db.close().await.ok();
            url
        }
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        exchange_connections::install_crypto_providers();
        let dir = TempDir::new();
        let url = fresh_database(backend, &dir.0).await;
        Self::spawn_on(url, dir, adjust).await
    }

    /// A second server process on this one's database (a replica).
    pub async fn replica(&self, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        Self::spawn_on(self.database_url.clone(), TempDir::new(), adjust).await
    }

    async fn spawn_on(url: String, dir: TempDir, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        exchange_connections::install_crypto_providers();
        let binance = MockBinance::start().await;
        let coinbase = MockCoinbase::start().await;
        let kraken = MockKraken::start().await;
        let kite = MockKite::start().await;
        let mut settings = test_settings(url.clone(), &binance, &dir.0);
        settings.coinbase_base_url = coinbase.base_url.as_str().trim_end_matches('/').into();
        settings.kraken_base_url = kraken.base_url.as_str().trim_end_matches('/').into();
        settings.kite_base_url = kite.base_url.as_str().trim_end_matches('/').into();
        settings.kite_login_url = kite.login_url.to_string();
        settings.session_sweep_interval = "200ms".into();
        // Tests send many requests from one address; the limit tests set their own.
        settings.rate_limit_per_ip = 1_000_000;
        settings.rate_limit_per_user = 1_000_000;
        settings.auth_failures_per_ip = 1_000_000;
        adjust(&mut settings);
        let config = settings.validate().expect("valid test settings");
        let app = Application::build(config).await.expect("build app");
        let addr = app.local_addr;
        let services = app.services();
        tokio::spawn(app.run_until(std::future::pending()));
        let db = startup::connect_database(&url).await.expect("connect");
        TestApp {
            base_url: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            binance,
            coinbase,
            kraken,
            kite,
            db,
            database_url: url,
            services,
            _dir: dir,
        }
    }

    pub fn token_for(&self, user: Uuid) -> String {
        token(user, Duration::from_secs(3600))
    }

    /// POSTs a GraphQL operation; returns the status and the JSON body.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> (StatusCode, Value) {
        let mut request = self.client.post(format!("{}/graphql", self.base_url)).json(&json!({
            "query": query,
            "variables": variables,
        }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        (status, response.json().await.expect("JSON body"))
    }

    /// A GraphQL call expected to succeed; returns `data`.
    pub async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let (status, body) = self.gql(Some(token), query, variables).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// A GraphQL call expected to fail with `code`; returns the first error.
    pub async fn err(&self, token: &str, query: &str, variables: Value, code: &str) -> Value {
        let (_, body) = self.gql(Some(token), query, variables).await;
        let error = body["errors"][0].clone();
        assert_eq!(error["extensions"]["code"], code, "{body}");
        error
    }
}

pub fn token(user: Uuid, ttl: Duration) -> String {
    exchange_connections::install_crypto_providers();
    exchange_connections::auth::issue_hs256_token(
        &exchange_connections::crypto::SecretString::new(JWT_SECRET),
        user,
        "authenticated",
        ttl,
    )
}

/// A token for `user` whose `exp` is `exp` (seconds since the epoch; may be past).
pub fn token_expiring_at(user: Uuid, exp: i64) -> String {
    let claims = json!({ "sub": user, "aud": "authenticated", "exp": exp, "role": "authenticated" });
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).expect("key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .expect("token")
}

/// Runs a test body on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    )*};
}
