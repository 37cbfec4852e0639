//! The per-call plumbing every exchange client shares: take the call's
//! budget (waiting briefly or refusing), send, hold the budget's scope when
//! the exchange names a wait, and record `exchange_calls_total{exchange,
//! endpoint,outcome}` and `exchange_call_duration_seconds{exchange}` with the
//! call's final outcome (refusals included).

use super::budget::{self, Budget, MAX_WAIT};
use super::shared::{Admission, BudgetStore};
use crate::exchange::ExchangeError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A client's failure type: an [`ExchangeError`] plus whatever the client
/// keeps beside it (Binance's numeric code, Kraken's error class).
pub trait CallFailure: From<ExchangeError> {
    fn error(&self) -> &ExchangeError;
}

impl CallFailure for ExchangeError {
    fn error(&self) -> &ExchangeError {
        self
    }
}

/// One exchange's gate to its budgets. Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    exchange: &'static str,
    store: Arc<dyn BudgetStore>,
    max_wait: Duration,
}

impl Gate {
    /// `exchange` is the metrics label (`binance`, `kraken`, …).
    pub fn new(exchange: &'static str, store: Arc<dyn BudgetStore>) -> Self {
        Self {
            exchange,
            store,
            max_wait: MAX_WAIT,
        }
    }

    pub fn store(&self) -> &Arc<dyn BudgetStore> {
        &self.store
    }

    /// Runs one call to `endpoint` (a path; never a URL with parameters).
    pub async fn run<T, E: CallFailure>(
        &self,
        endpoint: &'static str,
        budget: &Budget,
        send: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = match self.admit(budget).await {
            Ok(()) => {
                let result = send.await;
                if let Err(failure) = &result
                    && let Some(wait) = budget.hold_for(failure.error())
                {
                    self.hold(budget, wait).await;
                }
                result
            }
            Err(refused) => Err(E::from(refused)),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(failure) => failure.error().code.as_str(),
        };
        metrics::counter!("exchange_calls_total", "exchange" => self.exchange, "endpoint" => endpoint, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("exchange_call_duration_seconds", "exchange" => self.exchange)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Takes the budget, sleeping through a short wait, or says why not.
    async fn admit(&self, budget: &Budget) -> Result<(), ExchangeError> {
        match self
            .store
            .take(&budget.scope, budget.limit, budget.cost, self.max_wait)
            .await
        {
            Ok(Admission::Go { after }) => {
                if !after.is_zero() {
                    metrics::counter!("exchange_calls_delayed_total", "exchange" => self.exchange).increment(1);
                    tokio::time::sleep(after).await;
                }
                Ok(())
            }
            Ok(Admission::Refused { wait, why }) => Err(budget::refusal(self.exchange, wait, why)),
            Err(error) => Err(budget::store_unavailable(self.exchange, &error)),
        }
    }

    /// Holds `budget`'s scope for `wait`. A store failure is logged: the
    /// answer itself already reached the caller.
    pub async fn hold(&self, budget: &Budget, wait: Duration) {
        metrics::counter!("exchange_budget_blocks_total", "exchange" => self.exchange).increment(1);
        if let Err(error) = self.store.hold(&budget.scope, wait).await {
            tracing::warn!(exchange = self.exchange, %error, "could not record the exchange's requested pause");
        }
    }

    /// Records the usage an exchange reported for a `PerMinute` budget.
    pub async fn observe_used(&self, budget: &Budget, used: u32) {
        if let Err(error) = self.store.observe_used(&budget.scope, used).await {
            tracing::warn!(exchange = self.exchange, %error, "could not record the exchange's reported usage");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Environment, ExchangeErrorCode};
    use crate::exchange::budget::KITE_PER_KEY;
    use crate::exchange::shared::{connect, memory::MemoryStore};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn gate() -> Gate {
        Gate::new("test", Arc::new(MemoryStore::new()))
    }

    #[tokio::test]
    async fn a_retry_after_holds_the_scope_and_later_calls_are_not_sent() {
        let gate = gate();
        let budget = Budget::per_key("kite", "key", KITE_PER_KEY, 1);
        let sent = AtomicUsize::new(0);
        let limited = || async {
            sent.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(
                ExchangeError::new(ExchangeErrorCode::RateLimited, "429")
                    .with_retry_after(Some(Duration::from_millis(300))),
            )
        };
        let first = gate.run("/x", &budget, limited()).await.unwrap_err();
        assert_eq!(first.message, "429");
        let second = gate.run("/x", &budget, limited()).await.unwrap_err();
        assert_eq!(second.code, ExchangeErrorCode::RateLimited);
        assert!(second.message.contains("pause"), "{second}");
        assert_eq!(sent.load(Ordering::SeqCst), 1, "the second call was not sent");
        // Another key is not held.
        let other = Budget::per_key("kite", "other", KITE_PER_KEY, 1);
        gate.run("/x", &other, async { Ok::<_, ExchangeError>(()) })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(310)).await;
        gate.run("/x", &budget, async { Ok::<_, ExchangeError>(()) })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn other_failures_do_not_hold() {
        let gate = gate();
        let budget = Budget::binance("ip", Environment::Production, 1);
        let bad = ExchangeError::new(ExchangeErrorCode::InvalidCredentials, "no")
            .with_retry_after(Some(Duration::from_secs(60)));
        gate.run("/x", &budget, async { Err::<(), _>(bad) }).await.unwrap_err();
        gate.run("/x", &budget, async { Ok::<_, ExchangeError>(()) })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_short_wait_is_waited_out() {
        let gate = gate();
        let budget = Budget::per_key("kite", "key", KITE_PER_KEY, 1);
        let started = Instant::now();
        for _ in 0..11 {
            gate.run("/x", &budget, async { Ok::<_, ExchangeError>(()) })
                .await
                .unwrap();
        }
        // The eleventh call in the same instant waited about 100 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(90),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn an_unreachable_store_refuses_quickly_with_a_retryable_error() {
        let gate = Gate::new("test", connect(Some("redis://127.0.0.1:1")).unwrap());
        let budget = Budget::public("kite");
        let started = Instant::now();
        let error = gate
            .run("/x", &budget, async { Ok::<_, ExchangeError>(()) })
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        assert_eq!(error.code, ExchangeErrorCode::RateLimited);
        assert!(error.retryable());
        assert!(
            error.message.contains("redis") && error.message.contains("unavailable"),
            "{error}"
        );
    }
}
