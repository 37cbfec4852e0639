//! End-to-end cost of a Binance test call (issue 3 "Performance"; aim: the
//! service adds under 1 ms to the exchange's own time). The real application
//! runs on an ephemeral port against a local mock Binance; interleaved, each
//! round times:
//! - `direct`: the two signed GETs a production test makes, sent straight to
//!   the mock with reqwest (the mock's own time, loopback HTTP included);
//! - `testCredentials`: the GraphQL mutation (no database);
//! - `testConnection`: the GraphQL mutation on a saved connection (reads and
//!   decrypts the key, records the outcome, history and audit).
//!
//! The overhead is each mutation's p50 minus the direct p50. Not criterion:
//! the service's Binance weight budget (6,000 per minute, 21 per test) caps a
//! run at ~280 tests a minute, so the sample count is fixed here and the run
//! pauses at the budget; and the figures wanted are per-call percentiles.
//!
//! `cargo bench --bench test_call`; `TEST_CALL_SAMPLES` (default 120) and
//! `TEST_CALL_BACKENDS` (default `sqlite,postgres`; PostgreSQL at
//! `TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`).

mod mock;

use exchange_connections::config::Settings;
use exchange_connections::crypto::SecretString;
use exchange_connections::exchange::binance::signer::Signer;
use exchange_connections::startup::{self, Application};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use url::Url;
use uuid::Uuid;

/// Throwaway values, as in the API tests.
const JWT_SECRET: &str = "bench-jwt-secret-that-is-long-enough-0123456789";
const ENCRYPTION_KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
/// 64 letters and digits, the shape of a Binance HMAC key and secret.
const API_KEY: &str = "benchKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKbench";
const API_SECRET: &str = "benchssssssssssssssssssssssssssssssssssssssssssssssssssssssbench";

/// Weight of one production test: `/api/v3/account` (20) + `apiRestrictions` (1).
const TEST_WEIGHT: u32 = 21;
/// The service refuses past 6,000 per minute; leave room for its clock reads.
const WEIGHT_PER_MINUTE: u32 = 5_900;
const WARM_UP_ROUNDS: usize = 10;

const TEST_CREDENTIALS: &str =
    "mutation($input: CredentialsInput!) { testCredentials(input: $input) { ok latencyMs error { code } } }";
const TEST_CONNECTION: &str = "mutation($id: ID!) { testConnection(id: $id) { ok latencyMs error { code } } }";
const CREATE_CONNECTION: &str = "mutation($input: CreateConnectionInput!) { createConnection(input: $input) { id } }";

fn main() {
    let samples: usize = env_or("TEST_CALL_SAMPLES", "120")
        .parse()
        .expect("TEST_CALL_SAMPLES is a number");
    let backends = env_or("TEST_CALL_BACKENDS", "sqlite,postgres");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        exchange_connections::install_crypto_providers();
        let mock_url = mock::start(API_KEY, API_SECRET).await;
        println!("| backend | call | n | p50 | p90 | p99 | min |\n|---|---|---|---|---|---|---|");
        let mut overheads = Vec::new();
        for backend in backends.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            overheads.push((backend.to_owned(), run(backend, &mock_url, samples).await));
        }
        println!();
        for (backend, lines) in overheads {
            for line in lines {
                println!("{backend}: {line}");
            }
        }
    });
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// One backend: starts the app, measures, prints its rows; returns the overhead lines.
async fn run(backend: &str, mock_url: &Url, samples: usize) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("ec-bench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let database = Database::create(backend, &dir).await;
    let base_url = spawn_app(&database.url, mock_url, &dir).await;
    let bench = Bench::new(base_url, mock_url.clone());

    let mut pacer = WeightPacer::default();
    pacer.take(TEST_WEIGHT).await;
    let id = bench.create_connection().await;

    let (mut direct, mut credentials, mut connection) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..WARM_UP_ROUNDS + samples {
        let d = bench.direct().await;
        pacer.take(TEST_WEIGHT).await;
        let c = bench
            .mutation(
                TEST_CREDENTIALS,
                json!({ "input": credentials_input() }),
                "testCredentials",
            )
            .await;
        pacer.take(TEST_WEIGHT).await;
        let t = bench
            .mutation(TEST_CONNECTION, json!({ "id": id }), "testConnection")
            .await;
        if round >= WARM_UP_ROUNDS {
            direct.push(d);
            credentials.push(c);
            connection.push(t);
        }
    }

    let paired = |calls: &[Duration]| {
        let differences: Vec<f64> = calls
            .iter()
            .zip(&direct)
            .map(|(call, direct)| call.as_secs_f64() - direct.as_secs_f64())
            .collect();
        median(differences) * 1e3
    };
    let d = Summary::of(&direct);
    let lines = [("testCredentials", &credentials), ("testConnection", &connection)]
        .into_iter()
        .map(|(name, calls)| {
            let s = Summary::of(calls);
            format!(
                "{name} overhead = p50 {:.3} ms − direct p50 {:.3} ms = {:.3} ms (median of paired differences {:.3} ms)",
                s.p50_ms,
                d.p50_ms,
                s.p50_ms - d.p50_ms,
                paired(calls)
            )
        })
        .collect();
    d.print(backend, "direct to mock (2 signed GETs)");
    Summary::of(&credentials).print(backend, "testCredentials");
    Summary::of(&connection).print(backend, "testConnection");

    database.drop().await;
    let _ = std::fs::remove_dir_all(&dir);
    lines
}

