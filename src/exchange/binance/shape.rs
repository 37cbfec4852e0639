//! Shape checks for Binance credentials, before any call: HMAC keys only for
//! now (asymmetric PEM keys come later). Messages say what is expected and
//! never quote what was given.

use crate::exchange::{CredentialShapeError, Credentials};

/// Binance HMAC API keys and secrets are 64 ASCII letters and digits.
const HMAC_LEN: usize = 64;

pub fn check(credentials: &Credentials) -> Result<(), CredentialShapeError> {
    if !is_hmac_shaped(credentials.api_key.expose()) {
        return Err(CredentialShapeError::new(
            "apiKey",
            "expected the 64-character API key from Binance API Management (letters and digits only, no spaces)",
        ));
    }
    let secret = credentials.api_secret.expose();
    if secret.trim_start().starts_with("-----BEGIN") {
        return Err(CredentialShapeError::new(
            "apiSecret",
            "asymmetric (Ed25519 or RSA) Binance keys are not supported yet; use an HMAC key for now",
        ));
    }
    if !is_hmac_shaped(secret) {
        return Err(CredentialShapeError::new(
            "apiSecret",
            "expected the 64-character secret key Binance showed when the key was created (letters and digits only, \
             no spaces)",
        ));
    }
    if credentials.passphrase.as_ref().is_some_and(|p| !p.is_empty()) {
        return Err(CredentialShapeError::new(
            "passphrase",
            "Binance API keys have no passphrase; leave it empty",
        ));
    }
    Ok(())
}

fn is_hmac_shaped(value: &str) -> bool {
    value.len() == HMAC_LEN && value.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretString;

    const KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
    const SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";

    fn creds(key: &str, secret: &str, passphrase: Option<&str>) -> Credentials {
        Credentials {
            access_token: None,
            api_key: SecretString::new(key),
            api_secret: SecretString::new(secret),
            passphrase: passphrase.map(SecretString::new),
        }
    }

    fn field_of(c: &Credentials) -> Option<&'static str> {
        check(c).err().map(|e| e.field)
    }

    #[test]
    fn accepts_the_documented_hmac_key() {
        assert_eq!(check(&creds(KEY, SECRET, None)), Ok(()));
        assert_eq!(check(&creds(KEY, SECRET, Some(""))), Ok(()));
    }

    #[test]
    fn rejects_bad_api_keys() {
        for key in [
            "",
            &KEY[..63],
            &format!("{KEY}A"),
            &format!(" {}", &KEY[1..]),
            &KEY.replace('v', "-"),
        ] {
            assert_eq!(field_of(&creds(key, SECRET, None)), Some("apiKey"), "{key:?}");
        }
        // 64 bytes but not 64 ASCII characters.
        let non_ascii = format!("é{}", &KEY[2..]);
        assert_eq!(non_ascii.len(), 64);
        assert_eq!(field_of(&creds(&non_ascii, SECRET, None)), Some("apiKey"));
    }

    #[test]
    fn rejects_bad_secrets_and_says_pem_is_not_supported_yet() {
        for secret in ["", &SECRET[..10], &format!("{SECRET}\n"), &SECRET.replace('N', "/")] {
            assert_eq!(field_of(&creds(KEY, secret, None)), Some("apiSecret"), "{secret:?}");
        }
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";
        let err = check(&creds(KEY, pem, None)).unwrap_err();
        assert_eq!(err.field, "apiSecret");
        assert!(err.message.contains("not supported yet"));
        assert!(!err.message.contains("MC4CAQ"));
    }

    #[test]
    fn rejects_a_passphrase() {
        assert_eq!(field_of(&creds(KEY, SECRET, Some("hunter2"))), Some("passphrase"));
    }

    #[test]
    fn messages_never_quote_the_input() {
        let canary = "CANARYCANARYCANARYCANARYCANARYCANARYCANARYCANARYCANARYCANARY-XYZ";
        for c in [
            creds(canary, SECRET, None),
            creds(KEY, canary, None),
            creds(KEY, SECRET, Some(canary)),
        ] {
            let err = check(&c).unwrap_err();
            assert!(!format!("{err} {err:?}").contains("CANARY"));
        }
    }
}
