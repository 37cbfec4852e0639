//! One claimed check: run it through the service layer with a time limit,
//! count it, and give the lease back: with the outcome, in its transaction,
//! when one is recorded; otherwise here (rescheduling when no outcome could
//! be recorded, so a connection that cannot be checked is not retried at once).

use crate::error::AppError;
use crate::service::Services;
use crate::service::health::{CheckOutcome, jittered};
use crate::service::lease::Claim;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;

/// A check still running after this is abandoned and retried later.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Decrements the in-flight gauge however the check ends.
struct Inflight;

impl Inflight {
    fn start() -> Self {
        metrics::gauge!("worker_inflight").increment(1.0);
        Self
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        metrics::gauge!("worker_inflight").decrement(1.0);
    }
}

pub(super) async fn run(
    services: Services,
    owner: String,
    claim: Claim,
    interval: Duration,
    _permit: OwnedSemaphorePermit,
) {
    let _inflight = Inflight::start();
    let lag = (chrono::Utc::now() - claim.due_at).to_std().unwrap_or_default();
    metrics::histogram!("health_check_lag_seconds").record(lag.as_secs_f64());
    let id = claim.connection_id;
    let check = services.check_claimed(claim, &owner);
    let retry_later = || {
        let delay = chrono::Duration::from_std(jittered(interval)).unwrap_or(chrono::Duration::MAX);
        Some(entity::now().checked_add_signed(delay))
    };
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, check).await;
    let reschedule = match outcome {
        Ok(Ok(CheckOutcome::Checked {
            exchange,
            error,
            status,
        })) => {
            let outcome = error.map_or("ok", |code| code.as_str());
            metrics::counter!("health_checks_total", "exchange" => exchange.as_str(), "outcome" => outcome)
                .increment(1);
            tracing::debug!(connection_id = %id, outcome, %status, "connection checked");
            // The outcome's transaction set the next due time and gave the lease back.
            return;
        }
        Ok(Ok(CheckOutcome::Skipped { reason })) => {
            metrics::counter!("health_checks_total", "exchange" => "unknown", "outcome" => "skipped").increment(1);
            tracing::debug!(connection_id = %id, reason, "nothing to check; unscheduled");
            Some(None)
        }
        Ok(Err(AppError::NotFound(_))) => None,
        Ok(Err(error)) => {
            metrics::counter!("health_checks_total", "exchange" => "unknown", "outcome" => "error").increment(1);
            match &error {
                AppError::Internal(cause) => {
                    tracing::warn!(connection_id = %id, error = format!("{cause:#}"), "health check failed")
                }
                other => tracing::warn!(connection_id = %id, error = %other, "health check failed"),
            }
            retry_later()
        }
        Err(_) => {
            metrics::counter!("health_checks_total", "exchange" => "unknown", "outcome" => "timeout").increment(1);
            tracing::warn!(connection_id = %id, timeout = ?CHECK_TIMEOUT, "health check abandoned");
            retry_later()
        }
    };
    if let Err(error) = services.release_lease(id, &owner, reschedule).await {
        tracing::warn!(connection_id = %id, %error, "releasing a lease failed; it lapses on its own");
    }
}
