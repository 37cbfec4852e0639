//! The Kite Connect login, minus the HTTP: the login-page URL, the checksum
//! that trades a one-time request token for a session, the session's daily
//! expiry at 06:00 IST, and the shape of a request token (exchanges.md §4).

use crate::crypto::SecretString;
use crate::exchange::CredentialShapeError;
use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use url::Url;

/// India Standard Time is UTC+05:30 all year: no daylight saving, so a fixed
/// offset is exact.
const IST_OFFSET_SECS: i64 = 5 * 3600 + 30 * 60;
/// Kite sessions end at 06:00 IST (a regulatory requirement).
const EXPIRY_SECS_AFTER_MIDNIGHT: i64 = 6 * 3600;
const SECS_PER_DAY: i64 = 24 * 3600;
/// Kite's request tokens are 32 characters; this bound is deliberately loose.
const MAX_REQUEST_TOKEN_LEN: usize = 64;

/// A Kite session from a completed login. The token is the credential for
/// every API call until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KiteSession {
    pub access_token: SecretString,
    /// The Zerodha client ID, e.g. `AB1234`.
    pub user_id: String,
    pub expires_at: DateTime<Utc>,
}

/// The first 06:00 IST strictly after `now`: when a session alive at `now`
/// expires. At exactly 06:00 IST the day's session has just ended, so the
/// answer is the next day's 06:00.
pub fn next_kite_expiry(now: DateTime<Utc>) -> DateTime<Utc> {
    let secs_into_ist_day = (now.timestamp() + IST_OFFSET_SECS).rem_euclid(SECS_PER_DAY);
    let since_ist_midnight =
        TimeDelta::seconds(secs_into_ist_day) + TimeDelta::nanoseconds(i64::from(now.timestamp_subsec_nanos()));
    let ist_midnight = now - since_ist_midnight;
    let days = if since_ist_midnight < TimeDelta::seconds(EXPIRY_SECS_AFTER_MIDNIGHT) {
        0
    } else {
        1
    };
    ist_midnight + TimeDelta::seconds(days * SECS_PER_DAY + EXPIRY_SECS_AFTER_MIDNIGHT)
}

/// Kite's login page for `api_key`. Kite hands `redirect_params` back on the
/// redirect after the login, which is how `state` comes back to us.
pub fn login_url(login_page: &Url, api_key: &str, state: &str) -> Url {
    let redirect_params = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("state", state)
        .finish();
    let mut url = login_page.clone();
    url.query_pairs_mut()
        .append_pair("v", "3")
        .append_pair("api_key", api_key)
        .append_pair("redirect_params", &redirect_params);
    url
}

/// `hex(SHA-256(api_key ‖ request_token ‖ api_secret))`: plain concatenation,
/// not an HMAC. Whoever holds it can claim the session, so it is a secret too.
pub fn checksum(api_key: &str, request_token: &str, api_secret: &SecretString) -> SecretString {
    let mut hasher = Sha256::new();
    hasher.update(api_key.as_bytes());
    hasher.update(request_token.as_bytes());
    hasher.update(api_secret.expose().as_bytes());
    SecretString::new(hex::encode(hasher.finalize()))
}

