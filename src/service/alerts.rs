//! Security alerts: patterns that suggest a stolen account or a key being
//! abused — a key that gained withdrawal rights, a burst of failed tests,
//! many rotations in a short time. Each is an audit entry
//! (`security.alert`, so it is announced to the user's `auditEvents`
//! subscribers with the change that raised it) and a count in
//! `security_alerts_total{kind}`. The bursts are counted from the database,
//! so they hold across every API and worker process.

use super::RequestContext;
use super::audit::{self, action};
use crate::domain::Permissions;
use crate::error::AppResult;
use entity::connection_audit_log as audit_log;
use entity::connection_health_checks as checks;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

/// Failed manual tests by one user within [`TEST_FAILURE_WINDOW`] that raise an alert.
pub const TEST_FAILURES_FOR_ALERT: u64 = 5;
pub const TEST_FAILURE_WINDOW: chrono::Duration = chrono::Duration::minutes(10);
/// Rotations by one user within [`ROTATION_WINDOW`] that raise an alert.
pub const ROTATIONS_FOR_ALERT: u64 = 3;
pub const ROTATION_WINDOW: chrono::Duration = chrono::Duration::hours(1);

/// The kinds of alert, as written in the entry's `details.kind`.
pub mod kind {
    pub const WITHDRAWAL_GAINED: &str = "withdrawal_rights_gained";
    pub const TEST_FAILURE_BURST: &str = "test_failure_burst";
    pub const ROTATION_BURST: &str = "rotation_burst";
}

async fn raise(
    txn: &impl ConnectionTrait,
    ctx: &RequestContext,
    connection_id: Uuid,
    kind: &'static str,
    details: serde_json::Value,
) -> AppResult<audit::Entry> {
    metrics::counter!("security_alerts_total", "kind" => kind).increment(1);
    tracing::warn!(alert = kind, user_id = %ctx.principal.user_id, %connection_id, "security alert");
    let mut details = details;
    details["kind"] = json!(kind);
    audit::record(txn, ctx, Some(connection_id), action::SECURITY_ALERT, details).await
}

/// The permissions a row stored before this change, if it read them.
pub fn stored_permissions(stored: Option<&serde_json::Value>) -> Option<Permissions> {
    stored.and_then(|value| serde_json::from_value(value.clone()).ok())
}

/// A key that could not withdraw before and can now (the user, or someone
/// with their exchange login, added the right).
pub async fn on_permissions(
    txn: &impl ConnectionTrait,
    ctx: &RequestContext,
    connection_id: Uuid,
    before: Option<Permissions>,
    after: &Permissions,
) -> AppResult<Option<audit::Entry>> {
    let gained = after.can_withdraw && before.is_some_and(|before| !before.can_withdraw);
    if !gained {
        return Ok(None);
    }
    let entry = raise(
        txn,
        ctx,
        connection_id,
        kind::WITHDRAWAL_GAINED,
        json!({ "message": "this key can now withdraw funds; if you did not add that right, revoke the key at the exchange now" }),
    )
    .await?;
    Ok(Some(entry))
}

/// Called after a failed manual test was recorded: the threshold-th failure
/// in the window raises one alert (later ones in the same burst do not).
pub async fn on_failed_test(
    txn: &impl ConnectionTrait,
    ctx: &RequestContext,
    connection_id: Uuid,
) -> AppResult<Option<audit::Entry>> {
    let since = entity::now() - TEST_FAILURE_WINDOW;
    let failures = checks::Entity::find()
        .filter(checks::Column::UserId.eq(ctx.principal.user_id))
        .filter(checks::Column::Source.eq("manual"))
        .filter(checks::Column::Ok.eq(false))
        .filter(checks::Column::CheckedAt.gte(since))
        .count(txn)
        .await?;
    if failures != TEST_FAILURES_FOR_ALERT {
        return Ok(None);
    }
    let entry = raise(
        txn,
        ctx,
        connection_id,
        kind::TEST_FAILURE_BURST,
        json!({ "failedTests": failures, "windowMinutes": TEST_FAILURE_WINDOW.num_minutes() }),
    )
    .await?;
    Ok(Some(entry))
}

/// Called after a rotation was audited: the threshold-th rotation in the
/// window raises one alert.
pub async fn on_rotation(
    txn: &impl ConnectionTrait,
    ctx: &RequestContext,
    connection_id: Uuid,
) -> AppResult<Option<audit::Entry>> {
    let since = entity::now() - ROTATION_WINDOW;
    let rotations = audit_log::Entity::find()
        .filter(audit_log::Column::UserId.eq(ctx.principal.user_id))
        .filter(audit_log::Column::Action.eq(action::ROTATED))
        .filter(audit_log::Column::CreatedAt.gte(since))
        .count(txn)
        .await?;
    if rotations != ROTATIONS_FOR_ALERT {
        return Ok(None);
    }
    let entry = raise(
        txn,
        ctx,
        connection_id,
        kind::ROTATION_BURST,
        json!({ "rotations": rotations, "windowMinutes": ROTATION_WINDOW.num_minutes() }),
    )
    .await?;
    Ok(Some(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_permissions_read_back_what_was_written() {
        let written = Permissions {
            can_read: true,
            can_trade: true,
            can_withdraw: false,
            ip_restricted: Some(true),
            trading_expires_at: None,
        };
        let value = serde_json::to_value(written).unwrap();
        assert_eq!(stored_permissions(Some(&value)), Some(written));
        assert_eq!(stored_permissions(None), None);
        assert_eq!(stored_permissions(Some(&json!("garbage"))), None);
    }
}
