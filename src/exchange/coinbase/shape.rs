//! Shape checks for Coinbase CDP credentials, before any call: the key name
//! (`organizations/{org}/apiKeys/{key}` or a bare key UUID), a private key
//! this client can sign with, no passphrase, production only. Legacy keys
//! (expired by Coinbase in February 2025) are refused with directions to
//! create a CDP key. Messages never quote what was given.

use super::key::{KeyError, SigningKey};
use crate::domain::Environment;
use crate::exchange::{CredentialShapeError, Credentials};

/// Legacy Coinbase API key names were 16 letters and digits.
const LEGACY_NAME_LEN: usize = 16;

pub const CREATE_CDP_KEY: &str = "To connect Coinbase, create a CDP API key: in the Coinbase Developer Platform \
     portal (portal.cdp.coinbase.com) open API Keys, Secret API Keys, Create API key; give it the View permission \
     (and Trade only if you trade through this app; never Transfer) and choose ECDSA or Ed25519; then paste its key name (or ID) as the API key \
     and its private key as the API secret.";

/// Checks the credential and loads its private key.
pub fn check(environment: Environment, credentials: &Credentials) -> Result<SigningKey, CredentialShapeError> {
    if environment != Environment::Production {
        return Err(CredentialShapeError::new(
            "environment",
            "Coinbase has no testnet that can validate keys (its sandbox accepts no authentication); use PRODUCTION \
             with a key that has only the View permission",
        ));
    }
    check_name(credentials.api_key.expose())?;
    let key = SigningKey::parse(credentials.api_secret.expose())
        .map_err(|e| CredentialShapeError::new("apiSecret", secret_message(e)))?;
    if credentials.passphrase.as_ref().is_some_and(|p| !p.is_empty()) {
        return Err(CredentialShapeError::new(
            "passphrase",
            "Coinbase CDP API keys have no passphrase; leave it empty",
        ));
    }
    Ok(key)
}

fn check_name(name: &str) -> Result<(), CredentialShapeError> {
    if is_cdp_name(name) {
        return Ok(());
    }
    let problem = if name.len() == LEGACY_NAME_LEN && name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        "this is a legacy Coinbase API key (16 characters); Coinbase expired legacy API keys in February 2025"
    } else if name.trim().is_empty() {
        "the API key is empty; expected the CDP key name"
    } else if name.trim() != name {
        "the key name has spaces or line breaks around it; paste it without them"
    } else {
        "expected a CDP key name, organizations/{organization ID}/apiKeys/{key ID}, or a bare key ID (a UUID)"
    };
    Err(CredentialShapeError::new(
        "apiKey",
        format!("{problem}. {CREATE_CDP_KEY}"),
    ))
}

fn secret_message(error: KeyError) -> String {
    format!("{}. {CREATE_CDP_KEY}", error.describe())
}

/// `organizations/{uuid}/apiKeys/{uuid}` or a bare UUID.
fn is_cdp_name(name: &str) -> bool {
    if is_uuid(name) {
        return true;
    }
    let parts: Vec<&str> = name.split('/').collect();
    matches!(parts.as_slice(), ["organizations", org, "apiKeys", key] if is_uuid(org) && is_uuid(key))
}

