//! Turns Coinbase's failures (HTTP status, `Retry-After`, error body,
//! transport errors) into [`ExchangeError`]s with a hint for the user, per
//! exchanges.md §2 "Errors" and §5. Nothing here sees the request: messages
//! quote at most the HTTP status and Coinbase's own error text.

use super::model::ErrorBody;
use crate::domain::ExchangeErrorCode;
use crate::exchange::ExchangeError;
use std::time::Duration;

/// The longest part of Coinbase's message quoted back to the user.
const MAX_QUOTED_CHARS: usize = 200;
/// What Coinbase says when a key lacks a scope (the official SDK matches it).
const MISSING_SCOPES: &str = "Missing required scopes";
const PORTAL: &str = "the Coinbase Developer Platform portal (portal.cdp.coinbase.com, API Keys)";

/// Classifies a non-2xx answer.
pub fn http_failure(status: u16, retry_after: Option<Duration>, body: &[u8], egress_ips: &[String]) -> ExchangeError {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let said = parsed.as_ref().and_then(ErrorBody::text).map(quote);
    match status {
        // Coinbase answers a plain-text "Unauthorized" for every auth failure.
        401 => ExchangeError::new(
            ExchangeErrorCode::InvalidCredentials,
            "Coinbase rejected the key (HTTP 401 Unauthorized)",
        )
        .with_hint(invalid_key_hint(egress_ips)),
        403 if mentions_missing_scopes(body) => ExchangeError::new(
            ExchangeErrorCode::PermissionDenied,
            format!("Coinbase says the key lacks a permission this check needs (HTTP 403: {MISSING_SCOPES})"),
        )
        .with_hint(format!(
            "Give the key the View permission in {PORTAL}, or create a new key with View. Checking a key \
             needs View; Transfer is never needed."
        )),
        403 if parsed.is_some() => ExchangeError::new(
            ExchangeErrorCode::PermissionDenied,
            match &said {
                Some(text) => format!("Coinbase refused the request (HTTP 403: {text})"),
                None => "Coinbase refused the request (HTTP 403)".to_owned(),
            },
        )
        .with_hint(format!("Check the key's permissions and portfolio in {PORTAL}.")),
        429 => ExchangeError::new(ExchangeErrorCode::RateLimited, "Coinbase rate limit reached (HTTP 429)")
            .with_hint("Nothing is wrong with the key. The check is retried automatically after a pause.")
            .with_retry_after(retry_after),
        500..=599 => ExchangeError::new(
            ExchangeErrorCode::ExchangeUnavailable,
            match &said {
                Some(text) => format!("Coinbase is unavailable (HTTP {status}: {text})"),
                None => format!("Coinbase is unavailable (HTTP {status})"),
            },
        )
        .with_hint("Coinbase's servers are busy or under maintenance. The check is retried automatically.")
        .with_retry_after(retry_after),
        _ => ExchangeError::new(
            ExchangeErrorCode::UnexpectedResponse,
            match &said {
                Some(text) => format!("Coinbase answered HTTP {status}: {text}"),
                None => format!("Coinbase answered HTTP {status} with a body that is not a Coinbase error"),
            },
        ),
    }
}

/// A 2xx answer whose body is not what the endpoint documents.
pub fn unreadable_success(status: u16) -> ExchangeError {
    ExchangeError::new(
        ExchangeErrorCode::UnexpectedResponse,
        format!("Coinbase answered HTTP {status} with a body this service could not read"),
    )
    .with_hint("Coinbase may have changed its API or be misbehaving; try again later.")
}

/// The hint for a 401, which Coinbase gives for every authentication failure.
pub fn invalid_key_hint(egress_ips: &[String]) -> String {
    let allowlist = if egress_ips.is_empty() {
        "does not include this service's egress IP addresses".to_owned()
    } else {
        format!(
            "does not include this service's egress IP addresses ({})",
            egress_ips.join(", ")
        )
    };
    format!(
        "Coinbase gives the same answer for several causes: the key name and the private key are not from the \
         same key, or the key was deleted; the key has an IP allowlist that {allowlist}; or the request's time \
         was off (this service follows Coinbase's clock, so this is rare). Check the key in {PORTAL}, paste the \
         key name and private key of the same key, and add the IP addresses to its allowlist if it has one."
    )
}

fn mentions_missing_scopes(body: &[u8]) -> bool {
    String::from_utf8_lossy(body).contains(MISSING_SCOPES)
}

/// Coinbase's text, trimmed to printable characters of bounded length.
fn quote(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_QUOTED_CHARS)
        .collect()
}

pub use crate::exchange::common::TransportFailure;

