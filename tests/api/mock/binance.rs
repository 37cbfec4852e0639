//! Mock Binance Spot REST API on a local port. It checks requests as Binance
//! documents (rest-api.md, errors.md): the `X-MBX-APIKEY` header, `timestamp`
//! within `recvWindow` of its clock, and the `signature` over the query
//! string before `&signature=` concatenated with the body: hex HMAC-SHA256
//! for HMAC keys; base64, percent-encoded, Ed25519 or RSASSA-PKCS1-v1_5
//! SHA-256 for asymmetric keys (verified with the registered public key; a
//! raw `+`, `/` or `=` is refused, so clients must percent-encode). Its
//! clock can run ahead or behind. It answers with Binance's real error
//! bodies and weight headers, and can be told to fail the way Binance fails
//! (5xx, 429, 418, WAF 403, -2015, -1021, junk, hangs). `start_testnet()`
//! has no `/sapi` routes, like the real testnet.

use aws_lc_rs::signature::{ED25519, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey, VerificationAlgorithm};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use url::Url;

/// What a key may do. On the testnet (no `/sapi`) the account's
/// `canTrade`/`canWithdraw` are taken from `spot_trading`/`withdrawals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockPermissions {
    pub reading: bool,
    pub spot_trading: bool,
    pub withdrawals: bool,
    pub ip_restrict: bool,
}

impl Default for MockPermissions {
    /// Reading and spot trading, no withdrawals, IP restricted.
    fn default() -> Self {
        Self {
            reading: true,
            spot_trading: true,
            withdrawals: false,
            ip_restrict: true,
        }
    }
}

/// A failure applied to every following request until cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockFailure {
    /// 503 with `{"code":-1008,…}` (server busy).
    ServerError,
    /// 429 with `Retry-After` and `{"code":-1003,…}`.
    RateLimited { retry_after_secs: u64 },
    /// 418 with `Retry-After` and the "IP banned until" `-1003` body.
    IpBanned { retry_after_secs: u64 },
    /// 403 with an HTML page, as Binance's web application firewall answers.
    WafBlocked,
    /// 401 `-2015` for every signed request, whatever the key.
    IpNotAllowed,
    /// 200 with a body that is not JSON.
    Garbage,
    /// Never answers in time (sleeps 60 s, longer than any client timeout).
    Hang,
    /// Only `/sapi/v1/account/apiRestrictions` fails, with 401 `-2015`;
    /// `/api` keeps working (a key that cannot show its restrictions).
    RestrictionsDenied,
    /// 400 `-1021` for every signed request from a known key, whatever its
    /// timestamp (a clock that cannot be agreed with).
    RejectTimestamps,
}

/// One request the mock received, for assertions.
#[derive(Debug, Clone)]
pub struct MockRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, signature included.
    pub query: String,
    /// The `X-MBX-APIKEY` header, if sent.
    pub api_key: Option<String>,
    /// The HTTP status answered (0 for a request left hanging).
    pub status: u16,
    /// Binance's error code in the answer, if any.
    pub error_code: Option<i64>,
    pub ok: bool,
}

pub struct MockBinance {
    pub base_url: Url,
    state: Arc<Mutex<MockState>>,
}

struct MockState {
    testnet: bool,
    keys: HashMap<String, MockKey>,
    failure: Option<MockFailure>,
    requests: Vec<MockRequest>,
    /// `Some` freezes the mock's clock (Unix ms); `None` follows the real one.
    frozen_now_ms: Option<i64>,
    /// How far the (unfrozen) clock runs ahead of the real one, in ms.
    clock_offset_ms: i64,
    /// `tradingAuthorityExpirationTime` in `apiRestrictions`, when set.
    trading_expiration_ms: Option<i64>,
    /// Requests with these API keys wait this long before being answered.
    held: HashMap<String, Duration>,
    /// Request weight used in the current minute, per limit family.
    api_weight: WeightWindow,
    sapi_weight: WeightWindow,
}

struct MockKey {
    verifier: Verifier,
    permissions: MockPermissions,
}

/// What checks a key's signatures.
enum Verifier {
    /// The shared secret.
    Hmac(String),
    /// The raw 32-byte public key.
    Ed25519(Vec<u8>),
    /// The public key as DER (PKCS#1 `RSAPublicKey` or X.509 SPKI).
    Rsa(Vec<u8>),
}

