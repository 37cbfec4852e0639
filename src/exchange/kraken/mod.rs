//! Kraken Spot client: checks a credential's shape, makes the signed
//! `POST /0/private/Balance` test call (needs Query Funds), then probes the
//! withdrawal right with `POST /0/private/WithdrawMethods`. Kraken has no
//! endpoint telling a key's permissions and no safe trading probe, so
//! `can_trade` is reported `false` with a warning that it was not verified.
//! Facts: exchanges.md §3 and §5.
//!
//! Calls with one key are made one at a time with strictly increasing nonces
//! ([`NonceSource`]) and within the key's call counter (see `budget`).
//! Credentials Kraken rejected are not sent again (see `lockout`), since
//! repeated failures lock the Kraken account out.
//!
//! What leaves this module never holds the key, the secret, the signature or
//! the request body: errors are built from status and Kraken's error strings,
//! logs and metrics name the path, and a final scrub removes any echo.

/// Public for the benchmarks in `benches/`.
pub mod classify;
mod lockout;
/// Public for the benchmarks in `benches/`.
pub mod model;
mod nonce;
mod shape;
/// Public for the benchmarks in `benches/`.
pub mod signer;

use crate::crypto::SecretString;
use crate::domain::{Environment, Exchange, ExchangeErrorCode, Permissions};
use crate::exchange::budget::{Budget, KrakenTier};
use crate::exchange::call::{CallFailure, Gate};
use crate::exchange::common::{BodyError, read_body};
use crate::exchange::shared::{BudgetStore, Limit, memory::MemoryStore};
use crate::exchange::{CredentialShapeError, Credentials, ExchangeClient, ExchangeError, TestReport};
use classify::{Classified, KrakenError, TransportFailure};
use lockout::FailureMemory;
use model::{Balance, Envelope, ServerTime, WithdrawMethods};
use reqwest::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

pub use nonce::{InProcessNonces, KeyId, NonceError, NonceLease, NonceSource};

const BALANCE_PATH: &str = "/0/private/Balance";
const WITHDRAW_METHODS_PATH: &str = "/0/private/WithdrawMethods";
const TIME_PATH: &str = "/0/public/Time";
/// Kraken requires a `User-Agent`.
const USER_AGENT_VALUE: &str = concat!("exchange-connections/", env!("CARGO_PKG_VERSION"));
const FORM: &str = "application/x-www-form-urlencoded";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// A balance body is small; anything far larger is not an answer we want to buffer.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Strings shorter than this are not scrubbed from messages (they would match
/// ordinary words); keys, secrets and signatures are far longer.
const MIN_SCRUB_LEN: usize = 8;
/// Balance and WithdrawMethods each add 1 to the key's call counter.
const CALL_COST: u32 = 1;
/// Said when a working key's trading right is reported as `false`.
pub const TRADING_UNVERIFIED: &str = "Kraken cannot report whether this key may trade, and it cannot be tested \
     without placing an order, so trading rights are shown as not granted. If you need trading, check that the key \
     has \"Create & Modify Orders\" in Kraken's API settings.";

/// The Kraken Spot client. Share it (`Arc`): its nonce order and its memory
/// of rejected credentials hold for the calls made through one instance.
pub struct KrakenClient {
    http: reqwest::Client,
    base_url: Url,
    timeout: Duration,
    egress_ips: Vec<String>,
    nonces: Arc<dyn NonceSource>,
    failures: FailureMemory,
    gate: Gate,
    /// The key's call counter (Kraken's tier).
    counter: Limit,
}

impl KrakenClient {
    /// `base_url`: scheme, host and port, no path (`https://api.kraken.com`).
    pub fn new(http: reqwest::Client, base_url: Url) -> Self {
        let store: Arc<dyn BudgetStore> = Arc::new(MemoryStore::new());
        Self {
            http,
            base_url,
            timeout: DEFAULT_TIMEOUT,
            egress_ips: Vec::new(),
            nonces: Arc::new(InProcessNonces::new()),
            failures: FailureMemory::new(store.clone()),
            gate: Gate::new("kraken", store),
            counter: KrakenTier::default().limit(),
        }
    }

