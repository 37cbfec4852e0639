//! Turns Kite Connect's failures (HTTP status, `Retry-After`, the
//! `{"status":"error","message","error_type"}` body, transport errors) into
//! [`ExchangeError`]s with a hint for the user, per exchanges.md §4 and §5.
//! Nothing here sees the request: messages quote at most the HTTP status and
//! Kite's own `error_type` and `message` (the caller scrubs those as well).

use super::model::ErrorBody;
use crate::domain::ExchangeErrorCode;
use crate::exchange::ExchangeError;
use std::time::Duration;

/// The longest part of Kite's `message` quoted back to the user.
const MAX_QUOTED_CHARS: usize = 200;

const RELOGIN_HINT: &str = "Log in with Kite again (beginKiteLogin). Kite sessions end every day at 06:00 IST, and \
                            earlier when the user logs out of Kite or a newer login for the same app replaces the \
                            session.";

/// Which call failed: the same `TokenException` means a bad secret or a used
/// request token while creating a session, and an expired session afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `POST /session/token`: trading a request token for a session.
    CreateSession,
    /// Any call authenticated with a session's access token.
    Authenticated,
}

/// Classifies a non-2xx answer.
pub fn http_failure(call: Call, status: u16, retry_after: Option<Duration>, body: &[u8]) -> ExchangeError {
    let parsed = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .filter(|b| b.status == "error");
    match (status, parsed) {
        (429, _) => ExchangeError::new(
            ExchangeErrorCode::RateLimited,
            "Kite rate limit reached: too many requests for this API key (HTTP 429)",
        )
        .with_hint("Nothing is wrong with the key. The check is retried automatically later.")
        .with_retry_after(retry_after),
        (500..=599, parsed) => unavailable(status, parsed.as_ref()).with_retry_after(retry_after),
        (_, Some(body)) => by_type(call, status, &body),
        (_, None) => ExchangeError::new(
            ExchangeErrorCode::UnexpectedResponse,
            format!("Kite answered HTTP {status} with a body that is not a Kite error"),
        )
        .with_hint("Kite may have changed its API or be misbehaving; try again later."),
    }
}

/// A 2xx answer whose body is not what the endpoint documents.
pub fn unreadable_success(status: u16) -> ExchangeError {
    ExchangeError::new(
        ExchangeErrorCode::UnexpectedResponse,
        format!("Kite answered HTTP {status} with a body this service could not read"),
    )
    .with_hint("Kite may have changed its API or be misbehaving; try again later.")
}

/// `test()` without a session: Kite cannot be asked anything yet.
pub fn no_session() -> ExchangeError {
    ExchangeError::new(
        ExchangeErrorCode::TokenExpired,
        "no Kite session: log in with Kite (beginKiteLogin)",
    )
    .with_hint(
        "Kite Connect needs an interactive login by the account holder each day; the API key and secret alone \
         cannot be tested.",
    )
}

/// Classification by Kite's `error_type` (and, while creating a session, by
/// what the message names), for non-5xx answers with a Kite error body.
fn by_type(call: Call, status: u16, body: &ErrorBody) -> ExchangeError {
    let error_type = body.error_type.as_deref().unwrap_or("");
    let detail = detail(status, Some(body));
    if call == Call::CreateSession {
        let message = body.message.to_ascii_lowercase();
        if message.contains("checksum") {
            return ExchangeError::new(
                ExchangeErrorCode::InvalidCredentials,
                format!("Kite rejected the checksum: the API secret does not match the API key ({detail})"),
            )
            .with_hint(
                "Check the API secret: copy it again from the Kite developer console (My apps → this app), save it, \
                 and log in with Kite again.",
            );
        }
        if message.contains("api_key") {
            return ExchangeError::new(
                ExchangeErrorCode::InvalidCredentials,
                format!("Kite rejected the API key ({detail})"),
            )
            .with_hint(
                "Check the API key in the Kite developer console: it must belong to a Kite Connect app whose \
                 subscription is active.",
            );
        }
        if error_type == "TokenException" {
            return ExchangeError::new(
                ExchangeErrorCode::TokenExpired,
                format!("Kite refused the login's request token ({detail})"),
            )
            .with_hint(
                "A request token works once and only for a few minutes. Log in with Kite again (beginKiteLogin) \
                 and finish the login right away.",
            );
        }
    }
    match error_type {
        "TokenException" => ExchangeError::new(
            ExchangeErrorCode::TokenExpired,
            format!("the Kite session has expired or was ended ({detail})"),
        )
        .with_hint(RELOGIN_HINT),
        "PermissionException" => ExchangeError::new(
            ExchangeErrorCode::PermissionDenied,
            format!("Kite refused the call for lack of permission ({detail})"),
        )
        .with_hint("Check in the Kite developer console that the app's subscription is active and covers this API."),
        "UserException" => ExchangeError::new(
            ExchangeErrorCode::PermissionDenied,
            format!("Kite reports a problem with the Zerodha account ({detail})"),
        )
        .with_hint("Resolve it with Zerodha (sign in to Kite to see the account's state), then test again."),
        "NetworkException" | "DataException" => unavailable(status, Some(body)),
        // InputException, GeneralException and the order/margin/holding ones:
        // the request itself was refused, which the user cannot fix.
        _ => ExchangeError::new(ExchangeErrorCode::UnexpectedResponse, format!("Kite answered {detail}")).with_hint(
            "Kite refused the request as this service sent it; try again later, and report it if it persists.",
        ),
    }
}

