//! Plumbing every exchange client shares: classifying a request that got no
//! HTTP answer, and scrubbing sensitive values out of errors.

use crate::domain::ExchangeErrorCode;
use crate::exchange::ExchangeError;
use std::time::Duration;
use zeroize::Zeroizing;

/// Why a request got no HTTP answer at all. Built from `reqwest::Error`'s
/// kind only: its `Display` contains the URL (with signatures, for some exchanges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    Timeout,
    Connect,
    Other,
}

impl TransportFailure {
    pub fn of(error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            Self::Timeout
        } else if error.is_connect() {
            Self::Connect
        } else {
            Self::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Other => "other",
        }
    }
}

/// `NETWORK_ERROR` for a request to `exchange` (its display name) that got no answer.
pub fn transport_failure(exchange: &str, failure: TransportFailure, timeout: Duration) -> ExchangeError {
    let message = match failure {
        TransportFailure::Timeout => format!("{exchange} did not answer within {} ms", timeout.as_millis()),
        TransportFailure::Connect => format!("could not connect to {exchange}"),
        TransportFailure::Other => format!("the request to {exchange} failed before an answer arrived"),
    };
    ExchangeError::new(ExchangeErrorCode::NetworkError, message).with_hint(format!(
        "A network problem between this service and {exchange}. The check is retried automatically."
    ))
}

/// Defence in depth: replaces any echo of a sensitive value (e.g. quoted back
/// in an exchange's error message) with `[REDACTED]` in an error's message and
/// hint. Values shorter than `min_len` are left alone: they would match words.
pub fn scrub(mut error: ExchangeError, sensitive: &[&str], min_len: usize) -> ExchangeError {
    for value in sensitive.iter().filter(|v| v.len() >= min_len) {
        if error.message.contains(value) {
            error.message = error.message.replace(value, "[REDACTED]");
        }
        if let Some(hint) = error.hint.as_mut().filter(|h| h.contains(value)) {
            *hint = hint.replace(value, "[REDACTED]");
        }
    }
    error
}

/// A response body that could not be read in full.
pub enum BodyError {
    Transport(reqwest::Error),
    /// Longer than the caller's limit: not an answer worth buffering.
    TooLarge,
}

/// Reads a body of at most `max_bytes` into a buffer wiped on drop (answers
/// may carry session tokens), sized up front so no reallocation leaves copies.
pub async fn read_body(mut response: reqwest::Response, max_bytes: usize) -> Result<Zeroizing<Vec<u8>>, BodyError> {
    let capacity = response
        .content_length()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(8 * 1024)
        .min(max_bytes);
    let mut body = Zeroizing::new(Vec::with_capacity(capacity));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