impl Verifier {
    fn verify(&self, payload: &str, signature: &str) -> bool {
        let asymmetric = |algorithm: &'static dyn VerificationAlgorithm, public: &[u8]| {
            decode_base64_param(signature).is_some_and(|signature| {
                UnparsedPublicKey::new(algorithm, public)
                    .verify(payload.as_bytes(), &signature)
                    .is_ok()
            })
        };
        match self {
            // Binance accepts the hex signature in any letter case.
            Self::Hmac(secret) => signature.eq_ignore_ascii_case(&hmac_hex(secret, payload)),
            Self::Ed25519(public) => asymmetric(&ED25519, public),
            Self::Rsa(public) => asymmetric(&RSA_PKCS1_2048_8192_SHA256, public),
        }
    }
}

#[derive(Default)]
struct WeightWindow {
    minute: i64,
    used: u32,
}

impl WeightWindow {
    fn add(&mut self, now_ms: i64, weight: u32) -> u32 {
        let minute = now_ms / 60_000;
        if minute != self.minute {
            *self = Self { minute, used: 0 };
        }
        self.used += weight;
        self.used
    }
}

type Shared = Arc<Mutex<MockState>>;

impl MockBinance {
    /// Production-like: `/api` and `/sapi` routes.
    pub async fn start() -> MockBinance {
        Self::start_with(false).await
    }

    /// Testnet-like: `/api` only; `/sapi` answers 404.
    pub async fn start_testnet() -> MockBinance {
        Self::start_with(true).await
    }

