//! Health monitoring: when a connection is next due, the worker's check of
//! one connection (through the same outcome path as a manual test, so it is
//! audited and published alike), and the caller's health dashboard.

use super::connections::{TestSource, owned_row_by_id};
use super::lease::Claim;
use super::{RequestContext, Services};
use crate::domain::{ConnectionStatus, Environment, Exchange, ExchangeErrorCode};
use crate::error::{AppError, AppResult};
use async_graphql::{ID, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{connection_health_checks as checks, exchange_keys as keys};
use rand::Rng;
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// The actor recorded for the worker's checks.
pub const HEALTH_MONITOR: &str = "system:health-monitor";

/// How far a check's next due time may move from the interval, either way,
/// so connections created together do not stay in lockstep.
const JITTER: f64 = 0.1;

/// Recent failures listed by `healthSummary`.
pub const RECENT_FAILURES: u64 = 10;

/// Failures that need the user: not retried until they act (test, rotate).
pub fn is_hard_failure(code: ExchangeErrorCode) -> bool {
    use ExchangeErrorCode as E;
    matches!(code, E::InvalidCredentials | E::IpNotAllowed | E::PermissionDenied)
}

/// `interval` moved by up to ±10 %.
pub fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(1.0 - JITTER..=1.0 + JITTER))
}

/// When a connection now in `status` (after a check that failed with
/// `error`, if it did) should be checked again; `None` = not scheduled.
pub fn next_check_at(
    status: ConnectionStatus,
    error: Option<ExchangeErrorCode>,
    interval: Duration,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    use ConnectionStatus as S;
    match status {
        // Final, or waiting for the user's Kite login.
        S::Revoked | S::NeedsReauth => None,
        S::Failing if error.is_some_and(is_hard_failure) => None,
        S::Pending => Some(now),
        S::Healthy | S::Degraded | S::Failing => {
            let delay = chrono::Duration::from_std(jittered(interval)).unwrap_or(chrono::Duration::MAX);
            Some(now.checked_add_signed(delay).unwrap_or(DateTime::<Utc>::MAX_UTC))
        }
    }
}

/// What the worker's check of one connection came to.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckOutcome {
    /// The exchange was called and the outcome recorded (next due time set).
    Checked {
        exchange: Exchange,
        error: Option<ExchangeErrorCode>,
        status: ConnectionStatus,
    },
    /// Nothing to check (revoked, or waiting for a login); not scheduled again.
    Skipped { reason: &'static str },
}

impl Services {
    /// The health monitor's check of one connection: opens its credentials,
    /// makes the exchange's test call and records the outcome as a manual
    /// test would (source `worker`, actor `system:health-monitor`). A
    /// remembered refusal (Kraken's lockout guard) is respected, not forgotten.
    /// `lease_owner` is the worker holding the connection's lease: a
    /// recorded outcome gives the lease back in the same transaction.
    pub async fn check_connection(
        &self,
        connection_id: Uuid,
        user_id: Uuid,
        lease_owner: &str,
    ) -> AppResult<CheckOutcome> {
        let ctx = RequestContext::system(user_id, HEALTH_MONITOR);
        let txn = self.db.as_user(user_id).await?;
        let row = owned_row_by_id(&txn, &ctx, connection_id).await?;
        super::tenancy::end_read(txn);
        self.check_row(ctx, row, lease_owner).await
    }

    /// [`Self::check_connection`] on the row its claim returned (the
    /// worker's path: one read fewer per check). The outcome's transaction
    /// reads the row again, so a revocation or rotation since the claim wins.
    pub async fn check_claimed(&self, claim: Claim, lease_owner: &str) -> AppResult<CheckOutcome> {
        let ctx = RequestContext::system(claim.user_id, HEALTH_MONITOR);
        self.check_row(ctx, *claim.row.0, lease_owner).await
    }

