//! The compose use cases: `config` validates a VMCompose file into its plan;
//! `up` observes what exists, decides each step (see `up`), then runs them
//! in a task of its own that streams per-service events; `down` removes the
//! project's VMs, their runtime files and the networks it created, found by
//! the project label vmr keeps with each of them; `ps` lists the services.
//! One `up` or `down` per project at a time: a second one is refused with
//! FAILED_PRECONDITION rather than queued behind a long boot. A finished
//! `up` and a `down` are published to the daemon's event source (`compose`
//! events `up` and `down`), beside the VM and network events of their steps;
//! each comes after its VMs' `start` (or `destroy`) events, which the
//! hypervisor reports on its own time (see `settle`).

mod deps;
mod project;
mod readiness;
mod settle;
mod up;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::OwnedMutexGuard;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, info_span};
use vmr_ports::driving::{
    ComposeConfig, ComposeDownOutcome, ComposeEventKind, ComposeEventStream, ComposeSource,
    ComposeStatus, ComposeUseCases, NetworkUseCases, UseCaseError,
};

use crate::service::VmService;
use crate::service::events::{Publisher, no_events};
use vmr_ports::driving::events::{EventType, EventUseCases, NewEvent};

pub use deps::{Deps, blueprint};
pub use up::ReadySettings;
use up::{Events, UpSteps};

/// The environment variable that sets the readiness timeout, in seconds.
pub const READY_TIMEOUT_ENV: &str = "VM_REGISTRY_COMPOSE_READY_TIMEOUT";
/// How long a `condition: ready` dependency may take by default: a cloud
/// image's first boot under TCG emulation takes a few minutes.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);

/// Tunables of the compose use cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComposeSettings {
    pub ready: ReadySettings,
}

impl Default for ComposeSettings {
    fn default() -> Self {
        Self {
            ready: ReadySettings {
                timeout: DEFAULT_READY_TIMEOUT,
                poll: Duration::from_millis(500),
            },
        }
    }
}

impl ComposeSettings {
    /// The defaults, with the readiness timeout taken from
    /// `VM_REGISTRY_COMPOSE_READY_TIMEOUT` (whole seconds) when it is set.
    pub fn from_env() -> Result<Self, String> {
        let mut settings = Self::default();
        if let Some(raw) = std::env::var_os(READY_TIMEOUT_ENV) {
            let seconds = raw
                .to_str()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|s| *s > 0)
                .ok_or_else(|| {
                    format!("{READY_TIMEOUT_ENV}: {raw:?} is not a number of seconds larger than 0")
                })?;
            settings.ready.timeout = Duration::from_secs(seconds);
        }
        Ok(settings)
    }
}

/// Per-project exclusion of `up` and `down`.
#[derive(Default)]
struct ProjectLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl ProjectLocks {
    fn try_lock(&self, project: &str) -> Result<OwnedMutexGuard<()>, UseCaseError> {
        let lock = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(project.to_owned())
            .or_default()
            .clone();
        lock.try_lock_owned().map_err(|_| {
            UseCaseError::precondition(format!(
                "project {project}: another `compose up` or `compose down` of this project is running; wait for it to finish"
            ))
        })
    }
}

/// The compose use cases over the VM and network use cases.
pub struct ComposeService {
    deps: Arc<Deps>,
    settings: ComposeSettings,
    locks: ProjectLocks,
    events: Publisher,
    /// The same source, read to order the project's events after its VMs'.
    watched: Option<Arc<dyn EventUseCases>>,
}

impl ComposeService {
    pub fn new(
        vms: Arc<VmService>,
        networks: Arc<dyn NetworkUseCases>,
        settings: ComposeSettings,
    ) -> Self {
        Self {
            deps: Arc::new(Deps { vms, networks }),
            settings,
            locks: ProjectLocks::default(),
            events: no_events(),
            watched: None,
        }
    }

    /// Publishes each project brought up or down to `events`, after the
    /// VM events `watched` (the same source) reports for it.
    #[must_use]
    pub fn with_events(mut self, events: Publisher, watched: Arc<dyn EventUseCases>) -> Self {
        self.events = events;
        self.watched = Some(watched);
        self
    }
}

#[async_trait]
impl ComposeUseCases for ComposeService {
    async fn config(&self, source: ComposeSource) -> Result<ComposeConfig, UseCaseError> {
        let plan = project::plan_of(&source)?;
        Ok(ComposeConfig {
            project: plan.project.clone(),
            normalized_yaml: plan.to_yaml(),
        })
    }

    async fn up(&self, source: ComposeSource) -> Result<ComposeEventStream, UseCaseError> {
        let mut plan = project::plan_of(&source)?;
        project::add_ssh_keys(&mut plan, &source.ssh_authorized_keys)?;
        let guard = self.locks.try_lock(&plan.project)?;
        let steps = UpSteps::observe(&self.deps, &plan).await?;
        let (events, rx) = Events::new(&plan.project, steps.most_events());
        let settled = settle::Settle::watch(self.watched.as_deref(), "start", steps.started_vms());
        let deps = self.deps.clone();
        let ready = self.settings.ready;
        let published = self.events.clone();
        let services = steps.levels.iter().map(Vec::len).sum::<usize>();
        let span = info_span!("compose up", project = %plan.project);
        tokio::spawn(
            async move {
                // Held until the last step is done, even if the client left,
                // and released before the client hears the end, so that it
                // may run the next `up` or `down` at once.
                let project = steps.project.clone();
                let result = steps.run(deps, events.clone(), ready).await;
                drop(guard);
                match result {
                    Ok(()) => {
                        settled.wait().await;
                        published.publish(
                            NewEvent::new(EventType::Compose, "up", project)
                                .with("services", services.to_string()),
                        );
                        events.project(ComposeEventKind::Done, "");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "compose up failed");
                        events.fail(e);
                    }
                }
            }
            .instrument(span),
        );
        Ok(ReceiverStream::new(rx).boxed())
    }

    async fn ps(&self, source: ComposeSource) -> Result<ComposeStatus, UseCaseError> {
        project::status(&self.deps, &source).await
    }

    async fn down(&self, source: ComposeSource) -> Result<ComposeDownOutcome, UseCaseError> {
        let (name, plan) = project::project_of(&source)?;
        let _guard = self.locks.try_lock(&name)?;
        // Subscribed before anything is removed; only the removed VMs are
        // awaited.
        let watch = settle::Settle::watch_project(self.watched.as_deref());
        let outcome = project::down(&self.deps, &name, plan.as_ref()).await?;
        watch.wait_for("destroy", &outcome.removed_vms).await;
        self.events.publish(
            NewEvent::new(EventType::Compose, "down", &outcome.project)
                .with("vms", outcome.removed_vms.len().to_string())
                .with("networks", outcome.removed_networks.len().to_string()),
        );
        Ok(outcome)
    }
}
