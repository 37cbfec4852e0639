//! Local fan-out: each subscriber in this process has its own bounded queue,
//! registered under its user. Delivering appends to the queues of the user's
//! subscribers and never waits; a subscriber that falls [`PER_USER_BUFFER`]
//! events behind loses its oldest ones and is told how many, so one slow
//! browser cannot slow anyone else down.
//!
//! A queue holds memory only for the events actually waiting in it: an idle
//! subscriber costs about a hundred bytes, not a preallocated ring (a
//! `tokio::sync::broadcast` channel of this capacity is 8 KiB per user,
//! which dominated the memory of 10,000 idle subscribers; see BENCHMARKS.md).

use super::Event;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use tokio::sync::Notify;
use uuid::Uuid;

/// Events a subscriber may fall behind before it loses the oldest.
pub const PER_USER_BUFFER: usize = 256;
/// A queue that grew past this for a burst gives the memory back once drained.
const KEEP_CAPACITY: usize = 16;

/// Per user, the queues of its subscribers. Delivery holds the user's lock,
/// so every subscriber of a user sees that user's events in the same order.
type Queues = HashMap<Uuid, Mutex<Vec<Arc<Queue>>>>;

#[derive(Clone, Default)]
pub struct Fanout {
    queues: Arc<RwLock<Queues>>,
}

/// One subscriber's events, waiting to be taken.
#[derive(Default)]
struct Queue {
    pending: Mutex<Pending>,
    ready: Notify,
}

#[derive(Default)]
struct Pending {
    events: VecDeque<Arc<Event>>,
    /// Events dropped since the subscriber last heard about it.
    lost: u64,
}

/// The subscriber fell behind and lost this many of its oldest events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged(pub u64);

impl Fanout {
    pub fn subscribe(&self, user_id: Uuid) -> Receiver {
        let queue = Arc::new(Queue::default());
        let mut queues = write(&self.queues);
        let subscribers = queues.entry(user_id).or_default();
        subscribers
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(queue.clone());
        Receiver {
            queue,
            user_id,
            queues: self.queues.clone(),
        }
    }

    /// Hands the event to every local subscriber of the user; never blocks.
    pub fn deliver(&self, user_id: Uuid, event: Arc<Event>) {
        let queues = read(&self.queues);
        let Some(subscribers) = queues.get(&user_id) else {
            return;
        };
        let subscribers = subscribers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for queue in subscribers.iter() {
            queue.push(event.clone());
        }
        metrics::counter!("events_delivered_total").increment(subscribers.len() as u64);
    }

    /// Whether anyone in this process listens to `user_id` (a process
    /// decodes only the events it has subscribers for).
    pub fn has_subscribers(&self, user_id: Uuid) -> bool {
        read(&self.queues).contains_key(&user_id)
    }

    #[cfg(test)]
    fn user_count(&self) -> usize {
        read(&self.queues).len()
    }
}

impl Queue {
    fn push(&self, event: Arc<Event>) {
        {
            let mut pending = lock(&self.pending);
            if pending.events.len() >= PER_USER_BUFFER {
                pending.events.pop_front();
                pending.lost += 1;
            }
            pending.events.push_back(event);
        }
        // Stores a permit when the subscriber is not waiting, so no wake-up is missed.
        self.ready.notify_one();
    }

    fn take(&self) -> Option<Result<Arc<Event>, Lagged>> {
        let mut pending = lock(&self.pending);
        if pending.lost > 0 {
            return Some(Err(Lagged(std::mem::take(&mut pending.lost))));
        }
        let event = pending.events.pop_front()?;
        if pending.events.is_empty() && pending.events.capacity() > KEEP_CAPACITY {
            pending.events = VecDeque::new();
        }
        Some(Ok(event))
    }
}

/// A subscriber's end: the user's events from the moment it subscribed.
/// Dropping it unsubscribes.
pub struct Receiver {
    queue: Arc<Queue>,
    user_id: Uuid,
    queues: Arc<RwLock<Queues>>,
}

impl Receiver {
    /// The next event, or how many were lost first when this subscriber fell
    /// behind (the events after them follow in order).
    pub async fn recv(&mut self) -> Result<Arc<Event>, Lagged> {
        loop {
            if let Some(next) = self.queue.take() {
                return next;
            }
            self.queue.ready.notified().await;
        }
    }