/// The database one run uses: SQLite in the run's directory, or a fresh
/// PostgreSQL database dropped afterwards.
struct Database {
    url: String,
    postgres: Option<(String, String)>,
}

impl Database {
    async fn create(backend: &str, dir: &std::path::Path) -> Self {
        match backend {
            "sqlite" => Self {
                url: format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()),
                postgres: None,
            },
            "postgres" => {
                let admin_url = env_or("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres");
                let name = format!("ec_bench_{}", Uuid::new_v4().simple());
                let admin = sea_orm::Database::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at TEST_DATABASE_URL: {e}"));
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create bench database");
                admin.close().await.ok();
                let (server, _) = admin_url.rsplit_once('/').expect("TEST_DATABASE_URL names a database");
                let url = format!("{server}/{name}");
                let db = startup::connect_database(&url).await.expect("connect bench database");
                startup::prepare_schema(&db, true)
                    .await
                    .expect("migrate bench database");
                // serve refuses the owner (a superuser): it runs as a login
                // role granted the API's group role, as in production.
                db.execute_unprepared(&format!(
                    "DO $$ BEGIN \
                       IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ec_bench_api') THEN \
                         CREATE ROLE ec_bench_api LOGIN PASSWORD 'ec-bench'; \
                       END IF; \
                       GRANT {} TO ec_bench_api; \
                     END $$",
                    migration::APP_ROLE
                ))
                .await
                .expect("create the bench login role");
                db.close().await.ok();
                let mut url = Url::parse(&url).expect("TEST_DATABASE_URL is a URL");
                url.set_username("ec_bench_api").expect("user");
                url.set_password(Some("ec-bench")).expect("password");
                Self {
                    url: url.to_string(),
                    postgres: Some((admin_url, name)),
                }
            }
            other => panic!("unknown backend {other:?} in TEST_CALL_BACKENDS (sqlite, postgres)"),
        }
    }

    async fn drop(self) {
        let Some((admin_url, name)) = self.postgres else { return };
        if let Ok(admin) = sea_orm::Database::connect(&admin_url).await {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            admin.close().await.ok();
        }
    }
}

/// Starts the application against the mock; returns its base URL.
async fn spawn_app(database_url: &str, mock_url: &Url, dir: &std::path::Path) -> String {
    let binance = mock_url.as_str().trim_end_matches('/').to_owned();
    let settings = Settings {
        database_url: Some(database_url.to_owned()),
        redis_url: None,
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        jwt_secret: Some(JWT_SECRET.into()),
        encryption_keys: Some(ENCRYPTION_KEY.into()),
        egress_ips: "203.0.113.7".into(),
        // No background checks of the saved connection during the run.
        health_check_interval: "24h".into(),
        data_dir: dir.to_path_buf(),
        // The per-user limit on exchange-calling mutations would stop the run.
        exchange_tests_per_minute: 1_000_000,
        exchange_tests_burst: 1_000_000,
        // One user from one address makes every request.
        rate_limit_per_ip: 1_000_000,
        rate_limit_per_user: 1_000_000,
        binance_base_url: binance.clone(),
        binance_testnet_base_url: binance,
        ..Settings::default()
    };
    let config = settings.validate().expect("valid bench settings");
    let app = Application::build(config).await.expect("build app");
    let addr = app.local_addr;
    tokio::spawn(app.run_until(std::future::pending()));
    format!("http://{addr}")
}

fn credentials_input() -> Value {
    json!({ "exchange": "BINANCE", "environment": "PRODUCTION", "apiKey": API_KEY, "apiSecret": API_SECRET })
}

