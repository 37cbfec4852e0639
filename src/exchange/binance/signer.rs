//! Binance request signing for the three key types (exchanges.md §1). The
//! signed payload is "the query string concatenated without separator to the
//! HTTP body", already percent-encoded.
//! - HMAC: hex HMAC-SHA256 keyed with the 64-character secret.
//! - Ed25519: the Ed25519 signature, base64, then percent-encoded.
//! - RSA: RSASSA-PKCS1-v1_5 with SHA-256, base64, then percent-encoded.
//!
//! Asymmetric keys are read from PKCS#8 PEM (the only form Binance accepts)
//! with aws-lc-rs, the crypto library rustls already uses. Errors name what
//! is wrong with a key, never any of its bytes.

use super::pem::{self, PemError};
use crate::crypto::SecretString;
use aws_lc_rs::error::KeyRejected;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;
use std::fmt;

/// Binance's minimum RSA key size.
const MIN_RSA_BITS: usize = 2048;

/// The kinds of API key Binance issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Hmac,
    Ed25519,
    Rsa,
}

/// Why a pasted secret is not a usable Binance signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Neither a PEM block nor 64 letters and digits.
    NotHmacShaped,
    /// The PEM block itself is unreadable.
    Pem(PemError),
    /// `-----BEGIN RSA PRIVATE KEY-----`: PKCS#1, which Binance refuses.
    Pkcs1Rsa,
    /// `-----BEGIN EC PRIVATE KEY-----`: SEC 1 EC key; Binance has no EC keys.
    EcKey,
    /// `-----BEGIN ENCRYPTED PRIVATE KEY-----`: protected by a passphrase.
    Encrypted,
    /// `-----BEGIN PUBLIC KEY-----`: the half registered at Binance, not the secret.
    PublicKey,
    /// Some other PEM label (a certificate, an OpenSSH key, ...).
    OtherLabel,
    /// A PKCS#8 key of another algorithm (EC, X25519, ...).
    UnsupportedAlgorithm,
    /// An RSA key under 2048 bits.
    RsaTooSmall,
    /// An RSA key over 8192 bits (aws-lc-rs's limit).
    RsaTooLarge,
    /// A PKCS#8 block whose contents are not a valid key.
    InvalidKey,
}

/// A ready-to-use signing key for one request or one test.
pub enum Signer {
    Hmac(SecretString),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// Signing failed inside the crypto library (not expected with a parsed key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignError;

impl fmt::Debug for Signer {
    /// Only the kind: key material stays out of logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer::{:?}", self.kind())
    }
}

impl Signer {
    /// Detects the key type from the secret's shape: a PKCS#8 PEM block
    /// holding an Ed25519 or an RSA (≥ 2048 bits) key, else a 64-character
    /// HMAC secret.
    pub fn from_secret(secret: &SecretString) -> Result<Self, KeyError> {
        let text = secret.expose();
        if !pem::looks_like_pem(text) {
            return if is_hmac_shaped(text) {
                Ok(Self::Hmac(secret.clone()))
            } else {
                Err(KeyError::NotHmacShaped)
            };
        }
        match pem::label(text).map_err(KeyError::Pem)?.as_str() {
            "PRIVATE KEY" => {}
            "RSA PRIVATE KEY" => return Err(KeyError::Pkcs1Rsa),
            "EC PRIVATE KEY" => return Err(KeyError::EcKey),
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
            "PUBLIC KEY" | "RSA PUBLIC KEY" => return Err(KeyError::PublicKey),
            _ => return Err(KeyError::OtherLabel),
        }
        let der = pem::parse(text).map_err(KeyError::Pem)?;
        match Ed25519KeyPair::from_pkcs8(&der) {
            Ok(key) => return Ok(Self::Ed25519(key)),
            Err(e) if !is_wrong_algorithm(&e) => return Err(KeyError::InvalidKey),
            Err(_) => {}
        }
        match RsaKeyPair::from_pkcs8(&der) {
            // aws-lc-rs already refuses keys under 2048 bits; checked again
            // here because it is Binance's rule, not the library's.
            Ok(key) if key.public_modulus_len() * 8 < MIN_RSA_BITS => Err(KeyError::RsaTooSmall),
            Ok(key) => Ok(Self::Rsa(key)),
            Err(e) => Err(match e.description_() {
                "WrongAlgorithm" => KeyError::UnsupportedAlgorithm,
                "TooSmall" => KeyError::RsaTooSmall,
                "TooLarge" => KeyError::RsaTooLarge,
                _ => KeyError::InvalidKey,
            }),
        }
    }

