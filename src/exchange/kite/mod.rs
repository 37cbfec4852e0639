//! Zerodha Kite Connect v3 client. Kite has no long-lived credential: the
//! account holder logs in on Kite's page ([`KiteClient::login_url`]), Kite
//! redirects back with a one-time request token, and
//! [`KiteClient::create_session`] trades it for an access token that lasts
//! until the next 06:00 IST. `test()` then reads `GET /user/profile` with
//! that token. Production only: Kite has no sandbox. Facts: exchanges.md §4.
//!
//! What leaves this module never holds the API secret, the checksum, the
//! request or access token, or the `Authorization` header: errors are built
//! from status and Kite's error body only, logs and metrics name the path,
//! and a final scrub removes any echo.

/// Public for the benchmarks in `benches/`.
pub mod classify;
mod model;
/// Public for the benchmarks in `benches/`.
pub mod session;
mod shape;

use crate::crypto::SecretString;
use crate::domain::{Environment, Exchange, ExchangeErrorCode, Permissions};
use crate::exchange::budget::{Budget, KITE_PER_KEY};
use crate::exchange::call::Gate;
use crate::exchange::common::{BodyError, read_body};
use crate::exchange::shared::{BudgetStore, memory::MemoryStore};
use crate::exchange::{CredentialShapeError, Credentials, ExchangeClient, ExchangeError, TestReport};
use classify::{Call, TransportFailure};
use model::{Profile, Session, Success};
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;
use zeroize::Zeroizing;

pub use session::{KiteSession, check_request_token, next_kite_expiry};

const SESSION_PATH: &str = "/session/token";
const PROFILE_PATH: &str = "/user/profile";
const VERSION_HEADER: &str = "X-Kite-Version";
const API_VERSION: &str = "3";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Kite's session and profile answers are about 1 KiB.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Strings shorter than this are not scrubbed from messages (they would
/// match ordinary words); it is the shortest key or secret accepted.
const MIN_SCRUB_LEN: usize = 6;

/// The Kite Connect client. Cheap to clone the `reqwest::Client` it holds.
pub struct KiteClient {
    http: reqwest::Client,
    base_url: Url,
    login_page: Url,
    timeout: Duration,
    egress_ips: Vec<String>,
    /// 10 requests/s per API key and Kite's `Retry-After`s.
    gate: Gate,
}

impl KiteClient {
    /// `base_url` is the API's (scheme, host, port; no path), e.g.
    /// `https://api.kite.trade`; `login_url` is the full login page, e.g.
    /// `https://kite.zerodha.com/connect/login`.
    pub fn new(http: reqwest::Client, base_url: Url, login_url: Url) -> Self {
        Self {
            http,
            base_url,
            login_page: login_url,
            timeout: DEFAULT_TIMEOUT,
            egress_ips: Vec::new(),
            gate: Gate::new("kite", Arc::new(MemoryStore::new())),
        }
    }

    /// Per-request timeout (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The service's egress IPs, quoted in the reminder to whitelist them for
    /// order placement.
    pub fn with_egress_ips(mut self, egress_ips: Vec<String>) -> Self {
        self.egress_ips = egress_ips;
        self
    }

    /// Where per-key budgets and held `Retry-After`s live (default: this
    /// process only).
    pub fn with_budget_store(mut self, store: Arc<dyn BudgetStore>) -> Self {
        self.gate = Gate::new("kite", store);
        self
    }

    /// Where to send the account holder to log in: the login page with `v=3`,
    /// `api_key`, and `redirect_params=state=<state>`, which Kite appends to
    /// the redirect back to us.
    pub fn login_url(&self, api_key: &str, state: &str) -> Url {
        session::login_url(&self.login_page, api_key, state)
    }

