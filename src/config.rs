//! Every setting, from flags and the environment (names as in DESIGN.md),
//! validated at start. Secrets may also come from `*_FILE` variables so
//! Kubernetes secret mounts work. Error messages name the setting, never
//! its value.

use crate::crypto::SecretString;
use crate::exchange::ExchangeEndpoints;
use crate::exchange::budget::KrakenTier;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// Settings shared by every subcommand that runs the service.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Database URL (`postgres://…` or `sqlite://…`). Default: a SQLite file in DATA_DIR.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Redis URL for the shared event hub and the exchange rate budgets shared by replicas.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Kraken verification tier of the connected accounts (`starter`, `intermediate`, `pro`): sets the call counter.
    #[arg(long, env = "KRAKEN_TIER", default_value = "starter")]
    pub kraken_tier: String,
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,
    /// HS256 shared secret for Supabase JWTs.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// File holding JWT_SECRET.
    #[arg(long, env = "JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// JWKS URL for ES256/RS256 Supabase signing keys.
    #[arg(long, env = "JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "authenticated")]
    pub jwt_audience: String,
    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Comma-separated Fernet keys, primary first.
    #[arg(long, env = "ENCRYPTION_KEYS", hide_env_values = true)]
    pub encryption_keys: Option<String>,
    /// File holding ENCRYPTION_KEYS (comma- or newline-separated).
    #[arg(long, env = "ENCRYPTION_KEYS_FILE")]
    pub encryption_keys_file: Option<PathBuf>,
    /// Comma-separated origins allowed by CORS (e.g. `https://app.example.com`). Empty: no cross-origin access.
    #[arg(long, env = "CORS_ORIGINS", default_value = "")]
    pub cors_origins: String,
    /// Comma-separated static egress IPs users must whitelist at their exchange.
    #[arg(long, env = "EGRESS_IPS", default_value = "")]
    pub egress_ips: String,
    /// How often each connection is health-checked (`300s`, `5m`, or plain seconds).
    #[arg(long, env = "HEALTH_CHECK_INTERVAL", default_value = "5m")]
    pub health_check_interval: String,
    /// Run the health-monitor worker inside `serve`. Default: on for SQLite
    /// (the embedded default), off for PostgreSQL (run `exchange-connections worker` replicas).
    #[arg(long, env = "RUN_WORKER", action = clap::ArgAction::Set)]
    pub run_worker: Option<bool>,
    /// How long a worker holds a claimed connection without renewing it; a
    /// crashed worker's checks are picked up by another once it lapses.
    #[arg(long, env = "WORKER_LEASE", default_value = "60s")]
    pub worker_lease: String,
    /// How often an idle worker looks for due connections.
    #[arg(long, env = "WORKER_POLL_INTERVAL", default_value = "1s")]
    pub worker_poll_interval: String,
    /// Due connections a worker claims at once.
    #[arg(long, env = "WORKER_BATCH", default_value_t = 50)]
    pub worker_batch: u64,
    /// Checks one worker runs at the same time.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 16)]
    pub worker_concurrency: usize,
    /// Health checks kept per connection (older ones are pruned by the worker).
    #[arg(long, env = "HEALTH_CHECK_RETENTION", default_value_t = 1000)]
    pub health_check_retention: u64,
    /// Where the embedded default keeps its SQLite file and development secrets.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Accept keys that can withdraw funds (refused by default).
    #[arg(long, env = "ALLOW_WITHDRAWAL_KEYS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_withdrawal_keys: bool,
    /// Exchange tests (testCredentials, testConnection, …) one user may run per minute.
    #[arg(long, env = "USER_EXCHANGE_TESTS_PER_MINUTE", default_value_t = 30)]
    pub exchange_tests_per_minute: u32,
    /// Burst allowance for USER_EXCHANGE_TESTS_PER_MINUTE.
    #[arg(long, env = "USER_EXCHANGE_TESTS_BURST", default_value_t = 10)]
    pub exchange_tests_burst: u32,
    /// How often expired exchange sessions (Zerodha Kite) are moved to NEEDS_REAUTH.
    #[arg(long, env = "SESSION_SWEEP_INTERVAL", default_value = "60s")]
    pub session_sweep_interval: String,
    /// Requests per minute from one client IP (bursts of a fifth of it); over it: 429.
    #[arg(long, env = "RATE_LIMIT_PER_IP", default_value_t = 1200)]
    pub rate_limit_per_ip: u32,
    /// Requests per minute from one user; over it: 429.
    #[arg(long, env = "RATE_LIMIT_PER_USER", default_value_t = 600)]
    pub rate_limit_per_user: u32,
    /// Failed authentications per minute from one IP before its requests are refused for a while.
    #[arg(long, env = "AUTH_FAILURES_PER_IP", default_value_t = 20)]
    pub auth_failures_per_ip: u32,
    /// Proxies in front of the service that append to X-Forwarded-For (0: use the TCP peer).
    #[arg(long, env = "TRUSTED_PROXY_HOPS", default_value_t = 0)]
    pub trusted_proxy_hops: usize,
    /// GraphQL introspection: `auto` (on for the embedded default only), `on` or `off`.
    #[arg(long, env = "INTROSPECTION", default_value = "auto")]
    pub introspection: String,
    /// How long a WebSocket may take to send `connection_init` before it is closed (4408).
    #[arg(long, env = "WS_INIT_TIMEOUT", default_value = "10s")]
    pub ws_init_timeout: String,
    /// How often the server pings idle WebSocket clients (`ping` / legacy `ka`).
    #[arg(long, env = "WS_KEEPALIVE_INTERVAL", default_value = "15s")]
    pub ws_keepalive_interval: String,
    /// Most subscriptions one WebSocket may hold at once.
    #[arg(long, env = "WS_MAX_SUBSCRIPTIONS", default_value_t = 20)]
    pub ws_max_subscriptions: usize,
    /// Log format: `auto` (JSON unless stderr is a terminal), `json` or `text`.
    #[arg(long, env = "LOG_FORMAT", default_value = "auto")]
    pub log_format: String,
    #[arg(long, env = "BINANCE_BASE_URL", default_value = "https://api.binance.com")]
    pub binance_base_url: String,
    #[arg(
        long,
        env = "BINANCE_TESTNET_BASE_URL",
        default_value = "https://testnet.binance.vision"
    )]
    pub binance_testnet_base_url: String,
    #[arg(long, env = "COINBASE_BASE_URL", default_value = "https://api.coinbase.com")]
    pub coinbase_base_url: String,
    #[arg(long, env = "KRAKEN_BASE_URL", default_value = "https://api.kraken.com")]
    pub kraken_base_url: String,
    #[arg(long, env = "KITE_BASE_URL", default_value = "https://api.kite.trade")]
    pub kite_base_url: String,
    #[arg(
        long,
        env = "KITE_LOGIN_URL",
        default_value = "https://kite.zerodha.com/connect/login"
    )]
    pub kite_login_url: String,
}

