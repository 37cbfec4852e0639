//! The worker's background upkeep: renewing the leases of checks in flight
//! (so a slow check is not claimed twice while its worker lives), pruning
//! the health-check history to its retention limit, and moving connections
//! whose exchange session expired to `NEEDS_REAUTH`; and the
//! `stored_secrets{key}` gauge, which needs the system identity to count
//! every user's secrets.

use crate::service::Services;
use std::time::Duration;

/// Rows deleted per prune statement; a large backlog is pruned in steps.
const PRUNE_BATCH: u64 = 10_000;

/// Renews this worker's leases three times per lease period, so one missed
/// renewal does not let them lapse.
pub(super) async fn renew_leases(services: Services, owner: String, lease: Duration) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = services.renew_leases(&owner, lease).await {
            tracing::warn!(%error, "renewing leases failed");
        }
    }
}

/// Keeps the newest `keep` checks per connection, every `every`.
pub(super) async fn prune_history(services: Services, keep: u64, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            match services.prune_health_checks(keep, PRUNE_BATCH).await {
                Ok(deleted) => {
                    if deleted > 0 {
                        metrics::counter!("health_checks_pruned_total").increment(deleted);
                        tracing::debug!(deleted, "pruned old health checks");
                    }
                    if deleted < PRUNE_BATCH {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "pruning health checks failed");
                    break;
                }
            }
        }
    }
}

/// Moves connections whose exchange session expired to `NEEDS_REAUTH`, every
/// `every`. Errors are logged and the loop goes on: a failed sweep is retried
/// next tick. `serve` runs this alone when it runs no worker but may act as
/// the system (SQLite, or a role granted the worker role).
pub async fn expire_sessions(services: Services, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match services.expire_kite_sessions().await {
            Ok(0) => {}
            Ok(moved) => tracing::info!(moved, "expired exchange sessions moved to NEEDS_REAUTH"),
            Err(error) => tracing::warn!(%error, "session expiry sweep failed"),
        }
    }
}

/// How often the stored secrets are recounted per key version (one
/// aggregate query over `exchange_keys`).
const STORED_SECRETS_INTERVAL: Duration = Duration::from_secs(60);

/// Keeps the `stored_secrets{key}` gauge current, from startup on, so an
/// operator can watch an old key reach 0 after `rekey`.
pub async fn count_stored_secrets(services: Services) {
    let mut gauge = crate::service::rekey::StoredSecretsGauge::default();
    let mut tick = tokio::time::interval(STORED_SECRETS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = gauge.refresh(&services.db, &services.keyring).await {
            tracing::warn!(%error, "counting stored secrets per key version failed");
        }
    }
}
