//! Inputs of the mutations and their validation. Every rejection names the
//! input field; none repeats a secret value.

use crate::crypto::SecretString;
use crate::domain::{Environment, Exchange};
use crate::error::{AppError, AppResult};
use crate::exchange::Credentials;
use async_graphql::InputObject;

pub const LABEL_MAX_CHARS: usize = 64;
pub const REASON_MAX_CHARS: usize = 500;
/// Longest credential field accepted (an RSA-4096 PEM is about 3.3 KB).
pub const CREDENTIAL_MAX_CHARS: usize = 8192;

/// An API key as the user pasted it from the exchange.
// Deliberately not `Debug`: it holds plaintext secrets.
#[derive(InputObject)]
pub struct CredentialsInput {
    pub exchange: Exchange,
    pub api_key: String,
    pub api_secret: String,
    pub passphrase: Option<String>,
    #[graphql(default_with = "Some(Environment::Production)")]
    pub environment: Option<Environment>,
}

#[derive(InputObject)]
pub struct CreateConnectionInput {
    pub label: String,
    pub credentials: CredentialsInput,
    /// Test the key against the exchange before saving (default true).
    #[graphql(default_with = "Some(true)")]
    pub test_first: Option<bool>,
}

impl CredentialsInput {
    /// Moves the values into secret types (`field_prefix` names the input path, e.g. `credentials.`).
    pub fn into_credentials(self, field_prefix: &str) -> AppResult<(Exchange, Environment, Credentials)> {
        let check = |name: &str, value: &str| -> AppResult<()> {
            let field = format!("{field_prefix}{name}");
            if value.trim().is_empty() {
                return Err(AppError::bad_input(field, "must not be empty"));
            }
            if value.chars().count() > CREDENTIAL_MAX_CHARS {
                return Err(AppError::bad_input(
                    field,
                    format!("longer than {CREDENTIAL_MAX_CHARS} characters"),
                ));
            }
            Ok(())
        };
        check("apiKey", &self.api_key)?;
        check("apiSecret", &self.api_secret)?;
        if let Some(p) = &self.passphrase
            && !p.is_empty()
        {
            check("passphrase", p)?;
        }
        let credentials = Credentials {
            access_token: None,
            api_key: SecretString::new(self.api_key.trim()),
            api_secret: SecretString::new(self.api_secret.trim_matches(|c: char| c == ' ' || c == '\t')),
            passphrase: self.passphrase.filter(|p| !p.is_empty()).map(SecretString::new),
        };
        // The originals are dropped here; the secret copies zeroize themselves.
        drop(self.api_key);
        drop(self.api_secret);
        Ok((
            self.exchange,
            self.environment.unwrap_or(Environment::Production),
            credentials,
        ))
    }
}

/// A connection's label: 1 to 64 characters after trimming, no control characters.
pub fn validate_label(field: &str, label: &str) -> AppResult<String> {
    let label = label.trim();
    if label.is_empty() {
        return Err(AppError::bad_input(field, "must not be empty"));
    }
    if label.chars().count() > LABEL_MAX_CHARS {
        return Err(AppError::bad_input(
            field,
            format!("must be at most {LABEL_MAX_CHARS} characters"),
        ));
    }
    if label.chars().any(char::is_control) {
        return Err(AppError::bad_input(field, "must not contain control characters"));
    }
    Ok(label.to_string())
}

/// An optional free-text reason (revocation).
pub fn validate_reason(field: &str, reason: Option<String>) -> AppResult<Option<String>> {
    let Some(reason) = reason.map(|r| r.trim().to_string()).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if reason.chars().count() > REASON_MAX_CHARS {
        return Err(AppError::bad_input(
            field,
            format!("must be at most {REASON_MAX_CHARS} characters"),
        ));
    }
    if reason.chars().any(|c| c.is_control() && c != '\n') {
        return Err(AppError::bad_input(field, "must not contain control characters"));
    }
    Ok(Some(reason))
}

/// Ids arrive as GraphQL `ID`s; anything that is not a UUID is a bad input.
pub fn parse_id(field: &str, id: &str) -> AppResult<uuid::Uuid> {
    uuid::Uuid::parse_str(id.trim()).map_err(|_| AppError::bad_input(field, "is not a valid id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(validate_label("label", "  Main  ").unwrap(), "Main");
        assert_eq!(validate_label("label", "Ünïcode ✓").unwrap(), "Ünïcode ✓");
        for bad in ["", "   ", "a\u{0}b", "tab\there", &"x".repeat(65)] {
            let err = validate_label("label", bad).unwrap_err();
            assert!(
                matches!(&err, AppError::BadInput { field, .. } if field == "label"),
                "{bad:?}"
            );
        }
        assert!(validate_label("label", &"é".repeat(64)).is_ok());
    }

    #[test]
    fn reasons() {
        assert_eq!(validate_reason("reason", None).unwrap(), None);
        assert_eq!(validate_reason("reason", Some("  ".into())).unwrap(), None);
        assert_eq!(
            validate_reason("reason", Some("lost laptop".into()))
                .unwrap()
                .as_deref(),
            Some("lost laptop")
        );
        assert!(validate_reason("reason", Some("x".repeat(501))).is_err());
        assert!(validate_reason("reason", Some("a\u{7}".into())).is_err());
    }

    #[test]
    fn credential_fields_are_named_and_not_echoed() {
        let input = CredentialsInput {
            exchange: Exchange::Binance,
            api_key: "key".into(),
            api_secret: "   ".into(),
            passphrase: None,
            environment: None,
        };
        let err = input.into_credentials("credentials.").err().unwrap();
        assert!(matches!(&err, AppError::BadInput { field, .. } if field == "credentials.apiSecret"));

        let input = CredentialsInput {
            exchange: Exchange::Binance,
            api_key: "k".repeat(CREDENTIAL_MAX_CHARS + 1),
            api_secret: "s".into(),
            passphrase: None,
            environment: None,
        };
        let err = input.into_credentials("").err().unwrap();
        assert!(matches!(&err, AppError::BadInput { field, .. } if field == "apiKey"));
        assert!(!err.to_string().contains("kkkk"));
    }

    #[test]
    fn ids() {
        assert!(parse_id("id", "not-a-uuid").is_err());
        assert!(parse_id("id", "6f1c1f43-5a0b-4c53-9a45-3a4d35f2c1a0").is_ok());
    }
}
