//! The per-request JWT Coinbase Advanced Trade requires (exchanges.md §2
//! "JWT (per request)"): header `{alg, kid, nonce, typ}`, claims
//! `{sub, iss: "cdp", nbf, exp: nbf + 120, uri: "GET host/path"}`, signed with
//! the key's ES256 or EdDSA signature, sent as `Authorization: Bearer <jwt>`.

use super::key::SigningKey;
use crate::crypto::SecretString;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use url::Url;

/// Coinbase: "Your JWT expires after 2 minutes".
pub const LIFETIME_SECS: i64 = 120;
const ISSUER: &str = "cdp";
/// 32 random bytes, as hex (what the official Python SDK sends).
const NONCE_BYTES: usize = 32;

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    kid: &'a str,
    nonce: &'a str,
    typ: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iss: &'a str,
    nbf: i64,
    exp: i64,
    uri: &'a str,
}

/// A fresh random nonce: 64 lowercase hex characters.
pub fn nonce() -> String {
    hex::encode(rand::random::<[u8; NONCE_BYTES]>())
}

/// The `uri` claim for `method` on `path` at `base_url`: method, space, host
/// (with the port when it is not the scheme's default), path; no scheme and
/// no query string. `None` when the URL has no host.
pub fn request_uri(method: &str, base_url: &Url, path: &str) -> Option<String> {
    let host = base_url.host_str()?;
    Some(match base_url.port() {
        Some(port) => format!("{method} {host}:{port}{path}"),
        None => format!("{method} {host}{path}"),
    })
}

/// Builds and signs a JWT for one request. `now_secs` is Coinbase's time
/// (the caller corrects the local clock). `None` if signing failed.
pub fn build(key: &SigningKey, key_name: &str, uri: &str, now_secs: i64, nonce: &str) -> Option<SecretString> {
    let header = Header {
        alg: key.algorithm(),
        kid: key_name,
        nonce,
        typ: "JWT",
    };
    let claims = Claims {
        sub: key_name,
        iss: ISSUER,
        nbf: now_secs,
        exp: now_secs + LIFETIME_SECS,
        uri,
    };
    let header = serde_json::to_vec(&header).ok()?;
    let claims = serde_json::to_vec(&claims).ok()?;
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let signature = key.sign(signing_input.as_bytes())?;
    Some(SecretString::new(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::coinbase::key::tests::{ec_key, ed_key};
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use serde_json::{Value, json};

    const NAME: &str =
        "organizations/3f1c3b0e-8d2a-4a44-9d4e-0c8f2b7a1e55/apiKeys/5b2e7c10-1a3d-4f6b-8e9c-2d4f6a8b0c1e";
    const URI: &str = "GET api.coinbase.com/api/v3/brokerage/key_permissions";
    const NOW: i64 = 1_700_000_000;

    fn segments(jwt: &str) -> (Value, Value) {
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |s: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
        (decode(parts[0]), decode(parts[1]))
    }

    /// Checks the signature with `jsonwebtoken`, an independent JWS implementation.
    fn verify(jwt: &str, key: &DecodingKey, alg: Algorithm) -> Result<Value, jsonwebtoken::errors::Error> {
        crate::install_crypto_providers();
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(jwt, key, &validation).map(|d| d.claims)
    }

    #[test]
    fn es256_token_has_the_documented_header_and_claims_and_verifies() {
        let ec = ec_key();
        let key = SigningKey::parse(&ec.sec1_pem).unwrap();
        let nonce = nonce();
        let jwt = build(&key, NAME, URI, NOW, &nonce).unwrap();
        let (header, claims) = segments(jwt.expose());
        assert_eq!(
            header,
            json!({"alg": "ES256", "kid": NAME, "nonce": nonce, "typ": "JWT"})
        );
        assert_eq!(
            claims,
            json!({"sub": NAME, "iss": "cdp", "nbf": NOW, "exp": NOW + 120, "uri": URI})
        );
        let public = DecodingKey::from_ec_der(&ec.public);
        assert_eq!(verify(jwt.expose(), &public, Algorithm::ES256).unwrap(), claims);
        // Another key's public half does not verify it.
        let other = DecodingKey::from_ec_der(&ec_key().public);
        assert!(verify(jwt.expose(), &other, Algorithm::ES256).is_err());
    }

    #[test]
    fn eddsa_token_verifies_and_says_eddsa() {
        let ed = ed_key();
        let secret = base64::engine::general_purpose::STANDARD.encode([ed.seed.clone(), ed.public.clone()].concat());
        let key = SigningKey::parse(&secret).unwrap();
        let jwt = build(&key, NAME, URI, NOW, &nonce()).unwrap();
        let (header, _) = segments(jwt.expose());
        assert_eq!(header["alg"], "EdDSA");
        // DecodingKey::from_ed_der takes the raw 32-byte public key.
        let public = DecodingKey::from_ed_der(&ed.public);
        assert!(verify(jwt.expose(), &public, Algorithm::EdDSA).is_ok());
        // Tampering with the claims breaks the signature.
        let parts: Vec<&str> = jwt.expose().split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&json!({"sub": NAME, "iss": "cdp", "nbf": NOW, "exp": NOW + 9999, "uri": URI})).unwrap(),
        );
        let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        assert!(verify(&forged, &public, Algorithm::EdDSA).is_err());
    }

    #[test]
    fn eddsa_signature_matches_rfc_8037_example() {
        // RFC 8037 appendix A.4: Ed25519 signing of "Example of Ed25519 signing".
        let seed = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap();
        let key = SigningKey::parse(&base64::engine::general_purpose::STANDARD.encode(&seed)).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(key.public_key()),
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
        let signature = key
            .sign(b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc")
            .unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(signature),
            "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        );
    }

    #[test]
    fn nonces_are_64_hex_characters_and_fresh() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn every_token_is_different() {
        let key = SigningKey::parse(&ec_key().sec1_pem).unwrap();
        let a = build(&key, NAME, URI, NOW, &nonce()).unwrap();
        let b = build(&key, NAME, URI, NOW, &nonce()).unwrap();
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn uri_is_host_port_and_path_without_scheme_or_query() {
        let path = "/api/v3/brokerage/key_permissions";
        let uri = |base: &str| request_uri("GET", &Url::parse(base).unwrap(), path);
        assert_eq!(uri("https://api.coinbase.com").as_deref(), Some(URI));
        assert_eq!(uri("https://api.coinbase.com:443/").as_deref(), Some(URI));
        assert_eq!(
            uri("http://127.0.0.1:43210/").as_deref(),
            Some("GET 127.0.0.1:43210/api/v3/brokerage/key_permissions")
        );
        assert_eq!(
            uri("https://api.coinbase.com:8443").as_deref(),
            Some("GET api.coinbase.com:8443/api/v3/brokerage/key_permissions")
        );
        assert_eq!(uri("unix:/run/socket"), None);
    }
}