impl Default for Settings {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            settings: Settings,
        }
        // Flag defaults (clap still reads the environment variables named above).
        Wrapper::parse_from(["exchange-connections"]).settings
    }
}

/// A setting that cannot work; names the setting, never its value.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub fn new(setting: &'static str, problem: impl Into<String>) -> Self {
        Self {
            setting,
            problem: problem.into(),
        }
    }
}

/// Validated configuration of a running service.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    /// True when running the embedded default (SQLite file in DATA_DIR).
    pub embedded_database: bool,
    pub listen_addr: SocketAddr,
    pub jwt_secret: Option<SecretString>,
    pub jwt_jwks_url: Option<Url>,
    pub jwt_audience: String,
    pub jwt_issuer: Option<String>,
    pub encryption_keys: SecretString,
    pub cors_origins: Vec<String>,
    pub egress_ips: Vec<String>,
    pub health_check_interval: Duration,
    /// Run the health-monitor worker inside `serve`.
    pub run_worker: bool,
    pub worker: crate::worker::WorkerConfig,
    pub session_sweep_interval: Duration,
    pub websocket: WebSocketLimits,
    pub rate_limits: crate::http::RateLimits,
    pub trusted_proxy_hops: usize,
    pub introspection: bool,
    pub max_body_bytes: usize,
    pub allow_withdrawal_keys: bool,
    pub exchange_tests_per_minute: u32,
    pub exchange_tests_burst: u32,
    pub endpoints: ExchangeEndpoints,
    /// Shared rate budgets (and event hub) when set; in-process budgets otherwise.
    pub redis_url: Option<SecretString>,
    pub kraken_tier: KrakenTier,
    pub data_dir: PathBuf,
    /// Development secrets were generated into DATA_DIR (embedded default only).
    pub dev_secrets: bool,
}

