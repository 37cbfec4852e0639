//! Turns Kraken's failures into [`ExchangeError`]s with a hint for the user,
//! per exchanges.md §3 and §5. Kraken usually answers HTTP 200 with an
//! `error` array of `<E|W><Category>:<Message>[:<extra>]` strings, so the
//! strings decide; the HTTP status only speaks when there are none. Nothing
//! here sees the request: messages quote at most the status and Kraken's
//! error strings.

use crate::domain::ExchangeErrorCode;
use crate::exchange::ExchangeError;
use std::time::Duration;

/// Kraken: "Temporary lockouts typically last approximately 15 minutes".
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// The longest wait taken from a `Throttled` timestamp or `Retry-After`.
const MAX_WAIT: Duration = Duration::from_secs(60 * 60);
/// The longest part of Kraken's error string quoted back to the user.
const MAX_QUOTED_CHARS: usize = 200;

/// The Kraken errors this client acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KrakenError {
    InvalidKey,
    InvalidSignature,
    InvalidNonce,
    PermissionDenied,
    TemporaryLockout,
    RateLimitExceeded,
    Throttled,
    ServiceDown,
    InternalError,
    Otp,
}

/// A classified failure, with the Kraken error recognised (if any).
#[derive(Debug, Clone)]
pub struct Classified {
    pub error: ExchangeError,
    pub kraken: Option<KrakenError>,
}

impl From<ExchangeError> for Classified {
    fn from(error: ExchangeError) -> Self {
        Self { error, kraken: None }
    }
}

/// Classifies an answer carrying Kraken error strings (warnings, `W…`, are
/// ignored; the caller passes only when at least one `E…` string exists).
/// The first recognised error wins. `status` decides for unrecognised
/// strings on 5xx/429 answers; `now_unix` resolves `Throttled` timestamps.
pub fn kraken_errors(
    errors: &[String],
    status: u16,
    retry_after: Option<Duration>,
    egress_ips: &[String],
    now_unix: i64,
) -> Classified {
    let errors: Vec<&str> = errors.iter().map(|e| e.trim()).filter(|e| e.starts_with('E')).collect();
    for text in &errors {
        if let Some(mut classified) = known(text, egress_ips, now_unix) {
            // A `Retry-After` beside a rate-limit string says how long.
            if classified.error.code == ExchangeErrorCode::RateLimited && classified.error.retry_after.is_none() {
                classified.error.retry_after = retry_after.map(|w| w.min(MAX_WAIT));
            }
            return classified;
        }
    }
    if status >= 500 || status == 429 {
        return http_status(status, retry_after);
    }
    let quoted = errors.first().map(|e| quote(e)).unwrap_or_default();
    ExchangeError::new(
        ExchangeErrorCode::UnexpectedResponse,
        format!("Kraken refused the request (HTTP {status}): {quoted}"),
    )
    .into()
}

/// Splits `EService: Throttled: 1700000000` into ("EService", "Throttled", Some("1700000000")).
fn parts(text: &str) -> (&str, &str, Option<&str>) {
    let mut parts = text.splitn(3, ':').map(str::trim);
    let category = parts.next().unwrap_or_default();
    let message = parts.next().unwrap_or_default();
    (category, message, parts.next())
}

