//! The parts of Binance's JSON responses this client reads. Fields that decide
//! what a key may do are required: a body without them is an unexpected
//! response, never a silent `false`.

use serde::Deserialize;

/// `GET /api/v3/account`. The `can*` flags describe the **account**, not the
/// API key; only `apiRestrictions` tells what the key itself may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub can_trade: bool,
    pub can_withdraw: bool,
}

/// `GET /sapi/v1/account/apiRestrictions` (production only): the key's own
/// permissions. Only the fields mapped to [`crate::domain::Permissions`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiRestrictions {
    pub ip_restrict: bool,
    pub enable_reading: bool,
    pub enable_spot_and_margin_trading: bool,
    pub enable_withdrawals: bool,
    /// When trading rights lapse (Unix ms); sent only for keys whose trading
    /// permission expires, i.e. without an IP restriction. Documented only
    /// in older docs, so read leniently: anything but a number is ignored.
    #[serde(default, deserialize_with = "lenient_ms")]
    pub trading_authority_expiration_time: Option<i64>,
}

/// `GET /api/v3/time`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTime {
    /// Unix ms on Binance's clock.
    pub server_time: i64,
}

/// A Unix-ms number (or numeric string); anything else is `None`.
fn lenient_ms<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Binance's error body, e.g. `{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    pub code: i64,
    #[serde(default)]
    pub msg: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_account_sample() {
        let body = r#"{"makerCommission":15,"takerCommission":15,"buyerCommission":0,"sellerCommission":0,
            "commissionRates":{"maker":"0.00150000","taker":"0.00150000","buyer":"0.00000000","seller":"0.00000000"},
            "canTrade":true,"canWithdraw":false,"canDeposit":true,"brokered":false,"requireSelfTradePrevention":false,
            "preventSor":false,"updateTime":123456789,"accountType":"SPOT",
            "balances":[{"asset":"BTC","free":"4723846.89208129","locked":"0.00000000"}],
            "permissions":["SPOT"],"uid":354937868}"#;
        let account: Account = serde_json::from_str(body).unwrap();
        assert!(account.can_trade);
        assert!(!account.can_withdraw);
    }

    #[test]
    fn account_without_flags_is_rejected() {
        assert!(serde_json::from_str::<Account>(r#"{"canTrade":true}"#).is_err());
    }

    #[test]
    fn reads_the_documented_api_restrictions_sample() {
        let body = r#"{"ipRestrict":false,"createTime":1698645219000,"enableReading":true,"enableWithdrawals":false,
            "enableInternalTransfer":false,"enableMargin":false,"enableFutures":false,"permitsUniversalTransfer":false,
            "enableVanillaOptions":false,"enableFixApiTrade":false,"enableFixReadOnly":true,
            "enableSpotAndMarginTrading":false,"enablePortfolioMarginTrading":false}"#;
        let r: ApiRestrictions = serde_json::from_str(body).unwrap();
        assert!(!r.ip_restrict && r.enable_reading && !r.enable_withdrawals && !r.enable_spot_and_margin_trading);
        assert_eq!(r.trading_authority_expiration_time, None);
    }

    #[test]
    fn reads_the_optional_trading_expiry() {
        let body = r#"{"ipRestrict":false,"enableReading":true,"enableWithdrawals":false,
            "enableSpotAndMarginTrading":true,"tradingAuthorityExpirationTime":1628985600000}"#;
        let r: ApiRestrictions = serde_json::from_str(body).unwrap();
        assert_eq!(r.trading_authority_expiration_time, Some(1628985600000));
        let null = body.replace("1628985600000", "null");
        assert_eq!(
            serde_json::from_str::<ApiRestrictions>(&null)
                .unwrap()
                .trading_authority_expiration_time,
            None
        );
        let quoted = body.replace("1628985600000", "\"1628985600000\"");
        let r: ApiRestrictions = serde_json::from_str(&quoted).unwrap();
        assert_eq!(r.trading_authority_expiration_time, Some(1628985600000));
        // An unknown form of an informational field does not fail the test.
        for odd in ["\"soon\"", "true", "{}", "1.5"] {
            let r: ApiRestrictions = serde_json::from_str(&body.replace("1628985600000", odd)).unwrap();
            assert_eq!(r.trading_authority_expiration_time, None, "{odd}");
        }
    }

    #[test]
    fn reads_the_server_time() {
        let t: ServerTime = serde_json::from_str(r#"{"serverTime":1499827319559}"#).unwrap();
        assert_eq!(t.server_time, 1499827319559);
        assert!(serde_json::from_str::<ServerTime>(r#"{"time":1}"#).is_err());
    }

    #[test]
    fn api_restrictions_without_withdrawal_flag_is_rejected() {
        let body = r#"{"ipRestrict":true,"enableReading":true,"enableSpotAndMarginTrading":false}"#;
        assert!(serde_json::from_str::<ApiRestrictions>(body).is_err());
    }

    #[test]
    fn reads_an_error_body() {
        let e: ErrorBody =
            serde_json::from_str(r#"{"code":-1022,"msg":"Signature for this request is not valid."}"#).unwrap();
        assert_eq!(e.code, -1022);
        assert!(serde_json::from_str::<ErrorBody>("<html>403 Forbidden</html>").is_err());
    }
}
