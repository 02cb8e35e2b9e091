//! Ordering a project's event after its VMs' events. The VM events come
//! from the hypervisor's lifecycle stream, relayed on its own time, so a
//! watcher could otherwise read `compose up` before the `start` of the VMs
//! it brought up. The use case subscribes before its steps run and, once
//! they are done, waits (for at most [`SETTLE`]) until the source has
//! published the awaited VM events; a hypervisor that never reports them
//! delays the project's event by that much, never loses it.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use vmr_ports::driving::events::{EventFilter, EventStream, EventType, EventUseCases, Watched};

/// The longest a project's event waits for its VMs' events.
pub const SETTLE: Duration = Duration::from_secs(5);

/// A subscription to VM events, taken before the steps run.
pub struct Settle {
    stream: Option<EventStream>,
    action: &'static str,
    names: Vec<String>,
}

fn subscribe(watched: Option<&dyn EventUseCases>) -> Option<EventStream> {
    let filter = EventFilter {
        types: vec![EventType::Vm],
        ..EventFilter::default()
    };
    watched.and_then(|w| w.watch(filter).ok())
}

impl Settle {
    /// Will wait for `action` of every VM in `names`.
    pub fn watch(
        watched: Option<&dyn EventUseCases>,
        action: &'static str,
        names: Vec<String>,
    ) -> Self {
        Self {
            stream: subscribe(watched),
            action,
            names,
        }
    }

    /// Will wait for VMs named later ([`Self::wait_for`]).
    pub fn watch_project(watched: Option<&dyn EventUseCases>) -> Self {
        Self::watch(watched, "", Vec::new())
    }

    pub async fn wait(self) {
        let (action, names) = (self.action, self.names.clone());
        self.wait_for(action, &names).await;
    }

    /// Waits until `action` of each of `names` was published.
    pub async fn wait_for(self, action: &str, names: &[String]) {
        let Some(mut stream) = self.stream else {
            return;
        };
        let mut missing: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let seen = async {
            while !missing.is_empty() {
                match stream.next().await {
                    Some(Watched::Event(e)) if e.action == action => {
                        missing.remove(e.name.as_str());
                    }
                    Some(Watched::Event(_)) => {}
                    // Lost in a burst: the order can no longer be known.
                    Some(Watched::Dropped { .. }) | None => return,
                }
            }
        };
        if tokio::time::timeout(SETTLE, seen).await.is_err() {
            tracing::debug!(
                action,
                "the hypervisor did not report every VM event in time"
            );
        }
    }
}
