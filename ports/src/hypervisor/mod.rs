//! The hypervisor ports: what the core needs from whatever runs VMs and
//! virtual networks (libvirt, or the in-memory fake), as three small traits
//! a backend offers together: [`VmDriver`] (a VM is defined from a
//! [`VmDefinition`], the domain's spec plus the files the core prepared for
//! it, then started, stopped, restarted and undefined), [`NetworkDriver`]
//! and [`LifecycleEvents`]. [`Hypervisor`] is their join, for the places
//! that need all three (wiring, the contract suite). The backend is the
//! single source of truth, so [`VmDriver::list_vms`] gives every VM back
//! with its full spec after a daemon restart. The disks VMs boot from, the
//! seed media, the guest agent and the console are ports of their own
//! ([`crate::disks`], [`crate::seed`], [`crate::guest`]).
//!
//! Every backend honours one state machine, checked by a shared contract
//! test suite:
//!
//! ```text
//! define -> Created --start--> Running --stop--> Stopped --start--> Running
//!                                 \--(guest crash)--> Crashed --start--> Running
//! undefine: only when not active (Created, Stopped, Crashed)
//! ```

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use vmr_domain::image::DiskFormat;
use vmr_domain::network::{AddressSource, MacAddr, NetworkName, NetworkSpec};
use vmr_domain::vm::{NetworkAttachment, VmName, VmSpec, VmState};

mod drivers;
mod error;

pub use drivers::{Hypervisor, LifecycleEvents, NetworkDriver, VmDriver};
pub use error::{Cause, HypervisorError};

/// A disk file attached to a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskAttachment {
    pub path: PathBuf,
    pub format: DiskFormat,
}

/// Everything a backend needs to define a VM: the spec and the files the
/// core prepared for it in `runtime/<vm>/`.
#[derive(Debug, Clone, PartialEq)]
pub struct VmDefinition {
    pub spec: VmSpec,
    /// The VM's writable disk (a qcow2 overlay, or a blank disk for an `iso`
    /// image); `None` for an `iso` image booted without a disk.
    pub disk: Option<DiskAttachment>,
    /// Read-only CD-ROMs in boot order: the `iso` image's blob first when
    /// there is one, then the cloud-init `cidata` ISO.
    pub cdroms: Vec<PathBuf>,
    /// Boot from the first CD-ROM instead of the disk (`iso` images).
    pub boot_from_cdrom: bool,
    /// Where the serial console is logged.
    pub console_log: PathBuf,
    /// The hash the core compares to tell a changed VM from an unchanged one
    /// (`VmSpec::spec_hash_with_seed`), kept with the VM.
    pub spec_hash: String,
}

/// How to stop a running VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// ACPI shutdown; `Timeout` if the guest has not powered off in time
    /// (the VM is then still running).
    Graceful { timeout: Duration },
    /// ACPI shutdown, then a forced power-off after the timeout.
    GracefulThenForce { timeout: Duration },
    /// Forced power-off at once.
    Force,
}

/// A VM's network interface as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInterface {
    pub network: NetworkName,
    pub mac: MacAddr,
    /// The static address, or the one leased by DHCP (or reported by the
    /// guest agent) while the VM runs.
    pub ip: Option<Ipv4Addr>,
    /// Where `ip` came from; `None` exactly when `ip` is.
    pub source: Option<AddressSource>,
}

impl VmInterface {
    /// The interface of `nic`, its address taken by the one precedence
    /// every backend follows: the static address, else the DHCP lease,
    /// else what the guest agent reports.
    pub fn of(nic: &NetworkAttachment, lease: Option<Ipv4Addr>, agent: Option<Ipv4Addr>) -> Self {
        let (ip, source) = match (nic.static_ip, lease, agent) {
            (Some(ip), _, _) => (Some(ip.addr()), Some(AddressSource::Static)),
            (None, Some(ip), _) => (Some(ip), Some(AddressSource::Dhcp)),
            (None, None, Some(ip)) => (Some(ip), Some(AddressSource::Agent)),
            (None, None, None) => (None, None),
        };
        Self {
            network: nic.network.clone(),
            mac: nic.mac,
            ip,
            source,
        }
    }
}

