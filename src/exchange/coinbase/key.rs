//! Coinbase CDP private keys: recognises what the user pasted as `apiSecret`
//! and loads it for signing (exchanges.md §2 "Key formats").
//!
//! - `-----BEGIN EC PRIVATE KEY-----` (SEC1) or `-----BEGIN PRIVATE KEY-----`
//!   (PKCS#8) holding a P-256 key → ES256. A literal `\n` (as pasted from the
//!   key's JSON file) counts as a line break.
//! - base64 of 64 bytes (Ed25519 seed ‖ public key) or of a 32-byte seed, or a
//!   PKCS#8 PEM holding an Ed25519 key → EdDSA.
//!
//! The key lives in aws-lc memory (cleansed when freed); decoded bytes are
//! zeroized. Errors say what was expected, never what was given.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use std::fmt;
use zeroize::Zeroizing;

/// Legacy Coinbase API secrets (expired February 2025) were 32 letters and digits.
const LEGACY_SECRET_LEN: usize = 32;
const ED25519_SEED_LEN: usize = 32;

/// Standard base64, padded or not, as keys get copied either way.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a pasted secret is not a usable CDP private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    Empty,
    /// 32 letters and digits: a legacy (HMAC) API secret.
    Legacy,
    /// A PEM public key or certificate instead of the private key.
    PublicKey,
    /// A password-protected PEM key.
    Encrypted,
    /// A PEM private key of another type (RSA, OpenSSH, another curve).
    UnsupportedKeyType,
    /// A PEM whose markers or base64 body are broken, or whose DER is not a key.
    MalformedPem,
    /// Neither PEM nor base64.
    NotBase64,
    /// Base64 of the wrong number of bytes for Ed25519 (the count, not the bytes).
    WrongLength(usize),
    /// 64 bytes whose second half is not the first half's public key.
    Ed25519Mismatch,
}

impl KeyError {
    /// What is wrong, in the user's terms. Never quotes the input.
    pub fn describe(self) -> String {
        match self {
            Self::Empty => "the private key is empty".to_owned(),
            Self::Legacy => "this is a legacy Coinbase API secret (32 characters); Coinbase expired legacy API keys \
                             in February 2025"
                .to_owned(),
            Self::PublicKey => "this is a public key or certificate; paste the key's private key instead".to_owned(),
            Self::Encrypted => "this private key is password-protected; paste the unencrypted private key Coinbase \
                                showed when the key was created"
                .to_owned(),
            Self::UnsupportedKeyType => "this PEM private key is neither an ECDSA P-256 nor an Ed25519 key".to_owned(),
            Self::MalformedPem => "this PEM private key is damaged (its BEGIN/END lines or its base64 body are \
                                   incomplete); copy the whole key again, BEGIN and END lines included"
                .to_owned(),
            Self::NotBase64 => "expected an ECDSA private key in PEM (-----BEGIN EC PRIVATE KEY-----) or an Ed25519 \
                                private key in base64"
                .to_owned(),
            Self::WrongLength(n) => format!(
                "an Ed25519 private key is base64 of 64 bytes (or a 32-byte seed), but this decodes to {n} bytes"
            ),
            Self::Ed25519Mismatch => {
                "the Ed25519 key's two halves do not belong together; copy the whole key again".to_owned()
            }
        }
    }
}

/// A loaded CDP private key. `Debug` never shows key material.
pub enum SigningKey {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, [REDACTED])", self.algorithm())
    }
}

