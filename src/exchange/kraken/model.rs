//! The parts of Kraken's JSON answers this client reads. Every answer is an
//! envelope `{"error":[…],"result":…}`; the `result` is read only when no
//! error is present, and must then have the documented shape.

use serde::Deserialize;
use serde::de::IgnoredAny;
use std::collections::HashMap;

/// `{"error":["EAPI:Invalid key"],"result":{}}`. `result` is kept raw: error
/// answers may carry an empty or missing one.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub error: Vec<String>,
    #[serde(default)]
    pub result: Option<serde_json::Value>,
}

impl Envelope {
    /// The `E…` strings (warnings, `W…`, do not make a call fail).
    pub fn errors(&self) -> Vec<String> {
        self.error
            .iter()
            .filter(|e| e.trim_start().starts_with('E'))
            .cloned()
            .collect()
    }
}

/// `POST /0/private/Balance`: asset → amount. The amounts are not read.
pub type Balance = HashMap<String, IgnoredAny>;

/// `POST /0/private/WithdrawMethods`: only its success matters.
pub type WithdrawMethods = IgnoredAny;

/// `GET /0/public/Time`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerTime {
    pub unixtime: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result<T: serde::de::DeserializeOwned>(body: &str) -> Option<T> {
        let envelope: Envelope = serde_json::from_str(body).ok()?;
        serde_json::from_value(envelope.result?).ok()
    }

    #[test]
    fn reads_a_balance() {
        let body = r#"{"error":[],"result":{"ZUSD":"171288.6158","XXBT":"0.5"}}"#;
        let balance: Balance = result(body).unwrap();
        assert_eq!(balance.len(), 2);
        // An empty account is a valid answer; a list is not.
        assert!(result::<Balance>(r#"{"error":[],"result":{}}"#).is_some());
        assert!(result::<Balance>(r#"{"error":[],"result":[]}"#).is_none());
    }

    #[test]
    fn reads_errors_and_skips_warnings() {
        let envelope: Envelope =
            serde_json::from_str(r#"{"error":["WGeneral:Deprecated","EAPI:Invalid key"],"result":{}}"#).unwrap();
        assert_eq!(envelope.errors(), ["EAPI:Invalid key"]);
        let envelope: Envelope = serde_json::from_str(r#"{"error":["EAPI:Invalid nonce"]}"#).unwrap();
        assert_eq!(envelope.errors(), ["EAPI:Invalid nonce"]);
        assert!(envelope.result.is_none());
        assert!(serde_json::from_str::<Envelope>(r#"{"error":"EAPI:Invalid key"}"#).is_err());
        assert!(serde_json::from_str::<Envelope>("<html>502 Bad Gateway</html>").is_err());
    }

    #[test]
    fn reads_the_server_time() {
        let body = r#"{"error":[],"result":{"unixtime":1688669448,"rfc1123":"Thu, 06 Jul 23 18:50:48 +0000"}}"#;
        assert_eq!(result::<ServerTime>(body).unwrap().unixtime, 1688669448);
        assert!(result::<ServerTime>(r#"{"error":[],"result":{"rfc1123":"x"}}"#).is_none());
    }
}
