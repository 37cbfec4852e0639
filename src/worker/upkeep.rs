//! The worker's background upkeep: renewing the leases of checks in flight
//! (so a slow check is not claimed twice while its worker lives) and pruning
//! the health-check history to its retention limit.

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
