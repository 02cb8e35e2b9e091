//! The libvirt hypervisor adapter: VMs are libvirt domains, vmr networks
//! are libvirt networks, and libvirt is the only record of both (vmr's own
//! facts ride in each object's `<metadata>`). Every libvirt call is blocking
//! FFI and runs on tokio's blocking pool; waits (a graceful stop) sleep on
//! the runtime between short calls. The XML and the disks, which need no
//! libvirt, are in `vmr_adapters::libvirt` (the fake hypervisor shares them).
//!
//! A crate of its own so that only the binary that runs VMs on libvirt
//! (`vmrd-libvirt`) links `libvirt.so` and the ~55 libraries it needs: a vmrd
//! with the fake hypervisor, and the `vmr` CLI, map none of them.
//!
//! Works with any libvirt URI: `qemu:///system` for real VMs, and the test
//! driver (`test:///default`, or `test:///path/to/host.xml` for a private,
//! empty host) for tests.

mod agent;
mod conn;
mod events;
mod guest;
mod networks;
mod vms;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use tokio::time::{Instant, sleep};
use vmr_domain::network::NetworkName;
use vmr_domain::vm::VmName;
use vmr_ports::{ConsoleStream, ExecRequest, ExecStream, GuestAgent, SerialConsole};
use vmr_ports::{
    HypervisorError, HypervisorInfo, LifecycleEvent, LifecycleEvents, NetworkDefinition,
    NetworkDetails, NetworkDriver, NetworkRecord, StopMode, VmDefinition, VmDetails, VmDriver,
    VmRecord,
};

use vmr_adapters::libvirt::check_definition_files;
pub use vmr_adapters::libvirt::{NETWORK_NS, VM_NS};

use conn::Connection;
use events::{EventHub, PollerGuard};

/// How often a graceful stop checks whether the guest is down.
const STOP_POLL: Duration = Duration::from_millis(200);

/// The domain type VMs are defined with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtType {
    /// Hardware virtualisation.
    Kvm,
    /// QEMU's TCG emulator: slower, but runs anywhere.
    Qemu,
}

impl VirtType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Qemu => "qemu",
        }
    }
}

impl fmt::Display for VirtType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VirtType {
    type Err = HypervisorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kvm" => Ok(Self::Kvm),
            "qemu" | "tcg" => Ok(Self::Qemu),
            _ => Err(HypervisorError::invalid(
                "virt-type",
                format!(
                    "`{}` is not a virtualisation type; use kvm or qemu",
                    s.escape_debug()
                ),
            )),
        }
    }
}

/// How to reach libvirt.
#[derive(Debug, Clone)]
pub struct LibvirtConfig {
    pub uri: String,
    /// `None`: KVM when the host can run it, else QEMU/TCG.
    pub virt_type: Option<VirtType>,
    /// How often domain states are polled for lifecycle events.
    pub event_poll_interval: Duration,
}

impl LibvirtConfig {
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            virt_type: None,
            event_poll_interval: Duration::from_secs(1),
        }
    }
}

/// The libvirt [`Hypervisor`].
pub struct LibvirtHypervisor {
    conn: Arc<Connection>,
    virt_type: OnceLock<VirtType>,
    hub: Arc<EventHub>,
    _poller: PollerGuard,
}

impl fmt::Debug for LibvirtHypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LibvirtHypervisor")
            .field("uri", &self.conn.uri())
            .field("virt_type", &self.virt_type.get())
            .finish_non_exhaustive()
    }
}

