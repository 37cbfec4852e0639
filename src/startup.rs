//! Wires the layers together: database (and migrations in the embedded
//! default), key ring, JWT verifier, exchange clients, services, schema and
//! router; serves until a shutdown signal. Also the embedded default's
//! development secrets.

use crate::auth::{AuthConfig, Verifier};
use crate::config::{Config, Settings};
use crate::crypto::{KeyRing, SecretString};
use crate::events::EventHub;
use crate::exchange::ExchangeRegistry;
use crate::http::{HttpState, RouterOptions};
use crate::service::Services;
use crate::service::users::UserDirectory;
use anyhow::Context as _;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use uuid::Uuid;

/// A built service, bound to its port but not yet serving.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    services: Services,
    /// Sweep expired sessions here: no worker runs in this process, but its
    /// role may act as the system.
    session_sweep: Option<Duration>,
    /// Tells WebSocket sessions the server is shutting down.
    stop_sender: tokio::sync::watch::Sender<()>,
    worker: Option<crate::worker::WorkerConfig>,
    pub local_addr: SocketAddr,
    pub db: DatabaseConnection,
}

/// Opens the database. SQLite gets WAL (readers don't block the writer)
/// and foreign keys.
pub async fn connect_database(url: &str) -> anyhow::Result<DatabaseConnection> {
    let sqlite = url.starts_with("sqlite:");
    if sqlite && let Some(dir) = sqlite_parent_dir(url) {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(if sqlite { 8 } else { 32 })
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        // A ping on every checkout doubles the round trips; ping only connections idle long enough to be stale.
        .test_before_acquire_if_idle_for(Duration::from_secs(30))
        .sqlx_logging(false);
    // The URL may carry a password: never echo it.
    let db = Database::connect(options)
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    if sqlite {
        db.execute_unprepared("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
            .await?;
    }
    Ok(db)
}

fn sqlite_parent_dir(url: &str) -> Option<std::path::PathBuf> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next()?;
    if path.is_empty() || path.starts_with(':') {
        return None;
    }
    Path::new(path)
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
}

/// Applies migrations (embedded default), or checks the schema is current.
pub async fn prepare_schema(db: &DatabaseConnection, migrate: bool) -> anyhow::Result<()> {
    if migrate {
        Migrator::up(db, None).await.context("applying migrations")?;
        return Ok(());
    }
    // Read-only: the runtime role may not create the migrations table.
    let pending = Migrator::get_pending_migrations_read_only(db)
        .await
        .context("reading the migration state")?;
    if !pending.is_empty() {
        anyhow::bail!(
            "the database schema is not current ({} migration(s) pending): run `exchange-connections migrate` first",
            pending.len()
        );
    }
    Ok(())
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let keyring = KeyRing::parse(config.encryption_keys.expose(), "ENCRYPTION_KEYS")?;
        let db = connect_database(&config.database_url).await?;
        // The role first: a role without grants cannot even read the migration state.
        let acts_as_system = crate::database_role::check(&db, config.run_worker).await?;
        prepare_schema(
            &db,
            config.embedded_database || config.database_url.starts_with("sqlite:"),
        )
        .await?;
        Self::build_with(config, db, keyring, acts_as_system).await
    }

    async fn build_with(
        config: Config,
        db: DatabaseConnection,
        keyring: KeyRing,
        acts_as_system: bool,
    ) -> anyhow::Result<Self> {
        let services = build_services(&config, db.clone(), keyring)?;
        let verifier = Verifier::new(
            AuthConfig {
                hs256_secret: config.jwt_secret.clone(),
                jwks_url: config.jwt_jwks_url.clone(),
                audience: config.jwt_audience.clone(),
                issuer: config.jwt_issuer.clone(),
            },
            http_client()?,
        )
        .map_err(|e| anyhow::anyhow!("JWT configuration: {e}"))?;
        let (stop_sender, stop_receiver) = tokio::sync::watch::channel(());
        let events = services.events.clone();
        let schema = crate::graphql::build_schema(services.clone(), config.introspection);
        let state = HttpState {
            schema,
            verifier: Arc::new(verifier),
            db: db.clone(),
            metrics: crate::telemetry::metrics_handle(),
            events,
            websocket: config.websocket,
            limits: Arc::new(crate::http::RequestLimits::new(config.rate_limits)),
            trusted_proxy_hops: config.trusted_proxy_hops,
            shutdown: stop_receiver,
        };
        let router = crate::http::router(
            state,
            RouterOptions {
                cors_origins: config.cors_origins.clone(),
                max_body_bytes: config.max_body_bytes,
                request_timeout: Duration::from_secs(30),
            },
        );
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {} (LISTEN_ADDR)", config.listen_addr))?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            router,
            services,
            session_sweep: (!config.run_worker && acts_as_system).then_some(config.session_sweep_interval),
            stop_sender,
            worker: config.run_worker.then(|| config.worker.clone()),
            local_addr,
            db,
        })
    }

    /// The service layer this application runs on.
    pub fn services(&self) -> Services {
        self.services.clone()
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let handle = crate::telemetry::metrics_handle();
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
        // The worker sweeps sessions itself; without one, only a role that may act as the system can.
        // The stored-secrets gauge likewise: the API's role cannot count every user's rows.
        let sweeper = match self.session_sweep {
            Some(every) => Some((
                tokio::spawn(crate::worker::expire_sessions(self.services.clone(), every)),
                tokio::spawn(crate::worker::count_stored_secrets(self.services.clone())),
            )),
            None => {
                if self.worker.is_none() {
                    tracing::info!("expired exchange sessions are swept by the worker processes");
                }
                None
            }
        };
        // The in-serve worker stops claiming when the shutdown signal comes.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let worker = self.worker.map(|config| {
            let mut stopped = stopped.clone();
            let until = async move { drop(stopped.wait_for(|stop| *stop).await) };
            tokio::spawn(crate::worker::run_until_stopped(self.services.clone(), config, until))
        });
        let shutdown = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let stop_sender = self.stop_sender;
        let shutdown = async move {
            shutdown.await;
            let _ = stop_sender.send(());
        };
        let result = axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await;
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        self.services.events.shutdown();
        upkeep.abort();
        if let Some((sweeper, secrets_gauge)) = sweeper {
            sweeper.abort();
            secrets_gauge.abort();
        }
        self.db.close().await.ok();
        result.context("HTTP server")
    }
}

