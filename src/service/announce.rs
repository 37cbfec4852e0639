//! After a commit, tell the owner's subscribers what changed: a
//! `ConnectionEvent` for the change (and a `status_changed` one when the
//! status moved) plus an `AuditEntry` event per audit entry written. Never
//! before the commit: a rolled-back change must not be announced.

use super::Services;
use super::views::{AuditEntryView, ConnectionEventView, ConnectionView};
use crate::domain::ConnectionStatus;
use crate::events::Event;
use entity::{connection_audit_log as audit, exchange_keys as keys};

/// Connection event kinds.
pub mod kind {
    pub const CREATED: &str = "created";
    pub const TESTED: &str = "tested";
    pub const HEALTH_CHECKED: &str = "health_checked";
    pub const ROTATED: &str = "rotated";
    pub const REVOKED: &str = "revoked";
    pub const STATUS_CHANGED: &str = "status_changed";
    pub const SESSION_STARTED: &str = "session_started";
}

impl Services {
    /// Announces a committed change of `row` (`status_before`: its status before the change).
    pub(super) fn announce(
        &self,
        kind: &str,
        row: &keys::Model,
        status_before: Option<&str>,
        entries: &[audit::Model],
    ) {
        match ConnectionView::try_from(row) {
            Ok(view) => {
                if kind != kind::STATUS_CHANGED {
                    self.events
                        .publish(row.user_id, Event::Connection(ConnectionEventView::of(kind, &view)));
                }
                let before = status_before.and_then(ConnectionStatus::parse);
                if let Some(before) = before.filter(|before| *before != view.status) {
                    let mut change = ConnectionEventView::of(kind::STATUS_CHANGED, &view);
                    change.previous_status = Some(before);
                    self.events.publish(row.user_id, Event::Connection(change));
                }
            }
            Err(error) => tracing::error!(%error, connection_id = %row.id, "cannot announce a change"),
        }
        self.announce_audit(entries);
    }

    /// Announces committed audit entries that changed no connection.
    pub(super) fn announce_audit(&self, entries: &[audit::Model]) {
        for entry in entries {
            self.events
                .publish(entry.user_id, Event::Audit(AuditEntryView::from(entry)));
        }
    }
}
