//! The bearer-token [`Verifier`]: picks the key from the token header (the
//! HS256 shared secret, or a JWKS key by `kid` for ES256/RS256), verifies the
//! signature and registered claims with `jsonwebtoken`, and returns the
//! [`Principal`]. Also [`issue_hs256_token`] for the embedded demo user.

use super::claims::{AccessClaims, DEFAULT_ROLE, IssuedClaims, Principal};
use super::jwks::{JwksCache, JwksTiming};
use super::{AuthError, install_crypto_provider};
use crate::crypto::SecretString;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use std::fmt;
use uuid::Uuid;

/// Clock skew tolerated on `exp` and `nbf`.
/// Clock difference tolerated on `exp` and `nbf` (a socket stays open this long past `exp`).
pub const LEEWAY_SECS: u64 = 30;
/// Longer tokens are refused before any decoding (Supabase's are ~1 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Supabase's legacy JWT secrets are at least this long.
const MIN_HS256_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The project's shared JWT secret (legacy Supabase signing), used as raw UTF-8 bytes.
    pub hs256_secret: Option<SecretString>,
    /// `https://<ref>.supabase.co/auth/v1/.well-known/jwks.json`.
    pub jwks_url: Option<url::Url>,
    /// Must appear in `aud` (Supabase: `authenticated`).
    pub audience: String,
    /// When set, `iss` is required and must equal it.
    pub issuer: Option<String>,
}

/// Verifies bearer JWTs as Supabase issues them. Cheap to share (`Arc`);
/// all methods take `&self`.
pub struct Verifier {
    hs256: Option<DecodingKey>,
    jwks: Option<JwksCache>,
    jwks_url: Option<url::Url>,
    audience: String,
    issuer: Option<String>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("hs256", &self.hs256.is_some())
            .field("jwks_url", &self.jwks_url.as_ref().map(url::Url::as_str))
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl Verifier {
    /// Fails (a start-up error) unless at least one of `hs256_secret` and
    /// `jwks_url` is set, the secret is non-empty, the JWKS URL is http(s)
    /// and the audience is non-empty.
    pub fn new(config: AuthConfig, http: reqwest::Client) -> Result<Self, AuthError> {
        Self::with_jwks_timing(config, http, JwksTiming::default())
    }

    pub(crate) fn with_jwks_timing(
        config: AuthConfig,
        http: reqwest::Client,
        timing: JwksTiming,
    ) -> Result<Self, AuthError> {
        install_crypto_provider();
        if config.hs256_secret.is_none() && config.jwks_url.is_none() {
            return Err(AuthError::Config("set a JWT secret or a JWKS URL"));
        }
        if config.audience.trim().is_empty() {
            return Err(AuthError::Config("the JWT audience must not be empty"));
        }
        if config.issuer.as_deref().is_some_and(|iss| iss.trim().is_empty()) {
            return Err(AuthError::Config("the JWT issuer, when set, must not be empty"));
        }
        let hs256 = match &config.hs256_secret {
            None => None,
            Some(secret) => {
                if secret.expose().len() < MIN_HS256_SECRET_BYTES {
                    tracing::warn!("the HS256 JWT secret is shorter than {MIN_HS256_SECRET_BYTES} bytes");
                }
                let key = DecodingKey::from_secret(secret.expose().as_bytes())
                    .map_err(|_| AuthError::Config("the JWT secret must not be empty"))?;
                Some(key)
            }
        };
        if let Some(url) = &config.jwks_url
            && !matches!(url.scheme(), "https" | "http")
        {
            return Err(AuthError::Config("the JWKS URL must be http(s)"));
        }
        let jwks = config.jwks_url.clone().map(|url| JwksCache::new(url, http, timing));
        Ok(Self {
            hs256,
            jwks,
            jwks_url: config.jwks_url,
            audience: config.audience,
            issuer: config.issuer,
        })
    }

    /// Verifies `token` (without the `Bearer ` prefix) and returns the caller.
    /// Every error means `UNAUTHENTICATED`; none contains the token.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let result = self.verify_inner(token).await;
        if let Err(reason) = &result {
            tracing::debug!(%reason, "bearer token refused");
        }
        result
    }