    async fn start_with(testnet: bool) -> MockBinance {
        let state = Arc::new(Mutex::new(MockState {
            testnet,
            keys: HashMap::new(),
            failure: None,
            requests: Vec::new(),
            frozen_now_ms: None,
            clock_offset_ms: 0,
            trading_expiration_ms: None,
            held: HashMap::new(),
            api_weight: WeightWindow::default(),
            sapi_weight: WeightWindow::default(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock Binance");
        let addr = listener.local_addr().expect("mock Binance address");
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let base_url = Url::parse(&format!("http://{addr}/")).expect("mock Binance URL");
        MockBinance { base_url, state }
    }

    pub fn add_hmac_key(&self, api_key: &str, secret: &str, perms: MockPermissions) {
        self.add_key(api_key, Verifier::Hmac(secret.to_owned()), perms);
    }

    /// An Ed25519 key: `public_key` is the raw 32-byte public key.
    pub fn add_ed25519_key(&self, api_key: &str, public_key: &[u8], perms: MockPermissions) {
        self.add_key(api_key, Verifier::Ed25519(public_key.to_vec()), perms);
    }

    /// An RSA key: `public_key_der` is PKCS#1 `RSAPublicKey` or X.509 SPKI DER.
    pub fn add_rsa_key(&self, api_key: &str, public_key_der: &[u8], perms: MockPermissions) {
        self.add_key(api_key, Verifier::Rsa(public_key_der.to_vec()), perms);
    }

    fn add_key(&self, api_key: &str, verifier: Verifier, permissions: MockPermissions) {
        self.lock()
            .keys
            .insert(api_key.to_owned(), MockKey { verifier, permissions });
    }

    /// The key was deleted at the exchange: further requests get -2015.
    pub fn remove_key(&self, api_key: &str) {
        self.lock().keys.remove(api_key);
    }

    pub fn set_failure(&self, failure: Option<MockFailure>) {
        self.lock().failure = failure;
    }

    /// Freezes the mock's clock at `now_ms` (Unix ms), or unfreezes it with
    /// `None`. Lets tests replay the documentation's signed examples and
    /// provoke -1021 clock-skew answers.
    pub fn set_server_time_ms(&self, now_ms: Option<i64>) {
        self.lock().frozen_now_ms = now_ms;
    }

    /// Makes the mock's clock run `offset_ms` ahead of the real one
    /// (negative: behind), as a Binance whose clock differs from ours.
    pub fn set_clock_offset_ms(&self, offset_ms: i64) {
        self.lock().clock_offset_ms = offset_ms;
    }

    /// Adds `tradingAuthorityExpirationTime` (Unix ms) to `apiRestrictions`
    /// answers, as Binance does for keys whose trading right lapses.
    pub fn set_trading_expiration_ms(&self, at_ms: Option<i64>) {
        self.lock().trading_expiration_ms = at_ms;
    }

    /// Holds every request made with `api_key` for `delay` before answering
    /// it (`None` stops holding new ones), as a slow exchange would.
    pub fn hold_key(&self, api_key: &str, delay: Option<Duration>) {
        let mut state = self.lock();
        match delay {
            Some(delay) => state.held.insert(api_key.to_owned(), delay),
            None => state.held.remove(api_key),
        };
    }

    pub fn request_count(&self) -> usize {
        self.lock().requests.len()
    }

    pub fn requests(&self) -> Vec<MockRequest> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> MutexGuard<'_, MockState> {
        lock(&self.state)
    }
}

fn lock(state: &Shared) -> MutexGuard<'_, MockState> {
    // A panicking test thread must not hide the mock's state from the others.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The signature Binance expects: hex HMAC-SHA256(secret, query ‖ body).
pub fn hmac_hex(secret: &str, payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// An asymmetric signature parameter: base64, then percent-encoded. Raw
/// base64 punctuation is refused: Binance would read a raw `+` as a space.
pub fn decode_base64_param(value: &str) -> Option<Vec<u8>> {
    if value.bytes().any(|b| matches!(b, b'+' | b'/' | b'=')) {
        return None;
    }
    let base64 = percent_decode_str(value).decode_utf8().ok()?;
    STANDARD.decode(base64.as_bytes()).ok()
}

/// Splits a signed request into (signed payload, signature): the signature is
/// the last parameter of the query string or of the body, and the payload is
/// everything before it, query string and body concatenated without separator.
pub fn signed_payload(query: &str, body: &str) -> Option<(String, String)> {
    fn cut(part: &str) -> Option<(&str, &str)> {
        if let Some(sig) = part.strip_prefix("signature=") {
            return Some(("", sig));
        }
        let at = part.find("&signature=")?;
        Some((&part[..at], &part[at + "&signature=".len()..]))
    }
    if let Some((before, sig)) = cut(query) {
        return Some((format!("{before}{body}"), sig.to_owned()));
    }
    let (before, sig) = cut(body)?;
    Some((format!("{query}{before}"), sig.to_owned()))
}

/// One answer: status, Binance error code (if any), body, extra headers.
struct Answer {
    status: StatusCode,
    code: Option<i64>,
    body: String,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn json(status: StatusCode, value: Value) -> Self {
        Self {
            status,
            code: None,
            body: value.to_string(),
            content_type: "application/json;charset=UTF-8",
            headers: vec![],
        }
    }

    fn error(status: StatusCode, code: i64, msg: &str) -> Self {
        Self {
            code: Some(code),
            ..Self::json(status, json!({ "code": code, "msg": msg }))
        }
    }

    fn empty(status: StatusCode) -> Self {
        Self {
            status,
            code: None,
            body: String::new(),
            content_type: "text/plain",
            headers: vec![],
        }
    }

    fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

const INVALID_KEY_MSG: &str = "Invalid API-key, IP, or permissions for action.";

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let api_key = headers
        .get("x-mbx-apikey")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = String::from_utf8_lossy(&body).into_owned();
    let hold = api_key.as_ref().and_then(|key| lock(&state).held.get(key).copied());
    if let Some(hold) = hold {
        tokio::time::sleep(hold).await;
    }

    let answer = {
        let mut s = lock(&state);
        if s.failure == Some(MockFailure::Hang) {
            s.requests.push(MockRequest {
                method: method.to_string(),
                path: path.clone(),
                query: query.clone(),
                api_key: api_key.clone(),
                status: 0,
                error_code: None,
                ok: false,
            });
            None
        } else {
            let answer = s.answer(&method, &path, &query, api_key.as_deref(), &body);
            s.requests.push(MockRequest {
                method: method.to_string(),
                path,
                query,
                api_key,
                status: answer.status.as_u16(),
                error_code: answer.code,
                ok: answer.status.is_success(),
            });
            Some(answer)
        }
    };
    let Some(answer) = answer else {
        tokio::time::sleep(Duration::from_secs(60)).await;
        return StatusCode::GATEWAY_TIMEOUT.into_response();
    };

    let mut response = (answer.status, answer.body).into_response();
    let out = response.headers_mut();
    out.insert("content-type", HeaderValue::from_static(answer.content_type));
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(name, value);
        }
    }
    response
}

impl MockState {
    fn now_ms(&self) -> i64 {
        self.frozen_now_ms
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis() + self.clock_offset_ms)
    }

    fn answer(&mut self, method: &Method, path: &str, query: &str, api_key: Option<&str>, body: &str) -> Answer {
        let now = self.now_ms();
        if let Some(failure) = self.failure
            && let Some(answer) = infrastructure_failure(failure, now)
        {
            return answer;
        }
        let sapi = path.starts_with("/sapi/");
        if sapi && self.testnet {
            return Answer::empty(StatusCode::NOT_FOUND);
        }
        let (weight, route) = match path {
            "/api/v3/time" => (1, Route::Time),
            "/api/v3/account" => (20, Route::Account),
            "/api/v3/order/test" => (1, Route::OrderTest),
            "/sapi/v1/account/apiRestrictions" => (1, Route::ApiRestrictions),
            _ => return Answer::empty(StatusCode::NOT_FOUND),
        };
        let expected_method = if route == Route::OrderTest {
            Method::POST
        } else {
            Method::GET
        };
        if method != expected_method {
            return Answer::empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        // Weight counts for every answered request on the route, as on Binance.
        let answer = self.route(route, query, api_key, body, now);
        if sapi {
            let used = self.sapi_weight.add(now, weight);
            answer.header("X-SAPI-USED-IP-WEIGHT-1M", used)
        } else {
            let used = self.api_weight.add(now, weight);
            answer.header("X-MBX-USED-WEIGHT-1M", used)
        }
    }

    fn route(&self, route: Route, query: &str, api_key: Option<&str>, body: &str, now: i64) -> Answer {
        if route == Route::Time {
            return Answer::json(StatusCode::OK, json!({ "serverTime": now }));
        }
        let key = match self.verify_signed(query, api_key, body, now) {
            Ok(key) => key,
            Err(answer) => return answer,
        };
        let p = key.permissions;
        match route {
            Route::Account => Answer::json(StatusCode::OK, account_body(p, omit_zero_balances(query, body), now)),
            Route::OrderTest => Answer::json(StatusCode::OK, json!({})),
            Route::ApiRestrictions if self.failure == Some(MockFailure::RestrictionsDenied) => {
                Answer::error(StatusCode::UNAUTHORIZED, -2015, INVALID_KEY_MSG)
            }
            Route::ApiRestrictions => Answer::json(StatusCode::OK, restrictions_body(p, self.trading_expiration_ms)),
            Route::Time => unreachable!("answered above"),
        }
    }

    /// Binance's checks for a SIGNED request, in order: key, timestamp, signature.
    fn verify_signed(&self, query: &str, api_key: Option<&str>, body: &str, now: i64) -> Result<&MockKey, Answer> {
        if self.failure == Some(MockFailure::IpNotAllowed) {
            return Err(Answer::error(StatusCode::UNAUTHORIZED, -2015, INVALID_KEY_MSG));
        }
        let Some(api_key) = api_key else {
            return Err(Answer::error(StatusCode::UNAUTHORIZED, -2015, INVALID_KEY_MSG));
        };
        if api_key.len() != 64 || !api_key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Answer::error(
                StatusCode::UNAUTHORIZED,
                -2014,
                "API-key format invalid.",
            ));
        }
        let Some(key) = self.keys.get(api_key) else {
            return Err(Answer::error(StatusCode::UNAUTHORIZED, -2015, INVALID_KEY_MSG));
        };

        let params = params(query, body);
        let recv_window = match params.get("recvWindow") {
            None => 5000,
            Some(v) => match v.parse::<i64>() {
                Ok(w) if w > 60_000 => {
                    return Err(Answer::error(
                        StatusCode::BAD_REQUEST,
                        -1131,
                        "recvWindow must be less than 60000",
                    ));
                }
                Ok(w) if w > 0 => w,
                _ => return Err(mandatory("recvWindow")),
            },
        };
        let Some(timestamp) = params.get("timestamp").and_then(|t| t.parse::<i64>().ok()) else {
            return Err(mandatory("timestamp"));
        };
        if self.failure == Some(MockFailure::RejectTimestamps) {
            return Err(Answer::error(
                StatusCode::BAD_REQUEST,
                -1021,
                "Timestamp for this request is outside of the recvWindow.",
            ));
        }
        // Binance accepts milliseconds or microseconds.
        let timestamp_ms = if timestamp >= 10_i64.pow(15) {
            timestamp / 1000
        } else {
            timestamp
        };
        if timestamp_ms >= now + 1000 {
            return Err(Answer::error(
                StatusCode::BAD_REQUEST,
                -1021,
                "Timestamp for this request was 1000ms ahead of the server's time.",
            ));
        }
        if now - timestamp_ms > recv_window {
            return Err(Answer::error(
                StatusCode::BAD_REQUEST,
                -1021,
                "Timestamp for this request is outside of the recvWindow.",
            ));
        }

        let Some((payload, signature)) = signed_payload(query, body) else {
            return Err(mandatory("signature"));
        };
        if !key.verifier.verify(&payload, &signature) {
            return Err(Answer::error(
                StatusCode::BAD_REQUEST,
                -1022,
                "Signature for this request is not valid.",
            ));
        }
        Ok(key)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Time,
    Account,
    OrderTest,
    ApiRestrictions,
}

/// Failures that hit before any authentication, like Binance's edge does.
fn infrastructure_failure(failure: MockFailure, now: i64) -> Option<Answer> {
    let answer = match failure {
        MockFailure::ServerError => Answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            -1008,
            "Server is currently overloaded with other requests. Please try again in a few minutes.",
        ),
        MockFailure::RateLimited { retry_after_secs } => Answer::error(
            StatusCode::TOO_MANY_REQUESTS,
            -1003,
            "Too much request weight used; current limit is 6000 request weight per 1 MINUTE. Please use WebSocket \
             Streams for live updates to avoid polling the API.",
        )
        .header("Retry-After", retry_after_secs),
        MockFailure::IpBanned { retry_after_secs } => {
            let until = now + i64::try_from(retry_after_secs).unwrap_or(i64::MAX / 2_000) * 1000;
            let msg = format!(
                "Way too much request weight used; IP banned until {until}. Please use WebSocket Streams for live \
                 updates to avoid bans."
            );
            Answer::error(StatusCode::IM_A_TEAPOT, -1003, &msg).header("Retry-After", retry_after_secs)
        }
        MockFailure::WafBlocked => Answer {
            status: StatusCode::FORBIDDEN,
            code: None,
            body: "<html><head><title>403 Forbidden</title></head><body><h1>403 Forbidden</h1>\
                   <p>Request blocked.</p></body></html>"
                .to_owned(),
            content_type: "text/html",
            headers: vec![],
        },
        MockFailure::Garbage => Answer {
            status: StatusCode::OK,
            code: None,
            body: "<html><body>Service maintenance in progress</body></html>".to_owned(),
            content_type: "text/html",
            headers: vec![],
        },
        MockFailure::IpNotAllowed
        | MockFailure::RestrictionsDenied
        | MockFailure::RejectTimestamps
        | MockFailure::Hang => return None,
    };
    Some(answer)
}