struct Bench {
    graphql_url: String,
    mock_url: Url,
    token: String,
    client: reqwest::Client,
    signer: Signer,
}

impl Bench {
    fn new(base_url: String, mock_url: Url) -> Self {
        let token = exchange_connections::auth::issue_hs256_token(
            &SecretString::new(JWT_SECRET),
            Uuid::new_v4(),
            "authenticated",
            Duration::from_secs(3600),
        );
        Self {
            graphql_url: format!("{base_url}/graphql"),
            mock_url,
            token,
            // Built like the service's own exchange client.
            client: reqwest::Client::builder()
                .user_agent("exchange-connections-bench")
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(15))
                .build()
                .expect("HTTP client"),
            signer: Signer::from_secret(&SecretString::new(API_SECRET)).expect("HMAC secret"),
        }
    }

    async fn create_connection(&self) -> String {
        let input = json!({ "input": { "label": "bench", "credentials": credentials_input() } });
        let (_, body) = self.post(CREATE_CONNECTION, input).await;
        body["data"]["createConnection"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("createConnection failed: {body}"))
            .to_owned()
    }

    /// Times one mutation; panics unless the test reports `ok`.
    async fn mutation(&self, query: &str, variables: Value, field: &str) -> Duration {
        let (elapsed, body) = self.post(query, variables).await;
        assert_eq!(body["data"][field]["ok"], true, "{field} failed: {body}");
        elapsed
    }

    /// POSTs a GraphQL operation; times the request until its whole body arrived.
    async fn post(&self, query: &str, variables: Value) -> (Duration, Value) {
        let payload = serde_json::to_vec(&json!({ "query": query, "variables": variables })).expect("JSON");
        let request = self
            .client
            .post(&self.graphql_url)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(payload);
        let started = Instant::now();
        let response = request.send().await.expect("GraphQL request");
        let bytes = response.bytes().await.expect("GraphQL body");
        let elapsed = started.elapsed();
        (elapsed, serde_json::from_slice(&bytes).expect("GraphQL answers JSON"))
    }

    /// The requests a production test makes, signed beforehand, straight to the mock.
    async fn direct(&self) -> Duration {
        let timestamp = chrono::Utc::now().timestamp_millis();
        let urls = [
            ("api/v3/account", "omitZeroBalances=true&"),
            ("sapi/v1/account/apiRestrictions", ""),
        ]
        .map(|(path, params)| {
            let query = format!("{params}recvWindow=5000&timestamp={timestamp}");
            let signature = self.signer.sign(&query, "").expect("HMAC signs");
            let mut url = self.mock_url.join(path).expect("mock URL");
            url.set_query(Some(&format!("{query}&signature={signature}")));
            url
        });
        let started = Instant::now();
        for url in urls {
            let response = self
                .client
                .get(url)
                .header("X-MBX-APIKEY", API_KEY)
                .send()
                .await
                .expect("mock request");
            assert!(response.status().is_success(), "mock refused: {}", response.status());
            response.bytes().await.expect("mock body");
        }
        started.elapsed()
    }
}

/// Keeps the run under the service's Binance weight budget: past it, waits
/// for the next minute (the budget's window is the calendar minute too).
#[derive(Default)]
struct WeightPacer {
    minute: i64,
    used: u32,
}

impl WeightPacer {
    async fn take(&mut self, weight: u32) {
        loop {
            let now = chrono::Utc::now();
            let minute = now.timestamp().div_euclid(60);
            if minute != self.minute {
                (self.minute, self.used) = (minute, 0);
            }
            if self.used + weight <= WEIGHT_PER_MINUTE {
                self.used += weight;
                return;
            }
            let wait_ms = 60_000 - now.timestamp_millis().rem_euclid(60_000) + 100;
            eprintln!("weight budget spent for this minute: pausing {wait_ms} ms");
            tokio::time::sleep(Duration::from_millis(wait_ms.unsigned_abs())).await;
        }
    }
}

struct Summary {
    n: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    min_ms: f64,
}

impl Summary {
    fn of(calls: &[Duration]) -> Self {
        let mut ms: Vec<f64> = calls.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Self {
            n: ms.len(),
            p50_ms: percentile(&ms, 0.50),
            p90_ms: percentile(&ms, 0.90),
            p99_ms: percentile(&ms, 0.99),
            min_ms: ms.first().copied().unwrap_or(f64::NAN),
        }
    }

    fn print(&self, backend: &str, call: &str) {
        println!(
            "| {backend} | {call} | {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms |",
            self.n, self.p50_ms, self.p90_ms, self.p99_ms, self.min_ms
        );
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(&values, 0.5)
}
