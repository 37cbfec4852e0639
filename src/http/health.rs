//! `/healthz` (the process is alive) and `/readyz` (it can serve: the
//! database answers). `/readyz` also reports the event hub; a hub that lost
//! Redis makes the process degraded (live events from other processes pause)
//! but not unready: failing readiness on every replica at once would turn a
//! Redis outage into a total one. `event_hub_connected` alerts on it.

use super::HttpState;
use crate::events::{EventHub, HubStatus};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use sea_orm::DatabaseConnection;
use serde_json::{Value, json};
use std::time::Duration;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    readiness(&state.db, &state.events).await
}

/// Readiness of a process on `db` with `events` (`serve` and `worker` alike).
pub async fn readiness(db: &DatabaseConnection, events: &EventHub) -> (StatusCode, Json<Value>) {
    let database = matches!(
        tokio::time::timeout(Duration::from_secs(2), db.ping()).await,
        Ok(Ok(()))
    );
    let hub = events.status() != HubStatus::Disconnected;
    let ready = database;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let up = |ok: bool| if ok { "up" } else { "down" };
    let hub_check = match events.status() {
        HubStatus::InProcess => "in-process",
        HubStatus::Connected => "up",
        HubStatus::Disconnected => "down",
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "degraded": !hub,
            "checks": { "database": up(database), "eventHub": hub_check }
        })),
    )
}