    /// Per-request timeout (default 10 s); also bounds the wait for a key
    /// another call is using.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The service's egress IPs, quoted in hints about IP allowlists.
    pub fn with_egress_ips(mut self, egress_ips: Vec<String>) -> Self {
        self.egress_ips = egress_ips;
        self
    }

    /// Where call counters, Kraken's waits and nonces live (default: this
    /// process only); sets the nonce source to the store's.
    pub fn with_budget_store(mut self, store: Arc<dyn BudgetStore>) -> Self {
        self.nonces = store.nonces();
        self.failures = FailureMemory::new(store.clone());
        self.gate = Gate::new("kraken", store);
        self
    }

    /// The account's verification tier, which sets its keys' call counter
    /// (default Starter, the strictest).
    pub fn with_tier(self, tier: KrakenTier) -> Self {
        self.with_call_counter(tier.limit())
    }

    /// A call counter other than a tier's (e.g. for a load test).
    pub fn with_call_counter(mut self, counter: Limit) -> Self {
        self.counter = counter;
        self
    }

    /// Replaces the nonce source, e.g. with one shared by all replicas.
    pub fn with_nonce_source(mut self, nonces: Arc<dyn NonceSource>) -> Self {
        self.nonces = nonces;
        self
    }

    /// A signed private call, parsed as `T`. Holds the key's nonce lease until
    /// the answer is read and any failure remembered, so calls queued behind
    /// a rejected one are refused instead of repeating it.
    async fn private<T: DeserializeOwned>(
        &self,
        path: &'static str,
        credentials: &Credentials,
    ) -> Result<Reply<T>, Classified> {
        let key = KeyId::of(credentials.api_key.expose());
        let secret = self.failures.digest(credentials);
        self.failures.check(&key, &secret).await.map_err(|e| refused(path, e))?;
        let lease = match tokio::time::timeout(self.timeout, self.nonces.acquire(&key)).await {
            Ok(Ok(lease)) => lease,
            Ok(Err(error)) => {
                tracing::warn!(endpoint = path, %error, "kraken nonce source failed");
                return Err(refused(path, classify::nonce_unavailable()));
            }
            Err(_) => return Err(refused(path, classify::key_busy(self.timeout))),
        };
        self.failures.check(&key, &secret).await.map_err(|e| refused(path, e))?;

        let mut signature = String::new();
        let result = self.signed_post(path, credentials, lease.nonce(), &mut signature).await;
        let result = result.map_err(|mut failure| {
            let otp = credentials.passphrase.as_ref().map_or("", |p| p.expose());
            let sensitive = [
                credentials.api_key.expose(),
                credentials.api_secret.expose(),
                signature.as_str(),
                otp,
            ];
            failure.error = scrub(failure.error, &sensitive);
            failure
        });
        if let Err(failure) = &result {
            self.failures
                .record(&key, &secret, &failure.error, failure.kraken)
                .await;
        }
        drop(lease);
        result
    }

    async fn signed_post<T: DeserializeOwned>(
        &self,
        path: &'static str,
        credentials: &Credentials,
        nonce: u64,
        signature: &mut String,
    ) -> Result<Reply<T>, Classified> {
        let body = form_body(nonce, credentials.passphrase.as_ref());

        let private_key = signer::decode_private_key(credentials.api_secret.expose()).ok_or_else(|| {
            ExchangeError::new(
                ExchangeErrorCode::InvalidCredentials,
                "the private key is not base64 of 64 bytes",
            )
        })?;
        *signature = signer::api_sign(&private_key, path, nonce, &body);

        let mut api_key = HeaderValue::from_str(credentials.api_key.expose()).map_err(|_| {
            ExchangeError::new(
                ExchangeErrorCode::InvalidCredentials,
                "the API key contains characters that cannot be sent",
            )
        })?;
        api_key.set_sensitive(true);
        let mut api_sign = HeaderValue::from_str(signature)
            .map_err(|_| ExchangeError::new(ExchangeErrorCode::UnexpectedResponse, "the signature cannot be sent"))?;
        api_sign.set_sensitive(true);

        let request = self
            .http
            .post(self.url(path)?)
            .header("API-Key", api_key)
            .header("API-Sign", api_sign)
            .header(CONTENT_TYPE, FORM)
            .body(body);
        let mut budget = Budget::per_key("kraken", credentials.api_key.expose(), self.counter, CALL_COST);
        // `EAPI:Rate limit exceeded` names no wait: Kraken's counter is full,
        // and one call's worth must decay first.
        if let Limit::Decaying { decay_per_sec, .. } = self.counter {
            budget.default_hold = Duration::try_from_secs_f64(f64::from(CALL_COST) / decay_per_sec).ok();
        }
        self.call(path, &budget, request).await
    }

