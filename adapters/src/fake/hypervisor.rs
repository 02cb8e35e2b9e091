//! An in-memory [`Hypervisor`] with libvirt's state machine and the same
//! errors for the same misuse (checked by the shared contract tests). It
//! backs `vmrd --hypervisor fake` and the tests that need no libvirt.
//!
//! Beyond the port it lets tests script the world: make a call fail
//! ([`FakeHypervisor::fail_next`]), slow a call down
//! ([`FakeHypervisor::set_delay`]), have a guest crash, power itself off or
//! ignore ACPI, and read back every call with its start and end time
//! ([`FakeHypervisor::calls`]), e.g. to check that compose starts the
//! services of one level concurrently.
//!
//! It also answers the guest ports ([`vmr_ports::GuestAgent`],
//! [`vmr_ports::SerialConsole`]) with a scripted guest (`guest.rs`), and
//! the disks port over the real disk adapter (`disks.rs`), so that tests
//! can make a disk step fail as any other call.

mod disks;
mod guest;
mod script;
mod world;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use vmr_domain::network::NetworkName;
use vmr_domain::vm::{VmName, VmState};
use vmr_ports::{
    HypervisorError, HypervisorInfo, LifecycleEvent, LifecycleEvents, LifecycleKind,
    NetworkDefinition, NetworkDetails, NetworkDriver, NetworkRecord, StopMode, StopReason,
    VmDefinition, VmDetails, VmDriver, VmRecord,
};

pub use script::{CallRecord, FakeCall};

use crate::libvirt::{check_definition_files, render_domain_xml, render_network_xml};
use script::{Script, lock};
use world::{World, invalid_vm_state};

/// The fake hypervisor.
pub struct FakeHypervisor {
    world: Mutex<World>,
    events: broadcast::Sender<LifecycleEvent>,
    reconnects: broadcast::Sender<()>,
    script: Script,
    host_interfaces: Option<BTreeSet<String>>,
}

impl std::fmt::Debug for FakeHypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHypervisor").finish_non_exhaustive()
    }
}

impl Default for FakeHypervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeHypervisor {
    /// An empty host on which any bridge or interface name exists.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        let (reconnects, _) = broadcast::channel(16);
        Self {
            world: Mutex::new(World::default()),
            events,
            reconnects,
            script: Script::default(),
            host_interfaces: None,
        }
    }

    /// An empty host whose only bridges and interfaces are `names`.
    pub fn with_host_interfaces<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            host_interfaces: Some(names.into_iter().map(Into::into).collect()),
            ..Self::new()
        }
    }

    /// A fake that keeps no call log: the daemon's fake mode, where the log
    /// would otherwise grow with every call for the daemon's lifetime
    /// (`calls()` is then empty).
    pub fn without_call_log(self) -> Self {
        self.script.stop_logging();
        self
    }

    /// The next `call` (about `target`, if given) fails with `error`, once.
    pub fn fail_next(&self, call: FakeCall, target: Option<&str>, error: HypervisorError) {
        self.script.fail_next(call, target, error);
    }

    /// Every `call` takes `delay` (on tokio's clock) before it acts.
    pub fn set_delay(&self, call: FakeCall, delay: Duration) {
        self.script.set_delay(call, delay);
    }

    /// Every call so far, in the order they finished.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.script.calls()
    }

    /// The guest of `name` ignores ACPI shutdown requests from now on.
    pub fn ignore_acpi(&self, name: &VmName, ignore: bool) {
        if let Ok(vm) = lock(&self.world).vm_mut(name) {
            vm.ignores_acpi = ignore;
        }
    }

    /// The guest powers itself off (`Stopped(Shutdown)`).
    pub fn simulate_guest_poweroff(&self, name: &VmName) -> Result<(), HypervisorError> {
        lock(&self.world).power_off(name, VmState::Stopped)?;
        self.emit(name, LifecycleKind::Stopped(StopReason::Shutdown));
        Ok(())
    }

    /// The guest crashes (`Crashed`, `Stopped(Crashed)`).
    /// As if the connection to the hypervisor came back after an outage.
    pub fn simulate_reconnect(&self) {
        // No subscriber is not an error.
        let _ = self.reconnects.send(());
    }

    pub fn simulate_crash(&self, name: &VmName) -> Result<(), HypervisorError> {
        lock(&self.world).power_off(name, VmState::Crashed)?;
        self.emit(name, LifecycleKind::Stopped(StopReason::Crashed));
        Ok(())
    }

    /// Someone else forces the VM off (`Stopped(Destroyed)`).
    pub fn simulate_destroy(&self, name: &VmName) -> Result<(), HypervisorError> {
        lock(&self.world).power_off(name, VmState::Stopped)?;
        self.emit(name, LifecycleKind::Stopped(StopReason::Destroyed));
        Ok(())
    }

    fn emit(&self, vm: &VmName, kind: LifecycleKind) {
        // No subscriber is not an error: nobody listens yet.
        let _ = self.events.send(LifecycleEvent {
            vm: vm.clone(),
            kind,
            at: SystemTime::now(),
        });
    }
}

