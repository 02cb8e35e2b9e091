//! Restart policies, enforced by a task that follows the hypervisor's
//! lifecycle events. `no` never restarts; `on-failure` restarts a VM whose
//! guest or emulator crashed (a killed QEMU included); `always` restarts
//! after any stop not asked for through vmr; `unless-stopped` likewise.
//! Restarts back off exponentially (1 s doubling to 60 s), and the count
//! starts over once a VM has run for five minutes.
//!
//! When the daemon starts, VMs that went down while it was away are
//! reconciled like docker does: `on-failure` ones that crashed, `always`
//! ones that are stopped (even through vmr), and `unless-stopped` ones that
//! vmr did not stop are started. VMs never started (`created`) are left
//! alone. Stops through vmr are known from the event (`Requested`) and from
//! the marker the VM service leaves in the runtime directory, which survives
//! daemon restarts.
//!
//! The same reconcile runs again when the hypervisor's connection comes
//! back after an outage (libvirtd restarted), minus the `always` exception:
//! a stop through vmr still stands then. When the hypervisor is down as the
//! daemon starts, the start-up reconcile waits for the first reconnect.
//!
//! Restarts waiting for their delay are futures the task itself polls, one
//! per VM at most (a VM with a restart pending is not scheduled again), so
//! what the task holds is bounded by the number of VMs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, FuturesUnordered};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use vmr_domain::vm::{RestartPolicy, VmName, VmState};
use vmr_ports::{
    HypervisorError, LifecycleEvent, LifecycleEvents, LifecycleKind, StopReason, VmDriver,
};

use super::events::{Publisher, no_events};
use super::vms::RuntimeDirs;
use vmr_ports::driving::events::{EventType, NewEvent};

/// How long to wait before each restart of a VM that keeps stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay; each further restart doubles it.
    pub initial: Duration,
    pub max: Duration,
    /// A VM that ran this long before stopping starts over at `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(5 * 60),
        }
    }
}

impl Backoff {
    /// The delay before the restart that follows `restarts` earlier ones.
    pub fn delay(&self, restarts: u32) -> Duration {
        let factor = 1u32.checked_shl(restarts.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Whether a VM that just stopped for `reason` is started again.
pub fn restarts_after_stop(
    policy: RestartPolicy,
    reason: StopReason,
    stopped_by_vmr: bool,
) -> bool {
    if reason == StopReason::Requested || stopped_by_vmr {
        return false;
    }
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure => reason == StopReason::Crashed,
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
    }
}

/// Whether a VM found in `state` when the daemon starts is started.
pub fn restarts_at_startup(policy: RestartPolicy, state: VmState, stopped_by_vmr: bool) -> bool {
    if state.is_active() || state == VmState::Created {
        return false;
    }
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure => state == VmState::Crashed && !stopped_by_vmr,
        RestartPolicy::Always => true,
        RestartPolicy::UnlessStopped => !stopped_by_vmr,
    }
}

/// Why the VMs are reconciled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reconcile {
    /// The daemon started (or the hypervisor was first reached).
    Startup,
    /// The hypervisor came back after an outage.
    Reconnect,
}

/// What the supervisor remembers about one VM.
#[derive(Debug, Default)]
struct Track {
    /// Restarts since the VM last ran for `reset_after`.
    restarts: u32,
    /// When it last started, as far as this daemon saw.
    started_at: Option<Instant>,
    /// A restart is scheduled.
    pending: bool,
    /// Why, for the `restart` event.
    cause: String,
}

