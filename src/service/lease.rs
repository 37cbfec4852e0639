//! Leases on due connections for the health-monitor workers. A claim marks
//! a batch of due, unleased (or lapsed) live connections as held by one
//! worker until a deadline, in one statement, so two claimers never get the
//! same connection; a crashed worker's claims lapse and are claimed again.
//! Also the periodic upkeep: scheduling rows that have no due time and
//! pruning the health-check history. All of it spans users: it acts as the
//! system identity.

use super::Services;
use crate::domain::ConnectionStatus;
use crate::error::AppResult;
use chrono::{DateTime, Utc};
use entity::exchange_keys as keys;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, ExprTrait, FromQueryResult, QueryFilter, QuerySelect,
    Statement,
};
use std::time::Duration;
use uuid::Uuid;

/// One connection a worker now holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub connection_id: Uuid,
    pub user_id: Uuid,
    /// When the check was due (for the lag metric).
    pub due_at: DateTime<Utc>,
    /// Another worker's lease had lapsed on it.
    pub reclaimed: bool,
    /// The row as the claim wrote it, so the check need not read it again.
    pub row: ClaimedRow,
}

/// A claimed `exchange_keys` row. It holds ciphertext, so its `Debug`
/// shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimedRow(pub(crate) Box<keys::Model>);

impl std::fmt::Debug for ClaimedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClaimedRow(..)")
    }
}