impl Settings {
    /// The database URL (embedded default: a SQLite file in DATA_DIR).
    pub fn validate_database_url(&self) -> Result<String, ConfigError> {
        Ok(self.database()?.0)
    }

    fn database(&self) -> Result<(String, bool), ConfigError> {
        match &self.database_url {
            Some(url) if !url.trim().is_empty() => {
                let url = url.trim().to_string();
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://") || url.starts_with("sqlite:")) {
                    return Err(ConfigError::new(
                        "DATABASE_URL",
                        "must start with postgres://, postgresql:// or sqlite:",
                    ));
                }
                Ok((url, false))
            }
            _ => {
                let path = self.data_dir.join("exchange-connections.db");
                Ok((format!("sqlite://{}?mode=rwc", path.display()), true))
            }
        }
    }

    /// ENCRYPTION_KEYS (or the contents of ENCRYPTION_KEYS_FILE); required.
    pub fn encryption_keys(&self) -> Result<SecretString, ConfigError> {
        read_secret(
            "ENCRYPTION_KEYS",
            self.encryption_keys.as_deref(),
            "ENCRYPTION_KEYS_FILE",
            self.encryption_keys_file.as_ref(),
        )?
        .ok_or_else(|| ConfigError::new("ENCRYPTION_KEYS", "set ENCRYPTION_KEYS or ENCRYPTION_KEYS_FILE"))
    }

    /// Validates the settings. Development secrets are filled in by
    /// [`crate::startup::dev_secrets`] before this, when allowed.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        self.validate_with(true)
    }

    /// Validates the settings of `exchange-connections worker`, which
    /// verifies no tokens and so needs no JWT settings.
    pub fn validate_for_worker(&self) -> Result<Config, ConfigError> {
        self.validate_with(false)
    }

    fn validate_with(&self, require_jwt: bool) -> Result<Config, ConfigError> {
        let (database_url, embedded_database) = self.database()?;

        let jwt_secret = read_secret(
            "JWT_SECRET",
            self.jwt_secret.as_deref(),
            "JWT_SECRET_FILE",
            self.jwt_secret_file.as_ref(),
        )?;
        if let Some(secret) = &jwt_secret
            && secret.expose().len() < 32
        {
            return Err(ConfigError::new("JWT_SECRET", "must be at least 32 characters"));
        }
        let jwt_jwks_url = match self.jwt_jwks_url.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(url) => Some(parse_url("JWT_JWKS_URL", url, true)?),
            None => None,
        };
        if require_jwt && jwt_secret.is_none() && jwt_jwks_url.is_none() {
            return Err(ConfigError::new(
                "JWT_SECRET",
                "set JWT_SECRET (or JWT_SECRET_FILE) or JWT_JWKS_URL",
            ));
        }
        let encryption_keys = self.encryption_keys()?;

        let cors_origins = split_list(&self.cors_origins);
        for origin in &cors_origins {
            if origin == "*" {
                return Err(ConfigError::new(
                    "CORS_ORIGINS",
                    "a wildcard is not allowed; list the app's origins",
                ));
            }
            let url = parse_url("CORS_ORIGINS", origin, false)?;
            if url.path() != "/" || url.query().is_some() || origin.ends_with('/') {
                return Err(ConfigError::new(
                    "CORS_ORIGINS",
                    format!("`{origin}` must be an origin (scheme://host[:port])"),
                ));
            }
        }
        let egress_ips = split_list(&self.egress_ips);
        for ip in &egress_ips {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::new("EGRESS_IPS", format!("`{ip}` is not an IP address")));
            }
        }
        let health_check_interval = parse_duration(&self.health_check_interval).ok_or_else(|| {
            ConfigError::new(
                "HEALTH_CHECK_INTERVAL",
                "expected a duration such as `300s`, `5m` or `300`",
            )
        })?;
        if health_check_interval < Duration::from_secs(1) {
            return Err(ConfigError::new("HEALTH_CHECK_INTERVAL", "must be at least 1s"));
        }
        let worker = self.worker_config(health_check_interval)?;
        let run_worker = self
            .run_worker
            .unwrap_or(embedded_database || database_url.starts_with("sqlite:"));
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::new("MAX_BODY_BYTES", "must be at least 1024"));
        }
        let endpoints = ExchangeEndpoints {
            binance: parse_base_url("BINANCE_BASE_URL", &self.binance_base_url)?,
            binance_testnet: parse_base_url("BINANCE_TESTNET_BASE_URL", &self.binance_testnet_base_url)?,
            coinbase: parse_base_url("COINBASE_BASE_URL", &self.coinbase_base_url)?,
            kraken: parse_base_url("KRAKEN_BASE_URL", &self.kraken_base_url)?,
            kite: parse_base_url("KITE_BASE_URL", &self.kite_base_url)?,
            kite_login: parse_url("KITE_LOGIN_URL", &self.kite_login_url, true)?,
        };
        let redis_url = match self.redis_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => Some(SecretString::new(url)),
            Some(_) => {
                return Err(ConfigError::new(
                    "REDIS_URL",
                    "expected redis://host:port or rediss://host:port",
                ));
            }
        };
        Ok(Config {
            database_url,
            embedded_database,
            listen_addr: self.listen_addr,
            jwt_secret,
            jwt_jwks_url,
            jwt_audience: self.jwt_audience.clone(),
            jwt_issuer: self.jwt_issuer.clone().filter(|s| !s.trim().is_empty()),
            encryption_keys,
            cors_origins,
            egress_ips,
            health_check_interval,
            run_worker,
            session_sweep_interval: worker.session_sweep,
            worker,
            rate_limits: crate::http::RateLimits {
                per_ip_per_minute: positive("RATE_LIMIT_PER_IP", self.rate_limit_per_ip)?,
                per_user_per_minute: positive("RATE_LIMIT_PER_USER", self.rate_limit_per_user)?,
                auth_failures_per_ip_per_minute: positive("AUTH_FAILURES_PER_IP", self.auth_failures_per_ip)?,
            },
            trusted_proxy_hops: Some(self.trusted_proxy_hops)
                .filter(|hops| *hops <= 5)
                .ok_or_else(|| ConfigError::new("TRUSTED_PROXY_HOPS", "expected 0 to 5"))?,
            introspection: match self.introspection.trim().to_ascii_lowercase().as_str() {
                "auto" => embedded_database,
                "on" | "true" => true,
                "off" | "false" => false,
                _ => return Err(ConfigError::new("INTROSPECTION", "expected auto, on or off")),
            },
            websocket: WebSocketLimits {
                init_timeout: parse_duration(&self.ws_init_timeout)
                    .filter(|d| *d >= Duration::from_millis(100))
                    .ok_or_else(|| ConfigError::new("WS_INIT_TIMEOUT", "expected a duration of at least 100ms"))?,
                keepalive_interval: parse_duration(&self.ws_keepalive_interval)
                    .filter(|d| *d >= Duration::from_millis(100))
                    .ok_or_else(|| {
                        ConfigError::new("WS_KEEPALIVE_INTERVAL", "expected a duration of at least 100ms")
                    })?,
                max_subscriptions: Some(self.ws_max_subscriptions)
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| ConfigError::new("WS_MAX_SUBSCRIPTIONS", "expected 1 to 1000"))?,
            },
            max_body_bytes: self.max_body_bytes,
            allow_withdrawal_keys: self.allow_withdrawal_keys,
            exchange_tests_per_minute: self.exchange_tests_per_minute,
            exchange_tests_burst: self.exchange_tests_burst,
            endpoints,
            redis_url,
            kraken_tier: KrakenTier::parse(&self.kraken_tier)
                .ok_or_else(|| ConfigError::new("KRAKEN_TIER", "expected starter, intermediate or pro"))?,
            data_dir: self.data_dir.clone(),
            dev_secrets: false,
        })
    }
}

