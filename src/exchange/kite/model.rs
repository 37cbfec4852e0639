//! The parts of Kite Connect's JSON this client reads (shapes from
//! `zerodha/kiteconnect-mocks`). Fields that decide what the user may do are
//! required: a body without them is an unexpected response, never a silent
//! `false`. Tokens go straight into [`SecretString`]s.

use crate::crypto::SecretString;
use serde::{Deserialize, Deserializer};

/// Every successful answer: `{"status":"success","data":…}`.
#[derive(Debug, Deserialize)]
pub struct Success<T> {
    pub status: String,
    pub data: T,
}

impl<T> Success<T> {
    pub fn is_success(&self) -> bool {
        self.status == "success"
    }
}

/// `POST /session/token` (`generate_session.json`). The other tokens in the
/// answer (`public_token`, `enctoken`, `refresh_token`) are not read, so they
/// are never held beyond the zeroized response body.
#[derive(Debug, Deserialize)]
pub struct Session {
    pub user_id: String,
    #[serde(deserialize_with = "secret")]
    pub access_token: SecretString,
}

/// `GET /user/profile` (`user_profile.json`): what the *user* may trade;
/// Kite has no per-key scopes.
#[derive(Debug, Deserialize)]
pub struct Profile {
    pub exchanges: Vec<String>,
    pub products: Vec<String>,
    pub order_types: Vec<String>,
}

impl Profile {
    /// An order needs an exchange, a product and an order type; a profile
    /// missing any of them cannot trade.
    pub fn can_trade(&self) -> bool {
        !self.exchanges.is_empty() && !self.products.is_empty() && !self.order_types.is_empty()
    }
}

/// Kite's error body: `{"status":"error","message":"…","error_type":"TokenException"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    pub status: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub error_type: Option<String>,
}

fn secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SecretString, D::Error> {
    String::deserialize(deserializer).map(SecretString::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENERATE_SESSION: &str = r#"{"status":"success","data":{"user_type":"individual","email":"XXXXXX",
        "user_name":"Kite Connect","user_shortname":"Connect","broker":"ZERODHA",
        "exchanges":["NSE","NFO","BFO","CDS","BSE","MCX","BCD","MF"],"products":["CNC","NRML","MIS","BO","CO"],
        "order_types":["MARKET","LIMIT","SL","SL-M"],"avatar_url":"abc","user_id":"XX0000","api_key":"XXXXXX",
        "access_token":"XXXXXX","public_token":"XXXXXXXX","enctoken":"XXXXXX","refresh_token":"","silo":"",
        "login_time":"2021-01-01 16:15:14","meta":{"demat_consent":"physical"}}}"#;

    const USER_PROFILE: &str = r#"{"status":"success","data":{"user_id":"AB1234","user_type":"individual",
        "email":"xxxyyy@gmail.com","user_name":"AxAx Bxx","user_shortname":"AxAx","broker":"ZERODHA",
        "exchanges":["BFO","MCX","NSE","CDS","BSE","BCD","MF","NFO"],"products":["CNC","NRML","MIS","BO","CO"],
        "order_types":["MARKET","LIMIT","SL","SL-M"],"avatar_url":null,"meta":{"demat_consent":"physical"}}}"#;

    #[test]
    fn reads_the_generate_session_mock() {
        let s: Success<Session> = serde_json::from_str(GENERATE_SESSION).unwrap();
        assert!(s.is_success());
        assert_eq!(s.data.user_id, "XX0000");
        assert_eq!(s.data.access_token.expose(), "XXXXXX");
        assert!(!format!("{s:?}").contains("XXXXXX"), "token redacted in Debug");
    }

    #[test]
    fn session_without_access_token_is_rejected() {
        let body = r#"{"status":"success","data":{"user_id":"XX0000"}}"#;
        assert!(serde_json::from_str::<Success<Session>>(body).is_err());
    }

    #[test]
    fn reads_the_user_profile_mock() {
        let p: Success<Profile> = serde_json::from_str(USER_PROFILE).unwrap();
        assert!(p.is_success());
        assert!(p.data.can_trade());
    }

    #[test]
    fn profile_without_products_or_order_types_cannot_trade() {
        let mut p = serde_json::from_str::<Success<Profile>>(USER_PROFILE).unwrap().data;
        p.products.clear();
        assert!(!p.can_trade());
        let mut p = serde_json::from_str::<Success<Profile>>(USER_PROFILE).unwrap().data;
        p.order_types.clear();
        assert!(!p.can_trade());
        let mut p = serde_json::from_str::<Success<Profile>>(USER_PROFILE).unwrap().data;
        p.exchanges.clear();
        assert!(!p.can_trade());
    }

    #[test]
    fn profile_missing_a_deciding_field_is_rejected() {
        let body = r#"{"status":"success","data":{"exchanges":["NSE"],"products":["CNC"]}}"#;
        assert!(serde_json::from_str::<Success<Profile>>(body).is_err());
    }

    #[test]
    fn reads_an_error_body() {
        let e: ErrorBody = serde_json::from_str(
            r#"{"status":"error","message":"Incorrect `api_key` or `access_token`.","data":null,"error_type":"TokenException"}"#,
        )
        .unwrap();
        assert_eq!(e.error_type.as_deref(), Some("TokenException"));
        assert!(serde_json::from_str::<ErrorBody>("<html>502 Bad Gateway</html>").is_err());
    }
}