    async fn check_row(&self, ctx: RequestContext, row: keys::Model, lease_owner: &str) -> AppResult<CheckOutcome> {
        let connection_id = row.id;
        if row.revoked_at.is_some() {
            return Ok(CheckOutcome::Skipped { reason: "revoked" });
        }
        let corrupt = || AppError::internal(anyhow::anyhow!("exchange_keys row {connection_id} has an invalid enum"));
        let exchange = Exchange::parse(&row.exchange).ok_or_else(corrupt)?;
        let environment = Environment::parse(&row.environment).ok_or_else(corrupt)?;
        let client = self.exchanges.get(exchange).map_err(AppError::internal)?;
        if client.requires_login() && row.access_token_encrypted.is_none() {
            return Ok(CheckOutcome::Skipped {
                reason: "awaiting login",
            });
        }
        let credentials = self.open_credentials(&row)?;
        let outcome = client.test(environment, &credentials).await;
        drop(credentials);
        let error = outcome.as_ref().err().map(|e| e.code);
        let source = TestSource::Worker {
            lease_owner: lease_owner.to_owned(),
        };
        let updated = self.record_test_outcome(&ctx, row, outcome, source).await?;
        let status = ConnectionStatus::parse(&updated.status).ok_or_else(corrupt)?;
        Ok(CheckOutcome::Checked {
            exchange,
            error,
            status,
        })
    }

    /// The caller's dashboard: counts by status and by exchange, and the
    /// most recent failed checks of live connections.
    pub async fn health_summary(&self, ctx: &RequestContext) -> AppResult<HealthSummaryView> {
        let user_id = ctx.principal.user_id;
        let txn = self.db.as_user(user_id).await?;
        let counts: Vec<(String, String, i64)> = keys::Entity::find()
            .select_only()
            .column(keys::Column::Exchange)
            .column(keys::Column::Status)
            .column_as(keys::Column::Id.count(), "n")
            .filter(keys::Column::UserId.eq(user_id))
            .group_by(keys::Column::Exchange)
            .group_by(keys::Column::Status)
            .into_tuple()
            .all(&txn)
            .await?;
        let mut by_pair: HashMap<(Exchange, ConnectionStatus), i64> = HashMap::new();
        for (exchange, status, n) in counts {
            if let (Some(exchange), Some(status)) = (Exchange::parse(&exchange), ConnectionStatus::parse(&status)) {
                *by_pair.entry((exchange, status)).or_default() += n;
            }
        }
        let count_where = |keep: &dyn Fn(Exchange, ConnectionStatus) -> bool| {
            clamp(by_pair.iter().filter(|((e, s), _)| keep(*e, *s)).map(|(_, n)| *n).sum())
        };
        let by_status = |exchange: Option<Exchange>| {
            ConnectionStatus::ALL
                .iter()
                .map(|&status| StatusCountView {
                    status,
                    count: count_where(&|e, s| s == status && exchange.is_none_or(|x| x == e)),
                })
                .collect::<Vec<_>>()
        };
        let by_exchange = Exchange::ALL
            .iter()
            .map(|&exchange| ExchangeHealthView {
                exchange,
                total: count_where(&|e, _| e == exchange),
                by_status: by_status(Some(exchange)),
            })
            .filter(|e| e.total > 0)
            .collect();

        let live = Query::select()
            .column(keys::Column::Id)
            .from(keys::Entity)
            .and_where(keys::Column::UserId.eq(user_id))
            .and_where(keys::Column::RevokedAt.is_null())
            .to_owned();
        let failures = checks::Entity::find()
            .filter(checks::Column::UserId.eq(user_id))
            .filter(checks::Column::Ok.eq(false))
            .filter(checks::Column::ConnectionId.in_subquery(live))
            .order_by_desc(checks::Column::CheckedAt)
            .order_by_desc(checks::Column::Id)
            .limit(RECENT_FAILURES)
            .all(&txn)
            .await?;
        let ids: Vec<Uuid> = failures.iter().map(|f| f.connection_id).collect();
        let connections: HashMap<Uuid, keys::Model> = keys::Entity::find()
            .filter(keys::Column::UserId.eq(user_id))
            .filter(keys::Column::Id.is_in(ids))
            .all(&txn)
            .await?
            .into_iter()
            .map(|row| (row.id, row))
            .collect();
        super::tenancy::end_read(txn);
        let recent_failures = failures
            .into_iter()
            .filter_map(|check| {
                let connection = connections.get(&check.connection_id)?;
                Some(RecentFailureView {
                    connection_id: ID(check.connection_id.to_string()),
                    label: connection.label.clone(),
                    exchange: Exchange::parse(&connection.exchange)?,
                    code: check.error_code.as_deref().and_then(ExchangeErrorCode::parse),
                    message: check.error_message.unwrap_or_default(),
                    at: check.checked_at,
                    source: check.source,
                })
            })
            .collect();
        Ok(HealthSummaryView {
            total: count_where(&|_, _| true),
            by_status: by_status(None),
            by_exchange,
            recent_failures,
        })
    }
}

