//! Lifecycle events for libvirt domains. The virt crate (0.5) does not wrap
//! `virConnectDomainEventRegisterAny`, so a dedicated thread polls every
//! domain's state (one `virConnectListAllDomains` per tick, a second by
//! default) and turns the differences into events. Why a domain stopped
//! comes from libvirt's shutoff reason, except for stops vmr asked for,
//! which the adapter marks before acting ([`EventHub::mark_stop_requested`]).
//! A transition shorter than one tick can be missed; restart policies only
//! need the state a VM settled in.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use virt::domain::{Domain, DomainShutoffReason, DomainState, DomainStateReason};
use virt::enumutil::Enum;
use vmr_domain::vm::{VmName, VmState};
use vmr_ports::{LifecycleEvent, LifecycleKind, StopReason};

use super::conn::{Connection, LinkState};
use vmr_adapters::libvirt::VM_NS;

/// A poll that takes longer than this is logged: its events come late.
const SLOW_TICK: Duration = Duration::from_secs(5);

/// How many events a slow consumer may fall behind before it misses some.
const EVENT_BUFFER: usize = 1024;

/// Fans lifecycle events out to every subscriber.
pub(crate) struct EventHub {
    tx: broadcast::Sender<LifecycleEvent>,
    reconnects: broadcast::Sender<()>,
    requested: Mutex<HashSet<String>>,
}

impl EventHub {
    pub(crate) fn new() -> Self {
        let (tx, _) = broadcast::channel(EVENT_BUFFER);
        let (reconnects, _) = broadcast::channel(16);
        Self {
            tx,
            reconnects,
            requested: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn subscribe(&self) -> BoxStream<'static, LifecycleEvent> {
        BroadcastStream::new(self.tx.subscribe())
            .filter_map(|event| async move { event.ok() })
            .boxed()
    }

    /// One item each time the connection came back after an outage.
    pub(crate) fn subscribe_reconnects(&self) -> BoxStream<'static, ()> {
        BroadcastStream::new(self.reconnects.subscribe())
            .filter_map(|event| async move { event.ok() })
            .boxed()
    }

    /// The next stop of `name` is vmr's doing.
    pub(crate) fn mark_stop_requested(&self, name: &str) {
        if let Ok(mut requested) = self.requested.lock() {
            requested.insert(name.to_owned());
        }
    }

    /// `name` was started again: a pending mark no longer applies.
    pub(crate) fn clear_stop_requested(&self, name: &str) {
        if let Ok(mut requested) = self.requested.lock() {
            requested.remove(name);
        }
    }

    fn take_stop_requested(&self, name: &str) -> bool {
        self.requested
            .lock()
            .map(|mut requested| requested.remove(name))
            .unwrap_or(false)
    }

    fn emit(&self, name: &str, kind: LifecycleKind) {
        let Ok(vm) = name.parse::<VmName>() else {
            return;
        };
        tracing::debug!(vm = %vm, ?kind, "VM lifecycle event");
        // No subscriber is not an error: nobody is listening yet.
        let _ = self.tx.send(LifecycleEvent {
            vm,
            kind,
            at: SystemTime::now(),
        });
    }
}

/// The vmr state of a domain from libvirt's state and reason.
pub(crate) fn vm_state(dom: &Domain) -> (VmState, Option<StopReason>) {
    let Ok((state, reason)) = dom.state() else {
        return (VmState::Stopped, None);
    };
    match state {
        Enum::Known(DomainState::Running | DomainState::Blocked) => (VmState::Running, None),
        Enum::Known(DomainState::Paused | DomainState::PMSuspended) => (VmState::Paused, None),
        Enum::Known(DomainState::Shutdown) => (VmState::Stopping, None),
        Enum::Known(DomainState::Crashed) => (VmState::Crashed, Some(StopReason::Crashed)),
        Enum::Known(DomainState::Shutoff) => match reason {
            Enum::Known(DomainStateReason::Shutoff(Enum::Known(r))) => match r {
                DomainShutoffReason::Shutdown => (VmState::Stopped, Some(StopReason::Shutdown)),
                DomainShutoffReason::Crashed | DomainShutoffReason::Failed => {
                    (VmState::Crashed, Some(StopReason::Crashed))
                }
                DomainShutoffReason::Unknown => (VmState::Created, None),
                _ => (VmState::Stopped, Some(StopReason::Destroyed)),
            },
            _ => (VmState::Stopped, None),
        },
        _ => (VmState::Created, None),
    }
}

/// Stops the poller when dropped.
pub(crate) struct PollerGuard {
    stop: Arc<AtomicBool>,
}

impl Drop for PollerGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts the polling thread.
pub(crate) fn spawn_poller(
    conn: Arc<Connection>,
    hub: Arc<EventHub>,
    interval: Duration,
) -> std::io::Result<PollerGuard> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    // The first snapshot is taken before returning, so that anything the
    // caller does from now on is seen as a change.
    let baseline = snapshot(&conn, &hub, None);
    thread::Builder::new()
        .name("vmr-libvirt-events".into())
        .spawn(move || poll_loop(&conn, &hub, interval, &flag, baseline))?;
    Ok(PollerGuard { stop })
}

