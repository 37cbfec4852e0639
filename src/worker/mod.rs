//! The health monitor: claims due connections in batches under a lease,
//! checks them with bounded concurrency through the service layer (so each
//! check is recorded, audited and published like a manual test), and gives
//! each lease back when its check is done. Any number of workers can share
//! one database; a crashed worker's leases lapse and are claimed again.
//! Also sweeps expired exchange sessions. All of this spans users, so on
//! PostgreSQL it needs the worker role (the system identity, migration 000006).
//! Runs as `exchange-connections worker`, or inside `serve` (RUN_WORKER).

mod check;
mod upkeep;

pub use upkeep::{count_stored_secrets, expire_sessions};

use crate::service::Services;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The worker's settings (validated in [`crate::config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// `HEALTH_CHECK_INTERVAL`: the time between two checks of a connection.
    pub interval: Duration,
    /// How long a claim holds without renewal.
    pub lease: Duration,
    /// How often an idle worker looks for due connections.
    pub poll: Duration,
    /// Connections claimed at once.
    pub batch: u64,
    /// Checks in flight at once.
    pub concurrency: usize,
    /// Health checks kept per connection.
    pub retention: u64,
    /// `SESSION_SWEEP_INTERVAL`: how often expired exchange sessions are swept.
    pub session_sweep: Duration,
}

/// How long a stopping worker lets its checks in flight finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How many checks must be free before a busy worker claims more: half its
/// concurrency (at most a batch). Claiming as each check ends would cost a
/// claim statement per check when there is a backlog; this claims in batches.
fn refill_at(config: &WorkerConfig) -> u64 {
    (config.concurrency as u64 / 2).clamp(1, config.batch.max(1))
}

/// Runs until `shutdown` completes: then stops claiming, gives checks in
/// flight [`SHUTDOWN_GRACE`] to finish, abandons the rest and releases
/// every lease it still holds. Errors are logged; the loop never panics.
pub async fn run_until_stopped(services: Services, config: WorkerConfig, shutdown: impl Future<Output = ()>) {
    let owner = uuid::Uuid::new_v4().to_string();
    tracing::info!(worker_id = %owner, lease = ?config.lease, concurrency = config.concurrency, "health monitor started");
    match services.schedule_unscheduled().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(scheduled = n, "scheduled connections that had no due time"),
        Err(error) => tracing::warn!(%error, "scheduling unscheduled connections failed"),
    }
    let renewer = tokio::spawn(upkeep::renew_leases(services.clone(), owner.clone(), config.lease));
    let pruner = tokio::spawn(upkeep::prune_history(
        services.clone(),
        config.retention,
        config.interval.clamp(Duration::from_secs(1), Duration::from_secs(600)),
    ));
    let sweeper = tokio::spawn(upkeep::expire_sessions(services.clone(), config.session_sweep));
    let secrets_gauge = tokio::spawn(upkeep::count_stored_secrets(services.clone()));
    let permits = Arc::new(Semaphore::new(config.concurrency));
    let refill = refill_at(&config);
    let mut inflight = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while inflight.try_join_next().is_some() {}
        let free = permits.available_permits() as u64;
        let mut more_due = false;
        if free >= refill {
            let want = free.min(config.batch);
            match services.claim_due(&owner, want, config.lease).await {
                Ok(claims) => {
                    more_due = claims.len() as u64 == want;
                    metrics::counter!("worker_claimed_total").increment(claims.len() as u64);
                    let reclaimed = claims.iter().filter(|c| c.reclaimed).count() as u64;
                    if reclaimed > 0 {
                        metrics::counter!("worker_leases_reclaimed_total").increment(reclaimed);
                        tracing::info!(reclaimed, "claimed connections whose lease had lapsed");
                    }
                    for claim in claims {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            break;
                        };
                        inflight.spawn(check::run(
                            services.clone(),
                            owner.clone(),
                            claim,
                            config.interval,
                            permit,
                        ));
                    }
                }
                Err(error) => tracing::warn!(%error, "claiming due connections failed"),
            }
        }
        let busy = (permits.available_permits() as u64) < refill;
        let wait = if more_due && !busy { Duration::ZERO } else { config.poll };
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = inflight.join_next(), if busy => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!(worker_id = %owner, inflight = inflight.len(), "health monitor stopping");
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while inflight.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(abandoned = inflight.len(), "abandoning checks still in flight");
        inflight.shutdown().await;
    }
    renewer.abort();
    pruner.abort();
    sweeper.abort();
    secrets_gauge.abort();
    match services.release_all_leases(&owner).await {
        Ok(released) => tracing::info!(worker_id = %owner, released, "health monitor stopped"),
        Err(error) => tracing::warn!(%error, "releasing leases failed; they lapse on their own"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(concurrency: usize, batch: u64) -> WorkerConfig {
        WorkerConfig {
            interval: Duration::from_secs(60),
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(1),
            batch,
            concurrency,
            retention: 10,
            session_sweep: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_busy_worker_claims_in_batches() {
        assert_eq!(refill_at(&config(16, 50)), 8);
        assert_eq!(refill_at(&config(200, 50)), 50);
        assert_eq!(refill_at(&config(1, 50)), 1);
        assert_eq!(refill_at(&config(3, 50)), 1);
        assert_eq!(refill_at(&config(16, 0)), 1);
    }
}