    fn url(&self, path: &str) -> Result<Url, ExchangeError> {
        self.base_url.join(path).map_err(|_| {
            ExchangeError::new(
                ExchangeErrorCode::NetworkError,
                "the configured Kraken base URL cannot be used to build a request",
            )
        })
    }

    /// Sends, reads and parses one request through the shared call gate
    /// (budget, Kraken's waits, metrics).
    async fn call<T: DeserializeOwned>(
        &self,
        path: &'static str,
        budget: &Budget,
        request: reqwest::RequestBuilder,
    ) -> Result<Reply<T>, Classified> {
        self.gate.run(path, budget, self.call_inner(path, request)).await
    }

    async fn call_inner<T: DeserializeOwned>(
        &self,
        path: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Reply<T>, Classified> {
        let started = Instant::now();
        let response = request
            .header(USER_AGENT, USER_AGENT_VALUE)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.transport(path, &e))?;
        let status = response.status().as_u16();
        let retry_after =
            classify::parse_retry_after(response.headers().get("retry-after").and_then(|v| v.to_str().ok()));
        let body = read_body(response, MAX_BODY_BYTES).await.map_err(|e| match e {
            BodyError::Transport(e) => self.transport(path, &e),
            BodyError::TooLarge => Classified::from(classify::unreadable(status)),
        })?;
        let elapsed = started.elapsed();
        tracing::debug!(
            endpoint = path,
            status,
            elapsed_ms = elapsed.as_millis() as u64,
            "kraken call"
        );

        let success = (200..300).contains(&status);
        let Ok(envelope) = serde_json::from_slice::<Envelope>(&body) else {
            return Err(if success {
                classify::unreadable(status).into()
            } else {
                classify::http_status(status, retry_after)
            });
        };
        let errors = envelope.errors();
        if !errors.is_empty() {
            let now = chrono::Utc::now().timestamp();
            return Err(classify::kraken_errors(
                &errors,
                status,
                retry_after,
                &self.egress_ips,
                now,
            ));
        }
        if !success {
            return Err(classify::http_status(status, retry_after));
        }
        let value = envelope
            .result
            .and_then(|result| serde_json::from_value(result).ok())
            .ok_or_else(|| classify::unreadable(status))?;
        Ok(Reply { value, elapsed })
    }

    fn transport(&self, path: &'static str, error: &reqwest::Error) -> Classified {
        let failure = TransportFailure::of(error);
        // Only the kind: reqwest's own Display would print the URL.
        tracing::debug!(
            endpoint = path,
            kind = failure.as_str(),
            "kraken call failed without an answer"
        );
        classify::transport_failure(failure, self.timeout).into()
    }
}

#[async_trait::async_trait]
impl ExchangeClient for KrakenClient {
    /// Lets a key Kraken rejected be used again (the user says it is fixed).
    /// Waits Kraken imposed stay: calling during a lockout extends it.
    fn forget_failure(&self, api_key: &SecretString) {
        self.failures.forget(&KeyId::of(api_key.expose()));
    }

    fn exchange(&self) -> Exchange {
        Exchange::Kraken
    }

    /// Production only: Kraken has no spot test environment.
    fn check_credentials(
        &self,
        environment: Environment,
        credentials: &Credentials,
    ) -> Result<(), CredentialShapeError> {
        shape::check(environment, credentials)
    }

