//! Turns Binance's failures (HTTP status, `Retry-After`, error body, transport
//! errors) into [`ExchangeError`]s with a hint for the user, per exchanges.md
//! §1 and §5, and words the warnings for keys that work but need fixing.
//! Nothing here sees the request: messages quote at most the HTTP status and
//! Binance's own code and `msg`.

use super::model::ErrorBody;
use crate::domain::ExchangeErrorCode;
use crate::exchange::ExchangeError;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The longest part of Binance's `msg` quoted back to the user.
const MAX_QUOTED_CHARS: usize = 200;

/// A failed HTTP exchange with Binance, classified, plus Binance's numeric
/// error code when the body carried one.
#[derive(Debug)]
pub struct Classified {
    pub error: ExchangeError,
    pub binance_code: Option<i64>,
}

/// Classifies a non-2xx answer. `now_ms` (Unix ms) lets a 418 without
/// `Retry-After` derive the wait from "IP banned until <ms>".
pub fn http_failure(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    egress_ips: &[String],
    now_ms: i64,
) -> Classified {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let binance_code = parsed.as_ref().map(|b| b.code);
    let error = match (status, parsed) {
        (429, _) => ExchangeError::new(
            ExchangeErrorCode::RateLimited,
            "Binance rate limit reached: too much request weight was used from this service's IP address (HTTP 429)",
        )
        .with_hint(
            "Nothing is wrong with the key. The check is retried automatically after the wait Binance asked for.",
        )
        .with_retry_after(retry_after),
        (418, parsed) => {
            let wait = retry_after.or_else(|| parsed.as_ref().and_then(|b| ban_remaining(&b.msg, now_ms)));
            ExchangeError::new(
                ExchangeErrorCode::RateLimited,
                "Binance has temporarily banned this service's IP address for exceeding its rate limits (HTTP 418)",
            )
            .with_hint("Nothing is wrong with the key. Bans last from 2 minutes to 3 days; the check is retried after the ban.")
            .with_retry_after(wait)
        }
        (403, _) => ExchangeError::new(
            ExchangeErrorCode::RateLimited,
            "request blocked by Binance's firewall (HTTP 403)",
        )
        .with_hint(
            "Binance's web application firewall rejected the request (a rate or security rule). It is retried later.",
        )
        .with_retry_after(retry_after),
        (500..=599, parsed) => unavailable(status, parsed.as_ref()).with_retry_after(retry_after),
        (_, Some(body)) => by_code(status, &body, retry_after, egress_ips),
        (_, None) => ExchangeError::new(
            ExchangeErrorCode::UnexpectedResponse,
            format!("Binance answered HTTP {status} with a body that is not a Binance error"),
        ),
    };
    Classified { error, binance_code }
}

/// A 2xx answer whose body is not what the endpoint documents.
pub fn unreadable_success(status: u16) -> ExchangeError {
    ExchangeError::new(
        ExchangeErrorCode::UnexpectedResponse,
        format!("Binance answered HTTP {status} with a body this service could not read"),
    )
    .with_hint("Binance may have changed its API or be misbehaving; try again later.")
}

/// `apiRestrictions` refused (-2015/-1002) after the account call worked: the
/// key's withdrawal right cannot be checked, so the key is not accepted.
pub fn permissions_unreadable(binance_code: i64, egress_ips: &[String]) -> ExchangeError {
    ExchangeError::new(
        ExchangeErrorCode::PermissionDenied,
        format!("could not read the key's permissions from Binance (code {binance_code})"),
    )
    .with_hint(format!(
        "The key can read the account, but Binance refused to show the key's restrictions, so whether it can \
         withdraw cannot be checked. Check the key in Binance API Management and {}",
        whitelist_advice(egress_ips)
    ))
}

/// The hint for -2015, which Binance uses for three different causes.
pub fn invalid_key_hint(egress_ips: &[String]) -> String {
    format!(
        "Binance gives the same answer for three causes: the API key is wrong or was deleted; this service's IP \
         address is not on the key's IP whitelist; or the key lacks the permission for this action (enable \
         Reading). Check the key in Binance API Management and {}",
        whitelist_advice(egress_ips)
    )
}

