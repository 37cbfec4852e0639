//! The JWKS cache: public signing keys fetched from the issuer's
//! `.well-known/jwks.json`, kept for 10 minutes and looked up by `kid`.
//!
//! A token naming an unknown `kid` triggers a refetch (a standby key may just
//! have been published), but fetches are spaced at least 30 s apart, so a
//! flood of tokens with random `kid`s costs the JWKS endpoint one request per
//! window. Concurrent lookups share one in-flight fetch. Only ES256 (P-256)
//! and RS256 keys are taken; shared-secret (`oct`) keys are never read from
//! a JWKS. When the keys cannot be (re)fetched the cache fails closed.

use super::AuthError;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;
use url::Url;

/// A JWKS document larger than this is refused (Supabase's is about 1 KiB).
const MAX_JWKS_BYTES: usize = 256 * 1024;
const P256_COORDINATE_BYTES: usize = 32;
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// How long keys are trusted and how often the endpoint may be asked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JwksTiming {
    /// Keys older than this are refetched before use.
    pub ttl: Duration,
    /// No two fetches (successful or not) start closer together than this.
    pub min_refetch_interval: Duration,
    /// Bound on one fetch, so a hung endpoint cannot stall every request.
    pub fetch_timeout: Duration,
}

impl Default for JwksTiming {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10 * 60),
            min_refetch_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// A public key from the JWKS and the one algorithm it may verify.
#[derive(Debug)]
pub(crate) struct VerifyingKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

#[derive(Debug)]
struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
    fetched_at: Instant,
}

/// What a lookup should do, decided from the cache state alone.
#[derive(Debug)]
enum Step {
    Hit(Arc<VerifyingKey>),
    Fetch,
    /// Keys are fresh, the `kid` is not among them, and a refetch is not yet allowed.
    Unknown,
    /// No fresh keys and a refetch is not yet allowed (the last one failed).
    Unavailable,
}

fn next_step(
    set: Option<&KeySet>,
    kid: &str,
    now: Instant,
    last_attempt: Option<Instant>,
    timing: &JwksTiming,
) -> Step {
    let fresh = set.filter(|set| now.saturating_duration_since(set.fetched_at) < timing.ttl);
    if let Some(key) = fresh.and_then(|set| set.keys.get(kid)) {
        return Step::Hit(Arc::clone(key));
    }
    let may_fetch = last_attempt.is_none_or(|at| now.saturating_duration_since(at) >= timing.min_refetch_interval);
    match (may_fetch, fresh) {
        (true, _) => Step::Fetch,
        (false, Some(_)) => Step::Unknown,
        (false, None) => Step::Unavailable,
    }
}

pub(crate) struct JwksCache {
    url: Url,
    /// The URL without query or credentials, for logs.
    log_url: String,
    http: reqwest::Client,
    timing: JwksTiming,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// When the last fetch started; held across a fetch so fetches never overlap.
    last_attempt: Mutex<Option<Instant>>,
}

impl JwksCache {
    pub(crate) fn new(url: Url, http: reqwest::Client, timing: JwksTiming) -> Self {
        let log_url = format!("{}{}", url.origin().ascii_serialization(), url.path());
        Self {
            url,
            log_url,
            http,
            timing,
            keys: RwLock::new(None),
            last_attempt: Mutex::new(None),
        }
    }

