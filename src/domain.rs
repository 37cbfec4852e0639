//! Domain vocabulary shared by every layer: exchanges, environments, statuses,
//! error codes and permissions. Stored as their SCREAMING_CASE names.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, async_graphql::Enum)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored and wire name, e.g. `BINANCE`.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the stored name; `None` for anything else.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// A supported exchange.
    Exchange { Binance => "BINANCE", Coinbase => "COINBASE", Kraken => "KRAKEN", Zerodha => "ZERODHA" }
);

string_enum!(
    /// Which of an exchange's systems a key belongs to.
    Environment { Production => "PRODUCTION", Testnet => "TESTNET" }
);

string_enum!(
    /// Where a connection stands: PENDING (saved, untested), HEALTHY, DEGRADED (transient failures),
    /// FAILING, NEEDS_REAUTH (a daily session expired) or REVOKED (final).
    ConnectionStatus {
        Pending => "PENDING",
        Healthy => "HEALTHY",
        Degraded => "DEGRADED",
        Failing => "FAILING",
        NeedsReauth => "NEEDS_REAUTH",
        Revoked => "REVOKED",
    }
);

string_enum!(
    /// Why a call to an exchange failed, normalised across exchanges.
    ExchangeErrorCode {
        InvalidCredentials => "INVALID_CREDENTIALS",
        IpNotAllowed => "IP_NOT_ALLOWED",
        PermissionDenied => "PERMISSION_DENIED",
        ClockSkew => "CLOCK_SKEW",
        InvalidNonce => "INVALID_NONCE",
        RateLimited => "RATE_LIMITED",
        ExchangeUnavailable => "EXCHANGE_UNAVAILABLE",
        NetworkError => "NETWORK_ERROR",
        TokenExpired => "TOKEN_EXPIRED",
        UnexpectedResponse => "UNEXPECTED_RESPONSE",
    }
);

impl ExchangeErrorCode {
    /// Transient failures may succeed when retried later; hard ones need the user.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::RateLimited | Self::ExchangeUnavailable | Self::NetworkError | Self::ClockSkew | Self::InvalidNonce
        )
    }
}

/// What an API key may do, as read from the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, async_graphql::SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    pub can_read: bool,
    pub can_trade: bool,
    pub can_withdraw: bool,
    /// Null when the exchange does not say (e.g. Binance's testnet).
    pub ip_restricted: Option<bool>,
    /// When the key's trading right lapses (Binance keys without an IP restriction), if it does.
    #[serde(default)]
    pub trading_expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in Exchange::ALL {
            assert_eq!(Exchange::parse(e.as_str()), Some(*e));
        }
        for s in ConnectionStatus::ALL {
            assert_eq!(ConnectionStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(Exchange::parse("binance"), None);
        assert_eq!(
            serde_json::to_string(&ExchangeErrorCode::IpNotAllowed).unwrap(),
            "\"IP_NOT_ALLOWED\""
        );
    }
}
