//! The event hub: what changed, pushed to the subscribers of the user it
//! belongs to. One [`EventHub`] per process; its transport is in-process (the
//! embedded default) or Redis pub/sub (`REDIS_URL`), so that an event caused
//! by any process reaches subscribers on every process.
//!
//! Publishing never fails or blocks the caller: it happens after the database
//! commit, delivers to this process's subscribers at once and hands the event
//! to the transport. Pub/sub is at-most-once; a subscriber that needs the
//! exact state re-reads it (the frontend refetches on reconnect).

mod fanout;
mod redis;

use crate::service::views::{AuditEntryView, ConnectionEventView};
use fanout::Fanout;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use uuid::Uuid;

pub use fanout::{Lagged, PER_USER_BUFFER, Receiver};

/// Something a user's subscribers should hear about.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "event", rename_all = "snake_case")]
pub enum Event {
    Connection(ConnectionEventView),
    Audit(AuditEntryView),
}

/// An event addressed to one user, as it travels between processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The process that published it (it has delivered it locally already).
    pub origin: Uuid,
    pub user_id: Uuid,
    #[serde(flatten)]
    pub event: Event,
}

/// Whether the hub can reach the other processes (always, in-process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubStatus {
    InProcess,
    Connected,
    Disconnected,
}

/// The process's hub: local fan-out plus the transport between processes.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

struct Inner {
    origin: Uuid,
    fanout: Fanout,
    transport: Transport,
}

enum Transport {
    InProcess,
    Redis(redis::RedisTransport),
}

impl EventHub {
    /// The embedded default: events reach this process's subscribers only.
    pub fn in_process() -> Self {
        Self {
            inner: Arc::new(Inner {
                origin: Uuid::new_v4(),
                fanout: Fanout::default(),
                transport: Transport::InProcess,
            }),
        }
    }

    /// Shares events with every process on the same Redis. Returns at once:
    /// connecting (and reconnecting, with backoff) happens in the background,
    /// so a Redis outage never stops the process from starting or serving.
    pub fn redis(url: &str, channel: &str) -> anyhow::Result<Self> {
        let origin = Uuid::new_v4();
        let fanout = Fanout::default();
        let transport = redis::RedisTransport::start(url, channel, origin, fanout.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                origin,
                fanout,
                transport: Transport::Redis(transport),
            }),
        })
    }

    /// Delivers to this process's subscribers of `user_id`, then to the other processes.
    pub fn publish(&self, user_id: Uuid, event: Event) {
        let envelope = Envelope {
            origin: self.inner.origin,
            user_id,
            event,
        };
        metrics::counter!("events_published_total").increment(1);
        if let Transport::Redis(redis) = &self.inner.transport {
            redis.publish(&envelope);
        }
        self.inner.fanout.deliver(envelope.user_id, Arc::new(envelope.event));
    }

    /// Every event of `user_id` from now on. A receiver that falls more than
    /// [`PER_USER_BUFFER`] events behind loses its oldest ones (and learns how many).
    pub fn subscribe(&self, user_id: Uuid) -> Receiver {
        self.inner.fanout.subscribe(user_id)
    }

    pub fn status(&self) -> HubStatus {
        match &self.inner.transport {
            Transport::InProcess => HubStatus::InProcess,
            Transport::Redis(redis) if redis.connected() => HubStatus::Connected,
            Transport::Redis(_) => HubStatus::Disconnected,
        }
    }

    /// Stops the background tasks (tests start and stop many hubs in one process).
    pub fn shutdown(&self) {
        if let Transport::Redis(redis) = &self.inner.transport {
            redis.shutdown();
        }
    }
}

/// A flag shared between a background task and its owner.
#[derive(Debug, Default, Clone)]
struct Flag(Arc<AtomicBool>);

impl Flag {
    fn set(&self, value: bool) {
        self.0.store(value, Ordering::Relaxed);
    }
    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