impl Settings {
    fn worker_config(&self, interval: Duration) -> Result<crate::worker::WorkerConfig, ConfigError> {
        let lease = parse_duration(&self.worker_lease)
            .filter(|d| *d >= Duration::from_secs(1))
            .ok_or_else(|| ConfigError::new("WORKER_LEASE", "expected a duration of at least 1s"))?;
        let poll = parse_duration(&self.worker_poll_interval)
            .filter(|d| *d >= Duration::from_millis(10))
            .ok_or_else(|| ConfigError::new("WORKER_POLL_INTERVAL", "expected a duration of at least 10ms"))?;
        if !(1..=10_000).contains(&self.worker_batch) {
            return Err(ConfigError::new("WORKER_BATCH", "must be between 1 and 10000"));
        }
        if !(1..=10_000).contains(&self.worker_concurrency) {
            return Err(ConfigError::new("WORKER_CONCURRENCY", "must be between 1 and 10000"));
        }
        if self.health_check_retention < 1 {
            return Err(ConfigError::new("HEALTH_CHECK_RETENTION", "must be at least 1"));
        }
        let session_sweep = parse_duration(&self.session_sweep_interval)
            .filter(|d| *d >= Duration::from_millis(100))
            .ok_or_else(|| ConfigError::new("SESSION_SWEEP_INTERVAL", "expected a duration of at least 100ms"))?;
        Ok(crate::worker::WorkerConfig {
            interval,
            lease,
            poll,
            batch: self.worker_batch,
            concurrency: self.worker_concurrency,
            retention: self.health_check_retention,
            session_sweep,
        })
    }
}