impl LibvirtHypervisor {
    /// Connects to libvirt and starts watching domain states. libvirt being
    /// down is not an error: calls fail with `Unavailable` until it is back,
    /// and the connection comes back by itself.
    pub async fn connect(config: LibvirtConfig) -> Result<Self, HypervisorError> {
        let uri = config.uri.clone();
        let interval = config.event_poll_interval;
        let (conn, hub, poller) = tokio::task::spawn_blocking(move || {
            let conn = Arc::new(Connection::new(&uri));
            let hub = Arc::new(EventHub::new());
            let poller = events::spawn_poller(Arc::clone(&conn), Arc::clone(&hub), interval)
                .map_err(|e| {
                    HypervisorError::backend(
                        format!("cannot start the libvirt event thread: {e}"),
                        e,
                    )
                })?;
            Ok::<_, HypervisorError>((conn, hub, poller))
        })
        .await
        .map_err(|e| HypervisorError::backend(format!("libvirt connect task failed: {e}"), e))??;
        let this = Self {
            conn,
            virt_type: OnceLock::new(),
            hub,
            _poller: poller,
        };
        match config.virt_type {
            Some(t) => {
                let _ = this.virt_type.set(t);
            }
            None => match this.resolve_virt_type().await {
                Ok(_) => {}
                Err(HypervisorError::Unavailable(e)) => {
                    tracing::warn!(error = %e, "libvirt is down; the virtualisation type is detected once it is back");
                }
                Err(e) => return Err(e),
            },
        }
        tracing::info!(uri = %config.uri, virt_type = %this.virt_type(), "libvirt hypervisor ready");
        Ok(this)
    }

    /// The domain type VMs are defined with (QEMU/TCG until detected, when
    /// libvirt was down at start and no type was configured).
    pub fn virt_type(&self) -> VirtType {
        self.virt_type.get().copied().unwrap_or(VirtType::Qemu)
    }

    async fn resolve_virt_type(&self) -> Result<VirtType, HypervisorError> {
        if let Some(t) = self.virt_type.get() {
            return Ok(*t);
        }
        let detected = detect_virt_type(&self.conn).await?;
        Ok(*self.virt_type.get_or_init(|| detected))
    }

    fn host_checks(&self) -> bool {
        self.conn.uri().starts_with("qemu:///")
    }

    async fn wait_until_stopped(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<bool, HypervisorError> {
        let deadline = Instant::now() + timeout;
        loop {
            let owned = name.to_owned();
            if !self.conn.run(move |c| vms::is_active(c, &owned)).await? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            sleep(STOP_POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }
}

/// KVM when libvirt offers it and the CPU really has hardware
/// virtualisation: some hosts expose a `/dev/kvm` (kvm-pvm) on which
/// libvirt accepts KVM domains that then hang at boot.
async fn detect_virt_type(conn: &Arc<Connection>) -> Result<VirtType, HypervisorError> {
    let caps = conn
        .run(|c| c.capabilities().map_err(conn::unavailable))
        .await?;
    let libvirt_offers_kvm = caps.contains("type='kvm'") || caps.contains("type=\"kvm\"");
    let local = conn.uri().starts_with("qemu:///");
    let cpu_has_vmx = tokio::fs::read_to_string("/proc/cpuinfo")
        .await
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        })
        .unwrap_or(false);
    Ok(if libvirt_offers_kvm && (!local || cpu_has_vmx) {
        VirtType::Kvm
    } else {
        VirtType::Qemu
    })
}

#[async_trait]
impl VmDriver for LibvirtHypervisor {
    async fn ping(&self) -> Result<HypervisorInfo, HypervisorError> {
        let virt_type = self.virt_type().to_string();
        self.conn
            .run(move |c| {
                let unavailable = conn::unavailable;
                let lib = c.lib_version().map_err(unavailable)?;
                let hyp = c.hyp_version().map_err(unavailable)?;
                let driver = c.driver_type().map_err(unavailable)?;
                let uri = c.uri().map_err(unavailable)?;
                Ok(HypervisorInfo {
                    backend: "libvirt".into(),
                    uri,
                    version: format!("libvirt {}, {driver} {}", version(lib), version(hyp)),
                    virt_type,
                })
            })
            .await
    }

    async fn define_vm(&self, definition: &VmDefinition) -> Result<VmRecord, HypervisorError> {
        check_definition_files(definition).await?;
        let def = definition.clone();
        let virt_type = self.resolve_virt_type().await?.as_str();
        self.conn
            .run(move |c| vms::define(c, &def, virt_type))
            .await
    }

    async fn start_vm(&self, name: &VmName) -> Result<(), HypervisorError> {
        let name = name.to_string();
        self.hub.clear_stop_requested(&name);
        self.conn.run(move |c| vms::start(c, &name)).await
    }

