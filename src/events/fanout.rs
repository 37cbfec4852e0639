//! Local fan-out: one bounded broadcast channel per user with subscribers in
//! this process. A slow receiver lags behind on its own copy of the channel
//! (it loses its oldest events and is told how many); senders never wait, so
//! one slow browser cannot slow anyone else down.

use super::Event;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;
use uuid::Uuid;

/// Events a subscriber may fall behind before it loses the oldest.
pub const PER_USER_BUFFER: usize = 256;
/// Drop channels nobody listens to any more, every this many subscriptions.
const PRUNE_EVERY: usize = 1024;

type Channels = HashMap<Uuid, broadcast::Sender<Arc<Event>>>;

#[derive(Clone, Default)]
pub struct Fanout {
    channels: Arc<RwLock<Channels>>,
    subscriptions: Arc<AtomicUsize>,
}

impl Fanout {
    pub fn subscribe(&self, user_id: Uuid) -> broadcast::Receiver<Arc<Event>> {
        if self.subscriptions.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.write().retain(|_, sender| sender.receiver_count() > 0);
        }
        if let Some(sender) = self.read().get(&user_id) {
            return sender.subscribe();
        }
        self.write()
            .entry(user_id)
            .or_insert_with(|| broadcast::channel(PER_USER_BUFFER).0)
            .subscribe()
    }

    /// Hands the event to every local receiver of the user; never blocks.
    pub fn deliver(&self, user_id: Uuid, event: Arc<Event>) {
        let delivered = match self.read().get(&user_id) {
            Some(sender) => sender.send(event).ok(),
            None => return,
        };
        match delivered {
            Some(receivers) => metrics::counter!("events_delivered_total").increment(receivers as u64),
            None => {
                // Every receiver is gone: forget the channel unless one came back meanwhile.
                let mut channels = self.write();
                if channels.get(&user_id).is_some_and(|s| s.receiver_count() == 0) {
                    channels.remove(&user_id);
                }
            }
        }
    }

    #[cfg(test)]
    fn channel_count(&self) -> usize {
        self.read().len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Channels> {
        self.channels.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Channels> {
        self.channels.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::views::AuditEntryView;
    use tokio::sync::broadcast::error::TryRecvError;

    fn event(n: usize) -> Arc<Event> {
        Arc::new(Event::Audit(AuditEntryView {
            id: async_graphql::ID(n.to_string()),
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
        }))
    }

    fn id_of(event: &Event) -> String {
        match event {
            Event::Audit(entry) => entry.id.0.clone(),
            Event::Connection(c) => c.connection_id.0.clone(),
        }
    }

    #[test]
    fn events_reach_only_the_users_own_receivers() {
        let fanout = Fanout::default();
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let mut alice_rx = fanout.subscribe(alice);
        let mut bob_rx = fanout.subscribe(bob);
        fanout.deliver(alice, event(1));
        assert_eq!(id_of(&alice_rx.try_recv().unwrap()), "1");
        assert!(matches!(bob_rx.try_recv(), Err(TryRecvError::Empty)));
    }

    #[test]
    fn a_slow_receiver_loses_its_oldest_events_and_is_told_how_many() {
        let fanout = Fanout::default();
        let user = Uuid::new_v4();
        let mut slow = fanout.subscribe(user);
        let mut fast = fanout.subscribe(user);
        for n in 0..PER_USER_BUFFER + 10 {
            fanout.deliver(user, event(n));
            // The fast one keeps up; the sender never waited for the slow one.
            assert_eq!(id_of(&fast.try_recv().unwrap()), n.to_string());
        }
        assert!(matches!(slow.try_recv(), Err(TryRecvError::Lagged(10))));
        assert_eq!(id_of(&slow.try_recv().unwrap()), "10");
    }

    #[test]
    fn channels_without_receivers_are_forgotten() {
        let fanout = Fanout::default();
        let user = Uuid::new_v4();
        drop(fanout.subscribe(user));
        assert_eq!(fanout.channel_count(), 1);
        fanout.deliver(user, event(1));
        assert_eq!(fanout.channel_count(), 0);
        // Nobody subscribed: nothing is kept.
        fanout.deliver(Uuid::new_v4(), event(2));
        assert_eq!(fanout.channel_count(), 0);
    }
}
