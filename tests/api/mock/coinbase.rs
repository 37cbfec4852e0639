//! Mock Coinbase Advanced Trade REST API on a local port. It checks the
//! per-request JWT as Coinbase documents it (exchanges.md §2): `Authorization:
//! Bearer <jwt>`, header `alg` matching the registered key's type (ES256 for
//! EC, EdDSA for Ed25519) and a `nonce`, `kid` = `sub` = a known key name,
//! `iss` "cdp", `nbf`/`exp` valid against the mock's clock, a lifetime of at
//! most 120 s, `uri` = "GET " + host:port + path, and the signature, verified
//! with `jsonwebtoken` (an implementation independent of the client's). Any
//! failure is Coinbase's plain-text 401 "Unauthorized"; the reason is kept in
//! [`MockRequest::rejection`] for assertions. A key without the view scope
//! gets Coinbase's 403 "Missing required scopes". Failures can be injected
//! (5xx, 429, junk, hangs, IP not allowed) and the mock's clock can run
//! ahead or behind.
//!
//! Also makes test keys in the shapes users paste (SEC1 and PKCS#8 PEM,
//! Ed25519 base64), so no private key lives in a fixture file.

use aws_lc_rs::encoding::{AsBigEndian, AsDer};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use url::Url;

pub const KEY_PERMISSIONS_PATH: &str = "/api/v3/brokerage/key_permissions";
pub const TIME_PATH: &str = "/api/v3/brokerage/time";
/// How far `nbf`/`exp` may be off the mock's clock.
pub const LEEWAY_SECS: i64 = 5;
/// Coinbase: "Your JWT expires after 2 minutes".
pub const MAX_LIFETIME_SECS: i64 = 120;
/// Private REST limit (requests per second), reported in `x-ratelimit-*`.
pub const RATE_LIMIT: u32 = 30;
pub const MISSING_SCOPES_BODY: &str =
    r#"{"error":"PERMISSION_DENIED","error_details":"Missing required scopes","message":"Missing required scopes"}"#;

/// The scopes a CDP key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockScopes {
    pub view: bool,
    pub trade: bool,
    pub transfer: bool,
}

impl Default for MockScopes {
    /// View and trade, no transfer.
    fn default() -> Self {
        Self {
            view: true,
            trade: true,
            transfer: false,
        }
    }
}

/// A failure applied to every following request until cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockFailure {
    /// 503 with a grpc-gateway error body.
    ServerError,
    /// 429 with `Retry-After`.
    RateLimited { retry_after_secs: u64 },
    /// 200 with a body that is not JSON.
    Garbage,
    /// Never answers in time (sleeps 60 s, longer than any client timeout).
    Hang,
    /// 401 for every authenticated request, as for a key whose IP allowlist
    /// lacks the caller (Coinbase cannot tell it from a bad key).
    IpNotAllowed,
}

/// One request the mock received, for assertions.
#[derive(Debug, Clone)]
pub struct MockRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The raw `Authorization` header, if sent.
    pub authorization: Option<String>,
    /// The HTTP status answered (0 for a request left hanging).
    pub status: u16,
    /// Why a 401 was given (never sent to the client).
    pub rejection: Option<String>,
    pub ok: bool,
}

impl MockRequest {
    /// The JWT's decoded header and claims (unverified), if one was sent.
    pub fn jwt(&self) -> Option<(Value, Value)> {
        let token = self.authorization.as_deref()?.strip_prefix("Bearer ")?;
        let mut parts = token.split('.');
        let mut decode = || -> Option<Value> {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts.next()?)
                .ok()?;
            serde_json::from_slice(&bytes).ok()
        };
        Some((decode()?, decode()?))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Ec,
    Ed25519,
}

impl KeyType {
    fn algorithm(self) -> Algorithm {
        match self {
            KeyType::Ec => Algorithm::ES256,
            KeyType::Ed25519 => Algorithm::EdDSA,
        }
    }
}

struct MockKey {
    kind: KeyType,
    public_key: Vec<u8>,
    scopes: MockScopes,
    portfolio_uuid: String,
}

struct MockState {
    /// "host:port" as the client must put it in the `uri` claim.
    authority: String,
    keys: HashMap<String, MockKey>,
    failure: Option<MockFailure>,
    clock_offset_secs: i64,
    requests: Vec<MockRequest>,
    /// Private requests in the current second, per key.
    rate_window: HashMap<String, (i64, u32)>,
}