/// The restarts waiting for their time; yields each VM when it is due.
#[derive(Default)]
struct Due(FuturesUnordered<BoxFuture<'static, VmName>>);

impl Due {
    fn now(&mut self, name: VmName) {
        self.0.push(Box::pin(std::future::ready(name)));
    }

    fn after(&mut self, delay: Duration, name: VmName) {
        self.0.push(Box::pin(async move {
            tokio::time::sleep(delay).await;
            name
        }));
    }

    /// The next VM due; while nothing is waiting, this waits (rather than
    /// ending, as the set's own stream would).
    async fn next(&mut self) -> VmName {
        match self.0.next().await {
            Some(name) => name,
            None => std::future::pending().await,
        }
    }
}

/// Enforces restart policies.
pub struct RestartSupervisor {
    hypervisor: Arc<dyn VmDriver>,
    lifecycle: Arc<dyn LifecycleEvents>,
    runtime: RuntimeDirs,
    backoff: Backoff,
    events: Publisher,
}

/// The running supervisor; stops it when dropped.
#[derive(Debug)]
pub struct RestartTask(JoinHandle<()>);

impl Drop for RestartTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl RestartSupervisor {
    /// Follows `lifecycle`'s events and restarts `hypervisor`'s VMs.
    pub fn new(
        hypervisor: Arc<dyn VmDriver>,
        lifecycle: Arc<dyn LifecycleEvents>,
        runtime: RuntimeDirs,
    ) -> Self {
        Self {
            hypervisor,
            lifecycle,
            runtime,
            backoff: Backoff::default(),
            events: no_events(),
        }
    }

    /// Publishes each restart, with its cause, to `events`.
    #[must_use]
    pub fn with_events(mut self, events: Publisher) -> Self {
        self.events = events;
        self
    }

    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Subscribes to lifecycle events (so nothing from now on is missed),
    /// reconciles the VMs as they are, then follows the events.
    pub fn spawn(self) -> RestartTask {
        let events = self.lifecycle.events();
        let reconnects = self.lifecycle.reconnects();
        RestartTask(tokio::spawn(self.run(events, reconnects)))
    }

    async fn run(
        self,
        mut events: BoxStream<'static, LifecycleEvent>,
        mut reconnects: BoxStream<'static, ()>,
    ) {
        let mut due = Due::default();
        let mut tracks: HashMap<VmName, Track> = HashMap::new();
        // Until the start-up reconcile could list the VMs (the hypervisor
        // may be down when the daemon starts), it is run on each reconnect.
        let mut started_up = self
            .reconcile(Reconcile::Startup, &mut tracks, &mut due)
            .await;
        loop {
            tokio::select! {
                Some(()) = reconnects.next() => {
                    let kind = if started_up { Reconcile::Reconnect } else { Reconcile::Startup };
                    let listed = self.reconcile(kind, &mut tracks, &mut due).await;
                    started_up = started_up || listed;
                }
                event = events.next() => match event {
                    Some(event) => self.on_event(event, &mut tracks, &mut due).await,
                    None => {
                        warn!("the hypervisor's lifecycle events ended; restart policies are no longer enforced");
                        return;
                    }
                },
                name = due.next() => self.on_due(name, &mut tracks, &mut due).await,
            }
        }
    }

    /// Starts the VMs whose policy says so. Returns whether the VMs could
    /// be listed.
    async fn reconcile(
        &self,
        kind: Reconcile,
        tracks: &mut HashMap<VmName, Track>,
        due: &mut Due,
    ) -> bool {
        let vms = match self.hypervisor.list_vms().await {
            Ok(vms) => vms,
            Err(e) => {
                warn!(error = %e, ?kind, "cannot list VMs to apply restart policies; retrying once the hypervisor is back");
                return false;
            }
        };
        for vm in vms {
            let name = vm.spec.name;
            if !self.runtime.exists(&name).await {
                // Another daemon's VM on the same libvirt: its daemon keeps it.
                continue;
            }
            let policy = vm.spec.restart_policy;
            let stopped_by_vmr = self.runtime.stopped_by_vmr(&name).await;
            let restart = match kind {
                Reconcile::Startup => restarts_at_startup(policy, vm.state, stopped_by_vmr),
                // The daemon did not restart: a stop through vmr still stands.
                Reconcile::Reconnect => {
                    !stopped_by_vmr && restarts_at_startup(policy, vm.state, false)
                }
            };
            if !restart {
                continue;
            }
            if stopped_by_vmr {
                // `always` ignores a stop through vmr once the daemon restarts.
                self.runtime.clear_stopped(&name).await;
            }
            let track = tracks.entry(name.clone()).or_default();
            if track.pending {
                continue;
            }
            info!(vm = %name, state = %vm.state, %policy, ?kind, "starting VM per its restart policy");
            track.pending = true;
            track.cause = match kind {
                Reconcile::Startup => format!("found {} as the daemon started", vm.state),
                Reconcile::Reconnect => format!("found {} as the hypervisor came back", vm.state),
            };
            due.now(name);
        }
        true
    }

    async fn on_event(
        &self,
        event: LifecycleEvent,
        tracks: &mut HashMap<VmName, Track>,
        due: &mut Due,
    ) {
        let name = event.vm;
        let reason = match event.kind {
            LifecycleKind::Started => {
                tracks.entry(name).or_default().started_at = Some(Instant::now());
                return;
            }
            LifecycleKind::Undefined => {
                tracks.remove(&name);
                return;
            }
            LifecycleKind::Stopped(StopReason::Requested) => {
                // Logged like the other stops that are left alone, so that
                // one can tell the watcher saw it.
                debug!(vm = %name, reason = "requested", "VM stopped; not restarting it");
                return;
            }
            LifecycleKind::Stopped(reason) => reason,
            // A VM first seen already crashed (its start and crash fell
            // between two looks of a polling backend) crashed all the same.
            LifecycleKind::Defined => StopReason::Crashed,
        };
        if !self.runtime.exists(&name).await {
            // Every daemon on one libvirt sees every vmr domain. Only the
            // one whose store holds the VM's runtime directory applies its
            // policy; two would race each other's starts and undo stops.
            debug!(vm = %name, "VM of another daemon stopped; leaving it to that daemon");
            return;
        }
        let record = match self.hypervisor.inspect_vm(&name).await {
            Ok(details) => details.record,
            Err(e) => {
                debug!(vm = %name, error = %e, "VM stopped and is gone");
                return;
            }
        };
        if record.state.is_active()
            || (event.kind == LifecycleKind::Defined && record.state != VmState::Crashed)
        {
            return;
        }
        let policy = record.spec.restart_policy;
        let stopped_by_vmr = self.runtime.stopped_by_vmr(&name).await;
        if !restarts_after_stop(policy, reason, stopped_by_vmr) {
            debug!(vm = %name, reason = reason.as_str(), %policy, "VM stopped; not restarting it");
            return;
        }
        self.schedule(name, reason.as_str(), policy, tracks, due);
    }

    fn schedule(
        &self,
        name: VmName,
        why: &str,
        policy: RestartPolicy,
        tracks: &mut HashMap<VmName, Track>,
        due: &mut Due,
    ) {
        let track = tracks.entry(name.clone()).or_default();
        if track.pending {
            return;
        }
        if track
            .started_at
            .is_some_and(|at| at.elapsed() >= self.backoff.reset_after)
        {
            track.restarts = 0;
        }
        let delay = self.backoff.delay(track.restarts);
        track.restarts = track.restarts.saturating_add(1);
        track.pending = true;
        track.cause = why.to_string();
        track.started_at = None;
        info!(vm = %name, why, %policy, delay_ms = delay.as_millis() as u64, "restarting VM");
        due.after(delay, name);
    }

    async fn on_due(&self, name: VmName, tracks: &mut HashMap<VmName, Track>, due: &mut Due) {
        let track = tracks.entry(name.clone()).or_default();
        track.pending = false;
        let cause = std::mem::take(&mut track.cause);
        // Things may have changed while waiting: removed, started or
        // stopped through vmr.
        let record = match self.hypervisor.inspect_vm(&name).await {
            Ok(details) => details.record,
            Err(HypervisorError::NotFound { .. }) => {
                tracks.remove(&name);
                return;
            }
            Err(e) => {
                warn!(vm = %name, error = %e, "cannot check VM before restarting it; retrying");
                self.schedule(name, "retry", RestartPolicy::Always, tracks, due);
                return;
            }
        };
        let policy = record.spec.restart_policy;
        if record.state.is_active()
            || policy == RestartPolicy::No
            || self.runtime.stopped_by_vmr(&name).await
        {
            return;
        }
        // Told before the start, so watchers see the restart before the
        // hypervisor's `start` it causes.
        self.events.publish(
            NewEvent::new(EventType::Vm, "restart", name.as_str())
                .with("cause", cause)
                .with("policy", policy.to_string()),
        );
        match self.hypervisor.start_vm(&name).await {
            Ok(()) => {
                info!(vm = %name, %policy, "VM restarted per its restart policy");
                if let Some(track) = tracks.get_mut(&name) {
                    track.started_at = Some(Instant::now());
                }
            }
            Err(HypervisorError::NotFound { .. }) => {
                tracks.remove(&name);
            }
            Err(e) => {
                warn!(vm = %name, error = %e, "restarting VM failed; trying again later");
                self.schedule(name, "start failed", policy, tracks, due);
            }
        }
    }
}

#[cfg(test)]
#[path = "restart_tests.rs"]
mod tests;
