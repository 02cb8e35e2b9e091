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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_stream::wrappers::BroadcastStream;
use vmr_domain::image::DiskFormat;
use vmr_domain::network::{NetworkMode, NetworkName, overlaps};
use vmr_domain::vm::{VmName, VmState};
use vmr_ports::{
    Hypervisor, HypervisorError, HypervisorInfo, LifecycleEvent, LifecycleKind, NetworkDefinition,
    NetworkDetails, NetworkRecord, StopMode, StopReason, VmDefinition, VmDetails, VmInterface,
    VmRecord,
};

use crate::libvirt::{check_definition_files, render_domain_xml, render_network_xml};

/// The port's calls, to script failures and delays and to read the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FakeCall {
    Ping,
    DefineVm,
    StartVm,
    StopVm,
    RestartVm,
    UndefineVm,
    ListVms,
    InspectVm,
    DefineNetwork,
    StartNetwork,
    StopNetwork,
    RemoveNetwork,
    ListNetworks,
    InspectNetwork,
    CreateOverlay,
    CreateBlankDisk,
}

/// One call as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub call: FakeCall,
    /// The VM, network or file the call was about (empty for listings).
    pub target: String,
    pub started: Instant,
    pub finished: Instant,
    pub ok: bool,
}

struct FakeVm {
    def: VmDefinition,
    state: VmState,
    /// The guest ignores ACPI shutdown requests.
    ignores_acpi: bool,
    leases: HashMap<vmr_domain::network::MacAddr, Ipv4Addr>,
}

struct FakeNetwork {
    def: NetworkDefinition,
    active: bool,
}

#[derive(Default)]
struct World {
    vms: BTreeMap<VmName, FakeVm>,
    networks: BTreeMap<NetworkName, FakeNetwork>,
}

struct Failure {
    call: FakeCall,
    target: Option<String>,
    error: HypervisorError,
}

