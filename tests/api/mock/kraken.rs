//! Mock Kraken Spot REST API on a local port. It checks private requests as
//! Kraken documents (docs.kraken.com spot-rest-auth, exchanges.md §3): a
//! `User-Agent`, a known `API-Key`, `API-Sign` = base64(HMAC-SHA512(key =
//! base64-decoded private key, msg = path ‖ SHA-256(nonce ‖ POST body))), and
//! a nonce strictly greater than the last one accepted for the key. It
//! answers HTTP 200 with `{"error":[…],"result":…}` like Kraken, and can be
//! told to fail the way Kraken fails (lockout, rate limits, throttling,
//! maintenance, 5xx, junk, hangs).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use url::Url;

/// What a key may do: Query Funds (Balance) and Withdraw Funds (WithdrawMethods).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockKrakenPerms {
    pub query_funds: bool,
    pub withdraw: bool,
}

impl Default for MockKrakenPerms {
    /// Query Funds only.
    fn default() -> Self {
        Self {
            query_funds: true,
            withdraw: false,
        }
    }
}

/// A failure applied to every following request until cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockKrakenFailure {
    /// `EGeneral:Temporary lockout` on private calls.
    Lockout,
    /// `EAPI:Rate limit exceeded` on private calls.
    RateLimited,
    /// `EService: Throttled: <until>` (Unix seconds) on private calls.
    Throttled { until: i64 },
    /// `EService:Unavailable` on every call.
    Unavailable,
    /// HTTP 429 with `Retry-After` and `EAPI:Rate limit exceeded`, on every call.
    TooManyRequests { retry_after_secs: u64 },
    /// HTTP 502 with an HTML page, as Kraken's edge answers.
    ServerError,
    /// HTTP 200 with a body that is not JSON.
    Garbage,
    /// Never answers in time (sleeps 60 s, longer than any client timeout).
    Hang,
}

/// One request the mock received, for assertions.
#[derive(Debug, Clone)]
pub struct MockKrakenRequest {
    pub method: String,
    pub path: String,
    pub api_key: Option<String>,
    pub api_sign: Option<String>,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
    /// The raw form body.
    pub body: String,
    /// `nonce` from the body, if it parsed.
    pub nonce: Option<u64>,
    /// `otp` from the body, if sent.
    pub otp: Option<String>,
    /// The HTTP status answered (0 for a request left hanging).
    pub status: u16,
    /// The `error` array answered.
    pub errors: Vec<String>,
    pub ok: bool,
}

pub struct MockKraken {
    pub base_url: Url,
    state: Arc<Mutex<MockState>>,
}

struct MockState {
    keys: HashMap<String, MockKey>,
    failure: Option<MockKrakenFailure>,
    requests: Vec<MockKrakenRequest>,
    /// `Some` freezes the clock served by `/0/public/Time` (Unix seconds).
    frozen_now: Option<i64>,
    /// Each request waits a random time up to this before being handled, so
    /// requests sent concurrently may be handled out of order.
    jitter: Option<Duration>,
}

struct MockKey {
    secret_b64: String,
    perms: MockKrakenPerms,
    otp: Option<String>,
    /// The last accepted nonce; Kraken resets it only with a new key pair.
    last_nonce: Option<u64>,
}

type Shared = Arc<Mutex<MockState>>;

