//! What keys the service accepts. A key that can withdraw could move the
//! user's money out if it ever leaked, so it is refused unless the
//! deployment explicitly allows such keys (`ALLOW_WITHDRAWAL_KEYS=true`).

use crate::domain::Exchange;
use crate::error::{AppError, AppResult};
use crate::exchange::TestReport;

#[derive(Debug, Clone, Copy, Default)]
pub struct KeyPolicy {
    pub allow_withdrawal_keys: bool,
}

impl KeyPolicy {
    /// Refuses a tested key that breaks the policy; `field` names the credentials input.
    pub fn check(&self, exchange: Exchange, report: &TestReport, field: &str) -> AppResult<()> {
        if report.permissions.can_withdraw && !self.allow_withdrawal_keys {
            metrics::counter!("keys_refused_total", "reason" => "withdrawal").increment(1);
            return Err(AppError::bad_input(field, withdrawal_refusal(exchange)));
        }
        Ok(())
    }

    /// Warnings to show with a key that passes: the exchange client's own,
    /// plus withdrawal rights when they are allowed.
    pub fn warnings(&self, report: &TestReport) -> Vec<String> {
        let mut warnings = report.warnings.clone();
        if report.permissions.can_withdraw {
            warnings.push("This key can withdraw funds; a key with reading and trading rights only is safer.".into());
        }
        warnings
    }
}

fn withdrawal_refusal(exchange: Exchange) -> String {
    let how = match exchange {
        Exchange::Binance => {
            "In API Management, create a key with \"Enable Reading\" and \"Enable Spot & Margin Trading\" only; leave \"Enable Withdrawals\" unchecked"
        }
        Exchange::Coinbase => {
            "In the Coinbase Developer Platform, create a key with View and Trade permissions only; leave Transfer unchecked"
        }
        Exchange::Kraken => "In Kraken's API settings, create a key without the \"Withdraw Funds\" permission",
        Exchange::Zerodha => "Kite Connect keys cannot withdraw; contact support",
    };
    format!(
        "this key can withdraw funds, so it is refused: if it ever leaked, your money could be moved out. {how}, then connect that key."
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Permissions;
    use std::time::Duration;

    fn report(can_withdraw: bool) -> TestReport {
        TestReport {
            latency: Duration::from_millis(5),
            permissions: Permissions {
                can_read: true,
                can_trade: true,
                can_withdraw,
                ..Permissions::default()
            },
            usage: None,
            warnings: vec!["no IP restriction".into()],
        }
    }

    #[test]
    fn withdrawal_keys_are_refused_unless_allowed() {
        let strict = KeyPolicy::default();
        let err = strict
            .check(Exchange::Binance, &report(true), "input.credentials")
            .unwrap_err();
        assert_eq!(err.code(), "BAD_USER_INPUT");
        assert!(err.to_string().contains("Enable Withdrawals"), "{err}");
        assert!(strict.check(Exchange::Binance, &report(false), "f").is_ok());
        let lenient = KeyPolicy {
            allow_withdrawal_keys: true,
        };
        assert!(lenient.check(Exchange::Binance, &report(true), "f").is_ok());
        assert_eq!(lenient.warnings(&report(true)).len(), 2);
        assert_eq!(strict.warnings(&report(false)), vec!["no IP restriction".to_string()]);
    }
}