fn clamp(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[derive(Debug, Clone, SimpleObject)]
#[graphql(name = "StatusCount")]
pub struct StatusCountView {
    pub status: ConnectionStatus,
    pub count: i32,
}

#[derive(Debug, Clone, SimpleObject)]
#[graphql(name = "ExchangeHealth")]
pub struct ExchangeHealthView {
    pub exchange: Exchange,
    pub total: i32,
    /// Every status, zeros included.
    pub by_status: Vec<StatusCountView>,
}

#[derive(Debug, Clone, SimpleObject)]
#[graphql(name = "RecentFailure")]
pub struct RecentFailureView {
    pub connection_id: ID,
    pub label: String,
    pub exchange: Exchange,
    /// Null only for a stored code this version does not know.
    pub code: Option<ExchangeErrorCode>,
    pub message: String,
    pub at: DateTime<Utc>,
    /// `manual` (a user's test) or `worker` (the health monitor).
    pub source: String,
}

#[derive(Debug, Clone, SimpleObject)]
#[graphql(name = "HealthSummary")]
pub struct HealthSummaryView {
    /// All the caller's connections, revoked ones included.
    pub total: i32,
    /// Every status, zeros included.
    pub by_status: Vec<StatusCountView>,
    /// Exchanges the caller has connections on.
    pub by_exchange: Vec<ExchangeHealthView>,
    /// The latest failed checks of live connections, newest first (at most 10).
    pub recent_failures: Vec<RecentFailureView>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectionStatus as S;
    use ExchangeErrorCode as E;

    #[test]
    fn schedule_follows_the_status() {
        let now = entity::now();
        let interval = Duration::from_secs(300);
        assert_eq!(next_check_at(S::Revoked, None, interval, now), None);
        assert_eq!(
            next_check_at(S::NeedsReauth, Some(E::TokenExpired), interval, now),
            None
        );
        for hard in [E::InvalidCredentials, E::IpNotAllowed, E::PermissionDenied] {
            assert_eq!(next_check_at(S::Failing, Some(hard), interval, now), None);
        }
        assert_eq!(next_check_at(S::Pending, None, interval, now), Some(now));
        // Transient failures keep being checked, even once FAILING.
        for (status, error) in [
            (S::Healthy, None),
            (S::Degraded, Some(E::NetworkError)),
            (S::Failing, Some(E::ExchangeUnavailable)),
        ] {
            let at = next_check_at(status, error, interval, now).expect("scheduled");
            let delay = (at - now).to_std().unwrap();
            assert!(
                delay >= interval.mul_f64(0.9) && delay <= interval.mul_f64(1.1),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn jitter_spreads_due_times() {
        let interval = Duration::from_secs(1000);
        let samples: Vec<Duration> = (0..200).map(|_| jittered(interval)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= Duration::from_secs(900) && *d <= Duration::from_secs(1100))
        );
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100, "jitter is not constant");
    }
}