impl MockKraken {
    pub async fn start() -> MockKraken {
        let state = Arc::new(Mutex::new(MockState {
            keys: HashMap::new(),
            failure: None,
            requests: Vec::new(),
            frozen_now: None,
            jitter: None,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock Kraken");
        let addr = listener.local_addr().expect("mock Kraken address");
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let base_url = Url::parse(&format!("http://{addr}/")).expect("mock Kraken URL");
        MockKraken { base_url, state }
    }

    /// `secret_b64` is the private key as Kraken shows it (base64).
    pub fn add_key(&self, api_key: &str, secret_b64: &str, perms: MockKrakenPerms) {
        self.lock().keys.insert(
            api_key.to_owned(),
            MockKey {
                secret_b64: secret_b64.to_owned(),
                perms,
                otp: None,
                last_nonce: None,
            },
        );
    }

    /// Protects a key with a two-factor static password (`otp` in the body).
    pub fn set_otp(&self, api_key: &str, otp: Option<&str>) {
        if let Some(key) = self.lock().keys.get_mut(api_key) {
            key.otp = otp.map(str::to_owned);
        }
    }

    /// Sets the last accepted nonce, as if another application used the key.
    pub fn set_last_nonce(&self, api_key: &str, nonce: u64) {
        if let Some(key) = self.lock().keys.get_mut(api_key) {
            key.last_nonce = Some(nonce);
        }
    }

    /// The key was deleted at the exchange: further requests get `EAPI:Invalid key`.
    pub fn remove_key(&self, api_key: &str) {
        self.lock().keys.remove(api_key);
    }

    pub fn set_failure(&self, failure: Option<MockKrakenFailure>) {
        self.lock().failure = failure;
    }

    /// Freezes the clock `/0/public/Time` serves, or unfreezes it with `None`.
    pub fn set_server_time(&self, unix: Option<i64>) {
        self.lock().frozen_now = unix;
    }

    /// Delays each request by a random time up to `max`, like a network
    /// would, so that only requests serialized by the client arrive in order.
    pub fn set_jitter(&self, max: Option<Duration>) {
        self.lock().jitter = max;
    }

    pub fn requests(&self) -> Vec<MockKrakenRequest> {
        self.lock().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.lock().requests.len()
    }

    fn lock(&self) -> MutexGuard<'_, MockState> {
        lock(&self.state)
    }
}

fn lock(state: &Shared) -> MutexGuard<'_, MockState> {
    // A panicking test thread must not hide the mock's state from the others.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Kraken's `API-Sign`, computed independently of the client's signer.
pub fn api_sign(secret_b64: &str, path: &str, nonce: &str, body: &str) -> Option<String> {
    let key = STANDARD.decode(secret_b64).ok()?;
    let inner = Sha256::digest(format!("{nonce}{body}").as_bytes());
    let mut message = path.as_bytes().to_vec();
    message.extend_from_slice(&inner);
    let mut mac = Hmac::<Sha512>::new_from_slice(&key).ok()?;
    mac.update(&message);
    Some(STANDARD.encode(mac.finalize().into_bytes()))
}

/// One answer: status, the `error` array (if a Kraken envelope), body.
struct Answer {
    status: StatusCode,
    errors: Vec<String>,
    body: String,
    content_type: &'static str,
    retry_after_secs: Option<u64>,
}

impl Answer {
    fn result(result: Value) -> Self {
        Self {
            status: StatusCode::OK,
            errors: vec![],
            body: json!({ "error": [], "result": result }).to_string(),
            content_type: "application/json",
            retry_after_secs: None,
        }
    }

    /// Kraken reports errors with HTTP 200 and an empty result.
    fn error(error: impl Into<String>) -> Self {
        let error = error.into();
        Self {
            status: StatusCode::OK,
            body: json!({ "error": [error], "result": {} }).to_string(),
            errors: vec![error],
            content_type: "application/json",
            retry_after_secs: None,
        }
    }

    fn plain(status: StatusCode, body: &str, content_type: &'static str) -> Self {
        Self {
            status,
            errors: vec![],
            body: body.to_owned(),
            content_type,
            retry_after_secs: None,
        }
    }
}

/// The parts of a request the mock looks at.
struct Incoming {
    method: Method,
    path: String,
    api_key: Option<String>,
    api_sign: Option<String>,
    user_agent: Option<String>,
    content_type: Option<String>,
    body: String,
}

impl Incoming {
    fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.body.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let incoming = Incoming {
        method,
        path: uri.path().to_owned(),
        api_key: header("api-key"),
        api_sign: header("api-sign"),
        user_agent: header("user-agent"),
        content_type: header("content-type"),
        body: String::from_utf8_lossy(&body).into_owned(),
    };

    let jitter = lock(&state).jitter;
    if let Some(max) = jitter.filter(|max| !max.is_zero()) {
        tokio::time::sleep(rand::random_range(Duration::ZERO..max)).await;
    }
    let answer = {
        let mut s = lock(&state);
        let hang = s.failure == Some(MockKrakenFailure::Hang);
        let answer = if hang { None } else { Some(s.answer(&incoming)) };
        let record = MockKrakenRequest {
            method: incoming.method.to_string(),
            path: incoming.path.clone(),
            api_key: incoming.api_key.clone(),
            api_sign: incoming.api_sign.clone(),
            user_agent: incoming.user_agent.clone(),
            content_type: incoming.content_type.clone(),
            nonce: incoming.param("nonce").and_then(|n| n.parse().ok()),
            otp: incoming.param("otp"),
            body: incoming.body.clone(),
            status: answer.as_ref().map_or(0, |a| a.status.as_u16()),
            errors: answer.as_ref().map_or_else(Vec::new, |a| a.errors.clone()),
            ok: answer
                .as_ref()
                .is_some_and(|a| a.status.is_success() && a.errors.is_empty()),
        };
        s.requests.push(record);
        answer
    };
    let Some(answer) = answer else {
        tokio::time::sleep(Duration::from_secs(60)).await;
        return StatusCode::GATEWAY_TIMEOUT.into_response();
    };

    let mut response = (answer.status, answer.body).into_response();
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(answer.content_type));
    if let Some(secs) = answer.retry_after_secs {
        response.headers_mut().insert("retry-after", HeaderValue::from(secs));
    }
    response
}

impl MockState {
    fn now(&self) -> i64 {
        self.frozen_now.unwrap_or_else(|| chrono::Utc::now().timestamp())
    }