type Shared = Arc<Mutex<MockState>>;

pub struct MockCoinbase {
    pub base_url: Url,
    state: Shared,
}

impl MockCoinbase {
    pub async fn start() -> MockCoinbase {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock Coinbase");
        let addr = listener.local_addr().expect("mock Coinbase address");
        let state = Arc::new(Mutex::new(MockState {
            authority: addr.to_string(),
            keys: HashMap::new(),
            failure: None,
            clock_offset_secs: 0,
            requests: Vec::new(),
            rate_window: HashMap::new(),
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let base_url = Url::parse(&format!("http://{addr}/")).expect("mock Coinbase URL");
        MockCoinbase { base_url, state }
    }

    /// An ECDSA (ES256) key; `public_key` is the uncompressed P-256 point.
    pub fn add_ec_key(&self, name: &str, public_key: &[u8], scopes: MockScopes) {
        self.add(name, KeyType::Ec, public_key, scopes);
    }

    /// An Ed25519 (EdDSA) key; `public_key` is the raw 32 bytes.
    pub fn add_ed25519_key(&self, name: &str, public_key: &[u8], scopes: MockScopes) {
        self.add(name, KeyType::Ed25519, public_key, scopes);
    }

    fn add(&self, name: &str, kind: KeyType, public_key: &[u8], scopes: MockScopes) {
        self.lock().keys.insert(
            name.to_owned(),
            MockKey {
                kind,
                public_key: public_key.to_vec(),
                scopes,
                portfolio_uuid: uuid::Uuid::new_v4().to_string(),
            },
        );
    }

    /// The key was deleted at the exchange: further requests get 401.
    pub fn remove_key(&self, name: &str) {
        self.lock().keys.remove(name);
    }

    pub fn set_failure(&self, failure: Option<MockFailure>) {
        self.lock().failure = failure;
    }

    /// The mock's clock runs this many seconds ahead (negative: behind).
    pub fn set_clock_offset_secs(&self, offset: i64) {
        self.lock().clock_offset_secs = offset;
    }

    pub fn request_count(&self) -> usize {
        self.lock().requests.len()
    }

    pub fn requests(&self) -> Vec<MockRequest> {
        self.lock().requests.clone()
    }

    /// The paths requested, in order.
    pub fn paths(&self) -> Vec<String> {
        self.lock().requests.iter().map(|r| r.path.clone()).collect()
    }

    fn lock(&self) -> MutexGuard<'_, MockState> {
        lock(&self.state)
    }
}

fn lock(state: &Shared) -> MutexGuard<'_, MockState> {
    // A panicking test thread must not hide the mock's state from the others.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---- Test keys, in the shapes users paste ----

/// `organizations/{uuid}/apiKeys/{uuid}`, like the CDP portal shows.
pub fn cdp_key_name() -> String {
    format!(
        "organizations/{}/apiKeys/{}",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4()
    )
}

/// PEM text of `der` under `label`, wrapped at 64 columns like OpenSSL.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// A fresh P-256 key as Coinbase hands out ECDSA keys.
pub struct EcTestKey {
    /// `-----BEGIN EC PRIVATE KEY-----`, what the CDP portal shows.
    pub sec1_pem: String,
    /// `-----BEGIN PRIVATE KEY-----`.
    pub pkcs8_pem: String,
    /// The uncompressed point, for [`MockCoinbase::add_ec_key`].
    pub public_key: Vec<u8>,
    pub pkcs8_der: Vec<u8>,
}

impl EcTestKey {
    pub fn generate() -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("generate P-256 key");
        let pkcs8 = pair.to_pkcs8v1().expect("PKCS#8");
        let sec1 = pair.private_key().as_der().expect("SEC1");
        Self {
            sec1_pem: pem("EC PRIVATE KEY", sec1.as_ref()),
            pkcs8_pem: pem("PRIVATE KEY", pkcs8.as_ref()),
            public_key: pair.public_key().as_ref().to_vec(),
            pkcs8_der: pkcs8.as_ref().to_vec(),
        }
    }

    /// The SEC1 PEM with line breaks written as `\n`, as in the key's JSON file.
    pub fn escaped_pem(&self) -> String {
        self.sec1_pem.replace('\n', "\\n")
    }
}

/// A fresh Ed25519 key as Coinbase hands out Ed25519 keys.
pub struct Ed25519TestKey {
    /// base64 of seed ‖ public key (64 bytes), what the CDP portal shows.
    pub base64_64: String,
    /// base64 of the 32-byte seed alone.
    pub base64_32: String,
    /// `-----BEGIN PRIVATE KEY-----`.
    pub pkcs8_pem: String,
    /// The raw 32 bytes, for [`MockCoinbase::add_ed25519_key`].
    pub public_key: Vec<u8>,
    pub pkcs8_der: Vec<u8>,
}

impl Ed25519TestKey {
    pub fn generate() -> Self {
        let pair = Ed25519KeyPair::generate().expect("generate Ed25519 key");
        let seed = pair
            .seed()
            .expect("seed")
            .as_be_bytes()
            .expect("seed bytes")
            .as_ref()
            .to_vec();
        let public_key = pair.public_key().as_ref().to_vec();
        let pkcs8 = pair.to_pkcs8v1().expect("PKCS#8");
        Self {
            base64_64: STANDARD.encode([seed.as_slice(), public_key.as_slice()].concat()),
            base64_32: STANDARD.encode(&seed),
            pkcs8_pem: pem("PRIVATE KEY", pkcs8.as_ref()),
            public_key,
            pkcs8_der: pkcs8.as_ref().to_vec(),
        }
    }
}

// ---- The server ----

struct Answer {
    status: StatusCode,
    body: String,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    rejection: Option<String>,
}

impl Answer {
    fn json(status: StatusCode, value: Value) -> Self {
        Self {
            status,
            body: value.to_string(),
            content_type: "application/json",
            headers: vec![],
            rejection: None,
        }
    }

