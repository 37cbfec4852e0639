//! Coinbase Advanced Trade client for CDP keys: checks the key's shape, signs
//! a fresh ES256/EdDSA JWT per request, makes the
//! `GET /api/v3/brokerage/key_permissions` test call (which is also the
//! permission read), and keeps JWT times on Coinbase's clock with an offset
//! measured from the public `GET /api/v3/brokerage/time`. Facts:
//! exchanges.md §2 and §5.
//!
//! What leaves this module never holds the private key, the JWT or the
//! `Authorization` header: errors are built from the status and Coinbase's
//! error text only, logs and metrics name the path, and a final scrub removes
//! any echo.

/// Public for the benchmarks in `benches/`.
pub mod classify;
mod clock;
/// Public for the benchmarks in `benches/`.
pub mod jwt;
/// Public for the benchmarks in `benches/`.
pub mod key;
mod model;
mod shape;

use crate::crypto::SecretString;
use crate::domain::{Environment, Exchange, ExchangeErrorCode, Permissions};
use crate::exchange::budget::{Budget, COINBASE_PER_KEY};
use crate::exchange::call::{CallFailure, Gate};
use crate::exchange::common::{BodyError, read_body};
use crate::exchange::shared::{BudgetStore, memory::MemoryStore};
use crate::exchange::{CredentialShapeError, Credentials, ExchangeClient, ExchangeError, RateUsage, TestReport};
use classify::TransportFailure;
use clock::ClockCache;
use key::SigningKey;
use model::{KeyPermissions, ServerTime};
use reqwest::header::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;
use zeroize::Zeroizing;

pub use classify::invalid_key_hint;
pub use shape::CREATE_CDP_KEY;

const KEY_PERMISSIONS_PATH: &str = "/api/v3/brokerage/key_permissions";
const TIME_PATH: &str = "/api/v3/brokerage/time";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Both answers are well under a KiB; anything far larger is not one.
const MAX_BODY_BYTES: usize = 1 << 16;
/// After a 401, a re-measured clock offset that moved by at least this much
/// explains the failure, so the call is retried once with it.
const CLOCK_RETRY_THRESHOLD_MS: i64 = 2_000;
/// Strings shorter than this are not scrubbed from messages (they would match
/// ordinary words); keys, key lines and JWTs are far longer.
const MIN_SCRUB_LEN: usize = 16;

/// The Coinbase Advanced Trade client. Holds the measured clock offset, so
/// share one instance (`Arc<dyn ExchangeClient>`).
pub struct CoinbaseClient {
    http: reqwest::Client,
    base_url: Url,
    timeout: Duration,
    egress_ips: Vec<String>,
    clock: ClockCache,
    clock_max_age: Duration,
    /// 30 requests/s per key and Coinbase's `Retry-After`s.
    gate: Gate,
}

impl CoinbaseClient {
    /// `base_url` is scheme, host and port, no path (`https://api.coinbase.com`).
    pub fn new(http: reqwest::Client, base_url: Url) -> Self {
        Self {
            http,
            base_url,
            timeout: DEFAULT_TIMEOUT,
            egress_ips: Vec::new(),
            clock: ClockCache::default(),
            clock_max_age: clock::MAX_AGE,
            gate: Gate::new("coinbase", Arc::new(MemoryStore::new())),
        }
    }

    /// Per-request timeout (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The service's egress IPs, quoted in hints telling users what to allowlist.
    pub fn with_egress_ips(mut self, egress_ips: Vec<String>) -> Self {
        self.egress_ips = egress_ips;
        self
    }

    /// Where per-key budgets and held `Retry-After`s live (default: this
    /// process only).
    pub fn with_budget_store(mut self, store: Arc<dyn BudgetStore>) -> Self {
        self.gate = Gate::new("coinbase", store);
        self
    }

    /// How long a measured clock offset is used before measuring again
    /// (default 10 minutes).
    pub fn with_clock_max_age(mut self, max_age: Duration) -> Self {
        self.clock_max_age = max_age;
        self
    }