    async fn test(&self, environment: Environment, credentials: &Credentials) -> Result<TestReport, ExchangeError> {
        // A malformed credential would only count towards a Kraken lockout.
        self.check_credentials(environment, credentials).map_err(|e| {
            ExchangeError::new(ExchangeErrorCode::InvalidCredentials, e.to_string())
                .with_hint(format!("Correct the {} field and try again.", e.field))
        })?;

        let balance = self
            .private::<Balance>(BALANCE_PATH, credentials)
            .await
            .map_err(|c| c.error)?;
        let can_withdraw = match self
            .private::<WithdrawMethods>(WITHDRAW_METHODS_PATH, credentials)
            .await
        {
            Ok(_) => true,
            Err(Classified {
                kraken: Some(KrakenError::PermissionDenied),
                ..
            }) => false,
            Err(c) => return Err(c.error),
        };
        Ok(TestReport {
            latency: balance.elapsed,
            permissions: Permissions {
                can_read: true,
                // Not probe-able without placing an order (exchanges.md §3).
                can_trade: false,
                can_withdraw,
                ip_restricted: None,
                trading_expires_at: None,
            },
            usage: None,
            warnings: vec![TRADING_UNVERIFIED.to_owned()],
        })
    }

    async fn server_time(
        &self,
        environment: Environment,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, ExchangeError> {
        if environment != Environment::Production {
            return Ok(None);
        }
        let request = self.http.get(self.url(TIME_PATH)?);
        let reply = self
            .call::<ServerTime>(TIME_PATH, &Budget::public("kraken"), request)
            .await
            .map_err(|c| c.error)?;
        chrono::DateTime::from_timestamp(reply.value.unixtime, 0)
            .map(Some)
            .ok_or_else(|| classify::unreadable(200))
    }
}

/// The POST data: `nonce=…`, then `otp=…` when the key has a two-factor password.
fn form_body(nonce: u64, otp: Option<&SecretString>) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("nonce", &nonce.to_string());
    if let Some(otp) = otp.filter(|p| !p.is_empty()) {
        form.append_pair("otp", otp.expose());
    }
    form.finish()
}

impl CallFailure for Classified {
    fn error(&self) -> &ExchangeError {
        &self.error
    }
}

/// A parsed answer without errors.
struct Reply<T> {
    value: T,
    elapsed: Duration,
}

/// A call not made: the key is remembered as rejected or waiting, or busy.
fn refused(path: &'static str, error: ExchangeError) -> Classified {
    metrics::counter!("exchange_calls_refused_total", "exchange" => "kraken", "endpoint" => path, "reason" => error.code.as_str())
        .increment(1);
    error.into()
}

fn scrub(error: ExchangeError, sensitive: &[&str]) -> ExchangeError {
    crate::exchange::common::scrub(error, sensitive, MIN_SCRUB_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_sensitive_values_but_not_short_ones() {
        let secret = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";
        let error = ExchangeError::new(
            ExchangeErrorCode::UnexpectedResponse,
            format!("Kraken said: bad {secret}"),
        )
        .with_hint(format!("check {secret}"));
        let scrubbed = scrub(error, &[secret, "", "bad"]);
        assert_eq!(scrubbed.message, "Kraken said: bad [REDACTED]");
        assert_eq!(scrubbed.hint.as_deref(), Some("check [REDACTED]"));
    }

    #[test]
    fn form_body_has_the_nonce_then_the_encoded_otp() {
        assert_eq!(form_body(42, None), "nonce=42");
        assert_eq!(form_body(42, Some(&SecretString::new(""))), "nonce=42");
        assert_eq!(
            form_body(1616492376594, Some(&SecretString::new("a b&c=d"))),
            "nonce=1616492376594&otp=a+b%26c%3Dd"
        );
    }

    #[test]
    fn user_agent_names_the_service() {
        assert!(USER_AGENT_VALUE.starts_with("exchange-connections/"));
        assert!(HeaderValue::from_str(USER_AGENT_VALUE).is_ok());
    }
}