    async fn stop_vm(&self, name: &VmName, mode: StopMode) -> Result<(), HypervisorError> {
        let owned = name.to_string();
        let hub = Arc::clone(&self.hub);
        match mode {
            StopMode::Force => {
                self.conn
                    .run(move |c| {
                        vms::active_domain(c, &owned)?;
                        hub.mark_stop_requested(&owned);
                        vms::destroy(c, &owned)
                    })
                    .await
            }
            StopMode::Graceful { timeout } | StopMode::GracefulThenForce { timeout } => {
                self.conn
                    .run(move |c| {
                        vms::active_domain(c, &owned)?;
                        hub.mark_stop_requested(&owned);
                        vms::shutdown(c, &owned)
                    })
                    .await?;
                if self.wait_until_stopped(name.as_str(), timeout).await? {
                    return Ok(());
                }
                if matches!(mode, StopMode::Graceful { .. }) {
                    return Err(HypervisorError::Timeout {
                        kind: "VM",
                        name: name.to_string(),
                        what: "shut down",
                        after: timeout,
                    });
                }
                tracing::info!(vm = %name, ?timeout, "guest ignored ACPI shutdown; forcing it off");
                let owned = name.to_string();
                self.conn.run(move |c| vms::destroy(c, &owned)).await
            }
        }
    }

    async fn restart_vm(&self, name: &VmName, mode: StopMode) -> Result<(), HypervisorError> {
        let owned = name.to_string();
        if self.conn.run(move |c| vms::is_active(c, &owned)).await? {
            self.stop_vm(name, mode).await?;
        }
        self.start_vm(name).await
    }

    async fn undefine_vm(&self, name: &VmName) -> Result<(), HypervisorError> {
        let name = name.to_string();
        self.conn.run(move |c| vms::undefine(c, &name)).await
    }

    async fn list_vms(&self) -> Result<Vec<VmRecord>, HypervisorError> {
        self.conn.run(vms::list).await
    }

    async fn inspect_vm(&self, name: &VmName) -> Result<VmDetails, HypervisorError> {
        let name = name.to_string();
        self.conn.run(move |c| vms::inspect(c, &name)).await
    }
}

#[async_trait]
impl NetworkDriver for LibvirtHypervisor {
    async fn define_network(
        &self,
        definition: &NetworkDefinition,
    ) -> Result<NetworkRecord, HypervisorError> {
        let def = definition.clone();
        let host_checks = self.host_checks();
        self.conn
            .run(move |c| networks::define(c, &def, host_checks))
            .await
    }

    async fn start_network(&self, name: &NetworkName) -> Result<(), HypervisorError> {
        let name = name.to_string();
        self.conn.run(move |c| networks::start(c, &name)).await
    }

    async fn stop_network(&self, name: &NetworkName) -> Result<(), HypervisorError> {
        let name = name.to_string();
        self.conn.run(move |c| networks::stop(c, &name)).await
    }

    async fn remove_network(&self, name: &NetworkName) -> Result<(), HypervisorError> {
        let name = name.to_string();
        self.conn.run(move |c| networks::remove(c, &name)).await
    }

    async fn list_networks(&self) -> Result<Vec<NetworkRecord>, HypervisorError> {
        self.conn.run(networks::list).await
    }

    async fn inspect_network(&self, name: &NetworkName) -> Result<NetworkDetails, HypervisorError> {
        let name = name.to_string();
        self.conn.run(move |c| networks::inspect(c, &name)).await
    }
}

impl LifecycleEvents for LibvirtHypervisor {
    fn events(&self) -> BoxStream<'static, LifecycleEvent> {
        self.hub.subscribe()
    }

    fn reconnects(&self) -> BoxStream<'static, ()> {
        self.hub.subscribe_reconnects()
    }
}

/// libvirt's `major * 1_000_000 + minor * 1_000 + micro` as `major.minor.micro`.
fn version(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, (v / 1_000) % 1_000, v % 1_000)
}

#[async_trait]
impl GuestAgent for LibvirtHypervisor {
    async fn exec(
        &self,
        name: &VmName,
        request: ExecRequest,
    ) -> Result<ExecStream, HypervisorError> {
        guest::exec(&self.conn, name.as_str(), request).await
    }
}

#[async_trait]
impl SerialConsole for LibvirtHypervisor {
    async fn open_console(
        &self,
        name: &VmName,
        input: ConsoleStream,
    ) -> Result<ConsoleStream, HypervisorError> {
        guest::open_console(&self.conn, name.as_str(), input).await
    }
}