    /// The clock offset to sign with, and whether it was measured just now.
    /// Only a transport failure of the time call is an error: anything else
    /// falls back to the last known offset, and the signed call that follows
    /// reports what is really wrong.
    async fn clock_offset(&self) -> Result<(i64, bool), ExchangeError> {
        if let Some(offset) = self.clock.fresh(self.clock_max_age) {
            return Ok((offset, false));
        }
        match self.measure_clock().await {
            Ok((offset, _)) => Ok((offset, true)),
            Err(failure) if failure.transport => Err(failure.error),
            Err(_) => Ok((self.clock.last(), true)),
        }
    }

    /// Reads Coinbase's clock, caches the offset, and returns it with the
    /// server time.
    async fn measure_clock(&self) -> Result<(i64, chrono::DateTime<chrono::Utc>), Failure> {
        let sent_ms = chrono::Utc::now().timestamp_millis();
        let reply = self
            .call::<ServerTime>(TIME_PATH, &Budget::public("coinbase"), None)
            .await?;
        let received_ms = chrono::Utc::now().timestamp_millis();
        let server = reply
            .value
            .unix_ms()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .ok_or_else(|| Failure::from(classify::unreadable_success(reply.status)))?;
        let offset = clock::offset_ms(sent_ms, received_ms, server.timestamp_millis());
        self.clock.store(offset);
        tracing::debug!(offset_ms = offset, "coinbase clock offset measured");
        Ok((offset, server))
    }

    /// The signed `key_permissions` call, with JWT times corrected by `offset_ms`.
    async fn key_permissions(
        &self,
        key: &SigningKey,
        key_name: &str,
        offset_ms: i64,
        sensitive: &mut Vec<Zeroizing<String>>,
    ) -> Result<Reply<KeyPermissions>, Failure> {
        let config_error = || {
            Failure::from(ExchangeError::new(
                ExchangeErrorCode::NetworkError,
                "the configured Coinbase base URL cannot be used to build a request",
            ))
        };
        let uri = jwt::request_uri("GET", &self.base_url, KEY_PERMISSIONS_PATH).ok_or_else(config_error)?;
        let now = clock::corrected_secs(chrono::Utc::now().timestamp_millis(), offset_ms);
        let token = jwt::build(key, key_name, &uri, now, &jwt::nonce()).ok_or_else(|| {
            Failure::from(ExchangeError::new(
                ExchangeErrorCode::InvalidCredentials,
                "the private key could not sign the request",
            ))
        })?;
        sensitive.push(Zeroizing::new(token.expose().to_owned()));
        let bearer = Zeroizing::new(format!("Bearer {}", token.expose()));
        let mut authorization = HeaderValue::from_str(&bearer).map_err(|_| {
            Failure::from(ExchangeError::new(
                ExchangeErrorCode::InvalidCredentials,
                "the key name contains characters that cannot be sent",
            ))
        })?;
        authorization.set_sensitive(true);
        let budget = Budget::per_key("coinbase", key_name, COINBASE_PER_KEY, 1);
        self.call(KEY_PERMISSIONS_PATH, &budget, Some(authorization)).await
    }

    /// A `GET` of `path`, parsed as `T`, through the shared call gate
    /// (budget, held `Retry-After`, metrics).
    async fn call<T: DeserializeOwned>(
        &self,
        path: &'static str,
        budget: &Budget,
        authorization: Option<HeaderValue>,
    ) -> Result<Reply<T>, Failure> {
        self.gate.run(path, budget, self.call_inner(path, authorization)).await
    }