/// The fake hypervisor.
pub struct FakeHypervisor {
    world: Mutex<World>,
    events: broadcast::Sender<LifecycleEvent>,
    calls: Mutex<Vec<CallRecord>>,
    failures: Mutex<Vec<Failure>>,
    delays: Mutex<HashMap<FakeCall, Duration>>,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in a test thread must not hide the state from the others.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeHypervisor {
    /// An empty host on which any bridge or interface name exists.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            world: Mutex::new(World::default()),
            events,
            calls: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
            delays: Mutex::new(HashMap::new()),
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

    /// The next `call` (about `target`, if given) fails with `error`, once.
    pub fn fail_next(&self, call: FakeCall, target: Option<&str>, error: HypervisorError) {
        lock(&self.failures).push(Failure {
            call,
            target: target.map(str::to_owned),
            error,
        });
    }

    /// Every `call` takes `delay` (on tokio's clock) before it acts.
    pub fn set_delay(&self, call: FakeCall, delay: Duration) {
        lock(&self.delays).insert(call, delay);
    }

    /// Every call so far, in the order they started.
    pub fn calls(&self) -> Vec<CallRecord> {
        lock(&self.calls).clone()
    }

    /// The guest of `name` ignores ACPI shutdown requests from now on.
    pub fn ignore_acpi(&self, name: &VmName, ignore: bool) {
        if let Some(vm) = lock(&self.world).vms.get_mut(name) {
            vm.ignores_acpi = ignore;
        }
    }

    /// The guest powers itself off (`Stopped(Shutdown)`).
    pub fn simulate_guest_poweroff(&self, name: &VmName) -> Result<(), HypervisorError> {
        self.stop_from_outside(name, VmState::Stopped, StopReason::Shutdown)
    }

    /// The guest crashes (`Crashed`, `Stopped(Crashed)`).
    pub fn simulate_crash(&self, name: &VmName) -> Result<(), HypervisorError> {
        self.stop_from_outside(name, VmState::Crashed, StopReason::Crashed)
    }

    /// Someone else forces the VM off (`Stopped(Destroyed)`).
    pub fn simulate_destroy(&self, name: &VmName) -> Result<(), HypervisorError> {
        self.stop_from_outside(name, VmState::Stopped, StopReason::Destroyed)
    }

    fn stop_from_outside(
        &self,
        name: &VmName,
        state: VmState,
        reason: StopReason,
    ) -> Result<(), HypervisorError> {
        {
            let mut world = lock(&self.world);
            let vm = world
                .vms
                .get_mut(name)
                .ok_or_else(|| HypervisorError::vm_not_found(name))?;
            if !vm.state.is_active() {
                return Err(invalid_vm_state(name, vm.state, "running"));
            }
            vm.state = state;
            vm.leases.clear();
        }
        self.emit(name, LifecycleKind::Stopped(reason));
        Ok(())
    }

    fn emit(&self, vm: &VmName, kind: LifecycleKind) {
        let _ = self.events.send(LifecycleEvent {
            vm: vm.clone(),
            kind,
            at: SystemTime::now(),
        });
    }

    /// Records the call, applies its delay and any scripted failure, runs it.
    async fn call<T>(
        &self,
        call: FakeCall,
        target: &str,
        body: impl FnOnce() -> Result<T, HypervisorError>,
    ) -> Result<T, HypervisorError> {
        let started = Instant::now();
        let delay = lock(&self.delays).get(&call).copied();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let scripted = {
            let mut failures = lock(&self.failures);
            failures
                .iter()
                .position(|f| f.call == call && f.target.as_deref().is_none_or(|t| t == target))
                .map(|i| failures.remove(i).error)
        };
        let result = match scripted {
            Some(error) => Err(error),
            None => body(),
        };
        lock(&self.calls).push(CallRecord {
            call,
            target: target.to_owned(),
            started,
            finished: Instant::now(),
            ok: result.is_ok(),
        });
        result
    }

    fn record(vm: &FakeVm) -> VmRecord {
        let interfaces = vm
            .def
            .spec
            .networks
            .iter()
            .map(|nic| VmInterface {
                network: nic.network.clone(),
                mac: nic.mac,
                ip: nic
                    .static_ip
                    .map(|ip| ip.addr())
                    .or_else(|| vm.leases.get(&nic.mac).copied()),
            })
            .collect();
        VmRecord {
            spec: vm.def.spec.clone(),
            state: vm.state,
            interfaces,
            disk: vm.def.disk.clone(),
            cdroms: vm.def.cdroms.clone(),
            console_log: Some(vm.def.console_log.clone()),
            spec_hash: Some(vm.def.spec_hash.clone()),
        }
    }

    fn network_record(net: &FakeNetwork) -> NetworkRecord {
        let spec = &net.def.spec;
        let bridge = match spec.mode {
            NetworkMode::Bridged => spec.bridge.clone(),
            NetworkMode::Macvtap => None,
            _ => Some(vmr_domain::network::bridge_device_name(spec.name.as_str())),
        };
        NetworkRecord {
            spec: spec.clone(),
            project: net.def.project.clone(),
            active: net.active,
            bridge,
            managed: true,
        }
    }

    fn start_locked(world: &mut World, name: &VmName) -> Result<(), HypervisorError> {
        let vm = world
            .vms
            .get(name)
            .ok_or_else(|| HypervisorError::vm_not_found(name))?;
        if vm.state.is_active() {
            return Err(invalid_vm_state(name, vm.state, "stopped"));
        }
        let mut leases = HashMap::new();
        for nic in &vm.def.spec.networks {
            let net = world
                .networks
                .get(&nic.network)
                .ok_or_else(|| HypervisorError::network_not_found(&nic.network))?;
            if !net.active {
                return Err(HypervisorError::InvalidState {
                    kind: "network",
                    name: nic.network.to_string(),
                    state: "inactive".into(),
                    wanted: "active".into(),
                });
            }
            if nic.static_ip.is_none()
                && let Some(ip) = free_lease(world, &nic.network, &leases)
            {
                leases.insert(nic.mac, ip);
            }
        }
        if let Some(vm) = world.vms.get_mut(name) {
            vm.state = VmState::Running;
            vm.leases = leases;
        }
        Ok(())
    }
}

/// The first address of the network's DHCP range no running VM holds.
fn free_lease(
    world: &World,
    network: &NetworkName,
    pending: &HashMap<vmr_domain::network::MacAddr, Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let range = world.networks.get(network)?.def.spec.ipv4?.dhcp?;
    let taken: BTreeSet<Ipv4Addr> = world
        .vms
        .values()
        .flat_map(|vm| vm.leases.values().copied())
        .chain(pending.values().copied())
        .collect();
    (u32::from(range.start)..=u32::from(range.end))
        .map(Ipv4Addr::from)
        .find(|ip| !taken.contains(ip))
}

fn invalid_vm_state(name: &VmName, state: VmState, wanted: &str) -> HypervisorError {
    HypervisorError::InvalidState {
        kind: "VM",
        name: name.to_string(),
        state: state.to_string(),
        wanted: wanted.to_owned(),
    }
}

#[async_trait]
impl Hypervisor for FakeHypervisor {
    async fn ping(&self) -> Result<HypervisorInfo, HypervisorError> {
        self.call(FakeCall::Ping, "", || {
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
        let name = definition.spec.name.clone();
        let files = check_definition_files(definition).await;
        let record = self
            .call(FakeCall::DefineVm, name.as_str(), || {
                files?;
                let mut world = lock(&self.world);
                if world.vms.contains_key(&name) {
                    return Err(HypervisorError::AlreadyExists {
                        kind: "VM",
                        name: name.to_string(),
                    });
                }
                for nic in &definition.spec.networks {
                    if !world.networks.contains_key(&nic.network) {
                        return Err(HypervisorError::network_not_found(&nic.network));
                    }
                }
                let vm = FakeVm {
                    def: definition.clone(),
                    state: VmState::Created,
                    ignores_acpi: false,
                    leases: HashMap::new(),
                };
                let record = Self::record(&vm);
                world.vms.insert(name.clone(), vm);
                Ok(record)
            })
            .await?;
        self.emit(&name, LifecycleKind::Defined);
        Ok(record)
    }

    async fn start_vm(&self, name: &VmName) -> Result<(), HypervisorError> {
        self.call(FakeCall::StartVm, name.as_str(), || {
            Self::start_locked(&mut lock(&self.world), name)
        })
        .await?;
        self.emit(name, LifecycleKind::Started);
        Ok(())
    }

    async fn stop_vm(&self, name: &VmName, mode: StopMode) -> Result<(), HypervisorError> {
        let ignores_acpi = self
            .call(FakeCall::StopVm, name.as_str(), || {
                let world = lock(&self.world);
                let vm = world
                    .vms
                    .get(name)
                    .ok_or_else(|| HypervisorError::vm_not_found(name))?;
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
        {
            let mut world = lock(&self.world);
            let Some(vm) = world.vms.get_mut(name) else {
                return Err(HypervisorError::vm_not_found(name));
            };
            if !vm.state.is_active() {
                // It stopped by itself while we waited.
                return Ok(());
            }
            vm.state = VmState::Stopped;
            vm.leases.clear();
        }
        self.emit(name, LifecycleKind::Stopped(StopReason::Requested));
        Ok(())
    }

    async fn restart_vm(&self, name: &VmName, mode: StopMode) -> Result<(), HypervisorError> {
        let active = self
            .call(FakeCall::RestartVm, name.as_str(), || {
                let world = lock(&self.world);
                world
                    .vms
                    .get(name)
                    .map(|vm| vm.state.is_active())
                    .ok_or_else(|| HypervisorError::vm_not_found(name))
            })
            .await?;
        if active {
            self.stop_vm(name, mode).await?;
        }
        self.start_vm(name).await
    }

    async fn undefine_vm(&self, name: &VmName) -> Result<(), HypervisorError> {
        self.call(FakeCall::UndefineVm, name.as_str(), || {
            let mut world = lock(&self.world);
            let vm = world
                .vms
                .get(name)
                .ok_or_else(|| HypervisorError::vm_not_found(name))?;
            if vm.state.is_active() {
                return Err(invalid_vm_state(name, vm.state, "stopped"));
            }
            world.vms.remove(name);
            Ok(())
        })
        .await?;
        self.emit(name, LifecycleKind::Undefined);
        Ok(())
    }

    async fn list_vms(&self) -> Result<Vec<VmRecord>, HypervisorError> {
        self.call(FakeCall::ListVms, "", || {
            Ok(lock(&self.world).vms.values().map(Self::record).collect())
        })
        .await
    }

    async fn inspect_vm(&self, name: &VmName) -> Result<VmDetails, HypervisorError> {
        self.call(FakeCall::InspectVm, name.as_str(), || {
            let world = lock(&self.world);
            let vm = world
                .vms
                .get(name)
                .ok_or_else(|| HypervisorError::vm_not_found(name))?;
            Ok(VmDetails {
                record: Self::record(vm),
                definition: render_domain_xml(&vm.def, "qemu")?,
            })
        })
        .await
    }

    async fn define_network(
        &self,
        definition: &NetworkDefinition,
    ) -> Result<NetworkRecord, HypervisorError> {
        let spec = &definition.spec;
        self.call(FakeCall::DefineNetwork, spec.name.as_str(), || {
            let mut world = lock(&self.world);
            if world.networks.contains_key(&spec.name) {
                return Err(HypervisorError::AlreadyExists {
                    kind: "network",
                    name: spec.name.to_string(),
                });
            }
            if let Some(other) = world
                .networks
                .values()
                .find(|n| overlaps(spec, &n.def.spec))
            {
                let ours = spec.ipv4.map(|i| i.subnet.to_string()).unwrap_or_default();
                let theirs = other
                    .def
                    .spec
                    .ipv4
                    .map(|i| i.subnet.to_string())
                    .unwrap_or_default();
                return Err(HypervisorError::invalid(
                    "subnet",
                    format!(
                        "{ours} overlaps the subnet {theirs} of network {}",
                        other.def.spec.name
                    ),
                ));
            }
            if let Some(host) = &self.host_interfaces {
                let (kind, device) = match spec.mode {
                    NetworkMode::Bridged => ("host bridge", spec.bridge.as_deref()),
                    NetworkMode::Macvtap => ("host interface", spec.interface.as_deref()),
                    _ => ("", None),
                };
                if let Some(device) = device
                    && !host.contains(device)
                {
                    return Err(HypervisorError::NotFound {
                        kind,
                        name: device.to_owned(),
                    });
                }
            }
            let net = FakeNetwork {
                def: definition.clone(),
                active: false,
            };
            let record = Self::network_record(&net);
            world.networks.insert(spec.name.clone(), net);
            Ok(record)
        })
        .await
    }

    async fn start_network(&self, name: &NetworkName) -> Result<(), HypervisorError> {
        self.call(FakeCall::StartNetwork, name.as_str(), || {
            set_network_active(&mut lock(&self.world), name, true)
        })
        .await
    }

    async fn stop_network(&self, name: &NetworkName) -> Result<(), HypervisorError> {
        self.call(FakeCall::StopNetwork, name.as_str(), || {
            set_network_active(&mut lock(&self.world), name, false)
        })
        .await
    }

    async fn remove_network(&self, name: &NetworkName) -> Result<(), HypervisorError> {
        self.call(FakeCall::RemoveNetwork, name.as_str(), || {
            let mut world = lock(&self.world);
            let net = world
                .networks
                .get(name)
                .ok_or_else(|| HypervisorError::network_not_found(name))?;
            if net.active {
                return Err(network_state(name, "active", "inactive"));
            }
            let users: Vec<String> = world
                .vms
                .values()
                .filter(|vm| vm.def.spec.networks.iter().any(|n| &n.network == name))
                .map(|vm| vm.def.spec.name.to_string())
                .collect();
            if !users.is_empty() {
                return Err(network_state(
                    name,
                    &format!("used by VM {}", users.join(", ")),
                    "unused (remove those VMs first)",
                ));
            }
            world.networks.remove(name);
            Ok(())
        })
        .await
    }

    async fn list_networks(&self) -> Result<Vec<NetworkRecord>, HypervisorError> {
        self.call(FakeCall::ListNetworks, "", || {
            Ok(lock(&self.world)
                .networks
                .values()
                .map(Self::network_record)
                .collect())
        })
        .await
    }

    async fn inspect_network(&self, name: &NetworkName) -> Result<NetworkDetails, HypervisorError> {
        self.call(FakeCall::InspectNetwork, name.as_str(), || {
            let world = lock(&self.world);
            let net = world
                .networks
                .get(name)
                .ok_or_else(|| HypervisorError::network_not_found(name))?;
            Ok(NetworkDetails {
                record: Self::network_record(net),
                definition: render_network_xml(&net.def.spec, net.def.project.as_deref())?,
            })
        })
        .await
    }

    async fn create_overlay(
        &self,
        base: &Path,
        base_format: DiskFormat,
        overlay: &Path,
        size: Option<u64>,
    ) -> Result<(), HypervisorError> {
        let base_exists = tokio::fs::try_exists(base).await.unwrap_or(false);
        let overlay_exists = tokio::fs::try_exists(overlay).await.unwrap_or(false);
        self.call(
            FakeCall::CreateOverlay,
            &overlay.display().to_string(),
            || {
                if base_format == DiskFormat::Iso {
                    return Err(HypervisorError::invalid(
                        "diskFormat",
                        "an iso image boots as a CD-ROM and cannot back an overlay disk",
                    ));
                }
                if !base_exists {
                    return Err(HypervisorError::NotFound {
                        kind: "disk",
                        name: base.display().to_string(),
                    });
                }
                if overlay_exists {
                    return Err(HypervisorError::AlreadyExists {
                        kind: "disk",
                        name: overlay.display().to_string(),
                    });
                }
                Ok(())
            },
        )
        .await?;
        let note = format!(
            "vmr fake overlay over {} ({base_format}), size {size:?}\n",
            base.display()
        );
        write_placeholder(overlay, &note).await
    }

    async fn create_blank_disk(&self, path: &Path, size: u64) -> Result<(), HypervisorError> {
        let exists = tokio::fs::try_exists(path).await.unwrap_or(false);
        self.call(
            FakeCall::CreateBlankDisk,
            &path.display().to_string(),
            || {
                if size == 0 {
                    return Err(HypervisorError::invalid(
                        "diskSize",
                        "must be larger than 0 bytes",
                    ));
                }
                if exists {
                    return Err(HypervisorError::AlreadyExists {
                        kind: "disk",
                        name: path.display().to_string(),
                    });
                }
                Ok(())
            },
        )
        .await?;
        write_placeholder(path, &format!("vmr fake blank disk of {size} bytes\n")).await
    }

    fn events(&self) -> BoxStream<'static, LifecycleEvent> {
        BroadcastStream::new(self.events.subscribe())
            .filter_map(|event| async move { event.ok() })
            .boxed()
    }
}

/// The fake's disks are small text files, so the runtime directory looks
/// as it would with a real hypervisor.
async fn write_placeholder(path: &Path, note: &str) -> Result<(), HypervisorError> {
    tokio::fs::write(path, note)
        .await
        .map_err(|e| HypervisorError::Backend(format!("cannot write {}: {e}", path.display())))
}

fn set_network_active(
    world: &mut World,
    name: &NetworkName,
    active: bool,
) -> Result<(), HypervisorError> {
    let net = world
        .networks
        .get_mut(name)
        .ok_or_else(|| HypervisorError::network_not_found(name))?;
    if net.active == active {
        let (state, wanted) = if active {
            ("active", "inactive")
        } else {
            ("inactive", "active")
        };
        return Err(network_state(name, state, wanted));
    }
    net.active = active;
    Ok(())
}

fn network_state(name: &NetworkName, state: &str, wanted: &str) -> HypervisorError {
    HypervisorError::InvalidState {
        kind: "network",
        name: name.to_string(),
        state: state.to_owned(),
        wanted: wanted.to_owned(),
    }
}