fn read_secret(
    name: &'static str,
    value: Option<&str>,
    file_name: &'static str,
    file: Option<&PathBuf>,
) -> Result<Option<SecretString>, ConfigError> {
    let value = value.map(str::trim).filter(|v| !v.is_empty());
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            name,
            format!("set either {name} or {file_name}, not both"),
        )),
        (Some(v), None) => Ok(Some(SecretString::new(v))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::new(file_name, format!("cannot read {}: {e}", path.display())))?;
            // Newline-separated key files are accepted as a list, like the comma form.
            let text = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(",");
            if text.is_empty() {
                return Err(ConfigError::new(file_name, format!("{} is empty", path.display())));
            }
            Ok(Some(SecretString::new(text)))
        }
        (None, None) => Ok(None),
    }
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn parse_url(setting: &'static str, text: &str, allow_path: bool) -> Result<Url, ConfigError> {
    let url = Url::parse(text.trim()).map_err(|e| ConfigError::new(setting, format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ConfigError::new(setting, "must be an http(s) URL with a host"));
    }
    if !allow_path && url.path() != "/" {
        return Err(ConfigError::new(setting, "must not have a path"));
    }
    Ok(url)
}

/// Base URLs are scheme, host and port only: every client appends its own paths.
fn parse_base_url(setting: &'static str, text: &str) -> Result<Url, ConfigError> {
    let url = parse_url(setting, text, false)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            setting,
            "must be scheme://host[:port] without path or query",
        ));
    }
    Ok(url)
}

/// `300s`, `5m`, `1h30m` (humantime) or plain seconds.
fn positive(name: &'static str, value: u32) -> Result<u32, ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(name, "must be at least 1"));
    }
    Ok(value)
}