/// The hyphenated 8-4-4-4-12 hex form.
fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretString;
    use crate::exchange::coinbase::key::tests::{ec_key, ed_key};
    use base64::Engine;

    const NAME: &str =
        "organizations/3f1c3b0e-8d2a-4a44-9d4e-0c8f2b7a1e55/apiKeys/5b2e7c10-1a3d-4f6b-8e9c-2d4f6a8b0c1e";
    const BARE: &str = "5b2e7c10-1a3d-4f6b-8e9c-2d4f6a8b0c1e";

    fn creds(name: &str, secret: &str, passphrase: Option<&str>) -> Credentials {
        Credentials {
            access_token: None,
            api_key: SecretString::new(name),
            api_secret: SecretString::new(secret),
            passphrase: passphrase.map(SecretString::new),
        }
    }

    fn field_of(name: &str, secret: &str) -> Option<&'static str> {
        check(Environment::Production, &creds(name, secret, None))
            .err()
            .map(|e| e.field)
    }

    #[test]
    fn accepts_cdp_names_with_ec_and_ed25519_keys() {
        let ec = ec_key();
        let ed = base64::engine::general_purpose::STANDARD.encode(ed_key().seed);
        for name in [
            NAME,
            BARE,
            &NAME
                .to_uppercase()
                .replace("ORGANIZATIONS", "organizations")
                .replace("APIKEYS", "apiKeys"),
        ] {
            assert_eq!(field_of(name, &ec.sec1_pem), None, "{name}");
            assert_eq!(field_of(name, &ed), None, "{name}");
        }
        assert_eq!(
            check(Environment::Production, &creds(NAME, &ec.pkcs8_pem, Some("")))
                .unwrap()
                .algorithm(),
            "ES256"
        );
    }

    #[test]
    fn rejects_other_names_and_says_how_to_create_a_cdp_key() {
        let ec = ec_key();
        for name in [
            "",
            "aB3dE6gH9jK2mN5p",
            "organizations/abc/apiKeys/def",
            &format!("{NAME}/"),
            &format!(" {NAME}"),
            &format!("{NAME}\n"),
            &NAME.replace("apiKeys", "keys"),
            &BARE.replace('-', ""),
            "projects/3f1c3b0e-8d2a-4a44-9d4e-0c8f2b7a1e55",
        ] {
            let err = check(Environment::Production, &creds(name, &ec.sec1_pem, None)).unwrap_err();
            assert_eq!(err.field, "apiKey", "{name:?}");
            assert!(err.message.contains("portal.cdp.coinbase.com"), "{err}");
        }
        let legacy = check(Environment::Production, &creds("aB3dE6gH9jK2mN5p", &ec.sec1_pem, None)).unwrap_err();
        assert!(legacy.message.contains("legacy") && legacy.message.contains("February 2025"));
    }

    #[test]
    fn rejects_legacy_and_garbage_secrets_on_the_secret_field() {
        for secret in [
            "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF",
            "",
            "-----BEGIN EC PRIVATE KEY-----\ngarbage\n-----END EC PRIVATE KEY-----\n",
            "c2hvcnQ=",
        ] {
            let err = check(Environment::Production, &creds(NAME, secret, None)).unwrap_err();
            assert_eq!(err.field, "apiSecret", "{secret:?}");
            assert!(err.message.contains("create a CDP API key"), "{err}");
        }
        let legacy = check(
            Environment::Production,
            &creds(NAME, "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF", None),
        )
        .unwrap_err();
        assert!(legacy.message.contains("legacy"), "{legacy}");
    }

    #[test]
    fn rejects_testnet_and_passphrases() {
        let ec = ec_key();
        let err = check(Environment::Testnet, &creds(NAME, &ec.sec1_pem, None)).unwrap_err();
        assert_eq!(err.field, "environment");
        assert!(err.message.contains("Coinbase has no testnet that can validate keys"));
        let err = check(Environment::Production, &creds(NAME, &ec.sec1_pem, Some("hunter22"))).unwrap_err();
        assert_eq!(err.field, "passphrase");
    }

    #[test]
    fn messages_never_quote_the_input() {
        let canary = ec_key().sec1_pem.replace("-----END", "-----BROKEN");
        let body_line = canary.lines().nth(1).unwrap().to_owned();
        for c in [
            creds(&body_line, &ec_key().sec1_pem, None),
            creds(NAME, &canary, None),
            creds(NAME, &body_line, None),
            creds(NAME, &ec_key().sec1_pem, Some(&body_line)),
        ] {
            let err = check(Environment::Production, &c).unwrap_err();
            assert!(!format!("{err} {err:?}").contains(&body_line[..32]));
        }
    }
}
