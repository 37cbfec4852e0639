//! Mock Zerodha Kite Connect v3 on a local port: the API and a fake login
//! page at `/connect/login`, so tests can use `login_url` as KITE_LOGIN_URL.
//!
//! It checks requests as Kite documents (exchanges.md §4): the
//! `X-Kite-Version: 3` header; at `POST /session/token` the form's
//! `checksum = hex(SHA-256(api_key ‖ request_token ‖ api_secret))` and a
//! request token used once and within its lifetime; on `GET /user/profile`
//! `Authorization: token <api_key>:<access_token>`. It answers with the
//! bodies of `zerodha/kiteconnect-mocks` (`generate_session.json`,
//! `user_profile.json`) and Kite's `{"status":"error",…}` errors.
//!
//! Where Kite's exact behaviour is not documented the mock picks the strict
//! reading: a request token is spent by its first use whatever the outcome;
//! a new session for an app ends the previous one (a staff forum answer);
//! an unknown `api_key` gets 400 InputException "Invalid `api_key`.".

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use url::Url;

/// Kite's documented message for an expired or unknown session.
pub const SESSION_EXPIRED_MSG: &str = "Incorrect `api_key` or `access_token`.";
/// Kite's message for a used, expired or unknown request token.
pub const REQUEST_TOKEN_MSG: &str = "Token is invalid or has expired.";
/// Kite's message for a checksum that does not match (forum).
pub const CHECKSUM_MSG: &str = "Invalid `checksum`.";
/// A request token's lifetime (staff: about 5 minutes).
pub const REQUEST_TOKEN_TTL: Duration = Duration::from_secs(300);

/// A failure applied to every following API request until cleared (the
/// login page is not affected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockFailure {
    /// 500 GeneralException.
    InternalError,
    /// 502 NetworkException (the order management system is down).
    OmsDown,
    /// 503 NetworkException with `Retry-After: 30`.
    ApiDown,
    /// 504 with an HTML page, as a gateway answers.
    GatewayTimeout,
    /// 429 NetworkException "Too many requests", with `Retry-After` if given.
    RateLimited { retry_after_secs: Option<u64> },
    /// 403 PermissionException.
    PermissionDenied,
    /// 403 UserException (a problem with the Zerodha account).
    AccountBlocked,
    /// 400 InputException whose message quotes the request back: its form
    /// body and `Authorization` header. Tests the client's scrubbing.
    EchoingInputError,
    /// 200 with a body that is not JSON.
    Garbage,
    /// Never answers in time (sleeps 60 s, longer than any client timeout).
    Hang,
}

/// One request the mock received, for assertions.
#[derive(Debug, Clone)]
pub struct MockRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The form body's fields (`api_key`, `request_token`, `checksum`).
    pub form: HashMap<String, String>,
    pub kite_version: Option<String>,
    pub authorization: Option<String>,
    /// The HTTP status answered (0 for a request left hanging).
    pub status: u16,
    /// Kite's `error_type` in the answer, if any.
    pub error_type: Option<String>,
    pub ok: bool,
}

pub struct MockKite {
    /// The API's base URL (KITE_BASE_URL).
    pub base_url: Url,
    /// The fake login page (KITE_LOGIN_URL).
    pub login_url: Url,
    state: Arc<Mutex<MockState>>,
}

struct MockState {
    base_url: Url,
    apps: HashMap<String, MockApp>,
    request_tokens: HashMap<String, RequestToken>,
    /// Access token → session.
    sessions: HashMap<String, MockSession>,
    request_token_ttl: Duration,
    failure: Option<MockFailure>,
    requests: Vec<MockRequest>,
}

struct MockApp {
    secret: String,
    user_id: String,
    trading: bool,
    redirect_url: Option<Url>,
}

struct RequestToken {
    api_key: String,
    issued: Instant,
    used: bool,
}

struct MockSession {
    api_key: String,
    valid: bool,
}

type Shared = Arc<Mutex<MockState>>;

