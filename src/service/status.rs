//! The connection status machine (DESIGN.md "Connection status"), as a
//! pure function so every caller moves statuses the same way.

use crate::domain::{ConnectionStatus, ExchangeErrorCode};

/// Transient failures in a row before a connection is `FAILING`.
pub const FAILURES_BEFORE_FAILING: i32 = 3;

/// The status after a test whose outcome is `error` (`None` = success),
/// given the number of consecutive failures including this one.
pub fn next_status(
    current: ConnectionStatus,
    error: Option<ExchangeErrorCode>,
    consecutive_failures: i32,
) -> ConnectionStatus {
    use ExchangeErrorCode as E;
    if current == ConnectionStatus::Revoked {
        return ConnectionStatus::Revoked;
    }
    match error {
        None => ConnectionStatus::Healthy,
        Some(E::TokenExpired) => ConnectionStatus::NeedsReauth,
        Some(E::InvalidCredentials | E::IpNotAllowed | E::PermissionDenied) => ConnectionStatus::Failing,
        Some(_) if consecutive_failures >= FAILURES_BEFORE_FAILING => ConnectionStatus::Failing,
        Some(_) => ConnectionStatus::Degraded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectionStatus as S;
    use ExchangeErrorCode as E;

    #[test]
    fn success_heals() {
        for s in [S::Pending, S::Degraded, S::Failing, S::NeedsReauth, S::Healthy] {
            assert_eq!(next_status(s, None, 0), S::Healthy);
        }
    }

    #[test]
    fn hard_failures_fail_at_once() {
        for e in [E::InvalidCredentials, E::IpNotAllowed, E::PermissionDenied] {
            assert_eq!(next_status(S::Healthy, Some(e), 1), S::Failing);
        }
        assert_eq!(next_status(S::Healthy, Some(E::TokenExpired), 1), S::NeedsReauth);
    }

    #[test]
    fn transient_failures_degrade_then_fail() {
        for e in [E::RateLimited, E::ExchangeUnavailable, E::NetworkError] {
            assert_eq!(next_status(S::Healthy, Some(e), 1), S::Degraded);
            assert_eq!(
                next_status(S::Degraded, Some(e), FAILURES_BEFORE_FAILING - 1),
                S::Degraded
            );
            assert_eq!(next_status(S::Degraded, Some(e), FAILURES_BEFORE_FAILING), S::Failing);
        }
    }

    #[test]
    fn revoked_is_final() {
        assert_eq!(next_status(S::Revoked, None, 0), S::Revoked);
        assert_eq!(next_status(S::Revoked, Some(E::InvalidCredentials), 1), S::Revoked);
    }
}