fn mandatory(param: &str) -> Answer {
    Answer::error(
        StatusCode::BAD_REQUEST,
        -1102,
        &format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."),
    )
}

/// The request's parameters from the query string and the form body.
fn params(query: &str, body: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.as_bytes())
        .chain(url::form_urlencoded::parse(body.as_bytes()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn omit_zero_balances(query: &str, body: &str) -> bool {
    params(query, body).get("omitZeroBalances").is_some_and(|v| v == "true")
}

/// `GET /api/v3/account` as documented (rest-api.md "Account information").
fn account_body(p: MockPermissions, omit_zero: bool, now: i64) -> Value {
    let mut balances = vec![
        json!({ "asset": "BTC", "free": "0.50000000", "locked": "0.00000000" }),
        json!({ "asset": "USDT", "free": "1250.00000000", "locked": "100.00000000" }),
    ];
    if !omit_zero {
        balances.push(json!({ "asset": "LTC", "free": "0.00000000", "locked": "0.00000000" }));
    }
    json!({
        "makerCommission": 10,
        "takerCommission": 10,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": { "maker": "0.00100000", "taker": "0.00100000", "buyer": "0.00000000", "seller": "0.00000000" },
        "canTrade": p.spot_trading,
        "canWithdraw": p.withdrawals,
        "canDeposit": true,
        "brokered": false,
        "requireSelfTradePrevention": false,
        "preventSor": false,
        "updateTime": now - 86_400_000,
        "accountType": "SPOT",
        "balances": balances,
        "permissions": ["SPOT"],
        "uid": 354937868
    })
}

/// `GET /sapi/v1/account/apiRestrictions` with every documented field.
fn restrictions_body(p: MockPermissions, trading_expiration_ms: Option<i64>) -> Value {
    let mut body = json!({
        "ipRestrict": p.ip_restrict,
        "createTime": 1698645219000_i64,
        "enableReading": p.reading,
        "enableWithdrawals": p.withdrawals,
        "enableInternalTransfer": false,
        "enableMargin": false,
        "enableFutures": false,
        "permitsUniversalTransfer": false,
        "enableVanillaOptions": false,
        "enableFixApiTrade": false,
        "enableFixReadOnly": false,
        "enableSpotAndMarginTrading": p.spot_trading,
        "enablePortfolioMarginTrading": false
    });
    if let Some(at) = trading_expiration_ms {
        body["tradingAuthorityExpirationTime"] = json!(at);
    }
    body
}