    async fn call_inner<T: DeserializeOwned>(
        &self,
        path: &'static str,
        authorization: Option<HeaderValue>,
    ) -> Result<Reply<T>, Failure> {
        let url = self.base_url.join(path).map_err(|_| {
            Failure::from(ExchangeError::new(
                ExchangeErrorCode::NetworkError,
                "the configured Coinbase base URL cannot be used to build a request",
            ))
        })?;
        let mut request = self.http.get(url).timeout(self.timeout);
        if let Some(authorization) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let started = Instant::now();
        let response = request.send().await.map_err(|e| self.transport(path, &e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = read_body(response, MAX_BODY_BYTES).await.map_err(|e| match e {
            BodyError::Transport(e) => self.transport(path, &e),
            BodyError::TooLarge => Failure::from(classify::unreadable_success(status)),
        })?;
        let elapsed = started.elapsed();
        tracing::debug!(
            endpoint = path,
            status,
            elapsed_ms = elapsed.as_millis() as u64,
            "coinbase call"
        );

        if !(200..300).contains(&status) {
            let retry_after = classify::parse_retry_after(
                headers.get("retry-after").and_then(|v| v.to_str().ok()),
                chrono::Utc::now(),
            );
            return Err(Failure {
                error: classify::http_failure(status, retry_after, &body, &self.egress_ips),
                status: Some(status),
                transport: false,
            });
        }
        let value = serde_json::from_slice(&body).map_err(|_| Failure::from(classify::unreadable_success(status)))?;
        Ok(Reply {
            value,
            headers,
            status,
            elapsed,
        })
    }

    fn transport(&self, path: &'static str, error: &reqwest::Error) -> Failure {
        let failure = TransportFailure::of(error);
        // Only the kind: reqwest's own Display would print the URL.
        tracing::debug!(
            endpoint = path,
            kind = failure.as_str(),
            "coinbase call failed without an answer"
        );
        Failure {
            error: classify::transport_failure(failure, self.timeout),
            status: None,
            transport: true,
        }
    }

    /// The test call, with the clock handling around it: after a 401 the
    /// offset is measured again, and if it moved enough to explain the 401
    /// the call is repeated once.
    async fn test_inner(
        &self,
        key: &SigningKey,
        key_name: &str,
        sensitive: &mut Vec<Zeroizing<String>>,
    ) -> Result<Reply<KeyPermissions>, ExchangeError> {
        let (offset, measured_now) = self.clock_offset().await?;
        let failure = match self.key_permissions(key, key_name, offset, sensitive).await {
            Ok(reply) => return Ok(reply),
            Err(failure) => failure,
        };
        if failure.status != Some(401) {
            return Err(failure.error);
        }
        self.clock.invalidate();
        if measured_now {
            return Err(failure.error);
        }
        match self.measure_clock().await {
            Ok((fresh, _)) if (fresh - offset).abs() >= CLOCK_RETRY_THRESHOLD_MS => {
                tracing::debug!("coinbase 401 after the clock moved; retrying once");
                self.key_permissions(key, key_name, fresh, sensitive)
                    .await
                    .map_err(|f| f.error)
            }
            _ => Err(failure.error),
        }
    }
}

#[async_trait::async_trait]
impl ExchangeClient for CoinbaseClient {
    fn exchange(&self) -> Exchange {
        Exchange::Coinbase
    }

    /// CDP key name and private key; production only (Coinbase's sandbox
    /// cannot validate keys).
    fn check_credentials(
        &self,
        environment: Environment,
        credentials: &Credentials,
    ) -> Result<(), CredentialShapeError> {
        shape::check(environment, credentials).map(|_| ())
    }

    async fn test(&self, environment: Environment, credentials: &Credentials) -> Result<TestReport, ExchangeError> {
        // A malformed credential would only earn a 401; refusing it here says why.
        let key = shape::check(environment, credentials).map_err(|e| {
            ExchangeError::new(ExchangeErrorCode::InvalidCredentials, e.to_string())
                .with_hint(format!("Correct the {} field and try again.", e.field))
        })?;
        let key_name = credentials.api_key.expose();
        let mut sensitive = Vec::new();
        let result = self.test_inner(&key, key_name, &mut sensitive).await;
        sensitive.push(Zeroizing::new(credentials.api_secret.expose().to_owned()));
        sensitive.push(Zeroizing::new(key_name.to_owned()));
        let sensitive = Sensitive::new(sensitive, &credentials.api_secret);
        let reply = result.map_err(|e| sensitive.scrub(e))?;

        let p = &reply.value;
        tracing::debug!(
            portfolio_type = p.portfolio_type.as_deref().unwrap_or(""),
            "coinbase key permissions read"
        );
        let mut warnings = Vec::new();
        if p.can_transfer {
            warnings.push(
                "This key can transfer funds out of the account (the Transfer permission). This service never needs \
                 it: create a key without Transfer and rotate to it."
                    .to_owned(),
            );
        }
        Ok(TestReport {
            latency: reply.elapsed,
            permissions: Permissions {
                can_read: p.can_view,
                can_trade: p.can_trade,
                can_withdraw: p.can_transfer,
                // No Coinbase API tells whether a key has an IP allowlist.
                ip_restricted: None,
                trading_expires_at: None,
            },
            usage: rate_usage(&reply.headers),
            warnings,
        })
    }

    /// Coinbase's clock from the public time endpoint (also refreshes the
    /// cached offset). Coinbase has no testnet: `Ok(None)` there.
    async fn server_time(
        &self,
        environment: Environment,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, ExchangeError> {
        if environment != Environment::Production {
            return Ok(None);
        }
        self.measure_clock()
            .await
            .map(|(_, server)| Some(server))
            .map_err(|f| f.error)
    }
}

/// A parsed 2xx answer.
struct Reply<T> {
    value: T,
    headers: HeaderMap,
    status: u16,
    elapsed: Duration,
}

/// A failed call: the classified error, the HTTP status if one came back,
/// and whether it failed before any answer (network, timeout).
struct Failure {
    error: ExchangeError,
    status: Option<u16>,
    transport: bool,
}

impl From<ExchangeError> for Failure {
    fn from(error: ExchangeError) -> Self {
        Self {
            error,
            status: None,
            transport: false,
        }
    }
}

impl CallFailure for Failure {
    fn error(&self) -> &ExchangeError {
        &self.error
    }
}

/// `x-ratelimit-limit` and `x-ratelimit-remaining`, as used of the limit.
fn rate_usage(headers: &HeaderMap) -> Option<RateUsage> {
    let read = |name: &str| -> Option<u32> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    let limit = read("x-ratelimit-limit")?;
    let remaining = read("x-ratelimit-remaining")?;
    Some(RateUsage {
        weight_used: limit.saturating_sub(remaining),
        weight_limit: limit,
    })
}

/// Values that must never appear in what leaves this module: the JWTs, the
/// key name, the private key as pasted and each line of it. Zeroized on drop.
struct Sensitive(Vec<Zeroizing<String>>);

impl Sensitive {
    fn new(mut all: Vec<Zeroizing<String>>, secret: &SecretString) -> Self {
        // A PEM may come back line by line, or with `\n` written out.
        for line in secret.expose().split(['\n', '\r']).flat_map(|l| l.split("\\n")) {
            all.push(Zeroizing::new(line.trim().to_owned()));
        }
        all.retain(|v| v.len() >= MIN_SCRUB_LEN);
        Self(all)
    }

    /// Defence in depth: removes any echo from an error's message and hint.
    fn scrub(&self, error: ExchangeError) -> ExchangeError {
        let values: Vec<&str> = self.0.iter().map(|v| v.as_str()).collect();
        crate::exchange::common::scrub(error, &values, MIN_SCRUB_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_usage_reads_limit_and_remaining() {
        let mut headers = HeaderMap::new();
        assert_eq!(rate_usage(&headers), None);
        headers.insert("x-ratelimit-limit", HeaderValue::from_static("30"));
        assert_eq!(rate_usage(&headers), None, "remaining is needed too");
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("27"));
        assert_eq!(
            rate_usage(&headers),
            Some(RateUsage {
                weight_used: 3,
                weight_limit: 30
            })
        );
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("lots"));
        assert_eq!(rate_usage(&headers), None);
    }

    #[test]
    fn scrub_removes_the_secret_its_lines_and_tokens_but_not_short_words() {
        let pem =
            "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIBkg4LVWM9nuwNSk3yFjFEBD0Nt0o\\n-----END EC PRIVATE KEY-----";
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl";
        let sensitive = Sensitive::new(
            vec![Zeroizing::new(jwt.to_owned()), Zeroizing::new("short".to_owned())],
            &SecretString::new(pem),
        );
        let error = ExchangeError::new(
            ExchangeErrorCode::UnexpectedResponse,
            "Coinbase said: bad MHcCAQEEIBkg4LVWM9nuwNSk3yFjFEBD0Nt0o short",
        )
        .with_hint(format!("token {jwt}"));
        let scrubbed = sensitive.scrub(error);
        assert_eq!(scrubbed.message, "Coinbase said: bad [REDACTED] short");
        assert_eq!(scrubbed.hint.as_deref(), Some("token [REDACTED]"));
    }
}