    fn answer(&mut self, req: &Incoming) -> Answer {
        if req.user_agent.as_deref().is_none_or(str::is_empty) {
            // Kraken's edge refuses requests without a User-Agent.
            return Answer::plain(StatusCode::FORBIDDEN, "error code: 1010", "text/plain");
        }
        match self.failure {
            Some(MockKrakenFailure::Unavailable) => return Answer::error("EService:Unavailable"),
            Some(MockKrakenFailure::TooManyRequests { retry_after_secs }) => {
                let mut answer = Answer::error("EAPI:Rate limit exceeded");
                answer.status = StatusCode::TOO_MANY_REQUESTS;
                answer.retry_after_secs = Some(retry_after_secs);
                return answer;
            }
            Some(MockKrakenFailure::ServerError) => {
                return Answer::plain(
                    StatusCode::BAD_GATEWAY,
                    "<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>",
                    "text/html",
                );
            }
            Some(MockKrakenFailure::Garbage) => {
                return Answer::plain(
                    StatusCode::OK,
                    "<html><body>Kraken is down for scheduled maintenance</body></html>",
                    "text/html",
                );
            }
            _ => {}
        }
        let private = match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/0/public/Time") => {
                let now = self.now();
                let rfc1123 = chrono::DateTime::from_timestamp(now, 0)
                    .map(|t| t.format("%a, %d %b %y %H:%M:%S +0000").to_string())
                    .unwrap_or_default();
                return Answer::result(json!({ "unixtime": now, "rfc1123": rfc1123 }));
            }
            ("POST", "/0/private/Balance") => Private::Balance,
            ("POST", "/0/private/WithdrawMethods") => Private::WithdrawMethods,
            (_, "/0/public/Time" | "/0/private/Balance" | "/0/private/WithdrawMethods") => {
                return Answer::error("EGeneral:Invalid arguments");
            }
            _ => return Answer::error("EGeneral:Unknown method"),
        };
        match self.failure {
            Some(MockKrakenFailure::Lockout) => return Answer::error("EGeneral:Temporary lockout"),
            Some(MockKrakenFailure::RateLimited) => return Answer::error("EAPI:Rate limit exceeded"),
            Some(MockKrakenFailure::Throttled { until }) => {
                return Answer::error(format!("EService: Throttled: {until}"));
            }
            _ => {}
        }
        let perms = match self.authenticate(req) {
            Ok(perms) => perms,
            Err(answer) => return answer,
        };
        match private {
            Private::Balance if perms.query_funds => Answer::result(json!({
                "ZUSD": "171288.6158",
                "XXBT": "0.5000000000",
                "XETH": "12.4100000000"
            })),
            Private::WithdrawMethods if perms.withdraw => Answer::result(json!([
                { "asset": "XXBT", "method": "Bitcoin", "network": "Bitcoin", "minimum": "0.0004" },
                { "asset": "ZUSD", "method": "Bank Frick (SWIFT)", "network": null, "minimum": "10" }
            ])),
            _ => Answer::error("EGeneral:Permission denied"),
        }
    }

    /// Kraken's checks, in order: content type, key, signature, nonce, otp.
    fn authenticate(&mut self, req: &Incoming) -> Result<MockKrakenPerms, Answer> {
        let form = req
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if !form {
            return Err(Answer::error("EGeneral:Invalid arguments"));
        }
        let Some(key) = req.api_key.as_deref().and_then(|k| self.keys.get_mut(k)) else {
            return Err(Answer::error("EAPI:Invalid key"));
        };
        let nonce_text = req.param("nonce").unwrap_or_default();
        let expected = api_sign(&key.secret_b64, &req.path, &nonce_text, &req.body);
        if expected.is_none() || req.api_sign != expected {
            return Err(Answer::error("EAPI:Invalid signature"));
        }
        let nonce = match nonce_text.parse::<u64>() {
            Ok(n) if key.last_nonce.is_none_or(|last| n > last) => n,
            _ => return Err(Answer::error("EAPI:Invalid nonce")),
        };
        key.last_nonce = Some(nonce);
        if let Some(otp) = &key.otp
            && req.param("otp").as_ref() != Some(otp)
        {
            return Err(Answer::error("EAPI:Invalid otp"));
        }
        Ok(key.perms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Private {
    Balance,
    WithdrawMethods,
}