fn unavailable(status: u16, body: Option<&ErrorBody>) -> ExchangeError {
    ExchangeError::new(
        ExchangeErrorCode::ExchangeUnavailable,
        format!("Kite is unavailable ({})", detail(status, body)),
    )
    .with_hint("Kite's servers or its order management system are down or busy. The check is retried automatically.")
}

/// "HTTP 403, TokenException: <message>", or less when the body says less.
fn detail(status: u16, body: Option<&ErrorBody>) -> String {
    let Some(body) = body else {
        return format!("HTTP {status}");
    };
    let message = quote(&body.message);
    match (body.error_type.as_deref(), message.is_empty()) {
        (Some(t), false) => format!("HTTP {status}, {}: {message}", quote(t)),
        (Some(t), true) => format!("HTTP {status}, {}", quote(t)),
        (None, false) => format!("HTTP {status}: {message}"),
        (None, true) => format!("HTTP {status}"),
    }
}

/// Kite's text, trimmed to printable characters of bounded length.
fn quote(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_QUOTED_CHARS)
        .collect()
}

pub use crate::exchange::common::TransportFailure;

pub fn transport_failure(failure: TransportFailure, timeout: Duration) -> ExchangeError {
    crate::exchange::common::transport_failure("Kite", failure, timeout)
}

