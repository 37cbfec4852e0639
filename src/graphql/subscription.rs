//! Subscriptions: the caller's own connection and audit events, live. Each
//! subscription reads the caller's channel in the event hub; a subscriber
//! that falls behind gets an `EVENTS_DROPPED` error item saying how many
//! events it lost (then refetches), and goes on receiving.

use super::context::caller;
use crate::events::{Event, Lagged, Receiver};
use crate::service::views::{AuditEntryView, ConnectionEventView};
use async_graphql::{Context, ErrorExtensions, ID, Result, Subscription};
use futures_util::Stream;

pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Changes to the caller's connections (one connection with `connectionId`):
    /// created, tested, health_checked, rotated, revoked, status_changed, session_started.
    async fn connection_events(
        &self,
        ctx: &Context<'_>,
        connection_id: Option<ID>,
    ) -> Result<impl Stream<Item = Result<ConnectionEventView>> + use<>> {
        // The database calls are boxed: async-graphql keeps this resolver's
        // future inside the subscription's stream for as long as it lives, and
        // a future is as large as its largest await, so unboxed these finished
        // sea-orm futures would stay reserved in every idle subscription
        // (BENCHMARKS.md, live status); boxed, they are freed when done.
        let (services, request) = Box::pin(caller(ctx)).await.map_err(|e| e.extend())?;
        // Another user's id is NOT_FOUND, exactly as for `connection(id)`.
        let only = match connection_id {
            Some(id) => Some(
                Box::pin(services.get_connection(&request, &id))
                    .await
                    .map_err(|e| e.extend())?
                    .id,
            ),
            None => None,
        };
        let events = services.events.subscribe(request.principal.user_id);
        Ok(user_events(events, move |event| match event {
            Event::Connection(change) if only.as_ref().is_none_or(|id| *id == change.connection_id) => {
                Some(change.clone())
            }
            _ => None,
        }))
    }

    /// Entries appended to the caller's audit log.
    async fn audit_events(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = Result<AuditEntryView>> + use<>> {
        // Boxed for the reason given in `connection_events`.
        let (services, request) = Box::pin(caller(ctx)).await.map_err(|e| e.extend())?;
        let events = services.events.subscribe(request.principal.user_id);
        Ok(user_events(events, |event| match event {
            Event::Audit(entry) => Some(entry.clone()),
            _ => None,
        }))
    }
}

/// The items `pick` selects from a user's channel, with lag reported as an error item.
fn user_events<T: Send + 'static>(
    events: Receiver,
    pick: impl Fn(&Event) -> Option<T> + Send + 'static,
) -> impl Stream<Item = Result<T>> {
    futures_util::stream::unfold((events, pick), |(mut events, pick)| async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(item) = pick(&event) {
                        return Some((Ok(item), (events, pick)));
                    }
                }
                Err(Lagged(dropped)) => {
                    metrics::counter!("events_dropped_total", "reason" => "slow_subscriber").increment(dropped);
                    let error = async_graphql::Error::new(format!(
                        "{dropped} event(s) were dropped because this client fell behind; refetch to catch up"
                    ))
                    .extend_with(|_, e| {
                        e.set("code", "EVENTS_DROPPED");
                        e.set("dropped", dropped);
                    });
                    return Some((Err(error), (events, pick)));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventHub, PER_USER_BUFFER};
    use futures_util::StreamExt;

    fn audit(n: usize) -> Event {
        Event::Audit(AuditEntryView {
            id: ID(n.to_string()),
            connection_id: None,
            action: "connection.tested".into(),
            at: chrono::Utc::now(),
            actor: "user:test".into(),
            ip: None,
            user_agent: None,
            request_id: None,
            details: None,
            seq: 0,
            hash: String::new(),
        })
    }

    #[tokio::test]
    async fn a_subscriber_that_fell_behind_is_told_then_goes_on() {
        let hub = EventHub::in_process();
        let user = uuid::Uuid::new_v4();
        let stream = user_events(hub.subscribe(user), |event| match event {
            Event::Audit(entry) => Some(entry.id.0.clone()),
            _ => None,
        });
        futures_util::pin_mut!(stream);
        for n in 0..PER_USER_BUFFER + 3 {
            hub.publish(user, audit(n));
        }
        let error = stream.next().await.unwrap().unwrap_err();
        assert!(error.message.contains("3 event(s) were dropped"), "{}", error.message);
        let code = error.extensions.as_ref().and_then(|e| e.get("code")).cloned();
        assert_eq!(code, Some(async_graphql::Value::from("EVENTS_DROPPED")));
        // The oldest three are gone; the rest arrive in order.
        assert_eq!(stream.next().await.unwrap().unwrap(), "3");
        assert_eq!(stream.next().await.unwrap().unwrap(), "4");
    }
}