    /// `POST /session/token`: trades the request token from Kite's redirect
    /// for a session. The request token works once and only for minutes.
    pub async fn create_session(
        &self,
        api_key: &SecretString,
        api_secret: &SecretString,
        request_token: &str,
    ) -> Result<KiteSession, ExchangeError> {
        shape::check_api_key(api_key.expose())
            .and_then(|()| shape::check_api_secret(api_secret.expose()))
            .and_then(|()| check_request_token(request_token))
            .map_err(shape_error)?;

        let checksum = session::checksum(api_key.expose(), request_token, api_secret);
        let sensitive = [api_key.expose(), api_secret.expose(), request_token, checksum.expose()];
        let request = self.http.post(self.url(SESSION_PATH)?).form(&[
            ("api_key", api_key.expose()),
            ("request_token", request_token),
            ("checksum", checksum.expose()),
        ]);
        let reply = self
            .call::<Session>(SESSION_PATH, Call::CreateSession, api_key, request, &sensitive)
            .await?;
        // The token goes into an `Authorization` header on every later call.
        let token = reply.value.access_token.expose();
        if token.is_empty() || HeaderValue::from_str(token).is_err() {
            return Err(classify::unreadable_success(reply.status));
        }
        Ok(KiteSession {
            access_token: reply.value.access_token,
            user_id: reply.value.user_id,
            expires_at: next_kite_expiry(chrono::Utc::now()),
        })
    }

    /// `GET /user/profile` with `Authorization: token <api_key>:<access_token>`.
    async fn profile(
        &self,
        credentials: &Credentials,
        access_token: &SecretString,
    ) -> Result<Reply<Profile>, ExchangeError> {
        let authorization = Zeroizing::new(format!(
            "token {}:{}",
            credentials.api_key.expose(),
            access_token.expose()
        ));
        let mut header = HeaderValue::from_str(&authorization).map_err(|_| {
            ExchangeError::new(
                ExchangeErrorCode::TokenExpired,
                "the stored Kite session token cannot be sent",
            )
            .with_hint("Log in with Kite again (beginKiteLogin) to get a new session.")
        })?;
        header.set_sensitive(true);
        let request = self.http.get(self.url(PROFILE_PATH)?).header(AUTHORIZATION, header);
        let sensitive = [
            credentials.api_key.expose(),
            credentials.api_secret.expose(),
            access_token.expose(),
            authorization.as_str(),
        ];
        self.call(
            PROFILE_PATH,
            Call::Authenticated,
            &credentials.api_key,
            request,
            &sensitive,
        )
        .await
    }

    fn url(&self, path: &str) -> Result<Url, ExchangeError> {
        self.base_url.join(path).map_err(|_| {
            ExchangeError::new(
                ExchangeErrorCode::NetworkError,
                "the configured Kite base URL cannot be used to build a request",
            )
        })
    }

    /// Sends `request` with the API version header and parses the `data` of
    /// a success as `T`, through the shared call gate (the API key's budget,
    /// held `Retry-After`, metrics).
    async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        kind: Call,
        api_key: &SecretString,
        request: reqwest::RequestBuilder,
        sensitive: &[&str],
    ) -> Result<Reply<T>, ExchangeError> {
        let budget = Budget::per_key("kite", api_key.expose(), KITE_PER_KEY, 1);
        let result = self
            .gate
            .run(endpoint, &budget, self.call_inner(endpoint, kind, request))
            .await;
        result.map_err(|e| scrub(e, sensitive))
    }

    async fn call_inner<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        kind: Call,
        request: reqwest::RequestBuilder,
    ) -> Result<Reply<T>, ExchangeError> {
        let started = Instant::now();
        let sent = request
            .header(VERSION_HEADER, API_VERSION)
            .timeout(self.timeout)
            .send()
            .await;
        let response = sent.map_err(|e| self.transport(endpoint, &e))?;
        let status = response.status().as_u16();
        let retry_after =
            classify::parse_retry_after(response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()));
        let body = read_body(response, MAX_BODY_BYTES).await.map_err(|e| match e {
            BodyError::Transport(e) => self.transport(endpoint, &e),
            BodyError::TooLarge => classify::unreadable_success(status),
        })?;
        let elapsed = started.elapsed();
        tracing::debug!(endpoint, status, elapsed_ms = elapsed.as_millis() as u64, "kite call");

        if !(200..300).contains(&status) {
            return Err(classify::http_failure(kind, status, retry_after, &body));
        }
        let parsed = serde_json::from_slice::<Success<T>>(&body)
            .ok()
            .filter(Success::is_success)
            .ok_or_else(|| classify::unreadable_success(status))?;
        Ok(Reply {
            value: parsed.data,
            status,
            elapsed,
        })
    }

    fn transport(&self, endpoint: &'static str, error: &reqwest::Error) -> ExchangeError {
        let failure = TransportFailure::of(error);
        // Only the kind: reqwest's own Display may print the URL.
        tracing::debug!(endpoint, kind = failure.as_str(), "kite call failed without an answer");
        classify::transport_failure(failure, self.timeout)
    }

    /// Kite cannot say whether order placement would pass its static-IP rule
    /// (only order endpoints check it), so a key that can trade gets a reminder.
    fn warnings(&self, can_trade: bool) -> Vec<String> {
        if !can_trade {
            return Vec::new();
        }
        let ips = match self.egress_ips.as_slice() {
            [] => "this service's egress IP address is".to_owned(),
            [ip] => format!("{ip} is"),
            ips => format!("{} are", ips.join(", ")),
        };
        vec![format!(
            "Kite rejects orders from IP addresses that are not registered for the developer account, and cannot \
             report them: make sure {ips} registered in the Kite developer console (Profile → IP Whitelist)."
        )]
    }
}