    pub fn kind(&self) -> KeyKind {
        match self {
            Self::Hmac(_) => KeyKind::Hmac,
            Self::Ed25519(_) => KeyKind::Ed25519,
            Self::Rsa(_) => KeyKind::Rsa,
        }
    }

    /// The `signature` parameter's value for `query ‖ body`, ready to append
    /// as the last parameter (`&signature=<value>`) without further encoding.
    pub fn sign(&self, query: &str, body: &str) -> Result<String, SignError> {
        match self {
            Self::Hmac(secret) => Ok(sign_hmac(secret, query, body)),
            Self::Ed25519(key) => {
                let payload = concat(query, body);
                let signature = key.try_sign(payload.as_bytes()).map_err(|_| SignError)?;
                Ok(encode_base64_param(signature.as_ref()))
            }
            Self::Rsa(key) => {
                let payload = concat(query, body);
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    payload.as_bytes(),
                    &mut signature,
                )
                .map_err(|_| SignError)?;
                Ok(encode_base64_param(&signature))
            }
        }
    }

    /// The public half as Binance registers it (raw 32 bytes for Ed25519,
    /// PKCS#1 DER for RSA); `None` for HMAC.
    #[cfg(test)]
    pub fn public_key(&self) -> Option<Vec<u8>> {
        use aws_lc_rs::signature::KeyPair;
        match self {
            Self::Hmac(_) => None,
            Self::Ed25519(key) => Some(key.public_key().as_ref().to_vec()),
            Self::Rsa(key) => Some(key.public_key().as_ref().to_vec()),
        }
    }
}

