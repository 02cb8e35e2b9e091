//! Events: what happened to VMs, images, networks and compose projects, as
//! `docker events` shows them. The use cases publish them to one source; a
//! watcher gets them in order, filtered, and may resume from a sequence
//! number or a time within what the source still remembers.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use futures::stream::BoxStream;

use super::UseCaseError;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    Vm,
    Image,
    Network,
    Compose,
}

impl EventType {
    pub const ALL: [EventType; 4] = [Self::Vm, Self::Image, Self::Network, Self::Compose];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vm => "vm",
            Self::Image => "image",
            Self::Network => "network",
            Self::Compose => "compose",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its place in the daemon's sequence, from 1, without gaps.
    pub sequence: u64,
    pub time: SystemTime,
    pub kind: EventType,
    /// `import`, `tag`, `remove`, `pull`, `push` (image); `create`, `start`,
    /// `stop`, `die`, `restart`, `destroy` (vm); `create`, `start`, `stop`,
    /// `remove` (network); `up`, `down` (compose).
    pub action: String,
    /// The image reference, VM, network or project name.
    pub name: String,
    /// What else is known: `cause` of a VM's stop or restart, `digest`,
    /// `source` of a tag, `project` of a VM or network.
    pub attributes: BTreeMap<String, String>,
}

/// An event as a use case publishes it; the source numbers and dates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: EventType,
    pub action: &'static str,
    pub name: String,
    pub attributes: BTreeMap<String, String>,
}

impl NewEvent {
    pub fn new(kind: EventType, action: &'static str, name: impl Into<String>) -> Self {
        Self {
            kind,
            action,
            name: name.into(),
            attributes: BTreeMap::new(),
        }
    }

    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.attributes.insert(key.to_string(), value.into());
        self
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Since {
    /// Only what happens from now on.
    #[default]
    Now,
    /// What came after this sequence number (a cursor from an earlier watch).
    Sequence(u64),
    /// What happened at or after this time.
    Time(SystemTime),
}

/// Which events a watcher wants: every listed type (any when empty) and
/// every listed name (any when empty), as `docker events --filter`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub types: Vec<EventType>,
    pub names: Vec<String>,
    pub since: Since,
}

impl EventFilter {
    pub fn matches(&self, event: &Event) -> bool {
        (self.types.is_empty() || self.types.contains(&event.kind))
            && (self.names.is_empty() || self.names.contains(&event.name))
    }
}

/// What a watch yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched {
    Event(Event),
    /// The watcher fell behind and this many events went past it unseen
    /// (or a resume asked for more than the source still remembers); the
    /// events after this marker follow on.
    Dropped {
        count: u64,
    },
}

pub type EventStream = BoxStream<'static, Watched>;

/// Watching events.
pub trait EventUseCases: Send + Sync {
    /// Events matching `filter`, from where it says, until the stream is
    /// dropped.
    fn watch(&self, filter: EventFilter) -> Result<EventStream, UseCaseError>;
}

/// Publishing events: what the use cases are given.
pub trait EventPublisher: Send + Sync {
    fn publish(&self, event: NewEvent);
}