/// A signed request could not be signed (the crypto library refused a key
/// that had parsed; not expected).
pub fn signing_failed() -> ExchangeError {
    ExchangeError::new(
        ExchangeErrorCode::InvalidCredentials,
        "the request could not be signed with this private key",
    )
    .with_hint("Paste the private key again, or create a new Ed25519 key in Binance API Management.")
}

/// The warning for a working key without an IP restriction: Binance turns
/// its Spot & Margin trading permission off after 30 days (announcement of
/// 2021-07-08, exchanges.md §1), and withdrawals need a restriction anyway.
pub fn no_ip_restriction_warning(egress_ips: &[String], trading_expires_at: Option<DateTime<Utc>>) -> String {
    let when = match trading_expires_at {
        Some(at) => format!(" (for this key: {})", at.format("%Y-%m-%d %H:%M UTC")),
        None => String::new(),
    };
    format!(
        "This key has no IP restriction. Binance turns off a key's Spot & Margin trading permission 30 days after          it is enabled unless the key is restricted to trusted IPs{when}. In Binance API Management, choose          \"Restrict access to trusted IPs only\" and {}",
        whitelist_advice(egress_ips)
    )
}

fn whitelist_advice(egress_ips: &[String]) -> String {
    if egress_ips.is_empty() {
        "whitelist this service's egress IP addresses.".to_owned()
    } else {
        format!(
            "whitelist this service's egress IP addresses: {}.",
            egress_ips.join(", ")
        )
    }
}

/// Classification by Binance's error code, for 4xx answers with a JSON body.
fn by_code(status: u16, body: &ErrorBody, retry_after: Option<Duration>, egress_ips: &[String]) -> ExchangeError {
    let code = body.code;
    match code {
        -2015 => ExchangeError::new(
            ExchangeErrorCode::InvalidCredentials,
            format!("Binance rejected the API key: invalid API-key, IP, or permissions for action (code {code})"),
        )
        .with_hint(invalid_key_hint(egress_ips)),
        -2014 => ExchangeError::new(
            ExchangeErrorCode::InvalidCredentials,
            format!("Binance says the API-key format is invalid (code {code})"),
        )
        .with_hint("Copy the API key again from Binance API Management, without spaces or line breaks."),
        -1022 => ExchangeError::new(
            ExchangeErrorCode::InvalidCredentials,
            format!("signature invalid: the API secret does not match the API key (code {code})"),
        )
        .with_hint(
            "Paste the secret key shown when this API key was created. Binance shows it only once; if it is lost, \
             create a new key.",
        ),
        -1021 => ExchangeError::new(
            ExchangeErrorCode::ClockSkew,
            format!(
                "Binance refused the request's timestamp: {} (code {code})",
                quote(&body.msg)
            ),
        )
        .with_hint("This service's clock differs from Binance's. The check is retried automatically."),
        -1002 => ExchangeError::new(
            ExchangeErrorCode::PermissionDenied,
            format!("Binance says this key is not authorized to execute this request (code {code})"),
        )
        .with_hint("Enable the needed permissions for the key in Binance API Management."),
        -1003 => ExchangeError::new(
            ExchangeErrorCode::RateLimited,
            format!("Binance rate limit reached (HTTP {status}, code {code})"),
        )
        .with_retry_after(retry_after),
        -1001 | -1007 | -1008 | -1016 => unavailable(status, Some(body)).with_retry_after(retry_after),
        _ => ExchangeError::new(
            ExchangeErrorCode::UnexpectedResponse,
            format!(
                "Binance answered HTTP {status} with error code {code}: {}",
                quote(&body.msg)
            ),
        ),
    }
}

fn unavailable(status: u16, body: Option<&ErrorBody>) -> ExchangeError {
    let detail = match body {
        Some(b) => format!("HTTP {status}, code {}: {}", b.code, quote(&b.msg)),
        None => format!("HTTP {status}"),
    };
    ExchangeError::new(
        ExchangeErrorCode::ExchangeUnavailable,
        format!("Binance is unavailable ({detail})"),
    )
    .with_hint("Binance's servers are busy or under maintenance. The check is retried automatically.")
}

/// Binance's `msg`, trimmed to printable text of bounded length.
fn quote(msg: &str) -> String {
    msg.chars().filter(|c| !c.is_control()).take(MAX_QUOTED_CHARS).collect()
}

