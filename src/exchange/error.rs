//! Errors from exchange clients. Messages never contain secret material.

use crate::domain::ExchangeErrorCode;
use std::time::Duration;

/// A classified failure of a call to an exchange.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ExchangeError {
    pub code: ExchangeErrorCode,
    /// What went wrong, in the user's terms (may quote the exchange's message).
    pub message: String,
    /// What the user should do next.
    pub hint: Option<String>,
    /// How long the exchange asked us to wait (`Retry-After`, bans).
    pub retry_after: Option<Duration>,
}

impl ExchangeError {
    pub fn new(code: ExchangeErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: None,
            retry_after: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    pub fn retryable(&self) -> bool {
        self.code.is_retryable()
    }
}

/// A credential whose shape is wrong for its exchange; names the input field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CredentialShapeError {
    pub field: &'static str,
    pub message: String,
}

impl CredentialShapeError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}