fn known(text: &str, egress_ips: &[String], now_unix: i64) -> Option<Classified> {
    let (category, message, extra) = parts(text);
    let is = |c: &str, m: &str| category.eq_ignore_ascii_case(c) && message.eq_ignore_ascii_case(m);
    let (kraken, error) = if is("EAPI", "Invalid key") {
        (
            KrakenError::InvalidKey,
            ExchangeError::new(
                ExchangeErrorCode::InvalidCredentials,
                "Kraken rejected the API key (EAPI:Invalid key): it is unknown, deleted or mistyped",
            )
            .with_hint(format!(
                "Copy the API key again from Kraken (Settings → API). If the key has an IP allowlist, {} This \
                 service will not use the key again until it is changed, since repeated rejected keys lock the \
                 Kraken account out.",
                allowlist_advice(egress_ips)
            )),
        )
    } else if is("EAPI", "Invalid signature") {
        (
            KrakenError::InvalidSignature,
            ExchangeError::new(
                ExchangeErrorCode::InvalidCredentials,
                "signature invalid: the private key does not match the API key (EAPI:Invalid signature)",
            )
            .with_hint(
                "Paste the private key Kraken showed when this API key was created (base64, usually ending in \
                 \"==\"). Kraken shows it only once; if it is lost, create a new key.",
            ),
        )
    } else if is("EAPI", "Invalid nonce") {
        (
            KrakenError::InvalidNonce,
            ExchangeError::new(
                ExchangeErrorCode::InvalidNonce,
                "Kraken refused the request's nonce (EAPI:Invalid nonce)",
            )
            .with_hint(
                "Another application probably uses this API key with larger nonces, or the key's nonce window is \
                 too small. Create a dedicated API key for this service.",
            ),
        )
    } else if is("EGeneral", "Permission denied") {
        (
            KrakenError::PermissionDenied,
            ExchangeError::new(
                ExchangeErrorCode::PermissionDenied,
                "the API key lacks the permission for this call (EGeneral:Permission denied)",
            )
            .with_hint(format!(
                "Enable the \"Query Funds\" permission for the key in Kraken (Settings → API). If the key has an \
                 IP allowlist, {}",
                allowlist_advice(egress_ips)
            )),
        )
    } else if is("EGeneral", "Temporary lockout") {
        (
            KrakenError::TemporaryLockout,
            ExchangeError::new(
                ExchangeErrorCode::RateLimited,
                "Kraken temporarily locked this key out after too many failed calls (EGeneral:Temporary lockout)",
            )
            .with_hint(
                "Too many rejected keys, signatures or nonces. The lockout typically lasts about 15 minutes; this \
                 service waits that long before using the key again.",
            )
            .with_retry_after(Some(LOCKOUT)),
        )
    } else if is("EAPI", "Rate limit exceeded") {
        (
            KrakenError::RateLimitExceeded,
            ExchangeError::new(
                ExchangeErrorCode::RateLimited,
                "the key's Kraken API call counter is full (EAPI:Rate limit exceeded)",
            )
            .with_hint(
                "The counter empties over time. If other applications use this key, they share its counter; a \
                 dedicated key avoids that. The check is retried automatically.",
            ),
        )
    } else if is("EService", "Throttled") {
        let wait = extra.and_then(|ts| until(ts, now_unix));
        (
            KrakenError::Throttled,
            ExchangeError::new(
                ExchangeErrorCode::RateLimited,
                "Kraken throttled the request: too many concurrent requests (EService:Throttled)",
            )
            .with_hint("Nothing is wrong with the key. The check is retried after the time Kraken gave.")
            .with_retry_after(wait),
        )
    } else if category.eq_ignore_ascii_case("EService") || is("EGeneral", "Internal error") {
        let kraken = if category.eq_ignore_ascii_case("EService") {
            KrakenError::ServiceDown
        } else {
            KrakenError::InternalError
        };
        (
            kraken,
            ExchangeError::new(
                ExchangeErrorCode::ExchangeUnavailable,
                format!("Kraken is unavailable ({})", quote(text)),
            )
            .with_hint("Kraken is busy or under maintenance. The check is retried automatically."),
        )
    } else if mentions_otp(message) || extra.is_some_and(mentions_otp) {
        (
            KrakenError::Otp,
            ExchangeError::new(
                ExchangeErrorCode::InvalidCredentials,
                format!("Kraken refused the key's two-factor password ({})", quote(text)),
            )
            .with_hint(
                "Put the key's two-factor static password in the passphrase field. Keys protected by an \
                 authenticator app cannot be used by a service; use a static password or no two-factor on the \
                 key.",
            ),
        )
    } else {
        return None;
    };
    Some(Classified {
        error,
        kraken: Some(kraken),
    })
}

/// `EAPI:Invalid otp`, `EGeneral:Invalid arguments:otp` (seen in client libraries).
fn mentions_otp(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| word.eq_ignore_ascii_case("otp"))
}

fn allowlist_advice(egress_ips: &[String]) -> String {
    if egress_ips.is_empty() {
        "make sure it allows this service's egress IP addresses.".to_owned()
    } else {
        format!(
            "make sure it allows this service's egress IP addresses: {}.",
            egress_ips.join(", ")
        )
    }
}

/// The wait until a Unix timestamp in seconds, if it is still ahead.
fn until(timestamp: &str, now_unix: i64) -> Option<Duration> {
    let at: i64 = timestamp.trim().parse().ok()?;
    let left = at.checked_sub(now_unix)?;
    (left > 0).then(|| Duration::from_secs(left.unsigned_abs()).min(MAX_WAIT))
}

/// An answer without Kraken error strings, classified by its HTTP status.
pub fn http_status(status: u16, retry_after: Option<Duration>) -> Classified {
    let error = match status {
        429 => ExchangeError::new(ExchangeErrorCode::RateLimited, "Kraken rate limit reached (HTTP 429)")
            .with_hint("Nothing is wrong with the key. The check is retried automatically.")
            .with_retry_after(retry_after.map(|w| w.min(MAX_WAIT))),
        500..=599 => ExchangeError::new(
            ExchangeErrorCode::ExchangeUnavailable,
            format!("Kraken is unavailable (HTTP {status})"),
        )
        .with_hint("Kraken is busy or under maintenance. The check is retried automatically.")
        .with_retry_after(retry_after.map(|w| w.min(MAX_WAIT))),
        _ => ExchangeError::new(
            ExchangeErrorCode::UnexpectedResponse,
            format!("Kraken answered HTTP {status} with a body that is not a Kraken answer"),
        ),
    };
    error.into()
}

