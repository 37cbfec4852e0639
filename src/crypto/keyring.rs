//! INTERFACE STUB — to be implemented.
use super::SecretString;
use uuid::Uuid;

/// Who a sealed secret belongs to; checked again when it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretOwner {
    pub user_id: Uuid,
    pub connection_id: Uuid,
}

/// Which credential a token holds; part of the binding, so tokens cannot be swapped between columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretField {
    ApiKey,
    ApiSecret,
    Passphrase,
    AccessToken,
}

/// A Fernet token and the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub token: String,
    pub key_id: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyRingError {
    #[error("{source_name} is empty: give at least one Fernet key")]
    Empty { source_name: String },
    #[error("{source_name}: key #{position} is not a valid Fernet key (urlsafe base64 of 32 bytes)")]
    Malformed { source_name: String, position: usize },
    #[error("{source_name}: key #{position} is listed twice")]
    Duplicate { source_name: String, position: usize },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("no configured encryption key decrypts this secret")]
    NoKeyDecrypts,
    #[error("the stored secret belongs to another owner or field")]
    OwnerMismatch,
    #[error("the stored secret is not a valid envelope")]
    MalformedEnvelope,
}

pub struct KeyRing;

impl KeyRing {
    pub fn parse(_spec: &str, _source_name: &str) -> Result<KeyRing, KeyRingError> {
        unimplemented!()
    }
    pub fn generate_key() -> String {
        unimplemented!()
    }
    pub fn primary_key_id(&self) -> &str {
        unimplemented!()
    }
    pub fn seal(
        &self,
        _owner: &SecretOwner,
        _field: SecretField,
        _value: &SecretString,
    ) -> Result<Sealed, CryptoError> {
        unimplemented!()
    }
    pub fn open(&self, _owner: &SecretOwner, _field: SecretField, _token: &str) -> Result<SecretString, CryptoError> {
        unimplemented!()
    }
    pub fn fingerprints(&self, _exchange: &str, _api_key: &str) -> Vec<String> {
        unimplemented!()
    }
}

pub fn api_key_hint(_api_key: &str) -> String {
    unimplemented!()
}
