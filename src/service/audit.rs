//! The audit trail: one entry per change, written in the same transaction
//! as the change, and read back in pages (newest first, opaque cursors).

use super::RequestContext;
use super::views::{AuditEntryView, AuditLogPageView, PageInfo};
use crate::error::{AppError, AppResult};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entity::connection_audit_log as audit;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};
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

/// Appends an entry. Call inside the transaction of the change it records;
/// `details` must never hold secret material.
pub async fn record(
    txn: &impl ConnectionTrait,
    ctx: &RequestContext,
    connection_id: Option<Uuid>,
    action: &str,
    details: serde_json::Value,
) -> AppResult<audit::Model> {
    let row = audit::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(ctx.principal.user_id),
        connection_id: Set(connection_id),
        action: Set(action.to_string()),
        actor: Set(ctx.actor()),
        ip: Set(ctx.ip.clone()),
        user_agent: Set(ctx.user_agent.as_ref().map(|ua| ua.chars().take(512).collect())),
        request_id: Set(ctx.request_id.as_ref().map(|r| r.chars().take(64).collect())),
        details: Set(Some(details)),
        created_at: Set(entity::now()),
    };
    // Fail closed: the caller's transaction rolls back with this error.
    audit::Entity::insert(row)
        .exec_with_returning(txn)
        .await
        .map_err(|error| {
            metrics::counter!("audit_write_failures_total").increment(1);
            AppError::from(error)
        })
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

/// One page of the user's entries (optionally for one connection), newest first.
pub async fn page(
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
