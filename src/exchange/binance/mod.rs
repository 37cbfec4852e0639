//! Binance Spot client: checks the credential's shape (an HMAC secret, or an
//! Ed25519 or RSA private key in PKCS#8 PEM), makes the signed
//! `GET /api/v3/account` test call with timestamps corrected to Binance's
//! clock, then reads the key's permissions (`/sapi/v1/account/apiRestrictions`
//! on production; the account's flags on the testnet, which has no `/sapi`).
//! Facts: exchanges.md §1 and §5.
//!
//! What leaves this module never holds the key, the secret, the signature or
//! the request URL: errors are built from status and Binance's code only,
//! logs and metrics name the path, and a final scrub removes any echo.

/// Public for the benchmarks in `benches/`.
pub mod classify;
mod clock;
mod model;
mod pem;
mod shape;
/// Public for the benchmarks in `benches/`.
pub mod signer;

use crate::domain::{Environment, Exchange, ExchangeErrorCode, Permissions};
use crate::exchange::budget::{BINANCE_WEIGHT_PER_MINUTE, Budget};
use crate::exchange::call::{CallFailure, Gate};
use crate::exchange::common::{BodyError, read_body};
use crate::exchange::shared::{BudgetStore, memory::MemoryStore};
use crate::exchange::{CredentialShapeError, Credentials, ExchangeClient, ExchangeError, RateUsage, TestReport};
use chrono::{DateTime, Utc};
use classify::TransportFailure;
use clock::ClockOffsets;
use model::{Account, ApiRestrictions, ServerTime};
use reqwest::header::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use signer::Signer;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

pub use classify::invalid_key_hint;

const ACCOUNT_PATH: &str = "/api/v3/account";
const RESTRICTIONS_PATH: &str = "/sapi/v1/account/apiRestrictions";
const TIME_PATH: &str = "/api/v3/time";
const API_KEY_HEADER: &str = "X-MBX-APIKEY";
const USED_WEIGHT_HEADER: &str = "X-MBX-USED-WEIGHT-1M";
const WEIGHT_LIMIT_1M: u32 = BINANCE_WEIGHT_PER_MINUTE;
/// Names the budget scope when no egress IP is configured.
const UNKNOWN_EGRESS: &str = "default";
/// Binance's default; stated explicitly so the signed payload is predictable.
const RECV_WINDOW_MS: u32 = 5000;
/// Binance's answer to a timestamp outside `recvWindow` or ahead of its clock.
const INVALID_TIMESTAMP: i64 = -1021;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a measured clock offset is trusted before it is measured again.
const DEFAULT_CLOCK_REFRESH: Duration = Duration::from_secs(10 * 60);
/// Offsets beyond this are logged: the host's clock needs attention.
const NOTABLE_OFFSET_MS: i64 = 1000;
/// An account body with zero balances omitted is a few KiB; anything far
/// larger is not an answer we want to buffer.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Strings shorter than this are not scrubbed from messages (they would match
/// ordinary words); real keys, secrets and signatures are 64 characters.
const MIN_SCRUB_LEN: usize = 8;

/// The Binance Spot client. Cheap to clone the `reqwest::Client` it holds.
pub struct BinanceClient {
    http: reqwest::Client,
    production: Url,
    testnet: Url,
    timeout: Duration,
    egress_ips: Vec<String>,
    clock: ClockOffsets,
    /// Request weight per minute per egress IP and environment, and bans.
    gate: Gate,
}

impl BinanceClient {
    /// `production` and `testnet` are base URLs (scheme, host, port; no path).
    pub fn new(http: reqwest::Client, production: Url, testnet: Url) -> Self {
        Self {
            http,
            production,
            testnet,
            timeout: DEFAULT_TIMEOUT,
            egress_ips: Vec::new(),
            clock: ClockOffsets::new(DEFAULT_CLOCK_REFRESH),
            gate: Gate::new("binance", Arc::new(MemoryStore::new())),
        }
    }

    /// Per-request timeout (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The service's egress IPs, quoted in hints telling users what to whitelist.
    pub fn with_egress_ips(mut self, egress_ips: Vec<String>) -> Self {
        self.egress_ips = egress_ips;
        self
    }

    /// Where request weight and bans are counted (default: this process only).
    pub fn with_budget_store(mut self, store: Arc<dyn BudgetStore>) -> Self {
        self.gate = Gate::new("binance", store);
        self
    }