/// A 2xx answer without errors whose `result` is not what the endpoint documents.
pub fn unreadable(status: u16) -> ExchangeError {
    ExchangeError::new(
        ExchangeErrorCode::UnexpectedResponse,
        format!("Kraken answered HTTP {status} with a body this service could not read"),
    )
    .with_hint("Kraken may have changed its API or be misbehaving; try again later.")
}

/// Kraken's error string, trimmed to printable text of bounded length.
fn quote(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_QUOTED_CHARS)
        .collect()
}

pub use crate::exchange::common::TransportFailure;

pub fn transport_failure(failure: TransportFailure, timeout: Duration) -> ExchangeError {
    crate::exchange::common::transport_failure("Kraken", failure, timeout)
}

/// Another call with the same key held it longer than the client's timeout.
pub fn key_busy(timeout: Duration) -> ExchangeError {
    ExchangeError::new(
        ExchangeErrorCode::RateLimited,
        format!(
            "another call to Kraken with this API key was still running after {} ms",
            timeout.as_millis()
        ),
    )
    .with_hint("Calls with one Kraken key are made one at a time. The check is retried automatically.")
}

/// The nonce source failed (e.g. its shared store is unreachable).
pub fn nonce_unavailable() -> ExchangeError {
    ExchangeError::new(
        ExchangeErrorCode::NetworkError,
        "not sent: could not reserve a nonce for this Kraken API key (the nonce store did not answer)",
    )
    .with_hint("An internal problem of this service; the check is retried automatically.")
}