    /// The verifying key named `kid`, fetching the JWKS when the cache is
    /// empty, stale, or does not know `kid` (subject to the refetch spacing).
    pub(crate) async fn key(&self, kid: &str) -> Result<Arc<VerifyingKey>, AuthError> {
        let timing = &self.timing;
        if let Step::Hit(key) = next_step(self.snapshot().await.as_deref(), kid, Instant::now(), None, timing) {
            return Ok(key);
        }
        let mut last_attempt = self.last_attempt.lock().await;
        // Re-read: another task may have fetched while we waited for the lock.
        match next_step(
            self.snapshot().await.as_deref(),
            kid,
            Instant::now(),
            *last_attempt,
            timing,
        ) {
            Step::Hit(key) => return Ok(key),
            Step::Unknown => return Err(AuthError::UnknownKey),
            Step::Unavailable => return Err(AuthError::KeysUnavailable),
            Step::Fetch => {}
        }
        let started = Instant::now();
        *last_attempt = Some(started);
        metrics::counter!("auth_jwks_fetches_total").increment(1);
        let set = match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(url = %self.log_url, keys = keys.len(), "fetched JWKS");
                Arc::new(KeySet {
                    keys,
                    fetched_at: started,
                })
            }
            Err(reason) => {
                metrics::counter!("auth_jwks_fetch_failures_total").increment(1);
                tracing::warn!(url = %self.log_url, %reason, "JWKS fetch failed; ES256/RS256 tokens refused");
                // Fail closed: stale keys are not used past their TTL.
                return Err(AuthError::KeysUnavailable);
            }
        };
        *self.keys.write().await = Some(Arc::clone(&set));
        set.keys.get(kid).cloned().ok_or(AuthError::UnknownKey)
    }

    async fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.keys.read().await.clone()
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<VerifyingKey>>, FetchError> {
        let mut response = self
            .http
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timing.fetch_timeout)
            .send()
            .await
            .map_err(|e| FetchError::Http(e.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| FetchError::Http(e.without_url()))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

/// Why a fetch failed; logged, never returned to a client.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed: {0}")]
    Http(reqwest::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("document larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not a JWKS document: {0}")]
    Json(serde_json::Error),
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// Parses a JWKS, keeping the usable keys. One odd key (another type, a
/// private key, an encryption key) does not invalidate the others.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Arc<VerifyingKey>>, FetchError> {
    let raw: RawJwks = serde_json::from_slice(body).map_err(FetchError::Json)?;
    let mut keys = HashMap::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Some(kid) = jwk.common.key_id.clone().filter(|kid| !kid.is_empty()) else {
            continue;
        };
        match verifying_key(&jwk) {
            Some(key) if !keys.contains_key(&kid) => {
                keys.insert(kid, Arc::new(key));
            }
            Some(_) => tracing::warn!(%kid, "JWKS lists this kid twice; keeping the first"),
            None => tracing::debug!(%kid, "skipping unusable JWKS key"),
        }
    }
    Ok(keys)
}

/// The key and its algorithm, if the JWK is a signature key we accept and its
/// own `alg` (when given) agrees with its type.
fn verifying_key(jwk: &Jwk) -> Option<VerifyingKey> {
    let common = &jwk.common;
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec)
            if ec.curve == EllipticCurve::P256
                && decoded_len(&ec.x) == Some(P256_COORDINATE_BYTES)
                && decoded_len(&ec.y) == Some(P256_COORDINATE_BYTES) =>
        {
            Algorithm::ES256
        }
        AlgorithmParameters::RSA(rsa) if decoded_len(&rsa.n).is_some_and(|n| n >= MIN_RSA_MODULUS_BYTES) => {
            Algorithm::RS256
        }
        _ => return None,
    };
    if common
        .key_algorithm
        .is_some_and(|declared| declared != KeyAlgorithm::from(alg))
    {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyingKey { alg, key })
}