    /// The weight budget of a call: Binance counts per IP, so the scope is the
    /// first egress IP (every replica behind it shares the budget).
    fn budget(&self, environment: Environment, path: &str) -> Budget {
        let egress = self.egress_ips.first().map_or(UNKNOWN_EGRESS, String::as_str);
        Budget::binance(egress, environment, request_weight(path))
    }

    /// How often the offset to Binance's clock is measured again (default 10 min).
    pub fn with_clock_refresh(mut self, every: Duration) -> Self {
        self.clock = ClockOffsets::new(every);
        self
    }

    fn base_url(&self, environment: Environment) -> &Url {
        match environment {
            Environment::Production => &self.production,
            Environment::Testnet => &self.testnet,
        }
    }

    /// Reads Binance's clock (`GET /api/v3/time`, weight 1) and remembers the
    /// offset to ours.
    async fn measure_clock(&self, environment: Environment) -> Result<ClockReading, Failure> {
        let sent_ms = Utc::now().timestamp_millis();
        let reply = self.call::<ServerTime>(environment, TIME_PATH, None, None).await?;
        let received_ms = Utc::now().timestamp_millis();
        let server_ms = reply.value.server_time;
        let server_time = DateTime::from_timestamp_millis(server_ms)
            .filter(|_| server_ms > 0)
            .ok_or_else(|| Failure::from(classify::unreadable_success(200)))?;
        let offset_ms = clock::offset_ms(sent_ms, received_ms, server_ms);
        if offset_ms.abs() > NOTABLE_OFFSET_MS {
            tracing::warn!(%environment, offset_ms, "this host's clock differs from Binance's");
        }
        self.clock.set(environment, offset_ms, Instant::now());
        Ok(ClockReading { server_time, offset_ms })
    }

    /// The offset to Binance's clock, measured first if unknown or stale.
    async fn clock_offset(&self, environment: Environment) -> Result<i64, Failure> {
        match self.clock.get(environment, Instant::now()) {
            Some(offset_ms) => Ok(offset_ms),
            None => Ok(self.measure_clock(environment).await?.offset_ms),
        }
    }

    /// A signed USER_DATA `GET`, parsed as `T`. A -1021 (timestamp refused)
    /// means the clock offset was wrong: it is measured again and the call
    /// retried once.
    async fn signed_get<T: DeserializeOwned>(
        &self,
        environment: Environment,
        path: &'static str,
        params: &str,
        credentials: &Credentials,
        signer: &Signer,
    ) -> Result<Reply<T>, Failure> {
        let offset_ms = self.clock_offset(environment).await?;
        match self
            .signed_get_once(environment, path, params, credentials, signer, offset_ms)
            .await
        {
            Err(Failure {
                binance_code: Some(INVALID_TIMESTAMP),
                ..
            }) => {
                self.clock.forget(environment);
                let offset_ms = self.measure_clock(environment).await?.offset_ms;
                self.signed_get_once(environment, path, params, credentials, signer, offset_ms)
                    .await
            }
            other => other,
        }
    }

    async fn signed_get_once<T: DeserializeOwned>(
        &self,
        environment: Environment,
        path: &'static str,
        params: &str,
        credentials: &Credentials,
        signer: &Signer,
        offset_ms: i64,
    ) -> Result<Reply<T>, Failure> {
        let timestamp = Utc::now().timestamp_millis().saturating_add(offset_ms);
        let separator = if params.is_empty() { "" } else { "&" };
        let query = format!("{params}{separator}recvWindow={RECV_WINDOW_MS}&timestamp={timestamp}");
        let signature = signer
            .sign(&query, "")
            .map_err(|_| Failure::from(classify::signing_failed()))?;

        let mut api_key = HeaderValue::from_str(credentials.api_key.expose()).map_err(|_| {
            Failure::from(ExchangeError::new(
                ExchangeErrorCode::InvalidCredentials,
                "the API key contains characters that cannot be sent",
            ))
        })?;
        api_key.set_sensitive(true);

        // `signature` goes last: Binance signs everything before it.
        let signed_query = format!("{query}&signature={signature}");
        self.call(environment, path, Some(&signed_query), Some(api_key))
            .await
            .map_err(|mut failure| {
                let sensitive = [
                    credentials.api_key.expose(),
                    credentials.api_secret.expose(),
                    signature.as_str(),
                ];
                failure.error = scrub(failure.error, &sensitive);
                failure
            })
    }