pub fn transport_failure(failure: TransportFailure, timeout: Duration) -> ExchangeError {
    crate::exchange::common::transport_failure("Coinbase", failure, timeout)
}

/// `Retry-After` as seconds or as an HTTP date (relative to `now`).
pub fn parse_retry_after(value: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - now).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCOPES_BODY: &str = r#"{"error":"PERMISSION_DENIED","error_details":"Missing required scopes","message":"Missing required scopes"}"#;

    fn classify(status: u16, body: &str) -> ExchangeError {
        http_failure(status, None, body.as_bytes(), &[])
    }

    #[test]
    fn unauthorized_is_invalid_credentials_with_every_cause_and_the_ips() {
        let ips = vec!["203.0.113.7".to_owned(), "203.0.113.8".to_owned()];
        let e = http_failure(401, None, b"Unauthorized\n", &ips);
        assert_eq!(e.code, ExchangeErrorCode::InvalidCredentials);
        assert!(!e.retryable());
        let hint = e.hint.unwrap();
        for needle in [
            "not from the same key",
            "deleted",
            "IP allowlist",
            "203.0.113.7, 203.0.113.8",
            "time",
            "portal.cdp.coinbase.com",
        ] {
            assert!(hint.contains(needle), "{needle:?} missing from {hint:?}");
        }
        assert!(invalid_key_hint(&[]).contains("egress IP addresses;"));
    }

    #[test]
    fn missing_scopes_is_permission_denied_asking_for_view() {
        let e = classify(403, SCOPES_BODY);
        assert_eq!(e.code, ExchangeErrorCode::PermissionDenied);
        assert!(e.message.contains("Missing required scopes"));
        assert!(e.hint.unwrap().contains("View permission"));
        // Other JSON refusals are still permission problems.
        let e = classify(403, r#"{"error":"PERMISSION_DENIED","message":"Portfolio is locked"}"#);
        assert_eq!(e.code, ExchangeErrorCode::PermissionDenied);
        assert!(e.message.contains("Portfolio is locked"));
        // An HTML 403 from an edge proxy is not about the key.
        let e = classify(403, "<html><body>Access denied</body></html>");
        assert_eq!(e.code, ExchangeErrorCode::UnexpectedResponse);
        assert!(!e.message.contains("html"));
    }

    #[test]
    fn rate_limit_carries_retry_after_only_when_given() {
        let e = http_failure(429, Some(Duration::from_secs(3)), b"", &[]);
        assert_eq!(e.code, ExchangeErrorCode::RateLimited);
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(classify(429, "Too Many Requests").retry_after, None);
    }

    #[test]
    fn server_errors_are_unavailable() {
        for status in [500, 502, 503, 504] {
            assert_eq!(classify(status, "").code, ExchangeErrorCode::ExchangeUnavailable);
        }
        let e = classify(
            503,
            r#"{"error":"UNAVAILABLE","code":14,"message":"upstream connect error"}"#,
        );
        assert!(e.message.contains("HTTP 503: upstream connect error"), "{e}");
        assert!(e.retryable());
    }

    #[test]
    fn anything_else_is_unexpected_and_names_the_status() {
        let e = classify(400, r#"{"error":"INVALID_ARGUMENT","code":3,"message":"bad request"}"#);
        assert_eq!(e.code, ExchangeErrorCode::UnexpectedResponse);
        assert!(e.message.contains("HTTP 400: bad request"));
        let e = classify(404, "<html>Not Found</html>");
        assert_eq!(e.code, ExchangeErrorCode::UnexpectedResponse);
        assert!(e.message.contains("HTTP 404") && !e.message.contains("html"));
        assert!(unreadable_success(200).message.contains("HTTP 200"));
    }

    #[test]
    fn quoted_text_is_bounded_and_single_line() {
        let body = format!(r#"{{"message":"line\nbreak {}"}}"#, "x".repeat(1000));
        let message = classify(400, &body).message;
        assert!(!message.contains('\n'));
        assert!(message.len() < 300);
    }

    #[test]
    fn transport_failures_are_network_errors() {
        for f in [
            TransportFailure::Timeout,
            TransportFailure::Connect,
            TransportFailure::Other,
        ] {
            assert_eq!(
                transport_failure(f, Duration::from_secs(1)).code,
                ExchangeErrorCode::NetworkError
            );
        }
        assert!(
            transport_failure(TransportFailure::Timeout, Duration::from_millis(250))
                .message
                .contains("250 ms")
        );
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after(Some("7"), now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"), now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:00:00 GMT"), now),
            None,
            "in the past"
        );
        assert_eq!(parse_retry_after(Some("-3"), now), None);
        assert_eq!(parse_retry_after(Some("soon"), now), None);
        assert_eq!(parse_retry_after(None, now), None);
    }
}