fn deadline(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

impl Services {
    /// Claims up to `limit` due connections for `owner` until now + `lease`,
    /// earliest due first, in one statement. PostgreSQL skips rows another
    /// claimer has locked (`FOR UPDATE SKIP LOCKED`); SQLite runs one writer
    /// at a time, so a later claim's subquery sees the earlier one's leases.
    pub async fn claim_due(&self, owner: &str, limit: u64, lease: Duration) -> AppResult<Vec<Claim>> {
        let now = entity::now();
        let until = deadline(now, lease);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let backend = self.db.backend();
        let claims = match backend {
            DbBackend::Postgres => {
                let txn = self.db.as_system().await?;
                // Walk the due index in order until `limit` rows are locked.
                // `next_check_at` moves faster than the statistics: analysed
                // when every row was due later, the planner expects no row to
                // be due and picks a bitmap scan of all due rows and a sort
                // (tens of ms with 10,000 due, each through the row-level
                // security filter). Without bitmap scans it walks the index.
                txn.execute_unprepared("SET LOCAL enable_bitmapscan = off").await?;
                let sql = "WITH due AS ( \
                       SELECT id, lease_owner IS NOT NULL AS reclaimed FROM exchange_keys \
                       WHERE next_check_at <= $1 AND revoked_at IS NULL \
                         AND COALESCE(lease_expires_at, '-infinity') < $1 \
                       ORDER BY next_check_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
                     UPDATE exchange_keys k SET lease_owner = $3, lease_expires_at = $4 FROM due \
                     WHERE k.id = due.id \
                     RETURNING k.*, due.reclaimed";
                let rows = txn
                    .query_all_raw(Statement::from_sql_and_values(
                        backend,
                        sql,
                        [now.into(), limit.into(), owner.into(), until.into()],
                    ))
                    .await?;
                txn.commit().await?;
                rows.iter()
                    .map(|row| {
                        let model = keys::Model::from_query_result(row, "")?;
                        Ok(Claim {
                            connection_id: model.id,
                            user_id: model.user_id,
                            due_at: model.next_check_at.unwrap_or(now),
                            reclaimed: row.try_get("", "reclaimed")?,
                            row: ClaimedRow(Box::new(model)),
                        })
                    })
                    .collect::<Result<Vec<_>, sea_orm::DbErr>>()?
            }
            _ => {
                // The ids of the due, unleased rows, earliest due first.
                let due = || {
                    Query::select()
                        .column(keys::Column::Id)
                        .from(keys::Entity)
                        .and_where(keys::Column::NextCheckAt.lte(now))
                        .and_where(keys::Column::RevokedAt.is_null())
                        .and_where(
                            keys::Column::LeaseExpiresAt
                                .is_null()
                                .or(keys::Column::LeaseExpiresAt.lt(now)),
                        )
                        .order_by(keys::Column::NextCheckAt, sea_orm::Order::Asc)
                        .limit(limit as u64)
                        .to_owned()
                };
                // Who held the due rows before (for the reclaim metric only).
                // Read and claim in separate transactions: a SQLite
                // transaction that reads first cannot then write once
                // another claimer has committed.
                let txn = self.db.as_system().await?;
                let before: Vec<(Uuid, Option<String>)> = keys::Entity::find()
                    .select_only()
                    .column(keys::Column::Id)
                    .column(keys::Column::LeaseOwner)
                    .filter(keys::Column::Id.in_subquery(due()))
                    .into_tuple()
                    .all(&txn)
                    .await?;
                super::tenancy::end_read(txn);
                let txn = self.db.as_system().await?;
                let claimed = keys::Entity::update_many()
                    .col_expr(keys::Column::LeaseOwner, Expr::value(owner))
                    .col_expr(keys::Column::LeaseExpiresAt, Expr::value(until))
                    .filter(keys::Column::Id.in_subquery(due()))
                    .exec_with_returning(&txn)
                    .await?;
                txn.commit().await?;
                claimed
                    .into_iter()
                    .map(|row| Claim {
                        reclaimed: before.iter().any(|(id, held)| *id == row.id && held.is_some()),
                        connection_id: row.id,
                        user_id: row.user_id,
                        due_at: row.next_check_at.unwrap_or(now),
                        row: ClaimedRow(Box::new(row)),
                    })
                    .collect()
            }
        };
        Ok(claims)
    }

    /// Extends every lease `owner` holds (its checks in flight) to now + `lease`.
    pub async fn renew_leases(&self, owner: &str, lease: Duration) -> AppResult<u64> {
        let txn = self.db.as_system().await?;
        let result = keys::Entity::update_many()
            .col_expr(
                keys::Column::LeaseExpiresAt,
                Expr::value(deadline(entity::now(), lease)),
            )
            .filter(keys::Column::LeaseOwner.eq(owner))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(result.rows_affected)
    }

    /// Gives a connection back. `reschedule` first moves its due time (the
    /// check could not record an outcome): `Some(None)` unschedules it.
    pub async fn release_lease(
        &self,
        connection_id: Uuid,
        owner: &str,
        reschedule: Option<Option<DateTime<Utc>>>,
    ) -> AppResult<()> {
        let txn = self.db.as_system().await?;
        if let Some(next) = reschedule {
            keys::Entity::update_many()
                .col_expr(keys::Column::NextCheckAt, Expr::value(next))
                .filter(keys::Column::Id.eq(connection_id))
                .filter(keys::Column::LeaseOwner.eq(owner))
                .filter(keys::Column::RevokedAt.is_null())
                .exec(&txn)
                .await?;
        }
        keys::Entity::update_many()
            .col_expr(keys::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(keys::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(keys::Column::Id.eq(connection_id))
            .filter(keys::Column::LeaseOwner.eq(owner))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Gives back every lease `owner` holds (a stopping worker's abandoned checks).
    pub async fn release_all_leases(&self, owner: &str) -> AppResult<u64> {
        let txn = self.db.as_system().await?;
        let result = keys::Entity::update_many()
            .col_expr(keys::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(keys::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(keys::Column::LeaseOwner.eq(owner))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(result.rows_affected)
    }

    /// Gives live connections that should be checked but have no due time
    /// (rows from before the worker existed) one spread over the interval.
    pub async fn schedule_unscheduled(&self) -> AppResult<u64> {
        let txn = self.db.as_system().await?;
        let rows: Vec<Uuid> = keys::Entity::find()
            .select_only()
            .column(keys::Column::Id)
            .filter(keys::Column::NextCheckAt.is_null())
            .filter(keys::Column::RevokedAt.is_null())
            .filter(keys::Column::Status.is_in([
                ConnectionStatus::Pending.as_str(),
                ConnectionStatus::Healthy.as_str(),
                ConnectionStatus::Degraded.as_str(),
            ]))
            .into_tuple()
            .all(&txn)
            .await?;
        txn.commit().await?;
        // Writes in a transaction of their own (see `claim_due`).
        let txn = self.db.as_system().await?;
        let now = entity::now();
        for id in &rows {
            let offset = self.health_check_interval.mul_f64(rand::random::<f64>());
            keys::Entity::update_many()
                .col_expr(keys::Column::NextCheckAt, Expr::value(deadline(now, offset)))
                .filter(keys::Column::Id.eq(*id))
                .filter(keys::Column::NextCheckAt.is_null())
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(rows.len() as u64)
    }

    /// Keeps the newest `keep` health checks of each connection and deletes
    /// older ones, at most `batch` per call. Returns how many were deleted.
    pub async fn prune_health_checks(&self, keep: u64, batch: u64) -> AppResult<u64> {
        let backend = self.db.backend();
        let (keep, batch) = (
            i64::try_from(keep).unwrap_or(i64::MAX),
            i64::try_from(batch).unwrap_or(i64::MAX),
        );
        let placeholders = match backend {
            DbBackend::Postgres => ("$1", "$2"),
            _ => ("?", "?"),
        };
        // Only connections over the limit are ranked.
        let sql = format!(
            "DELETE FROM connection_health_checks WHERE id IN ( \
               SELECT id FROM ( \
                 SELECT id, ROW_NUMBER() OVER (PARTITION BY connection_id ORDER BY checked_at DESC, id DESC) AS rn \
                 FROM connection_health_checks WHERE connection_id IN ( \
                   SELECT connection_id FROM connection_health_checks GROUP BY connection_id HAVING COUNT(*) > {keep}) \
               ) ranked WHERE rn > {keep} LIMIT {batch})",
            keep = placeholders.0,
            batch = placeholders.1,
        );
        // Both placeholders of a kind bind in order; SQLite's `?` repeats the value.
        let values: Vec<sea_orm::Value> = match backend {
            DbBackend::Postgres => vec![keep.into(), batch.into()],
            _ => vec![keep.into(), keep.into(), batch.into()],
        };
        let txn = self.db.as_system().await?;
        let result = txn
            .execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        txn.commit().await?;
        Ok(result.rows_affected())
    }
}