/// The HMAC-SHA256 signature of `query ‖ body`, as lowercase hex.
pub fn sign_hmac(secret: &SecretString, query: &str, body: &str) -> String {
    // HMAC takes keys of any length (long ones are hashed), so this cannot
    // fail; the fallback keeps a panic path out of request code all the same.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return String::new();
    };
    mac.update(query.as_bytes());
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Binance HMAC API keys and secrets are 64 ASCII letters and digits.
pub fn is_hmac_shaped(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn concat(query: &str, body: &str) -> String {
    let mut payload = String::with_capacity(query.len() + body.len());
    payload.push_str(query);
    payload.push_str(body);
    payload
}

/// Base64, then percent-encoded: `+`, `/` and `=` must not reach Binance raw.
fn encode_base64_param(signature: &[u8]) -> String {
    utf8_percent_encode(&STANDARD.encode(signature), NON_ALPHANUMERIC).to_string()
}

fn is_wrong_algorithm(e: &KeyRejected) -> bool {
    e.description_() == "WrongAlgorithm"
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{ED25519, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
    use percent_encoding::percent_decode_str;

    // Official vectors: binance-spot-api-docs rest-api.md, "SIGNED Endpoint
    // Examples for POST /api/v3/order → HMAC Keys" (exchanges.md §0).
    const SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
    const DOC_QUERY: &str = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";

    // Made with `openssl genpkey -algorithm ed25519` (a PKCS#8 v1 key, as
    // OpenSSL writes them); throwaway test keys, registered nowhere.
    const OPENSSL_ED25519: &str = include_str!("../../../tests/fixtures/binance/ed25519.pem");
    /// `openssl pkeyutl -sign -rawin -inkey ed25519.pem -in <DOC_QUERY> | base64`
    const OPENSSL_ED25519_SIG: &str = include_str!("../../../tests/fixtures/binance/ed25519.doc-query.sig.b64");
    const OPENSSL_RSA: &str = include_str!("../../../tests/fixtures/binance/rsa2048.pem");
    /// `openssl dgst -sha256 -sign rsa2048.pem <DOC_QUERY> | base64 -w0`
    const OPENSSL_RSA_SIG: &str = include_str!("../../../tests/fixtures/binance/rsa2048.doc-query.sig.b64");

    fn secret() -> SecretString {
        SecretString::new(SECRET)
    }

    fn to_pem(label: &str, der: &[u8]) -> String {
        let body = STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }

    fn decode_param(value: &str) -> Vec<u8> {
        let b64 = percent_decode_str(value).decode_utf8().unwrap();
        STANDARD.decode(b64.as_bytes()).unwrap()
    }

    fn signer(pem: &str) -> Signer {
        Signer::from_secret(&SecretString::new(pem)).unwrap()
    }

    #[test]
    fn query_string_vector() {
        assert_eq!(
            sign_hmac(&secret(), DOC_QUERY, ""),
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        );
        let hmac = Signer::from_secret(&secret()).unwrap();
        assert_eq!(hmac.kind(), KeyKind::Hmac);
        assert_eq!(
            hmac.sign(DOC_QUERY, "").unwrap(),
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        );
    }

    #[test]
    fn query_and_body_are_concatenated_without_separator() {
        let query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC";
        let body = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        let expected = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77";
        assert_eq!(sign_hmac(&secret(), query, body), expected);
        // An "&" between the two would be a different payload.
        assert_ne!(sign_hmac(&secret(), &format!("{query}&"), body), expected);
        // The same holds for asymmetric keys (Ed25519 is deterministic).
        let ed = signer(OPENSSL_ED25519);
        assert_eq!(
            ed.sign(query, body).unwrap(),
            ed.sign(&format!("{query}{body}"), "").unwrap()
        );
    }

    #[test]
    fn percent_encoded_non_ascii_vector() {
        let query = "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        assert_eq!(
            sign_hmac(&secret(), query, ""),
            "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
        );
        // Signing the raw (not percent-encoded) symbol gives another signature.
        let raw = query.replace("%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96", "１２３４５６");
        assert_ne!(
            sign_hmac(&secret(), &raw, ""),
            "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
        );
    }

    #[test]
    fn secret_and_payload_are_case_sensitive() {
        let query = "recvWindow=5000&timestamp=1499827319559";
        let signature = sign_hmac(&secret(), query, "");
        assert_eq!(signature.len(), 64);
        assert!(
            signature
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(
            sign_hmac(&SecretString::new(SECRET.to_lowercase()), query, ""),
            signature
        );
        assert_ne!(sign_hmac(&secret(), &query.to_lowercase(), ""), signature);
    }

    #[test]
    fn ed25519_matches_openssl() {
        let ed = signer(OPENSSL_ED25519);
        assert_eq!(ed.kind(), KeyKind::Ed25519);
        let param = ed.sign(DOC_QUERY, "").unwrap();
        assert_eq!(
            decode_param(&param),
            STANDARD.decode(OPENSSL_ED25519_SIG.trim()).unwrap()
        );
        // Percent-encoded: no raw base64 punctuation is left.
        assert!(param.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'%'), "{param}");
        assert!(
            param.ends_with("%3D%3D"),
            "an Ed25519 signature is 64 bytes: two padding characters"
        );
    }

    #[test]
    fn rsa_matches_openssl() {
        let rsa = signer(OPENSSL_RSA);
        assert_eq!(rsa.kind(), KeyKind::Rsa);
        let param = rsa.sign(DOC_QUERY, "").unwrap();
        // PKCS#1 v1.5 is deterministic, so OpenSSL's signature must be equal.
        assert_eq!(decode_param(&param), STANDARD.decode(OPENSSL_RSA_SIG.trim()).unwrap());
        assert!(param.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'%'), "{param}");
    }

    #[test]
    fn generated_keys_verify_with_their_public_key() {
        let rng = SystemRandom::new();
        let ed_der = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = signer(&to_pem("PRIVATE KEY", ed_der.as_ref()));
        let rsa_der = RsaKeyPair::generate(KeySize::Rsa2048).unwrap().as_der().unwrap();
        let rsa = signer(&to_pem("PRIVATE KEY", rsa_der.as_ref()));

        let payload = "omitZeroBalances=true&recvWindow=5000&timestamp=1700000000000";
        for (signer, algorithm) in [
            (&ed, &ED25519 as &dyn aws_lc_rs::signature::VerificationAlgorithm),
            (&rsa, &RSA_PKCS1_2048_8192_SHA256),
        ] {
            let public = signer.public_key().unwrap();
            let signature = decode_param(&signer.sign(payload, "").unwrap());
            let key = UnparsedPublicKey::new(algorithm, &public);
            assert!(key.verify(payload.as_bytes(), &signature).is_ok(), "{signer:?}");
            assert!(key.verify(b"timestamp=1", &signature).is_err(), "{signer:?}");
        }
    }

    #[test]
    fn pasted_pem_with_escaped_newlines_is_accepted() {
        let escaped = OPENSSL_ED25519.trim().replace('\n', "\\n");
        assert!(!escaped.contains('\n'));
        let ed = signer(&escaped);
        assert_eq!(
            ed.sign(DOC_QUERY, "").unwrap(),
            signer(OPENSSL_ED25519).sign(DOC_QUERY, "").unwrap()
        );
    }

    fn error_of(secret: &str) -> KeyError {
        Signer::from_secret(&SecretString::new(secret)).unwrap_err()
    }

    #[test]
    fn refuses_other_formats_by_name() {
        let body = "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF";
        let with = |label: &str| to_pem(label, &STANDARD.decode(body).unwrap());
        assert_eq!(error_of(&with("RSA PRIVATE KEY")), KeyError::Pkcs1Rsa);
        assert_eq!(error_of(&with("EC PRIVATE KEY")), KeyError::EcKey);
        assert_eq!(error_of(&with("ENCRYPTED PRIVATE KEY")), KeyError::Encrypted);
        assert_eq!(error_of(&with("PUBLIC KEY")), KeyError::PublicKey);
        assert_eq!(error_of(&with("OPENSSH PRIVATE KEY")), KeyError::OtherLabel);
        assert_eq!(error_of(&with("CERTIFICATE")), KeyError::OtherLabel);
        assert_eq!(
            error_of(include_str!("../../../tests/fixtures/binance/rsa2048-pkcs1.pem")),
            KeyError::Pkcs1Rsa
        );
        assert_eq!(
            error_of(include_str!("../../../tests/fixtures/binance/ec-p256-sec1.pem")),
            KeyError::EcKey
        );
    }

    #[test]
    fn refuses_pkcs8_keys_binance_does_not_take() {
        assert_eq!(
            error_of(include_str!("../../../tests/fixtures/binance/ec-p256.pem")),
            KeyError::UnsupportedAlgorithm
        );
        assert_eq!(
            error_of(include_str!("../../../tests/fixtures/binance/rsa1024.pem")),
            KeyError::RsaTooSmall
        );
        // Valid base64 that is not a key.
        assert_eq!(error_of(&to_pem("PRIVATE KEY", b"not a key")), KeyError::InvalidKey);
        assert_eq!(
            error_of("-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----"),
            KeyError::Pem(PemError::BadBase64)
        );
        // A key cut short while copying.
        let cut = &OPENSSL_ED25519[..OPENSSL_ED25519.len() / 2];
        assert_eq!(error_of(cut), KeyError::Pem(PemError::NoEndLine));
    }

    #[test]
    fn refuses_secrets_that_are_neither() {
        for secret in ["", &SECRET[..63], &format!("{SECRET}\n"), &SECRET.replace('N', "/")] {
            assert_eq!(error_of(secret), KeyError::NotHmacShaped, "{secret:?}");
        }
    }

    #[test]
    fn debug_shows_only_the_kind() {
        let ed = signer(OPENSSL_ED25519);
        assert_eq!(format!("{ed:?}"), "Signer::Ed25519");
        let hmac = Signer::from_secret(&secret()).unwrap();
        assert_eq!(format!("{hmac:?}"), "Signer::Hmac");
    }
}