/// `Retry-After` in whole seconds.
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(call: Call, status: u16, body: &str) -> ExchangeError {
        http_failure(call, status, None, body.as_bytes())
    }

    fn kite_error(error_type: &str, message: &str) -> String {
        serde_json::json!({"status": "error", "message": message, "data": null, "error_type": error_type}).to_string()
    }

    #[test]
    fn expired_session_is_token_expired_with_the_daily_relogin_hint() {
        let body = kite_error("TokenException", "Incorrect `api_key` or `access_token`.");
        let e = classify(Call::Authenticated, 403, &body);
        assert_eq!(e.code, ExchangeErrorCode::TokenExpired);
        assert!(!e.retryable());
        assert!(
            e.message.contains("HTTP 403, TokenException: Incorrect `api_key`"),
            "{e}"
        );
        let hint = e.hint.unwrap();
        assert!(hint.contains("06:00 IST") && hint.contains("beginKiteLogin"), "{hint}");
    }

    #[test]
    fn session_creation_separates_secret_key_and_request_token_failures() {
        let checksum = classify(
            Call::CreateSession,
            403,
            &kite_error("TokenException", "Invalid `checksum`."),
        );
        assert_eq!(checksum.code, ExchangeErrorCode::InvalidCredentials);
        assert!(checksum.hint.unwrap().contains("Check the API secret"));

        for error_type in ["InputException", "TokenException"] {
            let key = classify(Call::CreateSession, 400, &kite_error(error_type, "Invalid `api_key`."));
            assert_eq!(key.code, ExchangeErrorCode::InvalidCredentials, "{error_type}");
            assert!(key.hint.unwrap().contains("Check the API key"));
        }

        let used = classify(
            Call::CreateSession,
            403,
            &kite_error("TokenException", "Token is invalid or has expired."),
        );
        assert_eq!(used.code, ExchangeErrorCode::TokenExpired);
        assert!(used.hint.unwrap().contains("works once"));
    }

    #[test]
    fn after_login_a_message_naming_the_key_is_still_an_expired_session() {
        // The same words mean "session gone" once a session exists.
        let e = classify(
            Call::Authenticated,
            403,
            &kite_error("TokenException", "Invalid `api_key`."),
        );
        assert_eq!(e.code, ExchangeErrorCode::TokenExpired);
    }

    #[test]
    fn permission_and_user_exceptions_are_permission_denied() {
        for error_type in ["PermissionException", "UserException"] {
            let e = classify(Call::Authenticated, 403, &kite_error(error_type, "Nope."));
            assert_eq!(e.code, ExchangeErrorCode::PermissionDenied, "{error_type}");
            assert!(e.message.contains(error_type));
        }
    }

    #[test]
    fn rate_limits_carry_retry_after_whatever_the_body() {
        let e = http_failure(
            Call::Authenticated,
            429,
            Some(Duration::from_secs(3)),
            kite_error("NetworkException", "Too many requests").as_bytes(),
        );
        assert_eq!(e.code, ExchangeErrorCode::RateLimited);
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        let e = classify(Call::CreateSession, 429, "");
        assert_eq!((e.code, e.retry_after), (ExchangeErrorCode::RateLimited, None));
    }

    #[test]
    fn server_side_failures_are_unavailable() {
        for status in [500, 502, 503, 504] {
            assert_eq!(
                classify(Call::Authenticated, status, "<html>Bad Gateway</html>").code,
                ExchangeErrorCode::ExchangeUnavailable,
                "{status}"
            );
        }
        // Even a TokenException body on a 5xx is Kite failing, not the session.
        let e = classify(Call::Authenticated, 503, &kite_error("TokenException", "x"));
        assert_eq!(e.code, ExchangeErrorCode::ExchangeUnavailable);
        for error_type in ["NetworkException", "DataException"] {
            let e = classify(Call::Authenticated, 400, &kite_error(error_type, "OMS down"));
            assert_eq!(e.code, ExchangeErrorCode::ExchangeUnavailable, "{error_type}");
            assert!(e.retryable());
        }
        let e = http_failure(Call::Authenticated, 503, Some(Duration::from_secs(9)), b"");
        assert_eq!(e.retry_after, Some(Duration::from_secs(9)));
        assert_eq!(e.message, "Kite is unavailable (HTTP 503)");
    }

    #[test]
    fn request_refusals_and_unknown_bodies_are_unexpected_and_name_the_status() {
        for error_type in ["InputException", "GeneralException", "OrderException", "SomethingNew"] {
            let e = classify(Call::Authenticated, 400, &kite_error(error_type, "Missing `x`."));
            assert_eq!(e.code, ExchangeErrorCode::UnexpectedResponse, "{error_type}");
            assert!(e.message.contains("HTTP 400") && e.message.contains(error_type));
        }
        let e = classify(Call::Authenticated, 403, "<html><h1>403 Forbidden</h1></html>");
        assert_eq!(e.code, ExchangeErrorCode::UnexpectedResponse);
        assert!(e.message.contains("HTTP 403") && !e.message.contains("html"), "{e}");
        // A success-shaped body on an error status is not a Kite error either.
        let e = classify(Call::Authenticated, 404, r#"{"status":"success","data":{}}"#);
        assert_eq!(e.code, ExchangeErrorCode::UnexpectedResponse);
        assert!(unreadable_success(200).message.contains("HTTP 200"));
    }

    #[test]
    fn quoted_messages_are_bounded_and_single_line() {
        let long = kite_error("InputException", &format!("line\nbreak {}", "x".repeat(1000)));
        let message = classify(Call::Authenticated, 400, &long).message;
        assert!(!message.contains('\n'));
        assert!(message.len() < 400);
        let no_message = r#"{"status":"error","error_type":"TokenException"}"#;
        assert!(
            classify(Call::Authenticated, 403, no_message)
                .message
                .ends_with("(HTTP 403, TokenException)")
        );
    }

    #[test]
    fn no_session_is_token_expired() {
        let e = no_session();
        assert_eq!(e.code, ExchangeErrorCode::TokenExpired);
        assert!(e.message.contains("beginKiteLogin"));
    }

    #[test]
    fn transport_failures_are_network_errors() {
        for f in [
            TransportFailure::Timeout,
            TransportFailure::Connect,
            TransportFailure::Other,
        ] {
            assert_eq!(
                transport_failure(f, Duration::from_millis(250)).code,
                ExchangeErrorCode::NetworkError
            );
        }
        assert!(
            transport_failure(TransportFailure::Timeout, Duration::from_secs(10))
                .message
                .contains("10000 ms")
        );
    }

    #[test]
    fn retry_after_is_whole_seconds() {
        assert_eq!(parse_retry_after(Some(" 5 ")), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(parse_retry_after(Some("-3")), None);
        assert_eq!(parse_retry_after(None), None);
    }
}
