//! The parts of Coinbase Advanced Trade's JSON this client reads. The flags
//! that decide what a key may do are required: a body without them is an
//! unexpected response, never a silent `false`.

use serde::Deserialize;
use serde_json::Value;

/// `GET /api/v3/brokerage/key_permissions` (`GetApiKeyPermissionsResponse`):
/// `{can_view, can_trade, can_transfer, portfolio_uuid, portfolio_type}`.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyPermissions {
    pub can_view: bool,
    pub can_trade: bool,
    pub can_transfer: bool,
    /// `UNDEFINED`, `DEFAULT`, `CONSUMER` or `INTX`; logged only. (The
    /// `portfolio_uuid` beside it is not read.)
    #[serde(default)]
    pub portfolio_type: Option<String>,
}

/// `GET /api/v3/brokerage/time`: `{"iso","epochSeconds","epochMillis"}`.
/// Coinbase sends the epoch fields as strings (protobuf int64); numbers are
/// accepted too.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTime {
    #[serde(default)]
    pub iso: Option<String>,
    #[serde(default)]
    pub epoch_seconds: Option<Value>,
    #[serde(default)]
    pub epoch_millis: Option<Value>,
}

impl ServerTime {
    /// Coinbase's time in Unix ms: `epochMillis`, else `epochSeconds`, else `iso`.
    pub fn unix_ms(&self) -> Option<i64> {
        if let Some(ms) = self.epoch_millis.as_ref().and_then(integer) {
            return Some(ms);
        }
        if let Some(secs) = self.epoch_seconds.as_ref().and_then(integer) {
            return secs.checked_mul(1000);
        }
        let iso = self.iso.as_deref()?;
        chrono::DateTime::parse_from_rfc3339(iso)
            .ok()
            .map(|t| t.timestamp_millis())
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Coinbase's error body (grpc-gateway style), e.g.
/// `{"error":"PERMISSION_DENIED","error_details":"Missing required scopes","message":"Missing required scopes"}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_details: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl ErrorBody {
    /// Coinbase's own words: `message`, else `error_details`, else `error`.
    pub fn text(&self) -> Option<&str> {
        [&self.message, &self.error_details, &self.error]
            .into_iter()
            .flatten()
            .map(|s| s.trim())
            .find(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_key_permissions() {
        let body = r#"{"can_view":true,"can_trade":false,"can_transfer":false,
            "portfolio_uuid":"a4b1c2d3-0000-4000-8000-000000000001","portfolio_type":"DEFAULT"}"#;
        let p: KeyPermissions = serde_json::from_str(body).unwrap();
        assert!(p.can_view && !p.can_trade && !p.can_transfer);
        assert_eq!(p.portfolio_type.as_deref(), Some("DEFAULT"));
        // The portfolio fields are optional; the flags are not.
        assert!(
            serde_json::from_str::<KeyPermissions>(r#"{"can_view":true,"can_trade":true,"can_transfer":true}"#).is_ok()
        );
        assert!(serde_json::from_str::<KeyPermissions>(r#"{"can_view":true,"can_trade":true}"#).is_err());
        assert!(
            serde_json::from_str::<KeyPermissions>(r#"{"can_view":"yes","can_trade":true,"can_transfer":false}"#)
                .is_err()
        );
    }

    #[test]
    fn reads_server_time_as_strings_numbers_or_iso() {
        let t: ServerTime = serde_json::from_str(
            r#"{"iso":"2023-11-14T22:13:20.123Z","epochSeconds":"1700000000","epochMillis":"1700000000123"}"#,
        )
        .unwrap();
        assert_eq!(t.unix_ms(), Some(1_700_000_000_123));
        let t: ServerTime = serde_json::from_str(r#"{"epochMillis":1700000000123}"#).unwrap();
        assert_eq!(t.unix_ms(), Some(1_700_000_000_123));
        let t: ServerTime = serde_json::from_str(r#"{"epochSeconds":"1700000000"}"#).unwrap();
        assert_eq!(t.unix_ms(), Some(1_700_000_000_000));
        let t: ServerTime = serde_json::from_str(r#"{"iso":"2023-11-14T22:13:20.5Z"}"#).unwrap();
        assert_eq!(t.unix_ms(), Some(1_700_000_000_500));
        let t: ServerTime = serde_json::from_str(r#"{"epochMillis":"soon","iso":"yesterday"}"#).unwrap();
        assert_eq!(t.unix_ms(), None);
        assert_eq!(serde_json::from_str::<ServerTime>("{}").unwrap().unix_ms(), None);
    }

    #[test]
    fn reads_error_bodies() {
        let e: ErrorBody = serde_json::from_str(
            r#"{"error":"PERMISSION_DENIED","error_details":"Missing required scopes","message":"Missing required scopes"}"#,
        )
        .unwrap();
        assert_eq!(e.text(), Some("Missing required scopes"));
        let e: ErrorBody =
            serde_json::from_str(r#"{"error":"INVALID_ARGUMENT","code":3,"message":"","details":[]}"#).unwrap();
        assert_eq!(e.text(), Some("INVALID_ARGUMENT"));
        assert!(serde_json::from_str::<ErrorBody>("Unauthorized").is_err());
    }
}
