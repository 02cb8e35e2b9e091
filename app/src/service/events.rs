//! The daemon's one event source. Use cases publish to it; watchers
//! (`WatchEvents`, library users) subscribe. Events get a sequence number
//! under one lock, so every watcher sees them in the same order.
//!
//! Memory is bounded whatever the watchers do: the source remembers the
//! last [`REMEMBERED`] events (for resuming with a cursor or a time), and
//! each watcher may fall at most [`BACKLOG`] events behind, in one buffer
//! shared by all of them (a broadcast ring). A watcher further behind
//! loses the oldest events it has not read and gets a
//! [`Watched::Dropped`] marker with their count in their place; no
//! publisher ever waits for a watcher.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use vmr_ports::driving::UseCaseError;
use vmr_ports::driving::events::EventType;
use vmr_ports::driving::events::{
    Event, EventFilter, EventPublisher, EventStream, EventUseCases, NewEvent, Since, Watched,
};
use vmr_ports::{LifecycleEvent, LifecycleEvents, LifecycleKind, StopReason};

/// Events kept for resuming.
pub const REMEMBERED: usize = 1024;
/// How far a watcher may fall behind before it loses events.
pub const BACKLOG: usize = 1024;

#[derive(Debug)]
struct Recent {
    /// The sequence number of the last event published (0: none yet).
    last: u64,
    events: VecDeque<Event>,
    capacity: usize,
}

/// The event source.
#[derive(Debug)]
pub struct EventBus {
    recent: Mutex<Recent>,
    live: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::with_capacity(REMEMBERED, BACKLOG)
    }
}

impl EventBus {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A source remembering `remembered` events, letting a watcher fall
    /// `backlog` events behind.
    pub fn with_capacity(remembered: usize, backlog: usize) -> Self {
        let (live, _) = broadcast::channel(backlog.max(1));
        Self {
            recent: Mutex::new(Recent {
                last: 0,
                events: VecDeque::with_capacity(remembered),
                capacity: remembered.max(1),
            }),
            live,
        }
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        // A panic while holding the lock leaves the ring consistent (each
        // step is one push or pop), so a poisoned lock is still usable.
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl EventPublisher for EventBus {
    fn publish(&self, event: NewEvent) {
        let mut recent = self.recent();
        recent.last += 1;
        let event = Event {
            sequence: recent.last,
            time: SystemTime::now(),
            kind: event.kind,
            action: event.action.to_string(),
            name: event.name,
            attributes: event.attributes,
        };
        tracing::debug!(sequence = event.sequence, kind = %event.kind, action = %event.action, name = %event.name, "event");
        if recent.events.len() == recent.capacity {
            recent.events.pop_front();
        }
        recent.events.push_back(event.clone());
        // Sent under the lock: the live order is the sequence order, and a
        // watcher subscribing under the same lock misses nothing between
        // what it replays and what it receives. No watcher is no error.
        let _ = self.live.send(event);
    }
}

impl EventUseCases for EventBus {
    fn watch(&self, filter: EventFilter) -> Result<EventStream, UseCaseError> {
        let recent = self.recent();
        let live = self.live.subscribe();
        let first_kept = recent
            .events
            .front()
            .map_or(recent.last + 1, |e| e.sequence);
        let forgotten = first_kept - 1;
        let (missed, replay): (u64, Vec<Event>) = match filter.since {
            Since::Now => (0, Vec::new()),
            Since::Sequence(after) => {
                if after > recent.last {
                    return Err(UseCaseError::invalid(
                        "since",
                        format!(
                            "sequence {after} has not happened yet (the last event is {})",
                            recent.last
                        ),
                    ));
                }
                let missed = forgotten.saturating_sub(after);
                let replay = recent
                    .events
                    .iter()
                    .filter(|e| e.sequence > after)
                    .cloned()
                    .collect();
                (missed, replay)
            }
            Since::Time(from) => {
                let replay: Vec<Event> = recent
                    .events
                    .iter()
                    .filter(|e| e.time >= from)
                    .cloned()
                    .collect();
                // Forgotten events may have happened after `from` too when
                // even the oldest one kept did.
                let oldest_after = recent.events.front().is_some_and(|e| e.time >= from);
                let missed = if oldest_after { forgotten } else { 0 };
                (missed, replay)
            }
        };
        drop(recent);
        let head = (missed > 0).then_some(Watched::Dropped { count: missed });
        let replay_filter = filter.clone();
        let replayed = futures::stream::iter(
            head.into_iter().chain(
                replay
                    .into_iter()
                    .filter(move |e| replay_filter.matches(e))
                    .map(Watched::Event),
            ),
        );
        let live = BroadcastStream::new(live).filter_map(move |item| {
            let watched = match item {
                Ok(event) if filter.matches(&event) => Some(Watched::Event(event)),
                Ok(_) => None,
                Err(BroadcastStreamRecvError::Lagged(count)) => Some(Watched::Dropped { count }),
            };
            std::future::ready(watched)
        });
        Ok(replayed.chain(live).boxed())
    }
}

/// The `vm` event of a hypervisor lifecycle event: `create`, `start`,
/// `stop` (requested through vmr, a guest shutdown, a destroy from outside),
/// `die` (the guest or its emulator crashed), `destroy` (undefined); the
/// `cause` attribute says which stop.
pub fn vm_event(event: &LifecycleEvent) -> NewEvent {
    let (action, cause) = match event.kind {
        LifecycleKind::Defined => ("create", None),
        LifecycleKind::Started => ("start", None),
        LifecycleKind::Stopped(StopReason::Crashed) => ("die", Some(StopReason::Crashed)),
        LifecycleKind::Stopped(reason) => ("stop", Some(reason)),
        LifecycleKind::Undefined => ("destroy", None),
    };
    let event = NewEvent::new(EventType::Vm, action, event.vm.as_str());
    match cause {
        Some(reason) => event.with("cause", reason.as_str()),
        None => event,
    }
}

/// Publishes the hypervisor's lifecycle events while it lives.
#[derive(Debug)]
pub struct LifecycleRelay(JoinHandle<()>);

impl Drop for LifecycleRelay {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl LifecycleRelay {
    /// Subscribes now, so nothing that happens from here on is missed.
    pub fn spawn(source: &dyn LifecycleEvents, events: Publisher) -> Self {
        let mut lifecycle = source.events();
        Self(tokio::spawn(async move {
            while let Some(event) = lifecycle.next().await {
                events.publish(vm_event(&event));
            }
            tracing::warn!(
                "the hypervisor's lifecycle events ended; VM events are no longer published"
            );
        }))
    }
}

/// A publisher that keeps nothing: for use cases assembled without a source
/// (unit tests, embedders that do not watch).
#[derive(Debug, Default)]
pub struct NoEvents;

impl EventPublisher for NoEvents {
    fn publish(&self, _event: NewEvent) {}
}

pub type Publisher = Arc<dyn EventPublisher>;

/// The publisher use cases start with until assembly gives them the bus.
pub fn no_events() -> Publisher {
    Arc::new(NoEvents)
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
