//! The service's error type and its mapping to GraphQL `extensions.code`.
//! Internal causes are logged in full and returned only as "internal error".

use crate::exchange::ExchangeError;
use async_graphql::ErrorExtensions;

/// Every error a caller can see. Messages never contain secret material.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("authentication required")]
    Unauthenticated,
    #[error("not allowed")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{field}: {message}")]
    BadInput { field: String, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    RateLimited(String),
    /// The exchange refused or could not answer; carries the classified error.
    #[error("{context}: {error}")]
    Exchange {
        context: &'static str,
        error: ExchangeError,
    },
    /// A connection's stored secret could not be opened with the configured keys.
    #[error("this connection's stored secret cannot be decrypted with the configured encryption keys")]
    SecretUnreadable,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn bad_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadInput {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::Internal(cause.into())
    }

    /// The stable code in `extensions.code` (DESIGN.md).
    pub fn code(&self) -> &'static str {
        use crate::domain::ExchangeErrorCode as E;
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::BadInput { .. } => "BAD_USER_INPUT",
            Self::Conflict(_) => "CONFLICT",
            Self::RateLimited(_) => "RATE_LIMITED",
            Self::Exchange { error, .. } => match error.code {
                E::RateLimited => "RATE_LIMITED",
                E::ExchangeUnavailable | E::NetworkError => "EXCHANGE_UNAVAILABLE",
                _ => "BAD_USER_INPUT",
            },
            Self::SecretUnreadable | Self::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Internal(err.into())
    }
}

impl From<sea_orm::TransactionError<AppError>> for AppError {
    fn from(err: sea_orm::TransactionError<AppError>) -> Self {
        match err {
            sea_orm::TransactionError::Connection(db) => db.into(),
            sea_orm::TransactionError::Transaction(app) => app,
        }
    }
}

impl ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        if let Self::Internal(cause) = self {
            // The chain may name tables or hosts: log it, never return it.
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
        let code = self.code();
        async_graphql::Error::new(self.to_string()).extend_with(|_, ext| {
            ext.set("code", code);
            match self {
                Self::BadInput { field, .. } => ext.set("field", field.as_str()),
                Self::Exchange { error, .. } => {
                    ext.set(
                        "exchangeError",
                        async_graphql::Value::from_json(
                            crate::service::views::ExchangeErrorView::from(error).to_json(),
                        )
                        .unwrap_or_default(),
                    );
                    ext.set("retryable", error.retryable());
                }
                _ => {}
            }
        })
    }
}