/// What one WebSocket client may do.
#[derive(Debug, Clone, Copy)]
pub struct WebSocketLimits {
    pub init_timeout: Duration,
    pub keepalive_interval: Duration,
    pub max_subscriptions: usize,
}

pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            database_url: None,
            jwt_secret: Some("x".repeat(32)),
            jwt_secret_file: None,
            jwt_jwks_url: None,
            encryption_keys: Some("k".into()),
            encryption_keys_file: None,
            cors_origins: String::new(),
            egress_ips: String::new(),
            health_check_interval: "5m".into(),
            binance_base_url: "https://api.binance.com".into(),
            ..Settings::default()
        }
    }

    #[test]
    fn defaults_validate_with_secrets() {
        let config = settings().validate().unwrap();
        assert!(config.embedded_database);
        assert!(config.database_url.starts_with("sqlite://"));
        assert_eq!(config.health_check_interval, Duration::from_secs(300));
        assert_eq!(config.endpoints.binance.as_str(), "https://api.binance.com/");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("300s"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn bad_settings_name_the_setting_not_the_value() {
        let mut s = settings();
        s.jwt_secret = Some("short-secret-value".into());
        let err = s.validate().unwrap_err();
        assert_eq!(err.setting, "JWT_SECRET");
        assert!(!err.to_string().contains("short-secret-value"));

        let mut s = settings();
        s.cors_origins = "*".into();
        assert_eq!(s.validate().unwrap_err().setting, "CORS_ORIGINS");
        let mut s = settings();
        s.cors_origins = "https://app.example.com/path".into();
        assert_eq!(s.validate().unwrap_err().setting, "CORS_ORIGINS");
        let mut s = settings();
        s.egress_ips = "1.2.3.4, nope".into();
        assert_eq!(s.validate().unwrap_err().setting, "EGRESS_IPS");
        let mut s = settings();
        s.binance_base_url = "https://api.binance.com/api".into();
        assert_eq!(s.validate().unwrap_err().setting, "BINANCE_BASE_URL");
        let mut s = settings();
        s.health_check_interval = "often".into();
        assert_eq!(s.validate().unwrap_err().setting, "HEALTH_CHECK_INTERVAL");
        let mut s = settings();
        s.database_url = Some("mysql://x".into());
        assert_eq!(s.validate().unwrap_err().setting, "DATABASE_URL");
        let mut s = settings();
        s.encryption_keys = None;
        assert_eq!(s.validate().unwrap_err().setting, "ENCRYPTION_KEYS");
        for (setting, adjust) in [
            (
                "WORKER_LEASE",
                (|s: &mut Settings| s.worker_lease = "0s".into()) as fn(&mut Settings),
            ),
            ("WORKER_LEASE", |s| s.worker_lease = "later".into()),
            ("WORKER_POLL_INTERVAL", |s| s.worker_poll_interval = "1ms".into()),
            ("WORKER_BATCH", |s| s.worker_batch = 0),
            ("WORKER_CONCURRENCY", |s| s.worker_concurrency = 0),
            ("HEALTH_CHECK_RETENTION", |s| s.health_check_retention = 0),
        ] {
            let mut s = settings();
            adjust(&mut s);
            assert_eq!(s.validate().unwrap_err().setting, setting);
        }
    }

    #[test]
    fn worker_runs_in_serve_on_sqlite_only_by_default() {
        assert!(settings().validate().unwrap().run_worker);
        let mut s = settings();
        s.database_url = Some("postgres://db/app".into());
        assert!(!s.validate().unwrap().run_worker);
        s.run_worker = Some(true);
        assert!(s.validate().unwrap().run_worker);
        let mut s = settings();
        s.run_worker = Some(false);
        assert!(!s.validate().unwrap().run_worker);
    }

    #[test]
    fn the_worker_needs_no_jwt_settings() {
        let mut s = settings();
        s.jwt_secret = None;
        assert_eq!(s.validate().unwrap_err().setting, "JWT_SECRET");
        let config = s.validate_for_worker().unwrap();
        assert_eq!(config.worker.lease, Duration::from_secs(60));
        assert_eq!(config.worker.retention, 1000);
    }
}
