//! Test harness: the real application on an ephemeral port, on SQLite or on
//! a fresh PostgreSQL database, with a mock of every exchange behind it. On
//! PostgreSQL the database is migrated as its owner and the application
//! connects as a login role granted only `exchange_connections_app` (or,
//! when it runs the worker, `exchange_connections_worker`), so every
//! PostgreSQL test also proves those grants suffice and row-level security binds.

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
    /// The app's database as its owner (a superuser: no row-level
    /// security), for checks and changes behind the app's back.
    pub db: DatabaseConnection,
    /// The database as each identity: owner, API role, worker role.
    pub urls: DatabaseUrls,
    /// A service layer acting as the worker (the system identity on
    /// PostgreSQL), for calls the API does not offer (worker leases).
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

/// The PostgreSQL login roles the tests' processes connect as (never the owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbRole {
    /// Granted `exchange_connections_app`: acts as users only (serve).
    Api,
    /// Granted `exchange_connections_worker`: also the system (worker, sweeps).
    Worker,
}

impl DbRole {
    pub fn login(self) -> &'static str {
        match self {
            DbRole::Api => "ec_test_api",
            DbRole::Worker => "ec_test_worker",
        }
    }

    fn group(self) -> &'static str {
        match self {
            DbRole::Api => migration::APP_ROLE,
            DbRole::Worker => migration::WORKER_ROLE,
        }
    }
}

/// One test database as each identity (all the same on SQLite).
#[derive(Debug, Clone)]
pub struct DatabaseUrls {
    pub owner: String,
    pub api: String,
    pub worker: String,
}

impl DatabaseUrls {
    pub fn as_role(&self, role: DbRole) -> &str {
        match role {
            DbRole::Api => &self.api,
            DbRole::Worker => &self.worker,
        }
    }
}

const LOGIN_PASSWORD: &str = "ec-test";

/// `owner_url`'s database, logged in as `role`.
fn url_as(owner_url: &str, role: DbRole) -> String {
    let mut url = reqwest::Url::parse(owner_url).expect("TEST_DATABASE_URL is a URL");
    url.set_username(role.login()).expect("set user");
    url.set_password(Some(LOGIN_PASSWORD)).expect("set password");
    url.to_string()
}

/// Creates the test login roles once per server (the migration created the
/// groups they join). Tests in other processes may race: the loser's
/// duplicate error is the outcome it wanted.
async fn ensure_login_roles(owner: &DatabaseConnection) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        for role in [DbRole::Api, DbRole::Worker] {
            let (login, group) = (role.login(), role.group());
            owner
                .execute_unprepared(&format!(
                    "DO $$ BEGIN \
                       IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{login}') THEN \
                         BEGIN CREATE ROLE {login} LOGIN PASSWORD '{LOGIN_PASSWORD}'; \
                         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END; \
                       END IF; \
                       IF NOT pg_has_role('{login}', '{group}', 'MEMBER') THEN \
                         BEGIN GRANT {group} TO {login}; \
                         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END; \
                       END IF; \
                     END $$"
                ))
                .await
                .expect("create the test login roles");
        }
    })
    .await;
}

/// A fresh, migrated database for one test.
pub async fn fresh_database(backend: Backend, dir: &std::path::Path) -> DatabaseUrls {
    match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}?mode=rwc", dir.join("test.db").display());
            DatabaseUrls {
                owner: url.clone(),
                api: url.clone(),
                worker: url,
            }
        }
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
            ensure_login_roles(&db).await;
            db.close().await.ok();
            DatabaseUrls {
                api: url_as(&url, DbRole::Api),
                worker: url_as(&url, DbRole::Worker),
                owner: url,
            }
        }
    }
}

impl TestApp {
    /// The app's `/metrics` page.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// The app connects as the API role, or as the worker role when the
    /// settings run the worker inside it.
    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        Self::spawn_as(backend, None, adjust).await
    }

    /// The app connects as `role` (on PostgreSQL), whatever the settings.
    pub async fn spawn_as(backend: Backend, role: Option<DbRole>, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        exchange_connections::install_crypto_providers();
        let dir = TempDir::new();
        let urls = fresh_database(backend, &dir.0).await;
        Self::spawn_on(urls, role, dir, adjust).await
    }

    /// A second server process on this one's database (a replica).
    pub async fn replica(&self, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        self.replica_as(None, adjust).await
    }

    /// [`Self::replica`] connecting as `role` (on PostgreSQL).
    pub async fn replica_as(&self, role: Option<DbRole>, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        Self::spawn_on(self.urls.clone(), role, TempDir::new(), adjust).await
    }

    async fn spawn_on(
        urls: DatabaseUrls,
        role: Option<DbRole>,
        dir: TempDir,
        adjust: impl FnOnce(&mut Settings),
    ) -> TestApp {
        exchange_connections::install_crypto_providers();
        let binance = MockBinance::start().await;
        let coinbase = MockCoinbase::start().await;
        let kraken = MockKraken::start().await;
        let kite = MockKite::start().await;
        let mut settings = test_settings(urls.api.clone(), &binance, &dir.0);
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
        let role = role.unwrap_or(if settings.run_worker == Some(true) {
            DbRole::Worker
        } else {
            DbRole::Api
        });
        let url = urls.as_role(role).to_string();
        settings.database_url = Some(url.clone());
        let config = settings.validate().expect("valid test settings");
        let app = Application::build(config.clone()).await.expect("build app");
        let addr = app.local_addr;
        let services = if url == urls.worker {
            app.services()
        } else {
            let worker_db = startup::connect_database(&urls.worker)
                .await
                .expect("connect as the worker");
            let keyring = exchange_connections::crypto::KeyRing::parse(ENCRYPTION_KEY, "test").expect("key ring");
            startup::build_services(&config, worker_db, keyring).expect("worker services")
        };
        tokio::spawn(app.run_until(std::future::pending()));
        let db = startup::connect_database(&urls.owner).await.expect("connect");
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
            urls,
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

/// A child process of the binary, killed and reaped when dropped.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// SQL that makes every insert into the audit log fail (as if the table
/// were unwritable), and SQL that undoes it; run both as the owner.
pub fn block_audit_writes(backend: Backend) -> (&'static str, &'static str) {
    match backend {
        Backend::Sqlite => (
            "CREATE TRIGGER block_audit BEFORE INSERT ON connection_audit_log \
             BEGIN SELECT RAISE(ABORT, 'blocked'); END",
            "DROP TRIGGER block_audit",
        ),
        Backend::Postgres => (
            "CREATE FUNCTION block_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'blocked'; END $$; \
             CREATE TRIGGER block_audit BEFORE INSERT ON connection_audit_log \
             FOR EACH ROW EXECUTE FUNCTION block_audit()",
            "DROP TRIGGER block_audit ON connection_audit_log; DROP FUNCTION block_audit()",
        ),
    }
}
