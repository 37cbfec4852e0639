//! The audit trail: one entry per change, written in the same transaction
//! as the change, and read back in pages (newest first, opaque cursors).
//! [`record`] is the only writer: it appends to the user's hash chain
//! (`entity::audit_chain`) under a lock on the user's chain head, so two
//! transactions for one user can never take the same `seq`.

use super::RequestContext;
use super::views::{AuditEntryView, AuditLogPageView, PageInfo};
use crate::error::{AppError, AppResult};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entity::audit_chain::GENESIS;
use entity::{connection_audit_heads as heads, connection_audit_log as audit};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use uuid::Uuid;

pub const PAGE_MAX: i32 = 200;

/// An entry as written; announced to subscribers after the commit.
pub type Entry = audit::Model;

/// The audit actions the service writes.
pub mod action {
    pub const CREATED: &str = "connection.created";
    pub const TESTED: &str = "connection.tested";
    pub const ROTATED: &str = "connection.rotated";
    pub const REVOKED: &str = "connection.revoked";
    pub const STATUS_CHANGED: &str = "connection.status_changed";
    pub const DIAGNOSED: &str = "connection.diagnosed";
    pub const KITE_LOGIN_STARTED: &str = "connection.kite_login_started";
    pub const KITE_LOGIN_COMPLETED: &str = "connection.kite_login_completed";
    /// `exchange-connections rekey` re-sealed the connection's secrets under the primary key.
    pub const REKEYED: &str = "connection.rekeyed";
    /// A pattern that suggests abuse (see `alerts`); `details.kind` says which.
    pub const SECURITY_ALERT: &str = "security.alert";
}

/// Appends an entry to the acting user's chain. Call inside the transaction
/// of the change it records; `details` must never hold secret material.
pub async fn record(
    txn: &impl ConnectionTrait,
    ctx: &RequestContext,
    connection_id: Option<Uuid>,
    action: &str,
    details: serde_json::Value,
) -> AppResult<audit::Model> {
    // Fail closed: the caller's transaction rolls back with this error.
    append(txn, ctx, connection_id, action, details)
        .await
        .inspect_err(|_| metrics::counter!("audit_write_failures_total").increment(1))
}

async fn append(
    txn: &impl ConnectionTrait,
    ctx: &RequestContext,
    connection_id: Option<Uuid>,
    action: &str,
    details: serde_json::Value,
) -> AppResult<audit::Model> {
    let user_id = ctx.principal.user_id;
    let now = entity::now();
    // Lock and read the head in one statement: insert-or-touch locks the
    // user's head row until commit on PostgreSQL (a concurrent append waits
    // here, then reads the head it wrote), works for a user's first entry
    // too, and on SQLite takes the writer lock before anything is read.
    let head = heads::Entity::insert(heads::ActiveModel {
        user_id: Set(user_id),
        seq: Set(0),
        hash: Set(GENESIS.into()),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(heads::Column::UserId)
            .update_column(heads::Column::UpdatedAt)
            .to_owned(),
    )
    .exec_with_returning(txn)
    .await?;

    let mut entry = audit::Model {
        id: Uuid::now_v7(),
        user_id,
        connection_id,
        action: action.to_string(),
        actor: ctx.actor(),
        ip: ctx.ip.clone(),
        user_agent: ctx.user_agent.as_ref().map(|ua| ua.chars().take(512).collect()),
        request_id: ctx.request_id.as_ref().map(|r| r.chars().take(64).collect()),
        details: Some(details),
        created_at: now,
        seq: head.seq + 1,
        prev_hash: head.hash,
        hash: String::new(),
    };
    entry.hash = entry.chain_fields().hash();
    let stored = audit::Entity::insert(audit::ActiveModel {
        id: Set(entry.id),
        user_id: Set(entry.user_id),
        connection_id: Set(entry.connection_id),
        action: Set(entry.action.clone()),
        actor: Set(entry.actor.clone()),
        ip: Set(entry.ip.clone()),
        user_agent: Set(entry.user_agent.clone()),
        request_id: Set(entry.request_id.clone()),
        details: Set(entry.details.clone()),
        created_at: Set(entry.created_at),
        seq: Set(entry.seq),
        prev_hash: Set(entry.prev_hash.clone()),
        hash: Set(entry.hash.clone()),
    })
    .exec_with_returning(txn)
    .await?;
    // What the database kept must hash the same, or the entry could never
    // be verified: refuse it now rather than report tampering later.
    if stored.chain_fields().hash() != stored.hash {
        return Err(AppError::internal(anyhow::anyhow!(
            "audit entry {} does not hash the same after storing (action {action})",
            stored.id
        )));
    }
    let moved = heads::Entity::update_many()
        .col_expr(heads::Column::Seq, Expr::value(stored.seq))
        .col_expr(heads::Column::Hash, Expr::value(stored.hash.clone()))
        .col_expr(heads::Column::UpdatedAt, Expr::value(now))
        .filter(heads::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    if moved.rows_affected != 1 {
        return Err(AppError::from(DbErr::RecordNotUpdated));
    }
    Ok(stored)
}

fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_cursor(cursor: &str) -> AppResult<Uuid> {
    URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .ok()
        .and_then(|bytes| Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| AppError::bad_input("after", "is not a cursor from this API"))
}

impl super::Services {
    /// One page of the caller's audit trail (optionally for one connection), newest first.
    pub async fn audit_log(
        &self,
        ctx: &RequestContext,
        connection_id: Option<Uuid>,
        first: i32,
        after: Option<&str>,
    ) -> AppResult<AuditLogPageView> {
        let txn = self.db.as_user(ctx.principal.user_id).await?;
        let page = page(&txn, ctx.principal.user_id, connection_id, first, after).await?;
        super::tenancy::end_read(txn);
        Ok(page)
    }
}

/// One page of the user's entries (optionally for one connection), newest first.
async fn page(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    connection_id: Option<Uuid>,
    first: i32,
    after: Option<&str>,
) -> AppResult<AuditLogPageView> {
    if !(1..=PAGE_MAX).contains(&first) {
        return Err(AppError::bad_input(
            "first",
            format!("must be between 1 and {PAGE_MAX}"),
        ));
    }
    let mut query = audit::Entity::find().filter(audit::Column::UserId.eq(user_id));
    if let Some(connection_id) = connection_id {
        query = query.filter(audit::Column::ConnectionId.eq(connection_id));
    }
    if let Some(after) = after {
        query = query.filter(audit::Column::Id.lt(decode_cursor(after)?));
    }
    let mut rows = query
        .order_by_desc(audit::Column::Id)
        .limit(first as u64 + 1)
        .all(db)
        .await?;
    let has_next_page = rows.len() > first as usize;
    rows.truncate(first as usize);
    Ok(AuditLogPageView {
        page_info: PageInfo {
            has_next_page,
            end_cursor: rows.last().map(|r| encode_cursor(r.id)),
        },
        nodes: rows.iter().map(AuditEntryView::from).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)).unwrap(), id);
        for bad in ["", "!!!", "AAAA", "not a cursor"] {
            assert!(matches!(decode_cursor(bad), Err(AppError::BadInput { .. })), "{bad}");
        }
    }
}