/// The Redis pub/sub channel every process of a deployment shares.
pub const EVENTS_CHANNEL: &str = "exchange-connections:events";

fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("exchange-connections/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
        .context("building the HTTP client")
}

/// The service layer, as `serve` and `worker` both run it.
pub fn build_services(config: &Config, db: DatabaseConnection, keyring: KeyRing) -> anyhow::Result<Services> {
    // Lazy: Redis being down delays no startup, only calls that need budgets.
    let budgets = crate::exchange::shared::connect(config.redis_url.as_ref().map(|u| u.expose()))
        .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?;
    let exchanges = ExchangeRegistry::with_store(
        &config.endpoints,
        http_client()?,
        &config.egress_ips,
        budgets,
        config.kraken_tier,
    );
    Ok(Services {
        db: crate::service::tenancy::TenantDb::new(db),
        keyring: Arc::new(keyring),
        exchanges,
        users: Arc::new(UserDirectory::default()),
        egress_ips: Arc::new(config.egress_ips.clone()),
        policy: crate::service::policy::KeyPolicy {
            allow_withdrawal_keys: config.allow_withdrawal_keys,
        },
        limiter: Arc::new(crate::service::limits::ExchangeCallLimiter::new(
            config.exchange_tests_per_minute,
            config.exchange_tests_burst,
        )),
        health_check_interval: config.health_check_interval,
        events: match &config.redis_url {
            Some(url) => EventHub::redis(url.expose(), EVENTS_CHANNEL)?,
            None => EventHub::in_process(),
        },
    })
}

/// Resolves on SIGTERM or Ctrl-C. The SIGTERM handler is installed when this
/// is called, not when the future is first polled, so a SIGTERM that comes
/// while the process is still busy (a worker finishing its first claim)
/// shuts it down gracefully instead of killing it.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
        tracing::info!("shutdown signal received; finishing in-flight requests");
    }
}

/// Development secrets of the embedded default, kept in `DATA_DIR`.
#[derive(Serialize, Deserialize)]
pub struct DevSecrets {
    pub jwt_secret: String,
    pub encryption_key: String,
    pub demo_user_id: Uuid,
}

/// Fills in secrets the embedded default may generate. Off loopback,
/// missing secrets are an error: development secrets would be a backdoor.
pub fn with_dev_secrets(mut settings: Settings) -> anyhow::Result<(Settings, Option<DevSecrets>)> {
    let missing_jwt =
        settings.jwt_secret.is_none() && settings.jwt_secret_file.is_none() && settings.jwt_jwks_url.is_none();
    let missing_keys = settings.encryption_keys.is_none() && settings.encryption_keys_file.is_none();
    if !missing_jwt && !missing_keys {
        return Ok((settings, None));
    }
    if !settings.listen_addr.ip().is_loopback() {
        anyhow::bail!(
            "LISTEN_ADDR {} is not a loopback address, and {} not set. Development secrets are only generated \
             for 127.0.0.1: set JWT_SECRET (or JWT_JWKS_URL) and ENCRYPTION_KEYS (see `exchange-connections keygen`).",
            settings.listen_addr,
            match (missing_jwt, missing_keys) {
                (true, true) => "JWT_SECRET and ENCRYPTION_KEYS are",
                (true, false) => "JWT_SECRET is",
                _ => "ENCRYPTION_KEYS is",
            }
        );
    }
    let secrets = load_or_create_dev_secrets(&settings.data_dir)?;
    tracing::warn!(
        path = %settings.data_dir.join(DEV_SECRETS_FILE).display(),
        "USING DEVELOPMENT SECRETS generated into the data directory. They are for local development only: \
         set JWT_SECRET and ENCRYPTION_KEYS for any real deployment."
    );
    if missing_jwt {
        settings.jwt_secret = Some(secrets.jwt_secret.clone());
    }
    if missing_keys {
        settings.encryption_keys = Some(secrets.encryption_key.clone());
    }
    Ok((settings, missing_jwt.then_some(secrets)))
}

pub const DEV_SECRETS_FILE: &str = "dev-secrets.json";

fn load_or_create_dev_secrets(data_dir: &Path) -> anyhow::Result<DevSecrets> {
    let path = data_dir.join(DEV_SECRETS_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        return serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid; delete it to regenerate", path.display()));
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let secrets = DevSecrets {
        jwt_secret: KeyRing::generate_key(),
        encryption_key: KeyRing::generate_key(),
        demo_user_id: Uuid::new_v4(),
    };
    let text = serde_json::to_string_pretty(&secrets)?;
    write_private(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(secrets)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// A bearer token for the demo user, printed by the embedded default.
pub fn demo_token(secrets: &DevSecrets, audience: &str) -> String {
    crate::auth::issue_hs256_token(
        &SecretString::new(secrets.jwt_secret.clone()),
        secrets.demo_user_id,
        audience,
        Duration::from_secs(24 * 3600),
    )
}