/// `Retry-After` in whole seconds.
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn classify(errors: &[&str]) -> Classified {
        let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        kraken_errors(&errors, 200, None, &["203.0.113.7".to_owned()], NOW)
    }

    fn code_of(error: &str) -> ExchangeErrorCode {
        classify(&[error]).error.code
    }

    #[test]
    fn the_documented_strings() {
        use ExchangeErrorCode::*;
        for (text, code, kraken) in [
            ("EAPI:Invalid key", InvalidCredentials, KrakenError::InvalidKey),
            (
                "EAPI:Invalid signature",
                InvalidCredentials,
                KrakenError::InvalidSignature,
            ),
            ("EAPI:Invalid nonce", InvalidNonce, KrakenError::InvalidNonce),
            (
                "EGeneral:Permission denied",
                PermissionDenied,
                KrakenError::PermissionDenied,
            ),
            ("EGeneral:Temporary lockout", RateLimited, KrakenError::TemporaryLockout),
            ("EAPI:Rate limit exceeded", RateLimited, KrakenError::RateLimitExceeded),
            ("EService: Throttled: 1700000030", RateLimited, KrakenError::Throttled),
            ("EService:Unavailable", ExchangeUnavailable, KrakenError::ServiceDown),
            ("EService:Busy", ExchangeUnavailable, KrakenError::ServiceDown),
            (
                "EService:Market in cancel_only mode",
                ExchangeUnavailable,
                KrakenError::ServiceDown,
            ),
            (
                "EGeneral:Internal error",
                ExchangeUnavailable,
                KrakenError::InternalError,
            ),
        ] {
            let c = classify(&[text]);
            assert_eq!((c.error.code, c.kraken), (code, Some(kraken)), "{text}");
        }
    }

    #[test]
    fn hints_say_what_to_do() {
        let hint = |text| classify(&[text]).error.hint.unwrap();
        let invalid_key = hint("EAPI:Invalid key");
        assert!(invalid_key.contains("IP allowlist") && invalid_key.contains("203.0.113.7"));
        assert!(hint("EAPI:Invalid nonce").contains("dedicated API key"));
        let denied = hint("EGeneral:Permission denied");
        assert!(denied.contains("Query Funds") && denied.contains("203.0.113.7"));
        assert!(
            classify(&["EAPI:Invalid signature"])
                .error
                .message
                .contains("does not match")
        );
        let no_ips = kraken_errors(&["EAPI:Invalid key".to_owned()], 200, None, &[], NOW);
        assert!(no_ips.error.hint.unwrap().contains("egress IP addresses."));
    }

    #[test]
    fn waits_come_from_kraken() {
        assert_eq!(
            classify(&["EGeneral:Temporary lockout"]).error.retry_after,
            Some(Duration::from_secs(900))
        );
        assert_eq!(
            classify(&["EService: Throttled: 1700000030"]).error.retry_after,
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            classify(&["EService:Throttled:1700000005"]).error.retry_after,
            Some(Duration::from_secs(5))
        );
        // Past, unreadable or absurd timestamps give no or a bounded wait.
        assert_eq!(classify(&["EService: Throttled: 1699999999"]).error.retry_after, None);
        assert_eq!(classify(&["EService: Throttled: soon"]).error.retry_after, None);
        assert_eq!(classify(&["EService: Throttled"]).error.retry_after, None);
        assert_eq!(
            classify(&["EService: Throttled: 9999999999"]).error.retry_after,
            Some(MAX_WAIT)
        );
        assert_eq!(classify(&["EAPI:Rate limit exceeded"]).error.retry_after, None);
    }

    #[test]
    fn extra_info_and_letter_case_do_not_matter() {
        assert_eq!(code_of("EAPI:Invalid key:extra"), ExchangeErrorCode::InvalidCredentials);
        assert_eq!(code_of(" EApi: invalid NONCE "), ExchangeErrorCode::InvalidNonce);
    }

    #[test]
    fn warnings_are_skipped_and_the_first_known_error_wins() {
        let c = classify(&["WGeneral:Danger", "EGeneral:Invalid arguments", "EAPI:Invalid nonce"]);
        assert_eq!(c.error.code, ExchangeErrorCode::InvalidNonce);
        let c = classify(&["EAPI:Invalid signature", "EAPI:Invalid nonce"]);
        assert_eq!(c.error.code, ExchangeErrorCode::InvalidCredentials);
    }

    #[test]
    fn unknown_strings_are_unexpected_and_quoted() {
        let c = classify(&["EGeneral:Invalid arguments"]);
        assert_eq!((c.error.code, c.kraken), (ExchangeErrorCode::UnexpectedResponse, None));
        assert!(c.error.message.contains("EGeneral:Invalid arguments"), "{}", c.error);
        assert!(c.error.message.contains("HTTP 200"));
        // Only warnings: nothing to quote, still unexpected.
        assert_eq!(
            classify(&["WGeneral:Something"]).error.code,
            ExchangeErrorCode::UnexpectedResponse
        );
        // Long or multi-line strings are bounded.
        let long = format!("EGeneral:Odd\n{}", "x".repeat(1000));
        let message = classify(&[&long]).error.message;
        assert!(!message.contains('\n') && message.len() < 400);
    }

    #[test]
    fn otp_problems_are_invalid_credentials() {
        for text in [
            "EAPI:Invalid otp",
            "EGeneral:Invalid arguments:otp",
            "EAPI:Invalid arguments: OTP",
        ] {
            let c = classify(&[text]);
            assert_eq!(
                (c.error.code, c.kraken),
                (ExchangeErrorCode::InvalidCredentials, Some(KrakenError::Otp)),
                "{text}"
            );
            assert!(c.error.hint.unwrap().contains("passphrase"));
        }
        // Not a word match: no.
        assert_eq!(code_of("EGeneral:Hotpotato"), ExchangeErrorCode::UnexpectedResponse);
    }

    #[test]
    fn status_decides_only_for_unknown_strings_or_none() {
        let unknown = ["EGeneral:Odd".to_owned()];
        assert_eq!(
            kraken_errors(&unknown, 503, None, &[], NOW).error.code,
            ExchangeErrorCode::ExchangeUnavailable
        );
        let limited = kraken_errors(&unknown, 429, Some(Duration::from_secs(3)), &[], NOW);
        assert_eq!(limited.error.code, ExchangeErrorCode::RateLimited);
        assert_eq!(limited.error.retry_after, Some(Duration::from_secs(3)));
        // A known string beats the status.
        let known = ["EAPI:Invalid key".to_owned()];
        assert_eq!(
            kraken_errors(&known, 503, None, &[], NOW).error.code,
            ExchangeErrorCode::InvalidCredentials
        );

        assert_eq!(
            http_status(502, None).error.code,
            ExchangeErrorCode::ExchangeUnavailable
        );
        assert_eq!(http_status(429, None).error.code, ExchangeErrorCode::RateLimited);
        let other = http_status(403, None).error;
        assert_eq!(other.code, ExchangeErrorCode::UnexpectedResponse);
        assert!(other.message.contains("HTTP 403"));
        assert!(unreadable(200).message.contains("HTTP 200"));
    }

    #[test]
    fn transport_and_internal_failures_are_retryable() {
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
        assert!(key_busy(Duration::from_secs(1)).retryable());
        assert!(nonce_unavailable().retryable());
    }

    #[test]
    fn retry_after_is_whole_seconds() {
        assert_eq!(parse_retry_after(Some(" 5 ")), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(parse_retry_after(None), None);
    }
}