    /// One `GET`, parsed as `T`, through the shared call gate (budget,
    /// bans, metrics).
    async fn call<T: DeserializeOwned>(
        &self,
        environment: Environment,
        path: &'static str,
        query: Option<&str>,
        api_key: Option<HeaderValue>,
    ) -> Result<Reply<T>, Failure> {
        let budget = self.budget(environment, path);
        self.gate
            .run(
                path,
                &budget,
                self.call_inner(&budget, environment, path, query, api_key),
            )
            .await
    }

    async fn call_inner<T: DeserializeOwned>(
        &self,
        budget: &Budget,
        environment: Environment,
        path: &'static str,
        query: Option<&str>,
        api_key: Option<HeaderValue>,
    ) -> Result<Reply<T>, Failure> {
        let mut url = self.base_url(environment).join(path).map_err(|_| {
            Failure::from(ExchangeError::new(
                ExchangeErrorCode::NetworkError,
                "the configured Binance base URL cannot be used to build a request",
            ))
        })?;
        url.set_query(query);

        let mut request = self.http.get(url).timeout(self.timeout);
        if let Some(api_key) = api_key {
            request = request.header(API_KEY_HEADER, api_key);
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
        if let Some(usage) = used_weight(&headers) {
            self.gate.observe_used(budget, usage.weight_used).await;
        }
        tracing::debug!(
            endpoint = path,
            status,
            elapsed_ms = elapsed.as_millis() as u64,
            "binance call"
        );

        if !(200..300).contains(&status) {
            let retry_after = classify::parse_retry_after(headers.get("retry-after").and_then(|v| v.to_str().ok()));
            let now_ms = Utc::now().timestamp_millis();
            let classified = classify::http_failure(status, retry_after, &body, &self.egress_ips, now_ms);
            return Err(Failure {
                error: classified.error,
                binance_code: classified.binance_code,
            });
        }
        let value = serde_json::from_slice(&body).map_err(|_| Failure::from(classify::unreadable_success(status)))?;
        Ok(Reply {
            value,
            headers,
            elapsed,
        })
    }

    fn transport(&self, path: &'static str, error: &reqwest::Error) -> Failure {
        let failure = TransportFailure::of(error);
        // Only the kind: reqwest's own Display would print the signed URL.
        tracing::debug!(
            endpoint = path,
            kind = failure.as_str(),
            "binance call failed without an answer"
        );
        Failure::from(classify::transport_failure(failure, self.timeout))
    }

    async fn permissions(
        &self,
        environment: Environment,
        credentials: &Credentials,
        signer: &Signer,
        account: &Account,
    ) -> Result<Permissions, ExchangeError> {
        match environment {
            Environment::Production => {
                match self
                    .signed_get::<ApiRestrictions>(environment, RESTRICTIONS_PATH, "", credentials, signer)
                    .await
                {
                    Ok(reply) => Ok(Permissions {
                        trading_expires_at: reply
                            .value
                            .trading_authority_expiration_time
                            .filter(|ms| *ms > 0)
                            .and_then(DateTime::from_timestamp_millis),
                        can_read: reply.value.enable_reading,
                        can_trade: reply.value.enable_spot_and_margin_trading,
                        can_withdraw: reply.value.enable_withdrawals,
                        ip_restricted: Some(reply.value.ip_restrict),
                    }),
                    // The account call worked, so the key is valid but may not
                    // show its restrictions. Its withdrawal right is then
                    // unknown, and such a key must not be accepted silently.
                    Err(Failure {
                        binance_code: Some(code @ (-2015 | -1002)),
                        ..
                    }) => Err(classify::permissions_unreadable(code, &self.egress_ips)),
                    Err(failure) => Err(failure.error),
                }
            }
            // The testnet has no /sapi. These flags describe the account, not
            // the key; reading worked, since the account call succeeded.
            Environment::Testnet => Ok(Permissions {
                trading_expires_at: None,
                can_read: true,
                can_trade: account.can_trade,
                can_withdraw: account.can_withdraw,
                ip_restricted: None,
            }),
        }
    }

    /// What the user should fix although the key works.
    fn warnings(&self, permissions: &Permissions) -> Vec<String> {
        let mut warnings = Vec::new();
        if permissions.ip_restricted == Some(false) {
            warnings.push(classify::no_ip_restriction_warning(
                &self.egress_ips,
                permissions.trading_expires_at,
            ));
        }
        warnings
    }
}

#[async_trait::async_trait]
impl ExchangeClient for BinanceClient {
    fn exchange(&self) -> Exchange {
        Exchange::Binance
    }

