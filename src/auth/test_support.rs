//! Test-only helpers for the auth module: the fixture keys, token builders
//! (including hand-built tokens a library would refuse to sign), and a real
//! local JWKS server on 127.0.0.1:0 that counts its fetches.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;

pub(crate) const JWKS: &str = include_str!("../../tests/fixtures/jwt/jwks.json");
pub(crate) const JWKS_ROTATED: &str = include_str!("../../tests/fixtures/jwt/jwks_rotated.json");
const EC1_PEM: &str = include_str!("../../tests/fixtures/jwt/ec_p256_1.key.pem");
const EC2_PEM: &str = include_str!("../../tests/fixtures/jwt/ec_p256_2.key.pem");
const RSA_PEM: &str = include_str!("../../tests/fixtures/jwt/rsa_2048.key.pem");
pub(crate) const RSA_PUBLIC_PEM: &str = include_str!("../../tests/fixtures/jwt/rsa_2048.pub.pem");

pub(crate) const USER_ID: &str = "0b7c9f2e-5d4a-4e61-9a3b-8f1d2c3e4a5b";
pub(crate) const AUDIENCE: &str = "authenticated";
pub(crate) const ISSUER: &str = "https://abcdefghijklmnop.supabase.co/auth/v1";
pub(crate) const HS_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";

pub(crate) fn ec1_key() -> EncodingKey {
    EncodingKey::from_ec_pem(EC1_PEM.as_bytes()).unwrap()
}

pub(crate) fn ec2_key() -> EncodingKey {
    EncodingKey::from_ec_pem(EC2_PEM.as_bytes()).unwrap()
}

pub(crate) fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap()
}

pub(crate) fn hs_key(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes()).unwrap()
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a Supabase user access token, valid for ten minutes.
pub(crate) fn user_claims() -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": USER_ID,
        "exp": now + 600,
        "iat": now,
        "role": "authenticated",
        "aal": "aal1",
        "email": "trader@example.com",
        "session_id": "5a1f0c8e-3b2d-4c6e-8f9a-0b1c2d3e4f50",
        "is_anonymous": false,
    })
}

/// Signs `claims` with `key` under `alg`, naming `kid` in the header.
pub(crate) fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    crate::auth::install_crypto_provider();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// Builds a token from raw parts, for headers no library would sign
/// (`alg: none`) and HMAC signatures made with arbitrary bytes.
pub(crate) fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!(
        "{}.{}.{}",
        part(header),
        part(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// An HS256 signature over `header.claims` computed by hand with `secret`
/// (any bytes, e.g. a public key PEM), as an attacker would.
pub(crate) fn hs256_with_bytes(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let unsigned = raw_token(header, claims, b"");
    let message = unsigned.trim_end_matches('.');
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(message.as_bytes());
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

#[derive(Default)]
struct ServerState {
    body: Mutex<String>,
    status: AtomicU16,
    delay_ms: AtomicU64,
    fetches: AtomicUsize,
}

/// A JWKS endpoint on 127.0.0.1 whose body and status tests can change.
pub(crate) struct JwksServer {
    url: Url,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub(crate) async fn start(body: &str) -> Self {
        let state = Arc::new(ServerState {
            body: Mutex::new(body.to_owned()),
            status: AtomicU16::new(200),
            ..Default::default()
        });
        let app = axum::Router::new()
            .route("/.well-known/jwks.json", axum::routing::get(serve))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, state, task }
    }

    pub(crate) fn url(&self) -> Url {
        self.url.clone()
    }

    pub(crate) fn set_body(&self, body: &str) {
        *self.state.body.lock().unwrap() = body.to_owned();
    }

    pub(crate) fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    pub(crate) fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// How many requests the endpoint has received.
    pub(crate) fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap();
    let body = state.body.lock().unwrap().clone();
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body)
}

/// Everything logged on this thread, at every level, while it lives.
///
/// A process-wide subscriber writes into a per-thread buffer: a scoped
/// (`set_default`) subscriber would race with other tests over tracing's
/// per-callsite interest cache and miss events.
pub(crate) struct LogCapture {
    buffer: Arc<Mutex<Vec<u8>>>,
}

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { std::cell::RefCell::new(None) };
}

impl LogCapture {
    pub(crate) fn start() -> Self {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(|| ThreadLogWriter)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in unit tests");
        });
        let buffer = Arc::new(Mutex::new(Vec::new()));
        CAPTURE.with(|capture| *capture.borrow_mut() = Some(Arc::clone(&buffer)));
        Self { buffer }
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        CAPTURE.with(|capture| *capture.borrow_mut() = None);
    }
}

/// Appends to the current thread's capture buffer, if any; drops the rest.
struct ThreadLogWriter;

impl std::io::Write for ThreadLogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some(buffer) = capture.borrow().as_ref() {
                buffer.lock().unwrap().extend_from_slice(bytes);
            }
        });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