#[async_trait::async_trait]
impl ExchangeClient for KiteClient {
    fn requires_login(&self) -> bool {
        true
    }

    fn exchange(&self) -> Exchange {
        Exchange::Zerodha
    }

    fn check_credentials(
        &self,
        environment: Environment,
        credentials: &Credentials,
    ) -> Result<(), CredentialShapeError> {
        shape::check(environment, credentials)
    }

    async fn test(&self, environment: Environment, credentials: &Credentials) -> Result<TestReport, ExchangeError> {
        self.check_credentials(environment, credentials).map_err(shape_error)?;
        let access_token = credentials
            .access_token
            .as_ref()
            .filter(|t| !t.is_empty())
            .ok_or_else(classify::no_session)?;

        let reply = self.profile(credentials, access_token).await?;
        let can_trade = reply.value.can_trade();
        Ok(TestReport {
            latency: reply.elapsed,
            permissions: Permissions {
                // The profile call itself worked.
                can_read: true,
                can_trade,
                // The Kite Connect API has no withdrawal endpoint.
                can_withdraw: false,
                ip_restricted: None,
                // Every session, and with it the right to trade, ends at the
                // next 06:00 IST.
                trading_expires_at: can_trade.then(|| next_kite_expiry(chrono::Utc::now())),
            },
            usage: None,
            warnings: self.warnings(can_trade),
        })
    }

    /// Kite has no public time endpoint.
    async fn server_time(
        &self,
        _environment: Environment,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, ExchangeError> {
        Ok(None)
    }
}

/// A parsed 2xx answer's `data`.
struct Reply<T> {
    value: T,
    status: u16,
    elapsed: Duration,
}

/// A malformed input, refused before any call.
fn shape_error(e: CredentialShapeError) -> ExchangeError {
    ExchangeError::new(ExchangeErrorCode::InvalidCredentials, e.to_string())
        .with_hint(format!("Correct the {} field and try again.", e.field))
}

fn scrub(error: ExchangeError, sensitive: &[&str]) -> ExchangeError {
    crate::exchange::common::scrub(error, sensitive, MIN_SCRUB_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_sensitive_values_but_not_short_ones() {
        let token = "kR3mVn6Yh2pQ8sT1uW4xZ7aB9cD0eF5g";
        let error = ExchangeError::new(
            ExchangeErrorCode::UnexpectedResponse,
            format!("Kite said: bad token {token}"),
        )
        .with_hint(format!("check token {token}"));
        let scrubbed = scrub(error, &[token, "", "bad", "token"]);
        assert_eq!(scrubbed.message, "Kite said: bad token [REDACTED]");
        assert_eq!(scrubbed.hint.as_deref(), Some("check token [REDACTED]"));
    }

    #[test]
    fn the_trading_reminder_names_the_egress_ips() {
        let url = Url::parse("http://127.0.0.1:9/").unwrap();
        let client = KiteClient::new(reqwest::Client::new(), url.clone(), url);
        assert!(client.warnings(false).is_empty());
        assert!(client.warnings(true)[0].contains("this service's egress IP address"));
        let client = client.with_egress_ips(vec!["203.0.113.5".to_owned(), "2001:db8::5".to_owned()]);
        assert!(client.warnings(true)[0].contains("203.0.113.5, 2001:db8::5 are registered"));
    }
}