    async fn verify_inner(&self, token: &str) -> Result<Principal, AuthError> {
        let header = TokenHeader::read(token)?;
        let jwks_key;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref().ok_or(AuthError::UnsupportedAlgorithm)?,
            _ => {
                let jwks = self.jwks.as_ref().ok_or(AuthError::UnsupportedAlgorithm)?;
                let kid = header.kid.as_deref().ok_or(AuthError::UnknownKey)?;
                jwks_key = jwks.key(kid).await?;
                // No algorithm confusion: the key's own algorithm must be the token's.
                if jwks_key.alg != header.alg {
                    return Err(AuthError::KeyMismatch);
                }
                &jwks_key.key
            }
        };
        let data = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation(header.alg))
            .map_err(|e| AuthError::from_jwt(&e))?;
        data.claims.into_principal()
    }

    /// Exactly one algorithm is allowed per decode: the one the key was chosen for.
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&[&self.audience]);
        let mut required = vec!["exp", "aud"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

/// The header fields read before any key is chosen.
struct TokenHeader {
    alg: Algorithm,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl TokenHeader {
    /// Reads the (unverified) header. `alg` is matched against our own short
    /// list by name, so `none` and every other algorithm stop here.
    fn read(token: &str) -> Result<Self, AuthError> {
        if token.trim().is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_claims), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let json = URL_SAFE_NO_PAD.decode(header).map_err(|_| AuthError::Malformed)?;
        let raw: RawHeader = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
        let alg = match raw.alg.as_str() {
            "HS256" => Algorithm::HS256,
            "ES256" => Algorithm::ES256,
            "RS256" => Algorithm::RS256,
            _ => return Err(AuthError::UnsupportedAlgorithm),
        };
        Ok(Self { alg, kid: raw.kid })
    }
}

/// Issues an HS256 token as Supabase would (for the embedded demo user and
/// tests): `sub`, `aud`, `exp`, `iat` and `role: "authenticated"`. It has no
/// `iss`, so it only verifies where no issuer is configured.
///
/// # Panics
/// If `secret` is empty: the caller guarantees a non-empty secret (the
/// message does not contain the secret).
pub fn issue_hs256_token(secret: &SecretString, user_id: Uuid, audience: &str, ttl: std::time::Duration) -> String {
    install_crypto_provider();
    let now = chrono::Utc::now().timestamp();
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let claims = IssuedClaims {
        sub: user_id,
        aud: audience,
        exp: now.saturating_add(ttl),
        iat: now,
        role: DEFAULT_ROLE,
    };
    let signed = EncodingKey::from_secret(secret.expose().as_bytes())
        .and_then(|key| jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key));
    match signed {
        Ok(token) => token,
        Err(_) => panic!("cannot issue an HS256 token: the JWT secret is empty"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_support::*;
    use serde_json::{Value, json};
    use std::time::Duration;

    fn config(hs256: bool, jwks: Option<&JwksServer>) -> AuthConfig {
        AuthConfig {
            hs256_secret: hs256.then(|| SecretString::new(HS_SECRET)),
            jwks_url: jwks.map(JwksServer::url),
            audience: AUDIENCE.to_owned(),
            issuer: None,
        }
    }

    fn hs_verifier() -> Verifier {
        Verifier::new(config(true, None), reqwest::Client::new()).unwrap()
    }

    fn hs(claims: &Value) -> String {
        sign(Algorithm::HS256, None, claims, &hs_key(HS_SECRET))
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        claims.as_object_mut().unwrap().remove(key);
        claims
    }

    /// Verifies a token that must be refused, and checks that the error's
    /// message gives away neither the token nor any part of it.
    async fn refused(verifier: &Verifier, token: &str) -> AuthError {
        let err = verifier.verify(token).await.expect_err("token must be refused");
        let message = err.to_string();
        assert!(message.len() < 60, "message too long: {message}");
        if !token.is_empty() {
            assert!(!message.contains(token), "message contains the token");
        }
        for part in token.split('.').filter(|part| part.len() >= 8) {
            assert!(!message.contains(part), "message contains a token part");
        }
        err
    }

    // ----- configuration -----

    #[test]
    fn needs_a_secret_or_a_jwks_url() {
        let err = Verifier::new(config(false, None), reqwest::Client::new()).unwrap_err();
        assert!(matches!(err, AuthError::Config(_)));
    }

    #[test]
    fn refuses_unusable_configuration() {
        let http = reqwest::Client::new();
        let empty_secret = AuthConfig {
            hs256_secret: Some(SecretString::new("")),
            ..config(true, None)
        };
        assert!(matches!(
            Verifier::new(empty_secret, http.clone()),
            Err(AuthError::Config(_))
        ));
        let no_audience = AuthConfig {
            audience: " ".into(),
            ..config(true, None)
        };
        assert!(matches!(
            Verifier::new(no_audience, http.clone()),
            Err(AuthError::Config(_))
        ));
        let empty_issuer = AuthConfig {
            issuer: Some(String::new()),
            ..config(true, None)
        };
        assert!(matches!(
            Verifier::new(empty_issuer, http.clone()),
            Err(AuthError::Config(_))
        ));
        let ftp = AuthConfig {
            jwks_url: Some("ftp://example.com/jwks.json".parse().unwrap()),
            ..config(false, None)
        };
        assert!(matches!(Verifier::new(ftp, http), Err(AuthError::Config(_))));
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let verifier = hs_verifier();
        let printed = format!("{verifier:?} {:?}", config(true, None));
        assert!(!printed.contains(HS_SECRET));
        assert!(printed.contains("hs256: true"));
    }

    // ----- HS256 -----

    #[tokio::test]
    async fn hs256_valid_token_gives_the_principal() {
        let claims = user_claims();
        let principal = hs_verifier().verify(&hs(&claims)).await.unwrap();
        assert_eq!(principal.user_id, Uuid::parse_str(USER_ID).unwrap());
        assert_eq!(principal.role, "authenticated");
        assert_eq!(principal.email.as_deref(), Some("trader@example.com"));
        assert_eq!(principal.expires_at.timestamp(), claims["exp"].as_i64().unwrap());
    }

    #[tokio::test]
    async fn hs256_role_defaults_to_authenticated() {
        let token = hs(&without(user_claims(), "role"));
        assert_eq!(hs_verifier().verify(&token).await.unwrap().role, "authenticated");
    }

    #[tokio::test]
    async fn expired_token_is_refused_beyond_the_leeway() {
        let v = hs_verifier();
        let expired = hs(&with(user_claims(), "exp", json!(now() - 120)));
        assert_eq!(refused(&v, &expired).await, AuthError::Expired);
        let within_leeway = hs(&with(user_claims(), "exp", json!(now() - 10)));
        assert!(v.verify(&within_leeway).await.is_ok());
    }

    #[tokio::test]
    async fn exp_is_required() {
        let token = hs(&without(user_claims(), "exp"));
        assert_eq!(refused(&hs_verifier(), &token).await, AuthError::MissingClaim("exp"));
        // An exp that is not a NumericDate counts as missing.
        let token = hs(&with(user_claims(), "exp", json!("tomorrow")));
        assert_eq!(refused(&hs_verifier(), &token).await, AuthError::MissingClaim("exp"));
    }

    #[tokio::test]
    async fn token_not_yet_valid_is_refused() {
        let v = hs_verifier();
        let future = hs(&with(user_claims(), "nbf", json!(now() + 120)));
        assert_eq!(refused(&v, &future).await, AuthError::NotYetValid);
        let within_leeway = hs(&with(user_claims(), "nbf", json!(now() + 10)));
        assert!(v.verify(&within_leeway).await.is_ok());
    }

    #[tokio::test]
    async fn audience_must_match() {
        let v = hs_verifier();
        let wrong = hs(&with(user_claims(), "aud", json!("anon")));
        assert_eq!(refused(&v, &wrong).await, AuthError::WrongAudience);
        let missing = hs(&without(user_claims(), "aud"));
        assert_eq!(refused(&v, &missing).await, AuthError::MissingClaim("aud"));
        let none_of_them = hs(&with(user_claims(), "aud", json!(["web", "mobile"])));
        assert_eq!(refused(&v, &none_of_them).await, AuthError::WrongAudience);
        let empty = hs(&with(user_claims(), "aud", json!([])));
        assert_eq!(refused(&v, &empty).await, AuthError::WrongAudience);
    }

    #[tokio::test]
    async fn audience_may_be_an_array_containing_ours() {
        let token = hs(&with(user_claims(), "aud", json!(["web", "authenticated"])));
        assert!(hs_verifier().verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn issuer_is_checked_only_when_configured() {
        let wrong_iss = hs(&with(user_claims(), "iss", json!("https://evil.supabase.co/auth/v1")));
        let no_iss = hs(&without(user_claims(), "iss"));
        // Not configured: any or no issuer passes.
        assert!(hs_verifier().verify(&wrong_iss).await.is_ok());
        assert!(hs_verifier().verify(&no_iss).await.is_ok());

        let config = AuthConfig {
            issuer: Some(ISSUER.into()),
            ..config(true, None)
        };
        let v = Verifier::new(config, reqwest::Client::new()).unwrap();
        assert!(v.verify(&hs(&user_claims())).await.is_ok());
        assert_eq!(refused(&v, &wrong_iss).await, AuthError::WrongIssuer);
        assert_eq!(refused(&v, &no_iss).await, AuthError::MissingClaim("iss"));
    }

    #[tokio::test]
    async fn sub_is_required_and_must_be_a_uuid() {
        let v = hs_verifier();
        let missing = hs(&without(user_claims(), "sub"));
        assert_eq!(refused(&v, &missing).await, AuthError::NoSubject);
        for bad in [
            json!("user-42"),
            json!(""),
            json!(42),
            json!("00000000-0000-0000-0000-000000000000"),
        ] {
            let token = hs(&with(user_claims(), "sub", bad));
            assert_eq!(refused(&v, &token).await, AuthError::InvalidSubject);
        }
    }

    #[tokio::test]
    async fn supabase_anon_and_service_role_keys_are_not_user_tokens() {
        let v = hs_verifier();
        for role in ["anon", "service_role"] {
            // Exactly the shape of the project API keys: no aud, no sub.
            let key =
                json!({"iss": "supabase", "ref": "abcdefghijklmnop", "role": role, "iat": now(), "exp": now() + 3600});
            assert_eq!(refused(&v, &hs(&key)).await, AuthError::MissingClaim("aud"));
            // Even with our audience added, the missing user is what refuses it.
            let with_aud = with(key, "aud", json!(AUDIENCE));
            assert_eq!(refused(&v, &hs(&with_aud)).await, AuthError::NoSubject);
        }
    }

    #[tokio::test]
    async fn alg_none_and_other_algorithms_are_refused() {
        let v = hs_verifier();
        let claims = user_claims();
        for alg in [
            "none", "None", "NONE", "nOnE", "HS384", "HS512", "PS256", "ES384", "EdDSA", "",
        ] {
            let header = json!({"alg": alg, "typ": "JWT"});
            assert_eq!(
                refused(&v, &raw_token(&header, &claims, b"")).await,
                AuthError::UnsupportedAlgorithm,
                "{alg}"
            );
            let with_sig = raw_token(&header, &claims, b"not-a-signature");
            assert_eq!(refused(&v, &with_sig).await, AuthError::UnsupportedAlgorithm, "{alg}");
        }
    }

    #[tokio::test]
    async fn hs256_with_an_empty_signature_is_refused() {
        let token = hs(&user_claims());
        let (unsigned, _) = token.rsplit_once('.').unwrap();
        assert_eq!(
            refused(&hs_verifier(), &format!("{unsigned}.")).await,
            AuthError::InvalidSignature
        );
    }

    #[tokio::test]
    async fn wrong_secret_is_an_invalid_signature() {
        let token = sign(
            Algorithm::HS256,
            None,
            &user_claims(),
            &hs_key("another-secret-that-is-also-32-bytes-long"),
        );
        assert_eq!(refused(&hs_verifier(), &token).await, AuthError::InvalidSignature);
    }

    #[tokio::test]
    async fn tampered_claims_are_an_invalid_signature() {
        let token = hs(&user_claims());
        let parts: Vec<&str> = token.split('.').collect();
        let forged = with(user_claims(), "sub", json!("11111111-2222-4333-8444-555555555555"));
        let forged_part = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let tampered = format!("{}.{}.{}", parts[0], forged_part, parts[2]);
        assert_eq!(refused(&hs_verifier(), &tampered).await, AuthError::InvalidSignature);
    }

    #[tokio::test]
    async fn malformed_token_strings_are_refused() {
        let v = hs_verifier();
        assert_eq!(refused(&v, "").await, AuthError::Missing);
        assert_eq!(refused(&v, "   ").await, AuthError::Missing);
        let valid = hs(&user_claims());
        let huge = format!("{valid}{}", "A".repeat(MAX_TOKEN_BYTES));
        let header_not_json = format!("{}.e30.sig", URL_SAFE_NO_PAD.encode("not json"));
        let header_no_alg = raw_token(&json!({"typ": "JWT"}), &user_claims(), b"sig");
        let header_alg_number = raw_token(&json!({"alg": 256}), &user_claims(), b"sig");
        let header_array = format!("{}.e30.sig", URL_SAFE_NO_PAD.encode("[]"));
        let claims_not_json = format!(
            "{}.{}.sig",
            valid.split('.').next().unwrap(),
            URL_SAFE_NO_PAD.encode("x")
        );
        for token in [
            "a.b",
            "garbage",
            "a.b.c.d",
            "..",
            "...",
            "!!!.???.***",
            "Bearer abc.def.ghi",
            &huge,
            &header_not_json,
            &header_no_alg,
            &header_alg_number,
            &header_array,
            &format!("{valid}.extra"),
        ] {
            assert_eq!(refused(&v, token).await, AuthError::Malformed, "{:.40}", token);
        }
        // A valid header with junk claims fails at the signature check first.
        assert_eq!(refused(&v, &claims_not_json).await, AuthError::InvalidSignature);
    }

    #[tokio::test]
    async fn rs256_and_es256_are_refused_when_only_hs256_is_configured() {
        let v = hs_verifier();
        let rs = sign(Algorithm::RS256, Some("test-rsa-1"), &user_claims(), &rsa_key());
        assert_eq!(refused(&v, &rs).await, AuthError::UnsupportedAlgorithm);
        let es = sign(Algorithm::ES256, Some("test-ec-1"), &user_claims(), &ec1_key());
        assert_eq!(refused(&v, &es).await, AuthError::UnsupportedAlgorithm);
    }

    // ----- JWKS (ES256 / RS256) -----

    async fn jwks_verifier(server: &JwksServer, hs256: bool) -> Verifier {
        Verifier::new(config(hs256, Some(server)), reqwest::Client::new()).unwrap()
    }

    #[tokio::test]
    async fn es256_and_rs256_verify_with_the_key_named_by_kid() {
        let server = JwksServer::start(JWKS).await;
        let v = jwks_verifier(&server, false).await;
        let es = sign(Algorithm::ES256, Some("test-ec-1"), &user_claims(), &ec1_key());
        let rs = sign(Algorithm::RS256, Some("test-rsa-1"), &user_claims(), &rsa_key());
        assert_eq!(v.verify(&es).await.unwrap().user_id, Uuid::parse_str(USER_ID).unwrap());
        assert_eq!(v.verify(&rs).await.unwrap().user_id, Uuid::parse_str(USER_ID).unwrap());
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn jwks_tokens_get_the_same_claim_checks() {
        let server = JwksServer::start(JWKS).await;
        let v = jwks_verifier(&server, false).await;
        let expired = with(user_claims(), "exp", json!(now() - 120));
        let es = sign(Algorithm::ES256, Some("test-ec-1"), &expired, &ec1_key());
        assert_eq!(refused(&v, &es).await, AuthError::Expired);
        let anon = without(user_claims(), "sub");
        let rs = sign(Algorithm::RS256, Some("test-rsa-1"), &anon, &rsa_key());
        assert_eq!(refused(&v, &rs).await, AuthError::NoSubject);
    }

    #[tokio::test]
    async fn jwks_token_without_kid_or_with_the_wrong_key_is_refused() {
        let server = JwksServer::start(JWKS).await;
        let v = jwks_verifier(&server, false).await;
        let no_kid = sign(Algorithm::ES256, None, &user_claims(), &ec1_key());
        assert_eq!(refused(&v, &no_kid).await, AuthError::UnknownKey);
        // Signed by a key that is not the one its kid names.
        let other_key = sign(Algorithm::ES256, Some("test-ec-1"), &user_claims(), &ec2_key());
        assert_eq!(refused(&v, &other_key).await, AuthError::InvalidSignature);
    }

    #[tokio::test]
    async fn unknown_kid_triggers_one_refetch_and_succeeds_when_the_key_appears() {
        let server = JwksServer::start(JWKS).await;
        let timing = JwksTiming {
            min_refetch_interval: Duration::from_millis(100),
            ..Default::default()
        };
        let v = Verifier::with_jwks_timing(config(false, Some(&server)), reqwest::Client::new(), timing).unwrap();
        let known = sign(Algorithm::ES256, Some("test-ec-1"), &user_claims(), &ec1_key());
        assert!(v.verify(&known).await.is_ok());
        assert_eq!(server.fetches(), 1);

        // The issuer rotates: test-ec-2 is published and starts signing.
        server.set_body(JWKS_ROTATED);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let rotated = sign(Algorithm::ES256, Some("test-ec-2"), &user_claims(), &ec2_key());
        assert!(v.verify(&rotated).await.is_ok());
        assert_eq!(server.fetches(), 2);
        // Both keys are now cached.
        assert!(v.verify(&rotated).await.is_ok());
        assert!(v.verify(&known).await.is_ok());
        assert_eq!(server.fetches(), 2);
    }

    #[tokio::test]
    async fn many_unknown_kids_cause_at_most_one_fetch_in_the_window() {
        let server = JwksServer::start(JWKS).await;
        let v = std::sync::Arc::new(jwks_verifier(&server, false).await);
        let checks = (0..40).map(|i| {
            let v = std::sync::Arc::clone(&v);
            let token = sign(
                Algorithm::ES256,
                Some(&format!("random-kid-{i}")),
                &user_claims(),
                &ec1_key(),
            );
            tokio::spawn(async move { v.verify(&token).await })
        });
        for check in checks {
            assert_eq!(check.await.unwrap().unwrap_err(), AuthError::UnknownKey);
        }
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn a_jwk_is_only_used_for_its_own_algorithm() {
        let server = JwksServer::start(JWKS).await;
        let v = jwks_verifier(&server, false).await;
        // RS256 header naming the EC key (signed by the RSA key).
        let rs_on_ec = sign(Algorithm::RS256, Some("test-ec-1"), &user_claims(), &rsa_key());
        assert_eq!(refused(&v, &rs_on_ec).await, AuthError::KeyMismatch);
        // ES256 header naming the RSA key.
        let es_on_rsa = sign(Algorithm::ES256, Some("test-rsa-1"), &user_claims(), &ec1_key());
        assert_eq!(refused(&v, &es_on_rsa).await, AuthError::KeyMismatch);
    }

    #[tokio::test]
    async fn hs256_is_refused_when_only_jwks_is_configured() {
        let server = JwksServer::start(JWKS).await;
        let v = jwks_verifier(&server, false).await;
        let token = sign(Algorithm::HS256, Some("test-rsa-1"), &user_claims(), &hs_key(HS_SECRET));
        assert_eq!(refused(&v, &token).await, AuthError::UnsupportedAlgorithm);
        assert_eq!(server.fetches(), 0, "an HS256 token must not even reach the JWKS");
    }

    #[tokio::test]
    async fn hs256_signed_with_the_rsa_public_key_is_refused() {
        // The classic confusion: the attacker uses the public key PEM as an HMAC secret.
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "test-rsa-1"});
        let forged = hs256_with_bytes(&header, &user_claims(), RSA_PUBLIC_PEM.as_bytes());
        let server = JwksServer::start(JWKS).await;
        let jwks_only = jwks_verifier(&server, false).await;
        assert_eq!(refused(&jwks_only, &forged).await, AuthError::UnsupportedAlgorithm);
        // With a shared secret configured too, HS256 is checked against that secret only.
        let both = jwks_verifier(&server, true).await;
        assert_eq!(refused(&both, &forged).await, AuthError::InvalidSignature);
        // Sanity: the forging helper makes valid signatures with the right secret.
        let genuine = hs256_with_bytes(&header, &user_claims(), HS_SECRET.as_bytes());
        assert!(both.verify(&genuine).await.is_ok());
    }

    #[tokio::test]
    async fn jwks_outage_refuses_jwks_tokens_but_not_hs256() {
        let server = JwksServer::start(JWKS).await;
        server.set_status(503);
        let v = jwks_verifier(&server, true).await;
        let es = sign(Algorithm::ES256, Some("test-ec-1"), &user_claims(), &ec1_key());
        assert_eq!(refused(&v, &es).await, AuthError::KeysUnavailable);
        assert!(v.verify(&hs(&user_claims())).await.is_ok());
    }

    #[tokio::test]
    async fn logs_name_the_reason_but_never_the_token() {
        let logs = LogCapture::start();
        let server = JwksServer::start(JWKS).await;
        server.set_status(500);
        let v = jwks_verifier(&server, true).await;
        let tokens = [
            sign(Algorithm::ES256, Some("test-ec-1"), &user_claims(), &ec1_key()),
            hs(&with(user_claims(), "exp", json!(now() - 120))),
            sign(
                Algorithm::HS256,
                None,
                &user_claims(),
                &hs_key("wrong-secret-wrong-secret-wrong-secret"),
            ),
        ];
        for token in &tokens {
            assert!(v.verify(token).await.is_err());
        }
        let text = logs.text();
        assert!(text.contains("JWKS fetch failed"), "{text}");
        assert!(text.contains("token expired"), "{text}");
        for token in &tokens {
            for part in token.split('.').skip(1) {
                assert!(!text.contains(part), "a token part was logged");
            }
        }
        assert!(!text.contains(HS_SECRET));
    }

    // ----- issuing -----

    #[tokio::test]
    async fn issued_tokens_verify_as_the_demo_user() {
        let user = Uuid::new_v4();
        let token = issue_hs256_token(&SecretString::new(HS_SECRET), user, AUDIENCE, Duration::from_secs(3600));
        let principal = hs_verifier().verify(&token).await.unwrap();
        assert_eq!(principal.user_id, user);
        assert_eq!(principal.role, "authenticated");
        assert_eq!(principal.email, None);
        let expected_exp = now() + 3600;
        assert!((principal.expires_at.timestamp() - expected_exp).abs() <= 2);
        assert!(!token.contains(HS_SECRET));
    }

    #[tokio::test]
    async fn issued_tokens_are_refused_elsewhere() {
        let user = Uuid::new_v4();
        let other_aud = issue_hs256_token(&SecretString::new(HS_SECRET), user, "service", Duration::from_secs(60));
        assert_eq!(refused(&hs_verifier(), &other_aud).await, AuthError::WrongAudience);
        let other_secret = issue_hs256_token(
            &SecretString::new("a-different-secret-of-sufficient-length"),
            user,
            AUDIENCE,
            Duration::from_secs(60),
        );
        assert_eq!(
            refused(&hs_verifier(), &other_secret).await,
            AuthError::InvalidSignature
        );
    }

    #[test]
    #[should_panic(expected = "the JWT secret is empty")]
    fn issuing_with_an_empty_secret_panics_without_details() {
        issue_hs256_token(
            &SecretString::new(""),
            Uuid::new_v4(),
            AUDIENCE,
            Duration::from_secs(60),
        );
    }
}