/// The `request_token` Kite appends to the redirect URL: 1 to 64 ASCII
/// letters and digits. The message never quotes the input.
pub fn check_request_token(request_token: &str) -> Result<(), CredentialShapeError> {
    let fits = !request_token.is_empty()
        && request_token.len() <= MAX_REQUEST_TOKEN_LEN
        && request_token.bytes().all(|b| b.is_ascii_alphanumeric());
    if fits {
        Ok(())
    } else {
        Err(CredentialShapeError::new(
            "requestToken",
            "expected the request_token from Kite's redirect after the login (letters and digits only)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap()
    }

    // 06:00 IST is 00:30 UTC of the same calendar day.

    #[test]
    fn before_six_ist_expires_the_same_morning() {
        // 05:59 IST on 10 March = 00:29 UTC on 10 March.
        assert_eq!(next_kite_expiry(utc(2026, 3, 10, 0, 29, 0)), utc(2026, 3, 10, 0, 30, 0));
        // One nanosecond before 06:00 IST still belongs to the old day.
        let almost = utc(2026, 3, 10, 0, 29, 59) + TimeDelta::nanoseconds(999_999_999);
        assert_eq!(next_kite_expiry(almost), utc(2026, 3, 10, 0, 30, 0));
    }

    #[test]
    fn at_six_ist_expires_the_next_morning() {
        assert_eq!(next_kite_expiry(utc(2026, 3, 10, 0, 30, 0)), utc(2026, 3, 11, 0, 30, 0));
        assert_eq!(
            next_kite_expiry(utc(2026, 3, 10, 0, 30, 0) + TimeDelta::nanoseconds(1)),
            utc(2026, 3, 11, 0, 30, 0)
        );
    }

    #[test]
    fn late_evening_ist_expires_the_next_morning() {
        // 23:00 IST on 10 March = 17:30 UTC on 10 March.
        assert_eq!(
            next_kite_expiry(utc(2026, 3, 10, 17, 30, 0)),
            utc(2026, 3, 11, 0, 30, 0)
        );
        // 00:10 IST on 11 March = 18:40 UTC on 10 March: the IST date has
        // already moved on while the UTC date has not.
        assert_eq!(
            next_kite_expiry(utc(2026, 3, 10, 18, 40, 0)),
            utc(2026, 3, 11, 0, 30, 0)
        );
    }

    #[test]
    fn crosses_month_and_year_ends_and_ignores_daylight_saving() {
        assert_eq!(next_kite_expiry(utc(2026, 12, 31, 12, 0, 0)), utc(2027, 1, 1, 0, 30, 0));
        assert_eq!(next_kite_expiry(utc(2028, 2, 28, 20, 0, 0)), utc(2028, 2, 29, 0, 30, 0));
        // Europe's and America's DST switch days change nothing for IST.
        assert_eq!(next_kite_expiry(utc(2026, 3, 29, 1, 0, 0)), utc(2026, 3, 30, 0, 30, 0));
        assert_eq!(next_kite_expiry(utc(2026, 11, 1, 7, 0, 0)), utc(2026, 11, 2, 0, 30, 0));
    }

    #[test]
    fn expiry_is_always_in_the_next_24_hours() {
        let start = utc(2026, 6, 1, 0, 0, 0);
        for minutes in (0..3 * 24 * 60).step_by(7) {
            let now = start + TimeDelta::minutes(minutes);
            let expiry = next_kite_expiry(now);
            assert!(expiry > now && expiry - now <= TimeDelta::hours(24), "{now}");
            assert_eq!(expiry.format("%H:%M:%S").to_string(), "00:30:00", "{now}");
        }
    }

    #[test]
    fn checksum_is_sha256_of_the_plain_concatenation() {
        // exchanges.md §0: the docs' placeholders, computed locally (Kite
        // publishes no official vector).
        let sum = checksum("xxx", "yyy", &SecretString::new("zzz"));
        assert_eq!(
            sum.expose(),
            "cc6c955cadf2cc09442c0848ce8e165b8f9aa5974916de7186a9e1b6c4e7937e"
        );
        // The order matters: it is not a set of inputs.
        assert_ne!(checksum("yyy", "xxx", &SecretString::new("zzz")), sum);
        assert_eq!(format!("{sum:?}"), "[REDACTED]");
    }

    #[test]
    fn login_url_carries_the_version_key_and_state() {
        let page = Url::parse("https://kite.zerodha.com/connect/login").unwrap();
        let url = login_url(&page, "kitefront", "s&t=a te");
        assert_eq!(url.path(), "/connect/login");
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("v".to_owned(), "3".to_owned()),
                ("api_key".to_owned(), "kitefront".to_owned()),
                ("redirect_params".to_owned(), "state=s%26t%3Da+te".to_owned()),
            ]
        );
        // Decoding redirect_params once more gives the state back intact.
        let back: Vec<(String, String)> = url::form_urlencoded::parse(pairs[2].1.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(back, [("state".to_owned(), "s&t=a te".to_owned())]);
    }

    #[test]
    fn request_token_shape() {
        assert_eq!(check_request_token("kR3mVn6Yh2pQ8sT1uW4xZ7aB9cD0eF5g"), Ok(()));
        assert_eq!(check_request_token("a"), Ok(()));
        assert_eq!(check_request_token(&"a".repeat(64)), Ok(()));
        for bad in [
            "",
            &"a".repeat(65),
            "abc def",
            "abc\n",
            "abc&request_token=x",
            "tökén",
            "abc-def",
        ] {
            let err = check_request_token(bad).unwrap_err();
            assert_eq!(err.field, "requestToken", "{bad:?}");
        }
        let err = check_request_token("CANARY-token").unwrap_err();
        assert!(!err.to_string().contains("CANARY"));
    }
}