impl MockKite {
    pub async fn start() -> MockKite {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock Kite");
        let addr = listener.local_addr().expect("mock Kite address");
        let base_url = Url::parse(&format!("http://{addr}/")).expect("mock Kite URL");
        let login_url = base_url.join("/connect/login").expect("mock Kite login URL");
        let state = Arc::new(Mutex::new(MockState {
            base_url: base_url.clone(),
            apps: HashMap::new(),
            request_tokens: HashMap::new(),
            sessions: HashMap::new(),
            request_token_ttl: REQUEST_TOKEN_TTL,
            failure: None,
            requests: Vec::new(),
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockKite {
            base_url,
            login_url,
            state,
        }
    }

    /// Registers a Kite Connect app whose user can trade. Returns the
    /// user's client ID (e.g. `ZX0001`), which sessions and profiles carry.
    pub fn add_app(&self, api_key: &str, api_secret: &str) -> String {
        let mut s = self.lock();
        let user_id = format!("ZX{:04}", s.apps.len() + 1);
        s.apps.insert(
            api_key.to_owned(),
            MockApp {
                secret: api_secret.to_owned(),
                user_id: user_id.clone(),
                trading: true,
                redirect_url: None,
            },
        );
        user_id
    }

    /// With `false` the profile lists no products or order types.
    pub fn set_trading(&self, api_key: &str, trading: bool) {
        if let Some(app) = self.lock().apps.get_mut(api_key) {
            app.trading = trading;
        }
    }

    /// The app's redirect URL from the developer console. By default the
    /// mock's own `/mock/redirect`, which just shows a page.
    pub fn set_redirect_url(&self, api_key: &str, redirect_url: Url) {
        if let Some(app) = self.lock().apps.get_mut(api_key) {
            app.redirect_url = Some(redirect_url);
        }
    }

    /// A fresh request token for `api_key`, as Kite's redirect would carry
    /// after the account holder logs in: single-use, short-lived.
    pub fn issue_request_token(&self, api_key: &str) -> String {
        self.lock().issue_request_token(api_key)
    }

    /// How long request tokens issued from now on stay valid (default 5 min).
    pub fn set_request_token_ttl(&self, ttl: Duration) {
        self.lock().request_token_ttl = ttl;
    }

    /// 06:00 IST has come: every access token now gets 403 TokenException.
    pub fn expire_sessions(&self) {
        for session in self.lock().sessions.values_mut() {
            session.valid = false;
        }
    }

    pub fn set_failure(&self, failure: Option<MockFailure>) {
        self.lock().failure = failure;
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

/// The checksum Kite expects, computed as documented.
pub fn kite_checksum(api_key: &str, request_token: &str, api_secret: &str) -> String {
    hex::encode(Sha256::digest(
        format!("{api_key}{request_token}{api_secret}").as_bytes(),
    ))
}

fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// One answer: status, Kite `error_type` (if any), body, extra headers.
struct Answer {
    status: StatusCode,
    error_type: Option<String>,
    body: String,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn json(status: StatusCode, value: Value) -> Self {
        Self {
            status,
            error_type: None,
            body: value.to_string(),
            content_type: "application/json",
            headers: vec![],
        }
    }

    fn success(data: Value) -> Self {
        Self::json(StatusCode::OK, json!({ "status": "success", "data": data }))
    }

    fn error(status: StatusCode, error_type: &str, message: &str) -> Self {
        Self {
            error_type: Some(error_type.to_owned()),
            ..Self::json(
                status,
                json!({ "status": "error", "message": message, "data": null, "error_type": error_type }),
            )
        }
    }

    fn html(status: StatusCode, body: &str) -> Self {
        Self {
            status,
            error_type: None,
            body: body.to_owned(),
            content_type: "text/html",
            headers: vec![],
        }
    }

    fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

/// What the handler saw of a request.
struct Incoming {
    method: Method,
    path: String,
    query: String,
    form: HashMap<String, String>,
    kite_version: Option<String>,
    authorization: Option<String>,
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let incoming = Incoming {
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        form: url::form_urlencoded::parse(&body).into_owned().collect(),
        kite_version: header("x-kite-version"),
        authorization: header("authorization"),
    };

    let answer = {
        let mut s = lock(&state);
        let is_api = !matches!(incoming.path.as_str(), "/connect/login" | "/mock/redirect");
        let answer = if is_api && s.failure == Some(MockFailure::Hang) {
            None
        } else {
            Some(s.answer(&incoming))
        };
        s.requests.push(MockRequest {
            method: incoming.method.to_string(),
            path: incoming.path,
            query: incoming.query,
            form: incoming.form,
            kite_version: incoming.kite_version,
            authorization: incoming.authorization,
            status: answer.as_ref().map_or(0, |a| a.status.as_u16()),
            error_type: answer.as_ref().and_then(|a| a.error_type.clone()),
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
    fn answer(&mut self, r: &Incoming) -> Answer {
        match (r.path.as_str(), &r.method) {
            ("/connect/login", &Method::GET) => return self.login_page(&r.query),
            ("/mock/redirect", &Method::GET) => {
                return Answer::html(StatusCode::OK, "<html><body>Logged in with Kite</body></html>");
            }
            _ => {}
        }
        if let Some(failure) = self.failure
            && let Some(answer) = infrastructure_failure(failure, r)
        {
            return answer;
        }
        let route = match (r.path.as_str(), &r.method) {
            ("/session/token", &Method::POST) => Route::CreateSession,
            ("/session/token", &Method::DELETE) => Route::Logout,
            ("/user/profile", &Method::GET) => Route::Profile,
            ("/session/token" | "/user/profile", _) => {
                return Answer::error(StatusCode::METHOD_NOT_ALLOWED, "GeneralException", "Method not allowed");
            }
            _ => return Answer::error(StatusCode::NOT_FOUND, "GeneralException", "Route not found"),
        };
        if r.kite_version.as_deref() != Some("3") {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                "InputException",
                "Missing or unsupported `X-Kite-Version` header.",
            );
        }
        match route {
            Route::CreateSession => self.create_session(&r.form),
            Route::Logout => self.logout(&r.query),
            Route::Profile => self.profile(r.authorization.as_deref()),
        }
    }

    /// Kite's login page, as if the account holder logged in at once: a
    /// 302 to the app's redirect URL with a fresh request token and the
    /// decoded `redirect_params` appended.
    fn login_page(&mut self, query: &str) -> Answer {
        let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        if params.get("v").map(String::as_str) != Some("3") {
            return Answer::html(StatusCode::BAD_REQUEST, "<html><body>Invalid `v`.</body></html>");
        }
        let Some(api_key) = params.get("api_key").filter(|k| self.apps.contains_key(*k)) else {
            return Answer::html(StatusCode::BAD_REQUEST, "<html><body>Invalid `api_key`.</body></html>");
        };
        let request_token = self.issue_request_token(api_key);
        let Some(app) = self.apps.get(api_key) else {
            return Answer::html(StatusCode::BAD_REQUEST, "<html><body>Invalid `api_key`.</body></html>");
        };
        let mut location = app
            .redirect_url
            .clone()
            .unwrap_or_else(|| self.base_url.join("/mock/redirect").expect("mock redirect URL"));
        {
            let mut pairs = location.query_pairs_mut();
            pairs
                .append_pair("action", "login")
                .append_pair("type", "login")
                .append_pair("status", "success")
                .append_pair("request_token", &request_token);
            if let Some(extra) = params.get("redirect_params") {
                for (k, v) in url::form_urlencoded::parse(extra.as_bytes()) {
                    pairs.append_pair(&k, &v);
                }
            }
        }
        Answer::html(StatusCode::FOUND, "").header("Location", location)
    }

    fn issue_request_token(&mut self, api_key: &str) -> String {
        let token = random_token(32);
        self.request_tokens.insert(
            token.clone(),
            RequestToken {
                api_key: api_key.to_owned(),
                issued: Instant::now(),
                used: false,
            },
        );
        token
    }

    /// `POST /session/token`: api_key, then the request token (spent by this
    /// use whatever follows), then the checksum.
    fn create_session(&mut self, form: &HashMap<String, String>) -> Answer {
        for field in ["api_key", "request_token", "checksum"] {
            if form.get(field).is_none_or(String::is_empty) {
                return Answer::error(
                    StatusCode::BAD_REQUEST,
                    "InputException",
                    &format!("Missing `{field}`."),
                );
            }
        }
        let (api_key, request_token, checksum) = (&form["api_key"], &form["request_token"], &form["checksum"]);
        let Some(app) = self.apps.get(api_key) else {
            return Answer::error(StatusCode::BAD_REQUEST, "InputException", "Invalid `api_key`.");
        };
        let ttl = self.request_token_ttl;
        let token_ok = match self.request_tokens.get_mut(request_token) {
            Some(t) if t.api_key == *api_key => {
                let fresh = !t.used && t.issued.elapsed() < ttl;
                t.used = true;
                fresh
            }
            _ => false,
        };
        if !token_ok {
            return Answer::error(StatusCode::FORBIDDEN, "TokenException", REQUEST_TOKEN_MSG);
        }
        if *checksum != kite_checksum(api_key, request_token, &app.secret) {
            return Answer::error(StatusCode::FORBIDDEN, "TokenException", CHECKSUM_MSG);
        }

        let access_token = random_token(32);
        let user_id = app.user_id.clone();
        let trading = app.trading;
        // A new login for the app ends its earlier sessions.
        for session in self.sessions.values_mut().filter(|s| s.api_key == *api_key) {
            session.valid = false;
        }
        self.sessions.insert(
            access_token.clone(),
            MockSession {
                api_key: api_key.clone(),
                valid: true,
            },
        );
        let login_time = (chrono::Utc::now() + chrono::TimeDelta::minutes(330)).format("%Y-%m-%d %H:%M:%S");
        let mut data = user_data(&user_id, trading);
        let extra = json!({
            "avatar_url": "abc",
            "api_key": api_key,
            "access_token": access_token,
            "public_token": random_token(32),
            "enctoken": random_token(64),
            "refresh_token": "",
            "silo": "",
            "login_time": login_time.to_string(),
        });
        if let (Some(data), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
            data.extend(extra.clone());
        }
        Answer::success(data)
    }

    /// `DELETE /session/token?api_key=…&access_token=…`.
    fn logout(&mut self, query: &str) -> Answer {
        let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let (Some(api_key), Some(token)) = (params.get("api_key"), params.get("access_token")) else {
            return Answer::error(StatusCode::BAD_REQUEST, "InputException", "Missing `access_token`.");
        };
        match self.sessions.get_mut(token) {
            Some(s) if s.api_key == *api_key && s.valid => {
                s.valid = false;
                Answer::success(json!(true))
            }
            _ => Answer::error(StatusCode::FORBIDDEN, "TokenException", SESSION_EXPIRED_MSG),
        }
    }

    /// `GET /user/profile`: `Authorization: token <api_key>:<access_token>`.
    fn profile(&self, authorization: Option<&str>) -> Answer {
        let session = authorization
            .and_then(|header| header.strip_prefix("token "))
            .and_then(|credentials| credentials.split_once(':'))
            .and_then(|(api_key, token)| self.sessions.get(token).filter(|s| s.valid && s.api_key == api_key));
        let Some(api_key) = session.map(|s| s.api_key.as_str()) else {
            return Answer::error(StatusCode::FORBIDDEN, "TokenException", SESSION_EXPIRED_MSG);
        };
        if self.failure == Some(MockFailure::PermissionDenied) {
            return Answer::error(
                StatusCode::FORBIDDEN,
                "PermissionException",
                "Insufficient permission for that call.",
            );
        }
        match self.apps.get(api_key) {
            Some(app) => Answer::success(user_data(&app.user_id, app.trading)),
            None => Answer::error(StatusCode::FORBIDDEN, "TokenException", SESSION_EXPIRED_MSG),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    CreateSession,
    Logout,
    Profile,
}

/// The user part shared by `user_profile.json` and `generate_session.json`.
fn user_data(user_id: &str, trading: bool) -> Value {
    let (products, order_types) = if trading {
        (
            json!(["CNC", "NRML", "MIS", "BO", "CO"]),
            json!(["MARKET", "LIMIT", "SL", "SL-M"]),
        )
    } else {
        (json!([]), json!([]))
    };
    json!({
        "user_id": user_id,
        "user_type": "individual",
        "email": "xxxyyy@gmail.com",
        "user_name": "AxAx Bxx",
        "user_shortname": "AxAx",
        "broker": "ZERODHA",
        "exchanges": ["BFO", "MCX", "NSE", "CDS", "BSE", "BCD", "MF", "NFO"],
        "products": products,
        "order_types": order_types,
        "avatar_url": null,
        "meta": { "demat_consent": "physical" }
    })
}

/// Failures that hit before authentication, like Kite's edge does.
/// `PermissionDenied` is answered after the session check instead.
fn infrastructure_failure(failure: MockFailure, r: &Incoming) -> Option<Answer> {
    let answer = match failure {
        MockFailure::InternalError => Answer::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "GeneralException",
            "An unexpected error occurred.",
        ),
        MockFailure::OmsDown => Answer::error(StatusCode::BAD_GATEWAY, "NetworkException", "Could not reach the OMS."),
        MockFailure::ApiDown => Answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "NetworkException",
            "Service unavailable.",
        )
        .header("Retry-After", 30),
        MockFailure::GatewayTimeout => Answer::html(
            StatusCode::GATEWAY_TIMEOUT,
            "<html><body><h1>504 Gateway Time-out</h1></body></html>",
        ),
        MockFailure::RateLimited { retry_after_secs } => {
            let answer = Answer::error(StatusCode::TOO_MANY_REQUESTS, "NetworkException", "Too many requests");
            match retry_after_secs {
                Some(secs) => answer.header("Retry-After", secs),
                None => answer,
            }
        }
        MockFailure::AccountBlocked => Answer::error(
            StatusCode::FORBIDDEN,
            "UserException",
            "Your account is blocked. Please contact support.",
        ),
        MockFailure::EchoingInputError => {
            let mut form: Vec<String> = r.form.iter().map(|(k, v)| format!("{k}={v}")).collect();
            form.sort();
            let message = format!(
                "Invalid input: {} (Authorization: {})",
                form.join("&"),
                r.authorization.as_deref().unwrap_or("none")
            );
            Answer::error(StatusCode::BAD_REQUEST, "InputException", &message)
        }
        MockFailure::Garbage => Answer::html(StatusCode::OK, "<html><body>Kite is under maintenance</body></html>"),
        MockFailure::PermissionDenied | MockFailure::Hang => return None,
    };
    Some(answer)
}