    /// Both environments take the same key shapes: HMAC, Ed25519 or RSA.
    fn check_credentials(
        &self,
        _environment: Environment,
        credentials: &Credentials,
    ) -> Result<(), CredentialShapeError> {
        shape::check(credentials).map(|_| ())
    }

    async fn test(&self, environment: Environment, credentials: &Credentials) -> Result<TestReport, ExchangeError> {
        // A malformed credential would fail at Binance anyway; not sending it
        // spares the shared per-IP request weight.
        let signer = shape::check(credentials).map_err(|e| {
            ExchangeError::new(ExchangeErrorCode::InvalidCredentials, e.to_string())
                .with_hint(format!("Correct the {} field and try again.", e.field))
        })?;

        let account = self
            .signed_get::<Account>(environment, ACCOUNT_PATH, "omitZeroBalances=true", credentials, &signer)
            .await
            .map_err(|f| f.error)?;
        let usage = used_weight(&account.headers);
        let permissions = self
            .permissions(environment, credentials, &signer, &account.value)
            .await?;
        Ok(TestReport {
            warnings: self.warnings(&permissions),
            latency: account.elapsed,
            permissions,
            usage,
        })
    }

    /// Binance's clock (`GET /api/v3/time`); also refreshes the clock offset.
    async fn server_time(&self, environment: Environment) -> Result<Option<DateTime<Utc>>, ExchangeError> {
        self.measure_clock(environment)
            .await
            .map(|reading| Some(reading.server_time))
            .map_err(|f| f.error)
    }
}

/// One read of Binance's clock.
struct ClockReading {
    server_time: DateTime<Utc>,
    /// Binance's clock minus ours, in ms.
    offset_ms: i64,
}

/// A parsed 2xx answer.
struct Reply<T> {
    value: T,
    headers: HeaderMap,
    elapsed: Duration,
}

/// A failed call, keeping Binance's numeric code for callers that need it.
struct Failure {
    error: ExchangeError,
    binance_code: Option<i64>,
}

impl From<ExchangeError> for Failure {
    fn from(error: ExchangeError) -> Self {
        Self {
            error,
            binance_code: None,
        }
    }
}

impl CallFailure for Failure {
    fn error(&self) -> &ExchangeError {
        &self.error
    }
}

/// Binance's request weight of each endpoint we call (REQUEST_WEIGHT per IP).
fn request_weight(path: &str) -> u32 {
    match path {
        ACCOUNT_PATH => 20,
        _ => 1,
    }
}

/// `X-MBX-USED-WEIGHT-1M` against the 6000-per-minute limit. The `/sapi`
/// answers count against a separate limit, so only `/api` answers are read.
fn used_weight(headers: &HeaderMap) -> Option<RateUsage> {
    let used = headers.get(USED_WEIGHT_HEADER)?.to_str().ok()?.trim().parse().ok()?;
    Some(RateUsage {
        weight_used: used,
        weight_limit: WEIGHT_LIMIT_1M,
    })
}

fn scrub(error: ExchangeError, sensitive: &[&str]) -> ExchangeError {
    crate::exchange::common::scrub(error, sensitive, MIN_SCRUB_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_weight_reads_the_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(used_weight(&headers), None);
        headers.insert(USED_WEIGHT_HEADER, HeaderValue::from_static("42"));
        assert_eq!(
            used_weight(&headers),
            Some(RateUsage {
                weight_used: 42,
                weight_limit: 6000
            })
        );
        headers.insert(USED_WEIGHT_HEADER, HeaderValue::from_static("lots"));
        assert_eq!(used_weight(&headers), None);
    }

    #[test]
    fn scrub_removes_sensitive_values_but_not_short_ones() {
        let secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
        let error = ExchangeError::new(
            ExchangeErrorCode::UnexpectedResponse,
            format!("Binance said: bad {secret}"),
        )
        .with_hint(format!("check {secret}"));
        let scrubbed = scrub(error, &[secret, "", "bad"]);
        assert_eq!(scrubbed.message, "Binance said: bad [REDACTED]");
        assert_eq!(scrubbed.hint.as_deref(), Some("check [REDACTED]"));
    }
}
