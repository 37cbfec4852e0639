//! Shape checks for Kraken credentials, before any call. Messages say what is
//! expected and never quote what was given.

use super::signer;
use crate::domain::Environment;
use crate::exchange::{CredentialShapeError, Credentials};

/// Kraken API keys are base64-ish, 56 characters in practice; checked loosely.
const API_KEY_LEN: std::ops::RangeInclusive<usize> = 40..=80;
/// The two-factor static password; Kraken does not document a limit.
const MAX_OTP_LEN: usize = 128;

pub fn check(environment: Environment, credentials: &Credentials) -> Result<(), CredentialShapeError> {
    if environment != Environment::Production {
        return Err(CredentialShapeError::new(
            "environment",
            "Kraken has no spot test environment; connect a PRODUCTION key (a read-only one is enough)",
        ));
    }
    let key = credentials.api_key.expose();
    if !API_KEY_LEN.contains(&key.len()) || !key.bytes().all(is_base64_byte) {
        return Err(CredentialShapeError::new(
            "apiKey",
            "expected the API key from Kraken (Settings → API): about 56 characters of letters, digits, '+', '/' \
             and '=', without spaces",
        ));
    }
    if signer::decode_private_key(credentials.api_secret.expose()).is_none() {
        return Err(CredentialShapeError::new(
            "apiSecret",
            "expected the private key Kraken showed when the key was created: base64 of 64 bytes (88 characters, \
             usually ending in \"==\"), without spaces",
        ));
    }
    let otp = credentials.passphrase.as_ref().map_or("", |p| p.expose());
    if otp.chars().count() > MAX_OTP_LEN || otp.chars().any(char::is_control) {
        return Err(CredentialShapeError::new(
            "passphrase",
            "for Kraken this is the key's two-factor static password, if it has one: at most 128 characters, no \
             line breaks",
        ));
    }
    Ok(())
}

fn is_base64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretString;

    const KEY: &str = "Q2FuYXJ5S2V5Rm9yVGVzdHNPbmx5K3NsYXNoL3BsdXMrYWJjZGVmZ2g=";
    const SECRET: &str = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";

    fn creds(key: &str, secret: &str, otp: Option<&str>) -> Credentials {
        Credentials {
            access_token: None,
            api_key: SecretString::new(key),
            api_secret: SecretString::new(secret),
            passphrase: otp.map(SecretString::new),
        }
    }

    fn field_of(c: &Credentials) -> Option<&'static str> {
        check(Environment::Production, c).err().map(|e| e.field)
    }

    #[test]
    fn accepts_a_kraken_key() {
        assert_eq!(KEY.len(), 56);
        assert_eq!(field_of(&creds(KEY, SECRET, None)), None);
        assert_eq!(field_of(&creds(KEY, SECRET, Some(""))), None);
        assert_eq!(field_of(&creds(KEY, SECRET, Some("correct horse battery"))), None);
        assert_eq!(field_of(&creds(KEY, SECRET.trim_end_matches('='), None)), None);
        assert_eq!(field_of(&creds(&KEY[..40], SECRET, None)), None);
    }

    #[test]
    fn production_only() {
        let err = check(Environment::Testnet, &creds(KEY, SECRET, None)).unwrap_err();
        assert_eq!(err.field, "environment");
        assert!(err.message.contains("no spot test environment"));
    }

    #[test]
    fn rejects_bad_keys_secrets_and_passphrases() {
        let long = "A".repeat(81);
        for key in [
            "",
            &KEY[..39],
            long.as_str(),
            &KEY.replace('Q', "-"),
            &format!(" {}", &KEY[1..]),
        ] {
            assert_eq!(field_of(&creds(key, SECRET, None)), Some("apiKey"), "{key:?}");
        }
        for secret in [
            "",
            &SECRET[..44],
            &format!("{SECRET}\n"),
            &SECRET.replace('/', "_"),
            KEY,
        ] {
            assert_eq!(field_of(&creds(KEY, secret, None)), Some("apiSecret"), "{secret:?}");
        }
        let long = "p".repeat(129);
        for otp in ["line\nbreak", long.as_str()] {
            assert_eq!(field_of(&creds(KEY, SECRET, Some(otp))), Some("passphrase"));
        }
    }

    #[test]
    fn messages_never_quote_the_input() {
        let canary = "CANARYCANARYCANARYCANARYCANARYCANARYCANARYCANARYCANARY-X";
        for c in [
            creds(canary, SECRET, None),
            creds(KEY, canary, None),
            creds(KEY, SECRET, Some(&format!("{canary}\n"))),
        ] {
            let err = check(Environment::Production, &c).unwrap_err();
            assert!(!format!("{err} {err:?}").contains("CANARY"));
        }
    }
}