#[async_trait]
impl VmDriver for FakeHypervisor {
    async fn ping(&self) -> Result<HypervisorInfo, HypervisorError> {
        self.script
            .run(FakeCall::Ping, "", || {
                Ok(HypervisorInfo {
                    backend: "fake".into(),
                    uri: "fake:///".into(),
                    version: concat!("vmr fake hypervisor ", env!("CARGO_PKG_VERSION")).into(),
                    virt_type: "fake".into(),
                })
            })
            .await
    }

    async fn define_vm(&self, definition: &VmDefinition) -> Result<VmRecord, HypervisorError> {
        let name = &definition.spec.name;
        let files = check_definition_files(definition).await;
        let record = self
            .script
            .run(FakeCall::DefineVm, name.as_str(), || {
                files?;
                lock(&self.world).define_vm(definition)
            })
            .await?;
        self.emit(name, LifecycleKind::Defined);
        Ok(record)
    }

    async fn start_vm(&self, name: &VmName) -> Result<(), HypervisorError> {
        let log = self
            .script
            .run(FakeCall::StartVm, name.as_str(), || {
                let mut world = lock(&self.world);
                world.start_vm(name)?;
                Ok(world.vm(name)?.def.console_log.clone())
            })
            .await?;
        // The scripted guest's first sign of life, as a real one's boot
        // messages (never cloud-init's line: readiness stays the test's).
        guest::append_console(&log, format!("vmr fake guest {name}: booted\n").as_bytes()).await;
        self.emit(name, LifecycleKind::Started);
        Ok(())
    }