impl SigningKey {
    /// Recognises and loads the pasted secret.
    pub fn parse(secret: &str) -> Result<Self, KeyError> {
        let trimmed = secret.trim();
        if trimmed.is_empty() {
            return Err(KeyError::Empty);
        }
        if trimmed.contains("-----BEGIN") {
            return parse_pem(trimmed);
        }
        if trimmed.len() == LEGACY_SECRET_LEN && trimmed.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyError::Legacy);
        }
        parse_ed25519_base64(trimmed)
    }

    /// The JWT `alg` for this key.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::Es256(_) => "ES256",
            Self::EdDsa(_) => "EdDSA",
        }
    }

    /// The public key: the uncompressed P-256 point (65 bytes) or the raw
    /// Ed25519 key (32 bytes).
    #[cfg(test)]
    pub fn public_key(&self) -> Vec<u8> {
        use aws_lc_rs::signature::KeyPair;
        match self {
            Self::Es256(pair) => pair.public_key().as_ref().to_vec(),
            Self::EdDsa(pair) => pair.public_key().as_ref().to_vec(),
        }
    }

    /// The JWS signature over `message`: fixed-size r‖s for ES256 (RFC 7518
    /// §3.4), the 64-byte signature for EdDSA (RFC 8037).
    pub fn sign(&self, message: &[u8]) -> Option<Vec<u8>> {
        match self {
            Self::Es256(pair) => pair
                .sign(&SystemRandom::new(), message)
                .ok()
                .map(|s| s.as_ref().to_vec()),
            Self::EdDsa(pair) => Some(pair.sign(message).as_ref().to_vec()),
        }
    }
}

fn parse_ed25519_base64(text: &str) -> Result<SigningKey, KeyError> {
    // Keys wrapped over several lines still decode.
    let compact: Zeroizing<String> = Zeroizing::new(text.chars().filter(|c| !c.is_ascii_whitespace()).collect());
    let bytes = Zeroizing::new(BASE64.decode(compact.as_bytes()).map_err(|_| KeyError::NotBase64)?);
    let pair = match bytes.len() {
        64 => Ed25519KeyPair::from_seed_and_public_key(&bytes[..ED25519_SEED_LEN], &bytes[ED25519_SEED_LEN..])
            .map_err(|_| KeyError::Ed25519Mismatch)?,
        ED25519_SEED_LEN => Ed25519KeyPair::from_seed_unchecked(&bytes).map_err(|_| KeyError::WrongLength(32))?,
        n => return Err(KeyError::WrongLength(n)),
    };
    Ok(SigningKey::EdDsa(pair))
}

fn parse_pem(text: &str) -> Result<SigningKey, KeyError> {
    // A key pasted from JSON carries `\n` as two characters.
    let text = Zeroizing::new(text.replace("\\r\\n", "\n").replace("\\n", "\n").replace('\r', ""));
    let blocks = pem_blocks(&text)?;
    // OpenSSL may put an `EC PARAMETERS` block before the key.
    let Some(block) = blocks.iter().find(|b| b.label.ends_with("PRIVATE KEY")) else {
        return Err(
            if blocks
                .iter()
                .any(|b| b.label.contains("PUBLIC KEY") || b.label.contains("CERTIFICATE"))
            {
                KeyError::PublicKey
            } else {
                KeyError::MalformedPem
            },
        );
    };
    let der = block.der()?;
    match block.label.as_str() {
        "EC PRIVATE KEY" => EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map(SigningKey::Es256)
            .map_err(|_| KeyError::UnsupportedKeyType),
        "PRIVATE KEY" => {
            if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der) {
                return Ok(SigningKey::Es256(pair));
            }
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                .map(SigningKey::EdDsa)
                .map_err(|_| KeyError::UnsupportedKeyType)
        }
        "ENCRYPTED PRIVATE KEY" => Err(KeyError::Encrypted),
        _ => Err(KeyError::UnsupportedKeyType),
    }
}

/// One `-----BEGIN label-----` … `-----END label-----` block.
struct PemBlock<'a> {
    label: String,
    body: &'a str,
}

impl PemBlock<'_> {
    fn der(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        // RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`) mean a password-protected key.
        if self.body.contains(':') {
            return Err(KeyError::Encrypted);
        }
        let compact: Zeroizing<String> =
            Zeroizing::new(self.body.chars().filter(|c| !c.is_ascii_whitespace()).collect());
        let der = BASE64.decode(compact.as_bytes()).map_err(|_| KeyError::MalformedPem)?;
        if der.is_empty() {
            return Err(KeyError::MalformedPem);
        }
        Ok(Zeroizing::new(der))
    }
}

