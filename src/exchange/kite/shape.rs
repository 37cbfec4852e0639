//! Shape checks for Kite Connect credentials, before any call. The developer
//! console issues an alphanumeric API key and secret (16 and 32 characters
//! today); the bounds here are loose so a format change does not lock users
//! out. Messages say what is expected and never quote what was given.

use crate::domain::Environment;
use crate::exchange::{CredentialShapeError, Credentials};
use std::ops::RangeInclusive;

const LENGTH: RangeInclusive<usize> = 6..=64;

pub fn check(environment: Environment, credentials: &Credentials) -> Result<(), CredentialShapeError> {
    if environment != Environment::Production {
        return Err(CredentialShapeError::new(
            "environment",
            "Zerodha Kite Connect has no testnet or sandbox; connect a production key",
        ));
    }
    check_api_key(credentials.api_key.expose())?;
    check_api_secret(credentials.api_secret.expose())?;
    if credentials.passphrase.as_ref().is_some_and(|p| !p.is_empty()) {
        return Err(CredentialShapeError::new(
            "passphrase",
            "Kite Connect apps have no passphrase; leave it empty",
        ));
    }
    Ok(())
}

pub fn check_api_key(api_key: &str) -> Result<(), CredentialShapeError> {
    if is_shaped(api_key) {
        Ok(())
    } else {
        Err(CredentialShapeError::new(
            "apiKey",
            "expected the API key of a Kite Connect app from the developer console (6 to 64 letters and digits, no \
             spaces)",
        ))
    }
}

pub fn check_api_secret(api_secret: &str) -> Result<(), CredentialShapeError> {
    if is_shaped(api_secret) {
        Ok(())
    } else {
        Err(CredentialShapeError::new(
            "apiSecret",
            "expected the API secret of the Kite Connect app from the developer console (6 to 64 letters and digits, \
             no spaces)",
        ))
    }
}

fn is_shaped(value: &str) -> bool {
    LENGTH.contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretString;

    const KEY: &str = "kitefront0123456";
    const SECRET: &str = "s3cr3tS3CR3Ts3cr3tS3CR3Ts3cr3tAB";

    fn creds(key: &str, secret: &str, passphrase: Option<&str>) -> Credentials {
        Credentials {
            api_key: SecretString::new(key),
            api_secret: SecretString::new(secret),
            passphrase: passphrase.map(SecretString::new),
            access_token: None,
        }
    }

    fn field_of(environment: Environment, c: &Credentials) -> Option<&'static str> {
        check(environment, c).err().map(|e| e.field)
    }

    #[test]
    fn accepts_console_shaped_credentials() {
        assert_eq!(check(Environment::Production, &creds(KEY, SECRET, None)), Ok(()));
        assert_eq!(check(Environment::Production, &creds(KEY, SECRET, Some(""))), Ok(()));
        assert_eq!(
            check(Environment::Production, &creds("abcdef", &"Z".repeat(64), None)),
            Ok(())
        );
    }

    #[test]
    fn testnet_is_refused_on_the_environment_field() {
        let err = check(Environment::Testnet, &creds(KEY, SECRET, None)).unwrap_err();
        assert_eq!(err.field, "environment");
        assert!(err.message.contains("no testnet"));
    }

    #[test]
    fn rejects_bad_keys_and_secrets() {
        let too_long = "a".repeat(65);
        for bad in [
            "",
            "abcde",
            too_long.as_str(),
            " kitefront",
            "kite-front",
            "kitefrönt",
            "kite\tfront",
        ] {
            assert_eq!(
                field_of(Environment::Production, &creds(bad, SECRET, None)),
                Some("apiKey"),
                "{bad:?}"
            );
            assert_eq!(
                field_of(Environment::Production, &creds(KEY, bad, None)),
                Some("apiSecret"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_a_passphrase() {
        assert_eq!(
            field_of(Environment::Production, &creds(KEY, SECRET, Some("hunter22"))),
            Some("passphrase")
        );
    }

    #[test]
    fn messages_never_quote_the_input() {
        let canary = "CANARY-CANARY";
        for c in [
            creds(canary, SECRET, None),
            creds(KEY, canary, None),
            creds(KEY, SECRET, Some(canary)),
        ] {
            let err = check(Environment::Production, &c).unwrap_err();
            assert!(!format!("{err} {err:?}").contains("CANARY"));
        }
    }
}