    fn text(status: StatusCode, body: &str) -> Self {
        Self {
            status,
            body: body.to_owned(),
            content_type: "text/plain; charset=utf-8",
            headers: vec![],
            rejection: None,
        }
    }

    /// Coinbase's answer to every authentication failure.
    fn unauthorized(reason: impl Into<String>) -> Self {
        Self {
            rejection: Some(reason.into()),
            ..Self::text(StatusCode::UNAUTHORIZED, "Unauthorized\n")
        }
    }

    fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    let answer = {
        let mut s = lock(&state);
        let answer = if s.failure == Some(MockFailure::Hang) {
            None
        } else {
            Some(s.answer(&method, &path, authorization.as_deref()))
        };
        s.requests.push(MockRequest {
            method: method.to_string(),
            path,
            query,
            authorization,
            status: answer.as_ref().map_or(0, |a| a.status.as_u16()),
            rejection: answer.as_ref().and_then(|a| a.rejection.clone()),
            ok: answer.as_ref().is_some_and(|a| a.status.is_success()),
        });
        answer
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
        chrono::Utc::now().timestamp_millis() + self.clock_offset_secs * 1000
    }

    fn answer(&mut self, method: &Method, path: &str, authorization: Option<&str>) -> Answer {
        if let Some(answer) = self.failure.and_then(infrastructure_failure) {
            return answer;
        }
        if path != TIME_PATH && path != KEY_PERMISSIONS_PATH {
            return Answer::text(StatusCode::NOT_FOUND, "404 page not found\n");
        }
        if method != Method::GET {
            return Answer::text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        }
        if path == TIME_PATH {
            return Answer::json(StatusCode::OK, time_body(self.now_ms()));
        }
        if self.failure == Some(MockFailure::IpNotAllowed) {
            return Answer::unauthorized("IP not allowed");
        }
        let name = match self.verify(method, path, authorization) {
            Ok(name) => name,
            Err(reason) => return Answer::unauthorized(reason),
        };
        let Some(key) = self.keys.get(&name) else {
            return Answer::unauthorized("unknown key");
        };
        if !key.scopes.view {
            return Answer::json(
                StatusCode::FORBIDDEN,
                serde_json::from_str(MISSING_SCOPES_BODY).expect("static JSON"),
            );
        }
        let body = json!({
            "can_view": key.scopes.view,
            "can_trade": key.scopes.trade,
            "can_transfer": key.scopes.transfer,
            "portfolio_uuid": key.portfolio_uuid,
            "portfolio_type": "DEFAULT",
        });
        let (used, reset) = self.count_request(&name);
        Answer::json(StatusCode::OK, body)
            .header("x-ratelimit-limit", RATE_LIMIT)
            .header("x-ratelimit-remaining", RATE_LIMIT.saturating_sub(used))
            .header("x-ratelimit-reset", reset)
    }