fn pem_blocks(text: &str) -> Result<Vec<PemBlock<'_>>, KeyError> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(BEGIN) {
        let after_begin = &rest[at + BEGIN.len()..];
        let label_end = after_begin.find(DASHES).ok_or(KeyError::MalformedPem)?;
        let label = &after_begin[..label_end];
        if label.is_empty() || label.len() > 40 || !label.bytes().all(|b| b.is_ascii_uppercase() || b == b' ') {
            return Err(KeyError::MalformedPem);
        }
        let body_and_rest = &after_begin[label_end + DASHES.len()..];
        let end_marker = format!("-----END {label}-----");
        let body_end = body_and_rest.find(&end_marker).ok_or(KeyError::MalformedPem)?;
        blocks.push(PemBlock {
            label: label.to_owned(),
            body: &body_and_rest[..body_end],
        });
        rest = &body_and_rest[body_end + end_marker.len()..];
    }
    if blocks.is_empty() {
        return Err(KeyError::MalformedPem);
    }
    Ok(blocks)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::encoding::{AsBigEndian, AsDer};
    use aws_lc_rs::signature::KeyPair;

    /// PEM text of `der` under `label`, wrapped at 64 columns like OpenSSL.
    pub(crate) fn pem(label: &str, der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }

    pub(crate) struct EcKey {
        pub sec1_pem: String,
        pub pkcs8_pem: String,
        pub public: Vec<u8>,
    }

    pub(crate) fn ec_key() -> EcKey {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        EcKey {
            sec1_pem: pem("EC PRIVATE KEY", pair.private_key().as_der().unwrap().as_ref()),
            pkcs8_pem: pem("PRIVATE KEY", pair.to_pkcs8v1().unwrap().as_ref()),
            public: pair.public_key().as_ref().to_vec(),
        }
    }

    pub(crate) struct EdKey {
        pub seed: Vec<u8>,
        pub public: Vec<u8>,
        pub pkcs8_pem: String,
    }

    pub(crate) fn ed_key() -> EdKey {
        let pair = Ed25519KeyPair::generate().unwrap();
        EdKey {
            seed: pair.seed().unwrap().as_be_bytes().unwrap().as_ref().to_vec(),
            public: pair.public_key().as_ref().to_vec(),
            pkcs8_pem: pem("PRIVATE KEY", pair.to_pkcs8v1().unwrap().as_ref()),
        }
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn algorithm_of(secret: &str) -> Result<&'static str, KeyError> {
        SigningKey::parse(secret).map(|k| k.algorithm())
    }

    #[test]
    fn ec_keys_in_sec1_and_pkcs8_load_as_es256_with_their_public_key() {
        let key = ec_key();
        for pem in [&key.sec1_pem, &key.pkcs8_pem] {
            let loaded = SigningKey::parse(pem).unwrap();
            assert_eq!(loaded.algorithm(), "ES256");
            assert_eq!(loaded.public_key(), key.public);
        }
    }

    #[test]
    fn literal_backslash_n_and_crlf_count_as_line_breaks() {
        let key = ec_key();
        let escaped = key.sec1_pem.replace('\n', "\\n");
        assert!(!escaped.contains('\n'));
        assert_eq!(SigningKey::parse(&escaped).unwrap().public_key(), key.public);
        let crlf = key.pkcs8_pem.replace('\n', "\r\n");
        assert_eq!(SigningKey::parse(&crlf).unwrap().public_key(), key.public);
        let json_crlf = key.pkcs8_pem.replace('\n', "\\r\\n");
        assert_eq!(SigningKey::parse(&json_crlf).unwrap().public_key(), key.public);
        // Leading and trailing blank space, as pasted.
        assert_eq!(algorithm_of(&format!("  \n{}\n\n", key.sec1_pem)), Ok("ES256"));
    }

    #[test]
    fn ec_parameters_block_before_the_key_is_skipped() {
        let key = ec_key();
        let params = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
        let loaded = SigningKey::parse(&format!("{params}{}", key.sec1_pem)).unwrap();
        assert_eq!(loaded.public_key(), key.public);
    }

    #[test]
    fn ed25519_keys_load_from_64_bytes_32_bytes_and_pkcs8() {
        let key = ed_key();
        let full = [key.seed.as_slice(), key.public.as_slice()].concat();
        for secret in [
            b64(&full),
            b64(&key.seed),
            b64(&full).trim_end_matches('=').to_owned(),
            format!("{}\n", b64(&full)),
            key.pkcs8_pem.clone(),
        ] {
            let loaded = SigningKey::parse(&secret).unwrap();
            assert_eq!(loaded.algorithm(), "EdDSA");
            assert_eq!(loaded.public_key(), key.public);
        }
    }

    #[test]
    fn ed25519_halves_that_do_not_match_are_refused() {
        let (a, b) = (ed_key(), ed_key());
        let mixed = [a.seed.as_slice(), b.public.as_slice()].concat();
        assert_eq!(algorithm_of(&b64(&mixed)), Err(KeyError::Ed25519Mismatch));
    }

    #[test]
    fn legacy_and_wrong_length_secrets_are_refused() {
        assert_eq!(algorithm_of("aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF"), Err(KeyError::Legacy));
        assert_eq!(algorithm_of(&b64(&[7u8; 48])), Err(KeyError::WrongLength(48)));
        assert_eq!(algorithm_of(&b64(&[7u8; 16])), Err(KeyError::WrongLength(16)));
        assert_eq!(algorithm_of("not base64 at all!"), Err(KeyError::NotBase64));
        assert_eq!(algorithm_of(""), Err(KeyError::Empty));
        assert_eq!(algorithm_of(" \n "), Err(KeyError::Empty));
    }

    #[test]
    fn wrong_pem_contents_are_named() {
        let key = ec_key();
        // Truncated: no END line.
        let cut = &key.sec1_pem[..key.sec1_pem.len() / 2];
        assert_eq!(algorithm_of(cut), Err(KeyError::MalformedPem));
        // Broken base64 body.
        let broken = key.sec1_pem.replacen("M", "!", 1);
        assert_eq!(algorithm_of(&broken), Err(KeyError::MalformedPem));
        // A valid PEM of something that is not a key.
        assert_eq!(
            algorithm_of(&pem("EC PRIVATE KEY", b"not a key")),
            Err(KeyError::UnsupportedKeyType)
        );
        assert_eq!(algorithm_of(&pem("PUBLIC KEY", &key.public)), Err(KeyError::PublicKey));
        assert_eq!(
            algorithm_of(&pem("ENCRYPTED PRIVATE KEY", &[1, 2, 3])),
            Err(KeyError::Encrypted)
        );
        let legacy_encrypted = key.sec1_pem.replacen(
            "-----\n",
            "-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n",
            1,
        );
        assert_eq!(algorithm_of(&legacy_encrypted), Err(KeyError::Encrypted));
        assert_eq!(
            algorithm_of(&pem("RSA PRIVATE KEY", &[1, 2, 3])),
            Err(KeyError::UnsupportedKeyType)
        );
        // An Ed25519 PKCS#8 key under the SEC1 label is not an EC key.
        assert_eq!(
            algorithm_of(&ed_key().pkcs8_pem.replace("PRIVATE KEY", "EC PRIVATE KEY")),
            Err(KeyError::UnsupportedKeyType)
        );
    }

    #[test]
    fn other_curves_are_refused() {
        let p384 = EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        let sec1 = pem("EC PRIVATE KEY", p384.private_key().as_der().unwrap().as_ref());
        let pkcs8 = pem("PRIVATE KEY", p384.to_pkcs8v1().unwrap().as_ref());
        assert_eq!(algorithm_of(&sec1), Err(KeyError::UnsupportedKeyType));
        assert_eq!(algorithm_of(&pkcs8), Err(KeyError::UnsupportedKeyType));
    }

    #[test]
    fn signatures_have_the_jws_sizes() {
        let es = SigningKey::parse(&ec_key().sec1_pem).unwrap();
        assert_eq!(es.sign(b"x").unwrap().len(), 64, "ES256 is r||s, not DER");
        let ed = SigningKey::parse(&b64(&ed_key().seed)).unwrap();
        assert_eq!(ed.sign(b"x").unwrap().len(), 64);
    }

    #[test]
    fn debug_and_errors_never_show_key_material() {
        let key = ec_key();
        let loaded = SigningKey::parse(&key.sec1_pem).unwrap();
        assert_eq!(format!("{loaded:?}"), "SigningKey(ES256, [REDACTED])");
        let body_line = key.sec1_pem.lines().nth(1).unwrap();
        let broken = key.sec1_pem.replace("-----END", "-----FIN");
        let err = SigningKey::parse(&broken).unwrap_err();
        assert!(!format!("{err:?} {}", err.describe()).contains(body_line));
    }
}
