//! The hub's Redis transport: one PUBLISH connection and one SUBSCRIBE
//! connection per process, each with its own reconnect loop (a pub/sub stream
//! simply ends when Redis goes away, see STACK.md P10). Events from other
//! processes are fanned out locally; this process's own events were
//! delivered locally when published and are skipped here, as are events of
//! users with no subscriber in this process: their addressing is read
//! without decoding the event (every process sees every event; most are for
//! other processes' sockets, and a worker has none).

use super::fanout::Fanout;
use super::{Envelope, Flag};
use futures_util::StreamExt;
use redis::AsyncConnectionConfig;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Events waiting for the publish connection; beyond this they are dropped
/// (and counted) rather than held in memory while Redis is away.
const PUBLISH_QUEUE: usize = 8192;
/// Queued events sent in one pipeline at most.
const PUBLISH_BATCH: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct RedisTransport {
    queue: mpsc::Sender<String>,
    subscribed: Flag,
    tasks: Vec<JoinHandle<()>>,
}

impl RedisTransport {
    pub fn start(url: &str, channel: &str, origin: Uuid, fanout: Fanout) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?;
        let (queue, pending) = mpsc::channel(PUBLISH_QUEUE);
        let subscribed = Flag::default();
        let channel: Arc<str> = channel.into();
        let tasks = vec![
            tokio::spawn(publish_loop(client.clone(), channel.clone(), pending)),
            tokio::spawn(subscribe_loop(client, channel, origin, fanout, subscribed.clone())),
        ];
        Ok(Self {
            queue,
            subscribed,
            tasks,
        })
    }

    pub fn publish(&self, envelope: &Envelope) {
        let json = match serde_json::to_string(envelope) {
            Ok(json) => json,
            Err(error) => {
                tracing::error!(%error, "an event could not be encoded; dropped");
                return;
            }
        };
        if self.queue.try_send(json).is_err() {
            metrics::counter!("events_dropped_total", "reason" => "publish_queue_full").increment(1);
        }
    }

    pub fn connected(&self) -> bool {
        self.subscribed.get()
    }

    pub fn shutdown(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for RedisTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
}

/// Doubles from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], with jitter so that many
/// processes do not reconnect in lockstep.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(BACKOFF_MIN)
    }
    async fn wait(&mut self) {
        let jitter = rand::random_range(0.5..1.0);
        tokio::time::sleep(self.0.mul_f64(jitter)).await;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
    }
    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// Publishes what is queued, in order. Events that queued up while the
/// previous ones were in flight go together in one pipeline (one round trip),
/// so a busy process does not pay a round trip per event.
async fn publish_loop(client: redis::Client, channel: Arc<str>, mut pending: mpsc::Receiver<String>) {
    let mut backoff = Backoff::new();
    let mut connection = None;
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while pending.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let dropped = batch.len() as u64;
        if connection.is_none() {
            match client.get_multiplexed_async_connection_with_config(&config()).await {
                Ok(c) => {
                    backoff.reset();
                    connection = Some(c);
                }
                Err(error) => {
                    tracing::warn!(%error, dropped, "event hub: cannot connect to Redis to publish; events dropped");
                    metrics::counter!("events_dropped_total", "reason" => "redis_unavailable").increment(dropped);
                    batch.clear();
                    backoff.wait().await;
                    continue;
                }
            }
        }
        let Some(c) = connection.as_mut() else { continue };
        let mut pipeline = redis::pipe();
        for json in batch.drain(..) {
            pipeline.cmd("PUBLISH").arg(&*channel).arg(json).ignore();
        }
        let published: redis::RedisResult<()> = pipeline.query_async(c).await;
        if let Err(error) = published {
            tracing::warn!(%error, dropped, "event hub: publish to Redis failed; events dropped");
            metrics::counter!("events_dropped_total", "reason" => "redis_unavailable").increment(dropped);
            connection = None;
        }
    }
}