/// "…IP banned until 1659146400000…" → the time left, if still in the future.
fn ban_remaining(msg: &str, now_ms: i64) -> Option<Duration> {
    let rest = &msg[msg.find("banned until ")? + "banned until ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let until_ms: i64 = digits.parse().ok()?;
    let left = until_ms.checked_sub(now_ms)?;
    (left > 0).then(|| Duration::from_millis(left.unsigned_abs()))
}

pub use crate::exchange::common::TransportFailure;

pub fn transport_failure(failure: TransportFailure, timeout: Duration) -> ExchangeError {
    crate::exchange::common::transport_failure("Binance", failure, timeout)
}

/// `Retry-After` in seconds (the form Binance sends).
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn classify(status: u16, body: &str) -> Classified {
        http_failure(status, None, body.as_bytes(), &[], NOW)
    }

    fn code_of(status: u16, body: &str) -> ExchangeErrorCode {
        classify(status, body).error.code
    }

    #[test]
    fn ambiguous_2015_is_invalid_credentials_with_the_three_causes_and_the_ips() {
        let ips = vec!["203.0.113.7".to_owned(), "203.0.113.8".to_owned()];
        let body = br#"{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}"#;
        let c = http_failure(401, None, body, &ips, NOW);
        assert_eq!(c.binance_code, Some(-2015));
        assert_eq!(c.error.code, ExchangeErrorCode::InvalidCredentials);
        let hint = c.error.hint.unwrap();
        for needle in [
            "wrong or was deleted",
            "IP whitelist",
            "lacks the permission",
            "203.0.113.7, 203.0.113.8",
        ] {
            assert!(hint.contains(needle), "{needle:?} missing from {hint:?}");
        }
    }

    #[test]
    fn hint_without_configured_ips_still_says_to_whitelist() {
        let hint = invalid_key_hint(&[]);
        assert!(hint.contains("whitelist this service's egress IP addresses."));
    }

    #[test]
    fn credential_codes() {
        assert_eq!(
            code_of(401, r#"{"code":-2014,"msg":"API-key format invalid."}"#),
            ExchangeErrorCode::InvalidCredentials
        );
        let c = classify(
            400,
            r#"{"code":-1022,"msg":"Signature for this request is not valid."}"#,
        );
        assert_eq!(c.error.code, ExchangeErrorCode::InvalidCredentials);
        assert!(c.error.message.contains("secret does not match"));
        assert_eq!(
            code_of(
                400,
                r#"{"code":-1021,"msg":"Timestamp for this request is outside of the recvWindow."}"#
            ),
            ExchangeErrorCode::ClockSkew
        );
        assert_eq!(
            code_of(
                401,
                r#"{"code":-1002,"msg":"You are not authorized to execute this request."}"#
            ),
            ExchangeErrorCode::PermissionDenied
        );
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        let body = br#"{"code":-1003,"msg":"Too much request weight used; current limit is 6000 request weight per 1 MINUTE."}"#;
        let c = http_failure(429, Some(Duration::from_secs(7)), body, &[], NOW);
        assert_eq!(c.error.code, ExchangeErrorCode::RateLimited);
        assert_eq!(c.error.retry_after, Some(Duration::from_secs(7)));
        // Without the header there is no invented wait.
        assert_eq!(http_failure(429, None, body, &[], NOW).error.retry_after, None);
    }

    #[test]
    fn ip_ban_prefers_retry_after_then_the_ban_end_in_the_message() {
        let body = format!(
            r#"{{"code":-1003,"msg":"Way too much request weight used; IP banned until {}. Please use WebSocket Streams for live updates to avoid bans."}}"#,
            NOW + 120_000
        );
        let with_header = http_failure(418, Some(Duration::from_secs(30)), body.as_bytes(), &[], NOW);
        assert_eq!(with_header.error.code, ExchangeErrorCode::RateLimited);
        assert_eq!(with_header.error.retry_after, Some(Duration::from_secs(30)));
        let from_msg = http_failure(418, None, body.as_bytes(), &[], NOW);
        assert_eq!(from_msg.error.retry_after, Some(Duration::from_secs(120)));
        // A ban already over, or an unreadable message, gives no wait.
        assert_eq!(
            http_failure(418, None, body.as_bytes(), &[], NOW + 200_000)
                .error
                .retry_after,
            None
        );
        assert_eq!(http_failure(418, None, b"teapot", &[], NOW).error.retry_after, None);
    }

    #[test]
    fn waf_block_with_html_is_rate_limited() {
        let c = classify(403, "<html><body><h1>403 Forbidden</h1></body></html>");
        assert_eq!(c.error.code, ExchangeErrorCode::RateLimited);
        assert!(c.error.message.contains("firewall"));
        assert_eq!(c.binance_code, None);
    }

    #[test]
    fn server_side_failures_are_unavailable() {
        assert_eq!(
            code_of(503, "Service Unavailable"),
            ExchangeErrorCode::ExchangeUnavailable
        );
        assert_eq!(code_of(502, ""), ExchangeErrorCode::ExchangeUnavailable);
        let busy = r#"{"code":-1008,"msg":"Server is currently overloaded with other requests. Please try again in a few minutes."}"#;
        assert_eq!(code_of(503, busy), ExchangeErrorCode::ExchangeUnavailable);
        for code in [-1001, -1007, -1008, -1016] {
            let body = format!(r#"{{"code":{code},"msg":"x"}}"#);
            assert_eq!(
                code_of(400, &body),
                ExchangeErrorCode::ExchangeUnavailable,
                "code {code}"
            );
        }
    }

    #[test]
    fn unknown_errors_are_unexpected_and_name_the_status() {
        let c = classify(
            400,
            r#"{"code":-1100,"msg":"Illegal characters found in a parameter."}"#,
        );
        assert_eq!(c.error.code, ExchangeErrorCode::UnexpectedResponse);
        assert!(c.error.message.contains("HTTP 400") && c.error.message.contains("-1100"));
        let c = classify(404, "<html>Not Found</html>");
        assert_eq!(c.error.code, ExchangeErrorCode::UnexpectedResponse);
        assert!(c.error.message.contains("HTTP 404"));
        assert!(!c.error.message.contains("html"));
        assert!(unreadable_success(200).message.contains("HTTP 200"));
    }

    #[test]
    fn quoted_messages_are_bounded_and_single_line() {
        let long = format!(r#"{{"code":-1100,"msg":"line\nbreak {}"}}"#, "x".repeat(1000));
        let message = classify(400, &long).error.message;
        assert!(!message.contains('\n'));
        assert!(message.len() < 400);
    }

    #[test]
    fn permissions_unreadable_is_permission_denied() {
        let e = permissions_unreadable(-2015, &["198.51.100.1".to_owned()]);
        assert_eq!(e.code, ExchangeErrorCode::PermissionDenied);
        assert!(e.message.contains("could not read the key's permissions"));
        assert!(e.hint.unwrap().contains("198.51.100.1"));
    }

    #[test]
    fn ip_restriction_warning_names_the_30_days_the_ips_and_the_expiry() {
        let ips = ["203.0.113.7".to_owned()];
        let w = no_ip_restriction_warning(&ips, None);
        for needle in [
            "no IP restriction",
            "30 days",
            "trusted IPs",
            "whitelist",
            "203.0.113.7",
        ] {
            assert!(w.contains(needle), "{needle:?} missing from {w:?}");
        }
        assert!(!w.contains("for this key"));
        let at = DateTime::from_timestamp_millis(1_628_985_600_000).unwrap();
        let w = no_ip_restriction_warning(&[], Some(at));
        assert!(w.contains("(for this key: 2021-08-15 00:00 UTC)"), "{w}");
        assert!(w.contains("whitelist this service's egress IP addresses."), "{w}");
    }

    #[test]
    fn transport_failures_are_network_errors() {
        for f in [
            TransportFailure::Timeout,
            TransportFailure::Connect,
            TransportFailure::Other,
        ] {
            let e = transport_failure(f, Duration::from_millis(250));
            assert_eq!(e.code, ExchangeErrorCode::NetworkError);
        }
        assert!(
            transport_failure(TransportFailure::Timeout, Duration::from_secs(10))
                .message
                .contains("10000 ms")
        );
    }

    #[test]
    fn retry_after_is_whole_seconds() {
        assert_eq!(parse_retry_after(Some("120")), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(Some(" 5 ")), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(parse_retry_after(Some("-3")), None);
        assert_eq!(parse_retry_after(None), None);
    }
}