fn decoded_len(b64url: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(b64url).ok().map(|bytes| bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_support::{JWKS, JWKS_ROTATED, JwksServer};
    use serde_json::json;

    fn set_with(kid: &str, fetched_at: Instant) -> KeySet {
        let keys = parse_jwks(JWKS.as_bytes()).unwrap();
        let key = Arc::clone(keys.values().next().unwrap());
        KeySet {
            keys: HashMap::from([(kid.to_owned(), key)]),
            fetched_at,
        }
    }

    #[test]
    fn policy_hits_fresh_keys_without_fetching() {
        let t = JwksTiming::default();
        let now = Instant::now();
        let set = set_with("a", now);
        assert!(matches!(
            next_step(Some(&set), "a", now + Duration::from_secs(599), Some(now), &t),
            Step::Hit(_)
        ));
    }

    #[test]
    fn policy_refetches_stale_keys() {
        let t = JwksTiming::default();
        let now = Instant::now();
        let set = set_with("a", now);
        let later = now + Duration::from_secs(600);
        assert!(matches!(next_step(Some(&set), "a", later, Some(now), &t), Step::Fetch));
    }

    #[test]
    fn policy_spaces_refetches_for_unknown_kids() {
        let t = JwksTiming::default();
        let now = Instant::now();
        let set = set_with("a", now);
        let soon = now + Duration::from_secs(29);
        assert!(matches!(next_step(Some(&set), "b", soon, Some(now), &t), Step::Unknown));
        let after = now + Duration::from_secs(30);
        assert!(matches!(next_step(Some(&set), "b", after, Some(now), &t), Step::Fetch));
    }

    #[test]
    fn policy_first_lookup_fetches_and_failed_fetch_is_spaced_too() {
        let t = JwksTiming::default();
        let now = Instant::now();
        assert!(matches!(next_step(None, "a", now, None, &t), Step::Fetch));
        let soon = now + Duration::from_secs(1);
        assert!(matches!(next_step(None, "a", soon, Some(now), &t), Step::Unavailable));
        // A stale set after a failed refetch is not used either.
        let old = set_with("a", now);
        let much_later = now + Duration::from_secs(700);
        let failed_at = much_later - Duration::from_secs(1);
        assert!(matches!(
            next_step(Some(&old), "a", much_later, Some(failed_at), &t),
            Step::Unavailable
        ));
    }

    #[test]
    fn parses_the_fixture_keys_with_their_algorithms() {
        let keys = parse_jwks(JWKS_ROTATED.as_bytes()).unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys["test-ec-1"].alg, Algorithm::ES256);
        assert_eq!(keys["test-ec-2"].alg, Algorithm::ES256);
        assert_eq!(keys["test-rsa-1"].alg, Algorithm::RS256);
    }

    fn only_key(jwk: serde_json::Value) -> Option<Algorithm> {
        let body = json!({ "keys": [jwk] }).to_string();
        parse_jwks(body.as_bytes()).unwrap().get("k").map(|key| key.alg)
    }

    fn fixture_jwk(kid: &str) -> serde_json::Value {
        let doc: serde_json::Value = serde_json::from_str(JWKS).unwrap();
        let mut jwk = doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap()
            .clone();
        jwk["kid"] = json!("k");
        jwk
    }

    #[test]
    fn skips_keys_whose_alg_disagrees_with_their_type() {
        let mut ec = fixture_jwk("test-ec-1");
        assert_eq!(only_key(ec.clone()), Some(Algorithm::ES256));
        ec["alg"] = json!("RS256");
        assert_eq!(only_key(ec.clone()), None);
        ec["alg"] = json!("HS256");
        assert_eq!(only_key(ec), None);

        let mut rsa = fixture_jwk("test-rsa-1");
        rsa["alg"] = json!("ES256");
        assert_eq!(only_key(rsa.clone()), None);
        rsa["alg"] = json!("PS256");
        assert_eq!(only_key(rsa), None);
    }

    #[test]
    fn jwk_alg_is_optional_but_type_decides() {
        let mut ec = fixture_jwk("test-ec-1");
        ec.as_object_mut().unwrap().remove("alg");
        assert_eq!(only_key(ec), Some(Algorithm::ES256));
        let mut rsa = fixture_jwk("test-rsa-1");
        rsa.as_object_mut().unwrap().remove("alg");
        assert_eq!(only_key(rsa), Some(Algorithm::RS256));
    }

    #[test]
    fn skips_secret_encryption_weak_and_malformed_keys() {
        // A shared secret must never come from a JWKS.
        assert_eq!(
            only_key(json!({"kty": "oct", "kid": "k", "alg": "HS256", "k": "c2VjcmV0"})),
            None
        );
        let mut enc = fixture_jwk("test-ec-1");
        enc["use"] = json!("enc");
        assert_eq!(only_key(enc), None);
        let mut sign_only = fixture_jwk("test-ec-1");
        sign_only["key_ops"] = json!(["sign"]);
        assert_eq!(only_key(sign_only), None);
        let mut short_x = fixture_jwk("test-ec-1");
        short_x["x"] = json!("AAAA");
        assert_eq!(only_key(short_x), None);
        let mut p384 = fixture_jwk("test-ec-1");
        p384["crv"] = json!("P-384");
        assert_eq!(only_key(p384), None);
        let mut weak_rsa = fixture_jwk("test-rsa-1");
        weak_rsa["n"] = json!(URL_SAFE_NO_PAD.encode([0xC5u8; 128])); // 1024-bit
        assert_eq!(only_key(weak_rsa), None);
        assert_eq!(
            only_key(json!({"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "AAAA"})),
            None
        );
        assert_eq!(only_key(json!({"kty": "EC", "kid": "k"})), None);
        let mut no_kid = fixture_jwk("test-ec-1");
        no_kid.as_object_mut().unwrap().remove("kid");
        let body = json!({ "keys": [no_kid] }).to_string();
        assert!(parse_jwks(body.as_bytes()).unwrap().is_empty());
    }

    #[test]
    fn refuses_documents_that_are_not_a_jwks() {
        for body in ["", "[]", "{}", "{\"keys\": 1}", "<html>"] {
            assert!(
                matches!(parse_jwks(body.as_bytes()), Err(FetchError::Json(_))),
                "{body}"
            );
        }
    }

    fn cache(server: &JwksServer, timing: JwksTiming) -> JwksCache {
        JwksCache::new(server.url(), reqwest::Client::new(), timing)
    }

    #[tokio::test]
    async fn fetches_once_and_serves_from_cache() {
        let server = JwksServer::start(JWKS).await;
        let cache = cache(&server, JwksTiming::default());
        for _ in 0..5 {
            assert_eq!(cache.key("test-ec-1").await.unwrap().alg, Algorithm::ES256);
            assert_eq!(cache.key("test-rsa-1").await.unwrap().alg, Algorithm::RS256);
        }
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn refetches_after_ttl() {
        let server = JwksServer::start(JWKS).await;
        let timing = JwksTiming {
            ttl: Duration::from_millis(50),
            min_refetch_interval: Duration::ZERO,
            ..Default::default()
        };
        let cache = cache(&server, timing);
        cache.key("test-ec-1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        cache.key("test-ec-1").await.unwrap();
        assert_eq!(server.fetches(), 2);
    }

    #[tokio::test]
    async fn a_flood_of_unknown_kids_costs_one_fetch_per_window() {
        let server = JwksServer::start(JWKS).await;
        let cache = Arc::new(cache(&server, JwksTiming::default()));
        let lookups = (0..50).map(|i| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.key(&format!("random-{i}")).await })
        });
        for lookup in lookups {
            assert_eq!(lookup.await.unwrap().unwrap_err(), AuthError::UnknownKey);
        }
        assert_eq!(server.fetches(), 1);
        // Known keys are still served from the cache meanwhile.
        assert!(cache.key("test-ec-1").await.is_ok());
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn unknown_kid_refetches_once_the_window_has_passed() {
        let server = JwksServer::start(JWKS).await;
        let timing = JwksTiming {
            min_refetch_interval: Duration::from_millis(500),
            ..Default::default()
        };
        let cache = cache(&server, timing);
        assert_eq!(cache.key("test-ec-2").await.unwrap_err(), AuthError::UnknownKey);
        server.set_body(JWKS_ROTATED);
        // Inside the window: no new fetch, still unknown.
        assert_eq!(cache.key("test-ec-2").await.unwrap_err(), AuthError::UnknownKey);
        assert_eq!(server.fetches(), 1);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(cache.key("test-ec-2").await.unwrap().alg, Algorithm::ES256);
        assert_eq!(server.fetches(), 2);
    }

    #[tokio::test]
    async fn fetch_errors_fail_closed_and_are_spaced() {
        let server = JwksServer::start(JWKS).await;
        server.set_status(500);
        let cache = cache(&server, JwksTiming::default());
        assert_eq!(cache.key("test-ec-1").await.unwrap_err(), AuthError::KeysUnavailable);
        assert_eq!(cache.key("test-ec-1").await.unwrap_err(), AuthError::KeysUnavailable);
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn bad_documents_and_unreachable_endpoints_are_unavailable() {
        let timing = JwksTiming {
            min_refetch_interval: Duration::ZERO,
            ..Default::default()
        };
        let server = JwksServer::start("not json").await;
        let cache = cache(&server, timing);
        assert_eq!(cache.key("test-ec-1").await.unwrap_err(), AuthError::KeysUnavailable);

        server.set_body(&" ".repeat(MAX_JWKS_BYTES + 1));
        assert_eq!(cache.key("test-ec-1").await.unwrap_err(), AuthError::KeysUnavailable);

        // Nothing listens on a port we just released.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/jwks.json", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let cache = JwksCache::new(url, reqwest::Client::new(), timing);
        assert_eq!(cache.key("test-ec-1").await.unwrap_err(), AuthError::KeysUnavailable);
    }

    #[tokio::test]
    async fn a_hung_endpoint_times_out() {
        let server = JwksServer::start(JWKS).await;
        server.set_delay(Duration::from_secs(5));
        let timing = JwksTiming {
            fetch_timeout: Duration::from_millis(100),
            ..Default::default()
        };
        let cache = cache(&server, timing);
        let started = std::time::Instant::now();
        assert_eq!(cache.key("test-ec-1").await.unwrap_err(), AuthError::KeysUnavailable);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