fn snapshot(
    conn: &Connection,
    hub: &EventHub,
    previous: Option<HashMap<String, Seen>>,
) -> Option<HashMap<String, Seen>> {
    let listed = conn.get().and_then(|c| {
        c.list_all_domains(0).map_err(|e| {
            conn.invalidate(e.message());
            crate::conn::unavailable(e)
        })
    });
    match listed {
        Ok(domains) => Some(diff(&domains, previous.as_ref(), hub)),
        Err(e) => {
            tracing::debug!(error = %e, "libvirt event poll failed; retrying");
            // Keep the last snapshot: after a reconnect, what changed during
            // the outage (a VM that died) comes out as events.
            previous
        }
    }
}

/// A domain as the previous tick saw it. The UUID tells a domain that was
/// undefined and defined again under the same name (within one tick) from
/// the same domain.
#[derive(Clone)]
struct Seen {
    uuid: String,
    vmr: bool,
    active: bool,
}

fn poll_loop(
    conn: &Connection,
    hub: &EventHub,
    interval: Duration,
    stop: &AtomicBool,
    mut seen: Option<HashMap<String, Seen>>,
) {
    let mut generation = conn.generation();
    while !stop.load(Ordering::Relaxed) {
        // While libvirt is away, tick as often as reconnecting is due, so
        // the link comes back without waiting for a call.
        let wait = match conn.link_state() {
            LinkState::Connected => interval,
            LinkState::Unavailable {
                next_attempt_in, ..
            } => next_attempt_in.clamp(Duration::from_millis(50), interval),
        };
        thread::sleep(wait);
        let began = Instant::now();
        seen = snapshot(conn, hub, seen);
        let took = began.elapsed();
        if took > SLOW_TICK {
            // Listing locks every domain in libvirtd, so a tick waits for
            // whatever holds one; the events of that tick are late by as much.
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                "libvirt event poll was slow; lifecycle events are late"
            );
        }
        let now = conn.generation();
        if now != generation && conn.link_state() == LinkState::Connected {
            generation = now;
            tracing::info!("libvirt connection re-established; reconciling");
            // No subscriber is not an error.
            let _ = hub.reconnects.send(());
        }
    }
}

/// Compares the current domains with the previous tick and emits the
/// differences. On the first tick (`previous` is `None`) nothing is emitted.
fn diff(
    domains: &[Domain],
    previous: Option<&HashMap<String, Seen>>,
    hub: &EventHub,
) -> HashMap<String, Seen> {
    let mut current = HashMap::with_capacity(domains.len());
    for dom in domains {
        let (Ok(name), Ok(uuid)) = (dom.name(), dom.uuid_string()) else {
            continue;
        };
        let before = previous
            .and_then(|p| p.get(&name))
            .filter(|b| b.uuid == uuid)
            .cloned();
        if let Some(gone) = previous
            .and_then(|p| p.get(&name))
            .filter(|b| b.uuid != uuid)
        {
            gone_away(hub, &name, gone);
        }
        let vmr = before
            .as_ref()
            .map_or_else(|| is_vmr_domain(dom), |b| b.vmr);
        let (state, reason) = vm_state(dom);
        let active = state.is_active();
        current.insert(name.clone(), Seen { uuid, vmr, active });
        if previous.is_none() || !vmr {
            continue;
        }
        match before {
            None => {
                hub.emit(&name, LifecycleKind::Defined);
                if active {
                    hub.emit(&name, LifecycleKind::Started);
                }
            }
            Some(b) if !b.active && active => hub.emit(&name, LifecycleKind::Started),
            Some(b) if b.active && !active => {
                let reason = if hub.take_stop_requested(&name) {
                    StopReason::Requested
                } else {
                    reason.unwrap_or(StopReason::Destroyed)
                };
                hub.emit(&name, LifecycleKind::Stopped(reason));
            }
            Some(_) => {}
        }
    }
    if let Some(previous) = previous {
        for (name, seen) in previous {
            if !current.contains_key(name) {
                gone_away(hub, name, seen);
            }
        }
    }
    current
}

/// A vmr domain that no longer exists (as the domain the last tick saw).
fn gone_away(hub: &EventHub, name: &str, seen: &Seen) {
    if !seen.vmr {
        return;
    }
    if seen.active {
        let reason = if hub.take_stop_requested(name) {
            StopReason::Requested
        } else {
            StopReason::Destroyed
        };
        hub.emit(name, LifecycleKind::Stopped(reason));
    }
    hub.emit(name, LifecycleKind::Undefined);
}

fn is_vmr_domain(dom: &Domain) -> bool {
    dom.metadata(
        virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
        Some(VM_NS),
        0,
    )
    .is_ok()
}