    async fn stop_vm(&self, name: &VmName, mode: StopMode) -> Result<(), HypervisorError> {
        let ignores_acpi = self
            .script
            .run(FakeCall::StopVm, name.as_str(), || {
                let world = lock(&self.world);
                let vm = world.vm(name)?;
                if !vm.state.is_active() {
                    return Err(invalid_vm_state(name, vm.state, "running"));
                }
                Ok(vm.ignores_acpi)
            })
            .await?;
        if ignores_acpi {
            match mode {
                StopMode::Force => {}
                StopMode::Graceful { timeout } => {
                    tokio::time::sleep(timeout).await;
                    return Err(HypervisorError::Timeout {
                        kind: "VM",
                        name: name.to_string(),
                        what: "shut down",
                        after: timeout,
                    });
                }
                StopMode::GracefulThenForce { timeout } => tokio::time::sleep(timeout).await,
            }
        }
        match lock(&self.world).power_off(name, VmState::Stopped) {
            Ok(()) => {}
            // It went down by itself while the guest was given time.
            Err(HypervisorError::InvalidState { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        self.emit(name, LifecycleKind::Stopped(StopReason::Requested));
        Ok(())
    }

    async fn restart_vm(&self, name: &VmName, mode: StopMode) -> Result<(), HypervisorError> {
        let active = self
            .script
            .run(FakeCall::RestartVm, name.as_str(), || {
                Ok(lock(&self.world).vm(name)?.state.is_active())
            })
            .await?;
        if active {
            self.stop_vm(name, mode).await?;
        }
        self.start_vm(name).await
    }

    async fn undefine_vm(&self, name: &VmName) -> Result<(), HypervisorError> {
        self.script
            .run(FakeCall::UndefineVm, name.as_str(), || {
                lock(&self.world).undefine_vm(name)
            })
            .await?;
        self.emit(name, LifecycleKind::Undefined);
        Ok(())
    }

    async fn list_vms(&self) -> Result<Vec<VmRecord>, HypervisorError> {
        self.script
            .run(FakeCall::ListVms, "", || {
                Ok(lock(&self.world)
                    .vms
                    .values()
                    .map(|vm| vm.record())
                    .collect())
            })
            .await
    }

    async fn inspect_vm(&self, name: &VmName) -> Result<VmDetails, HypervisorError> {
        self.script
            .run(FakeCall::InspectVm, name.as_str(), || {
                let world = lock(&self.world);
                let vm = world.vm(name)?;
                Ok(VmDetails {
                    record: vm.record(),
                    definition: render_domain_xml(&vm.def, "qemu")?,
                })
            })
            .await
    }
}

#[async_trait]
impl NetworkDriver for FakeHypervisor {
    async fn define_network(
        &self,
        definition: &NetworkDefinition,
    ) -> Result<NetworkRecord, HypervisorError> {
        self.script
            .run(
                FakeCall::DefineNetwork,
                definition.spec.name.as_str(),
                || lock(&self.world).define_network(definition, self.host_interfaces.as_ref()),
            )
            .await
    }

    async fn start_network(&self, name: &NetworkName) -> Result<(), HypervisorError> {
        self.script
            .run(FakeCall::StartNetwork, name.as_str(), || {
                lock(&self.world).set_network_active(name, true)
            })
            .await
    }

    async fn stop_network(&self, name: &NetworkName) -> Result<(), HypervisorError> {
        self.script
            .run(FakeCall::StopNetwork, name.as_str(), || {
                lock(&self.world).set_network_active(name, false)
            })
            .await
    }

    async fn remove_network(&self, name: &NetworkName) -> Result<(), HypervisorError> {
        self.script
            .run(FakeCall::RemoveNetwork, name.as_str(), || {
                lock(&self.world).remove_network(name)
            })
            .await
    }

    async fn list_networks(&self) -> Result<Vec<NetworkRecord>, HypervisorError> {
        self.script
            .run(FakeCall::ListNetworks, "", || {
                Ok(lock(&self.world)
                    .networks
                    .values()
                    .map(|net| net.record())
                    .collect())
            })
            .await
    }

    async fn inspect_network(&self, name: &NetworkName) -> Result<NetworkDetails, HypervisorError> {
        self.script
            .run(FakeCall::InspectNetwork, name.as_str(), || {
                let world = lock(&self.world);
                let net = world.network(name)?;
                Ok(NetworkDetails {
                    record: net.record(),
                    definition: render_network_xml(&net.def)?,
                })
            })
            .await
    }
}

impl LifecycleEvents for FakeHypervisor {
    fn events(&self) -> BoxStream<'static, LifecycleEvent> {
        BroadcastStream::new(self.events.subscribe())
            .filter_map(|event| async move { event.ok() })
            .boxed()
    }

    fn reconnects(&self) -> BoxStream<'static, ()> {
        BroadcastStream::new(self.reconnects.subscribe())
            .filter_map(|event| async move { event.ok() })
            .boxed()
    }
}
