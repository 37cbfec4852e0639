//! Shape checks for Binance credentials, before any call. The API key is
//! always the 64-character key from API Management; the secret is either the
//! 64-character HMAC secret or a PKCS#8 PEM private key (Ed25519 or RSA),
//! whose type decides how requests are signed. Messages say what is expected
//! and how to fix it, and never quote what was given.

use super::pem::PemError;
use super::signer::{KeyError, Signer, is_hmac_shaped};
use crate::exchange::{CredentialShapeError, Credentials};

const ACCEPTED: &str = "Binance accepts an Ed25519 or RSA private key in PKCS#8 PEM format (-----BEGIN PRIVATE \
                        KEY-----), or the 64-character secret of an HMAC key";

/// Checks the credential and returns the signer its secret makes.
pub fn check(credentials: &Credentials) -> Result<Signer, CredentialShapeError> {
    if !is_hmac_shaped(credentials.api_key.expose()) {
        return Err(CredentialShapeError::new(
            "apiKey",
            "expected the 64-character API key from Binance API Management (letters and digits only, no spaces)",
        ));
    }
    let signer =
        Signer::from_secret(&credentials.api_secret).map_err(|e| CredentialShapeError::new("apiSecret", message(e)))?;
    if credentials.passphrase.as_ref().is_some_and(|p| !p.is_empty()) {
        return Err(CredentialShapeError::new(
            "passphrase",
            "Binance API keys have no passphrase; leave it empty",
        ));
    }
    Ok(signer)
}

