//! INTERFACE STUB — to be implemented.
use crate::crypto::SecretString;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Uuid,
    pub role: String,
    pub email: Option<String>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub hs256_secret: Option<SecretString>,
    pub jwks_url: Option<url::Url>,
    pub audience: String,
    pub issuer: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

pub struct Verifier;

impl Verifier {
    pub fn new(_config: AuthConfig, _http: reqwest::Client) -> Result<Self, AuthError> {
        unimplemented!()
    }
    pub async fn verify(&self, _token: &str) -> Result<Principal, AuthError> {
        unimplemented!()
    }
}

/// Extracts the token from an `Authorization: Bearer <token>` value.
pub fn bearer_token(_header_value: &str) -> Option<&str> {
    unimplemented!()
}

/// Issues an HS256 token as Supabase would (for the embedded demo user and tests).
pub fn issue_hs256_token(_secret: &SecretString, _user_id: Uuid, _audience: &str, _ttl: std::time::Duration) -> String {
    unimplemented!()
}