/// A VM as recovered from the backend alone.
#[derive(Debug, Clone, PartialEq)]
pub struct VmRecord {
    /// The spec it was defined from (resources as the backend now reports them).
    pub spec: VmSpec,
    pub state: VmState,
    pub interfaces: Vec<VmInterface>,
    pub disk: Option<DiskAttachment>,
    pub cdroms: Vec<PathBuf>,
    pub console_log: Option<PathBuf>,
    /// The hash given at definition, if the VM has one.
    pub spec_hash: Option<String>,
}

/// A VM with the backend's own description of it (libvirt domain XML).
#[derive(Debug, Clone, PartialEq)]
pub struct VmDetails {
    pub record: VmRecord,
    pub definition: String,
}

/// What a network is defined from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDefinition {
    pub spec: NetworkSpec,
    /// The compose project creating it, kept with the network.
    pub project: Option<String>,
}

/// A network as recovered from the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRecord {
    pub spec: NetworkSpec,
    /// The compose project that created it, if any.
    pub project: Option<String>,
    pub active: bool,
    /// The bridge device the network uses (generated for vmr's own bridges).
    pub bridge: Option<String>,
    /// Whether vmr defined this network (as opposed to one found in libvirt).
    pub managed: bool,
}

/// A network with the backend's own description of it (libvirt network XML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDetails {
    pub record: NetworkRecord,
    pub definition: String,
}

/// Why a VM stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// Stopped through this port (`stop_vm`, `restart_vm`).
    Requested,
    /// The guest powered itself off.
    Shutdown,
    /// The guest or the emulator crashed.
    Crashed,
    /// Forced off by someone else (e.g. `virsh destroy`).
    Destroyed,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Shutdown => "shutdown",
            Self::Crashed => "crashed",
            Self::Destroyed => "destroyed",
        }
    }
}

/// What happened to a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleKind {
    Defined,
    Started,
    Stopped(StopReason),
    Undefined,
}

/// A lifecycle event, as the restart-policy enforcement consumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    pub vm: VmName,
    pub kind: LifecycleKind,
    pub at: SystemTime,
}

/// Facts about the backend, for health checks and `vmr system check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypervisorInfo {
    /// `libvirt` or `fake`.
    pub backend: String,
    /// The connection URI (libvirt) or a description.
    pub uri: String,
    /// Backend and hypervisor versions, e.g. `libvirt 11.3.0, QEMU 10.0.2`.
    pub version: String,
    /// The domain type VMs are defined with: `kvm`, `qemu` (TCG) or `test`.
    pub virt_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interfaces_address_is_static_then_lease_then_agent() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mut nic = NetworkAttachment {
            network: "n".parse().unwrap(),
            mac: MacAddr::derive("x"),
            static_ip: None,
            gateway: None,
        };
        let pick = |nic: &NetworkAttachment, lease: Option<&str>, agent: Option<&str>| {
            let i = VmInterface::of(nic, lease.map(ip), agent.map(ip));
            (i.ip, i.source)
        };
        assert_eq!(pick(&nic, None, None), (None, None));
        assert_eq!(
            pick(&nic, None, Some("10.0.0.3")),
            (Some(ip("10.0.0.3")), Some(AddressSource::Agent))
        );
        assert_eq!(
            pick(&nic, Some("10.0.0.2"), Some("10.0.0.3")),
            (Some(ip("10.0.0.2")), Some(AddressSource::Dhcp))
        );
        nic.static_ip = Some("10.0.0.1/24".parse().unwrap());
        assert_eq!(
            pick(&nic, Some("10.0.0.2"), Some("10.0.0.3")),
            (Some(ip("10.0.0.1")), Some(AddressSource::Static))
        );
    }
}