async fn subscribe_loop(client: redis::Client, channel: Arc<str>, origin: Uuid, fanout: Fanout, subscribed: Flag) {
    let mut backoff = Backoff::new();
    loop {
        let pubsub = match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
            Ok(Ok(mut pubsub)) => match pubsub.subscribe(&*channel).await {
                Ok(()) => pubsub,
                Err(error) => {
                    tracing::warn!(%error, "event hub: SUBSCRIBE failed");
                    backoff.wait().await;
                    continue;
                }
            },
            Ok(Err(error)) => {
                tracing::warn!(%error, "event hub: cannot connect to Redis; retrying");
                backoff.wait().await;
                continue;
            }
            Err(_) => {
                tracing::warn!("event hub: connecting to Redis timed out; retrying");
                backoff.wait().await;
                continue;
            }
        };
        tracing::info!("event hub: subscribed to Redis");
        subscribed.set(true);
        metrics::gauge!("event_hub_connected").set(1.0);
        backoff.reset();
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            receive(message.get_payload_bytes(), origin, &fanout);
        }
        subscribed.set(false);
        metrics::gauge!("event_hub_connected").set(0.0);
        tracing::warn!("event hub: lost the Redis subscription; reconnecting");
        backoff.wait().await;
    }
}

/// An envelope's addressing, read without decoding its event.
#[derive(Deserialize)]
struct Address {
    origin: Uuid,
    user_id: Uuid,
}

/// What became of one message from Redis.
#[derive(Debug, PartialEq, Eq)]
enum Received {
    /// Published by this process, which delivered it already.
    Own,
    /// Nobody here listens to its user: not decoded further.
    NotListened,
    Delivered,
    Undecodable,
}

/// Fans out one message from Redis. Undecodable ones are logged and dropped.
fn receive(payload: &[u8], origin: Uuid, fanout: &Fanout) -> Received {
    let decoded = serde_json::from_slice::<Address>(payload).and_then(|address| {
        if address.origin == origin {
            return Ok(Received::Own);
        }
        if !fanout.has_subscribers(address.user_id) {
            return Ok(Received::NotListened);
        }
        let envelope = serde_json::from_slice::<Envelope>(payload)?;
        fanout.deliver(envelope.user_id, Arc::new(envelope.event));
        Ok(Received::Delivered)
    });
    decoded.unwrap_or_else(|error| {
        // The payload is not echoed: it is not ours, and could hold anything.
        tracing::warn!(%error, bytes = payload.len(), "event hub: dropped an undecodable event from Redis");
        metrics::counter!("events_dropped_total", "reason" => "undecodable").increment(1);
        Received::Undecodable
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit_event(origin: Uuid, user: Uuid) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "origin": origin, "user_id": user, "type": "audit",
            "event": { "id": "1", "connectionId": null, "action": "connection.tested",
                       "at": "2026-12-03T00:00:00Z", "actor": "user:x", "ip": null, "details": null }
        }))
        .unwrap()
    }

    #[test]
    fn undecodable_messages_are_dropped_without_harm() {
        let fanout = Fanout::default();
        let user = Uuid::new_v4();
        let mut rx = fanout.subscribe(user);
        let bad_event = format!(
            r#"{{"origin":"{}","user_id":"{user}","type":"audit","event":{{}}}}"#,
            Uuid::new_v4()
        );
        for garbage in [
            &b"not json"[..],
            b"{}",
            b"{\"origin\":1}",
            &[0xff, 0xfe][..],
            b"",
            bad_event.as_bytes(),
        ] {
            assert_eq!(receive(garbage, Uuid::new_v4(), &fanout), Received::Undecodable);
        }
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn own_events_are_skipped_and_others_delivered() {
        let fanout = Fanout::default();
        let (me, other, user) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut rx = fanout.subscribe(user);
        assert_eq!(receive(&audit_event(me, user), me, &fanout), Received::Own);
        assert!(rx.try_recv().is_none(), "this process delivered its own event already");
        assert_eq!(receive(&audit_event(other, user), me, &fanout), Received::Delivered);
        assert!(rx.try_recv().is_some_and(|event| event.is_ok()));
    }

    #[test]
    fn events_of_users_nobody_here_listens_to_are_not_decoded() {
        let fanout = Fanout::default();
        let (me, other, listened, unlistened) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut rx = fanout.subscribe(listened);
        assert_eq!(
            receive(&audit_event(other, unlistened), me, &fanout),
            Received::NotListened
        );
        // Its event is never looked at: not even a broken one is noticed.
        let broken = format!(r#"{{"origin":"{other}","user_id":"{unlistened}","type":"audit","event":{{}}}}"#);
        assert_eq!(receive(broken.as_bytes(), me, &fanout), Received::NotListened);
        assert!(rx.try_recv().is_none());
        // Once someone listens, the same user's events are delivered.
        let mut late = fanout.subscribe(unlistened);
        assert_eq!(
            receive(&audit_event(other, unlistened), me, &fanout),
            Received::Delivered
        );
        assert!(late.try_recv().is_some_and(|event| event.is_ok()));
    }
}