    /// Counts a private request in the key's one-second window; returns the
    /// requests used and when the window resets (Unix seconds).
    fn count_request(&mut self, name: &str) -> (u32, i64) {
        let second = self.now_ms().div_euclid(1000);
        let window = self.rate_window.entry(name.to_owned()).or_insert((second, 0));
        if window.0 != second {
            *window = (second, 0);
        }
        window.1 += 1;
        (window.1, second + 1)
    }

    /// Coinbase's JWT checks; returns the key name, or why the JWT is refused.
    fn verify(&self, method: &Method, path: &str, authorization: Option<&str>) -> Result<String, String> {
        let token = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .ok_or("no Bearer token")?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("unreadable JWT header: {e}"))?;
        let kid = header.kid.clone().ok_or("no kid")?;
        let key = self.keys.get(&kid).ok_or("unknown key")?;
        if header.alg != key.kind.algorithm() {
            return Err(format!(
                "alg {:?} does not match the key type {:?}",
                header.alg, key.kind
            ));
        }
        if header.nonce.as_deref().is_none_or(str::is_empty) {
            return Err("no nonce".into());
        }
        let decoding_key = match key.kind {
            KeyType::Ec => DecodingKey::from_ec_der(&key.public_key),
            // Despite the name, the raw 32-byte public key.
            KeyType::Ed25519 => DecodingKey::from_ed_der(&key.public_key),
        };
        let mut validation = Validation::new(key.kind.algorithm());
        // Times are checked below against the mock's own clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Value>(token, &decoding_key, &validation)
            .map_err(|e| format!("signature or claims rejected: {e}"))?
            .claims;

        if claims["sub"].as_str() != Some(kid.as_str()) {
            return Err("sub is not the kid".into());
        }
        if claims["iss"] != "cdp" {
            return Err("iss is not cdp".into());
        }
        let (Some(nbf), Some(exp)) = (claims["nbf"].as_i64(), claims["exp"].as_i64()) else {
            return Err("nbf or exp missing".into());
        };
        let now = self.now_ms().div_euclid(1000);
        if nbf > now + LEEWAY_SECS {
            return Err(format!("nbf {} s in the future", nbf - now));
        }
        if exp < now - LEEWAY_SECS {
            return Err(format!("expired {} s ago", now - exp));
        }
        if exp <= nbf || exp - nbf > MAX_LIFETIME_SECS {
            return Err(format!("lifetime {} s", exp - nbf));
        }
        let expected_uri = format!("{method} {}{path}", self.authority);
        if claims["uri"].as_str() != Some(expected_uri.as_str()) {
            return Err(format!("uri {} is not {expected_uri}", claims["uri"]));
        }
        Ok(kid)
    }
}

/// `GET /api/v3/brokerage/time`, epoch fields as strings like Coinbase's.
fn time_body(now_ms: i64) -> Value {
    let iso = chrono::DateTime::from_timestamp_millis(now_ms)
        .expect("current time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({
        "iso": iso,
        "epochSeconds": now_ms.div_euclid(1000).to_string(),
        "epochMillis": now_ms.to_string(),
    })
}

/// Failures that hit before any authentication, like Coinbase's edge does.
fn infrastructure_failure(failure: MockFailure) -> Option<Answer> {
    Some(match failure {
        MockFailure::ServerError => Answer::json(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "UNAVAILABLE", "code": 14, "message": "service unavailable", "details": []}),
        ),
        MockFailure::RateLimited { retry_after_secs } => {
            Answer::text(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n").header("Retry-After", retry_after_secs)
        }
        MockFailure::Garbage => Answer {
            content_type: "text/html",
            ..Answer::text(
                StatusCode::OK,
                "<html><body>Service maintenance in progress</body></html>",
            )
        },
        MockFailure::IpNotAllowed | MockFailure::Hang => return None,
    })
}