fn message(error: KeyError) -> String {
    match error {
        KeyError::NotHmacShaped => format!(
            "expected the 64-character secret key Binance showed when the key was created (letters and digits \
             only, no spaces), or a PEM private key; {ACCEPTED}"
        ),
        KeyError::Pem(PemError::NoBeginLine | PemError::NoEndLine) => format!(
            "the PEM private key is incomplete: paste the whole file, from the -----BEGIN PRIVATE KEY----- line to \
             the -----END PRIVATE KEY----- line, and nothing else; {ACCEPTED}"
        ),
        KeyError::Pem(PemError::BadBase64) | KeyError::InvalidKey => format!(
            "the PEM private key could not be read (damaged while copying?); paste the key file again; {ACCEPTED}"
        ),
        KeyError::Pkcs1Rsa => format!(
            "this RSA key is in PKCS#1 format (-----BEGIN RSA PRIVATE KEY-----), which Binance does not accept; \
             {ACCEPTED}. Convert it with `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key-pkcs8.pem` and paste \
             the result"
        ),
        KeyError::EcKey | KeyError::UnsupportedAlgorithm => format!(
            "this is not an Ed25519 or RSA key (an EC key?), and Binance has no such API keys; {ACCEPTED}. Create an \
             Ed25519 key with `openssl genpkey -algorithm ed25519 -out key.pem`, register its public key in Binance \
             API Management, and paste the private key"
        ),
        KeyError::Encrypted => format!(
            "this private key is encrypted with a passphrase; {ACCEPTED}, unencrypted. Remove the passphrase with \
             `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key-plain.pem` and paste the result"
        ),
        KeyError::PublicKey => format!(
            "this is a public key; paste the private key instead (the public key is what you registered with \
             Binance); {ACCEPTED}"
        ),
        KeyError::OtherLabel => format!("this PEM block is not a private key Binance can use; {ACCEPTED}"),
        KeyError::RsaTooSmall => format!(
            "this RSA key is shorter than 2048 bits, the minimum Binance accepts; {ACCEPTED}. Create a new key, \
             preferably Ed25519 (`openssl genpkey -algorithm ed25519 -out key.pem`)"
        ),
        KeyError::RsaTooLarge => {
            format!("this RSA key is longer than 8192 bits, which this service cannot use; {ACCEPTED}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretString;
    use crate::exchange::binance::signer::KeyKind;

    const KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
    const SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
    const ED25519: &str = include_str!("../../../tests/fixtures/binance/ed25519.pem");
    const RSA: &str = include_str!("../../../tests/fixtures/binance/rsa2048.pem");

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

    fn kind_of(c: &Credentials) -> KeyKind {
        check(c).unwrap().kind()
    }

    fn secret_error(secret: &str) -> CredentialShapeError {
        let err = check(&creds(KEY, secret, None)).unwrap_err();
        assert_eq!(err.field, "apiSecret");
        err
    }

    #[test]
    fn detects_the_key_type_from_the_secret() {
        assert_eq!(kind_of(&creds(KEY, SECRET, None)), KeyKind::Hmac);
        assert_eq!(kind_of(&creds(KEY, SECRET, Some(""))), KeyKind::Hmac);
        assert_eq!(kind_of(&creds(KEY, ED25519, None)), KeyKind::Ed25519);
        assert_eq!(kind_of(&creds(KEY, RSA, None)), KeyKind::Rsa);
        // Pasted from JSON: literal "\n" instead of line breaks.
        assert_eq!(kind_of(&creds(KEY, &RSA.replace('\n', "\\n"), None)), KeyKind::Rsa);
    }

    #[test]
    fn asymmetric_keys_still_need_the_64_character_api_key() {
        assert_eq!(field_of(&creds("short", ED25519, None)), Some("apiKey"));
        assert_eq!(field_of(&creds(ED25519, ED25519, None)), Some("apiKey"));
        assert_eq!(field_of(&creds(KEY, RSA, Some("pw"))), Some("passphrase"));
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
    fn rejects_bad_hmac_secrets() {
        for secret in ["", &SECRET[..10], &format!("{SECRET}\n"), &SECRET.replace('N', "/")] {
            let err = secret_error(secret);
            assert!(err.message.contains("64-character secret"), "{err}");
        }
    }

    #[test]
    fn pkcs1_and_ec_keys_are_refused_with_how_to_fix_it() {
        let pkcs1 = secret_error(include_str!("../../../tests/fixtures/binance/rsa2048-pkcs1.pem"));
        assert!(pkcs1.message.contains("PKCS#1"), "{pkcs1}");
        assert!(pkcs1.message.contains("openssl pkcs8 -topk8 -nocrypt"), "{pkcs1}");
        assert!(
            pkcs1.message.contains("Ed25519 or RSA private key in PKCS#8"),
            "{pkcs1}"
        );
        assert!(pkcs1.message.contains("HMAC"), "{pkcs1}");

        for ec in [
            include_str!("../../../tests/fixtures/binance/ec-p256-sec1.pem"),
            include_str!("../../../tests/fixtures/binance/ec-p256.pem"),
        ] {
            let err = secret_error(ec);
            assert!(err.message.contains("EC key"), "{err}");
            assert!(err.message.contains("openssl genpkey -algorithm ed25519"), "{err}");
        }
        let small = secret_error(include_str!("../../../tests/fixtures/binance/rsa1024.pem"));
        assert!(small.message.contains("2048 bits"), "{small}");
    }

    #[test]
    fn other_pem_mistakes_say_what_is_wrong() {
        let public = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        assert!(secret_error(public).message.contains("this is a public key"));
        let encrypted = ED25519.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY");
        assert!(secret_error(&encrypted).message.contains("encrypted with a passphrase"));
        let cut = &ED25519[..40];
        assert!(secret_error(cut).message.contains("incomplete"));
        let damaged = ED25519.replacen("MC4C", "MC4D", 1);
        assert!(secret_error(&damaged).message.contains("could not be read"));
    }

    #[test]
    fn rejects_a_passphrase() {
        assert_eq!(field_of(&creds(KEY, SECRET, Some("hunter2"))), Some("passphrase"));
    }

    #[test]
    fn messages_never_quote_the_input() {
        let canary = "CANARYCANARYCANARYCANARYCANARYCANARYCANARYCANARYCANARYCANARY-XYZ";
        let ed_body = ED25519.lines().nth(1).unwrap();
        let mut cases = vec![
            creds(canary, SECRET, None),
            creds(KEY, canary, None),
            creds(KEY, SECRET, Some(canary)),
        ];
        for pem in [
            ED25519.replace("PRIVATE KEY", "RSA PRIVATE KEY"),
            ED25519.replace("PRIVATE KEY", "EC PRIVATE KEY"),
            ED25519.replacen("MC4C", "MC4D", 1),
            ED25519[..50].to_owned(),
        ] {
            cases.push(creds(KEY, &pem, None));
        }
        for c in cases {
            let err = check(&c).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains("CANARY"), "{text}");
            assert!(!text.contains(&ed_body[..20]), "{text}");
        }
    }
}