    /// Like [`Self::recv`], without waiting: `None` when nothing is pending.
    pub fn try_recv(&mut self) -> Option<Result<Arc<Event>, Lagged>> {
        self.queue.take()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut queues = write(&self.queues);
        if let Some(subscribers) = queues.get_mut(&self.user_id) {
            let subscribers = subscribers.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
            subscribers.retain(|queue| !Arc::ptr_eq(queue, &self.queue));
            if subscribers.is_empty() {
                queues.remove(&self.user_id);
            }
        }
    }
}

fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read(queues: &RwLock<Queues>) -> std::sync::RwLockReadGuard<'_, Queues> {
    queues.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(queues: &RwLock<Queues>) -> std::sync::RwLockWriteGuard<'_, Queues> {
    queues.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::views::AuditEntryView;
    use std::time::Duration;

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

    fn next_id(rx: &mut Receiver) -> String {
        id_of(&rx.try_recv().expect("an event").expect("not lagged"))
    }

    #[test]
    fn events_reach_only_the_users_own_receivers() {
        let fanout = Fanout::default();
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let mut alice_rx = fanout.subscribe(alice);
        let mut alice_tab = fanout.subscribe(alice);
        let mut bob_rx = fanout.subscribe(bob);
        fanout.deliver(alice, event(1));
        assert_eq!(next_id(&mut alice_rx), "1");
        assert_eq!(next_id(&mut alice_tab), "1");
        assert!(bob_rx.try_recv().is_none());
        assert!(alice_rx.try_recv().is_none(), "each receiver gets an event once");
    }

    #[test]
    fn events_arrive_in_order_and_only_those_after_subscribing() {
        let fanout = Fanout::default();
        let user = Uuid::new_v4();
        let mut early = fanout.subscribe(user);
        fanout.deliver(user, event(1));
        let mut late = fanout.subscribe(user);
        fanout.deliver(user, event(2));
        fanout.deliver(user, event(3));
        assert_eq!(
            [next_id(&mut early), next_id(&mut early), next_id(&mut early)],
            ["1", "2", "3"]
        );
        assert_eq!([next_id(&mut late), next_id(&mut late)], ["2", "3"]);
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
            assert_eq!(next_id(&mut fast), n.to_string());
        }
        assert_eq!(slow.try_recv().map(|r| r.err()), Some(Some(Lagged(10))));
        assert_eq!(next_id(&mut slow), "10");
        // Told once; the rest follows in order.
        assert_eq!(next_id(&mut slow), "11");
        for _ in 12..PER_USER_BUFFER + 10 {
            slow.try_recv().expect("an event").expect("not lagged again");
        }
        assert!(slow.try_recv().is_none());
    }

    #[test]
    fn receivers_unsubscribe_when_dropped() {
        let fanout = Fanout::default();
        let user = Uuid::new_v4();
        let first = fanout.subscribe(user);
        let mut second = fanout.subscribe(user);
        drop(first);
        assert_eq!(fanout.user_count(), 1);
        fanout.deliver(user, event(1));
        assert_eq!(next_id(&mut second), "1");
        drop(second);
        assert_eq!(fanout.user_count(), 0);
        // Nobody subscribed: nothing is kept.
        fanout.deliver(user, event(2));
        fanout.deliver(Uuid::new_v4(), event(3));
        assert_eq!(fanout.user_count(), 0);
    }

    #[test]
    fn an_idle_queue_holds_no_event_memory() {
        let fanout = Fanout::default();
        let user = Uuid::new_v4();
        let mut rx = fanout.subscribe(user);
        assert_eq!(lock(&rx.queue.pending).events.capacity(), 0);
        for n in 0..100 {
            fanout.deliver(user, event(n));
        }
        while rx.try_recv().is_some() {}
        // A burst's memory is given back once it is drained.
        assert!(lock(&rx.queue.pending).events.capacity() <= KEEP_CAPACITY);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_each_event() {
        let fanout = Fanout::default();
        let user = Uuid::new_v4();
        let mut rx = fanout.subscribe(user);
        let waiting = tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..3 {
                ids.push(id_of(&rx.recv().await.expect("not lagged")));
            }
            ids
        });
        for n in 1..=3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            fanout.deliver(user, event(n));
        }
        let ids = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(ids, ["1", "2", "3"]);
    }
}
