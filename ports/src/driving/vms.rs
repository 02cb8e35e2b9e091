//! VM use cases: create (and run), start, stop, restart, remove, list and
//! inspect. Requests arrive already parsed into domain types; what is left to
//! check (the image exists, networks exist, addresses fit their subnets, the
//! name is free) is the use case's job, done before anything is created.

use std::net::Ipv4Addr;
use std::time::Duration;

use async_trait::async_trait;
use vmr_domain::image::Reference;
use vmr_domain::network::{MacAddr, NetworkName};
use vmr_domain::units::ByteSize;
use vmr_domain::vm::{RestartPolicy, VmName};

use super::UseCaseError;
use crate::hypervisor::{VmDetails, VmRecord};

/// A static address as a caller gives it: with a prefix length, or without
/// one when the network's subnet supplies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StaticAddress {
    pub addr: Ipv4Addr,
    pub prefix_len: Option<u8>,
}

/// One NIC to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicRequest {
    pub network: NetworkName,
    /// `None`: DHCP.
    pub static_ip: Option<StaticAddress>,
    /// Default route; defaults to the network's gateway for a static address
    /// on a network that forwards (nat, routed, open).
    pub gateway: Option<Ipv4Addr>,
    /// `None`: derived from the VM's and the network's names.
    pub mac: Option<MacAddr>,
}

/// What a VM is created from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateVm {
    pub name: VmName,
    pub image: Reference,
    /// `None`: the image's values.
    pub cpu: Option<u32>,
    pub memory: Option<ByteSize>,
    /// Grow the disk to this size (the image's disk size when smaller);
    /// for an `iso` image, the size of a blank disk.
    pub disk_size: Option<ByteSize>,
    pub networks: Vec<NicRequest>,
    /// cloud-init user-data; `None`: a minimal `#cloud-config`.
    pub user_data: Option<Vec<u8>>,
    pub restart_policy: RestartPolicy,
    /// Compose project and service, kept with the VM.
    pub project: Option<String>,
    pub service: Option<String>,
    /// Start the VM once created (`vmr run`).
    pub start: bool,
    /// OpenSSH public key lines for the image's default user, merged into
    /// `user_data` (see `vmr_domain::cloudinit::merge_ssh_keys`).
    pub ssh_authorized_keys: Vec<String>,
    /// With `networks` empty: no network card at all, rather than the
    /// network `vmr-default`.
    pub no_network: bool,
}

/// How to stop a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StopVm {
    /// Power off: at once without a timeout, else when the guest has not
    /// shut down within it.
    pub force: bool,
    /// How long to wait for an ACPI shutdown; `None`: the default.
    pub timeout: Option<Duration>,
}

/// Which VMs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmFilter {
    /// Include VMs that are not running.
    pub all: bool,
    /// Only the VMs of this compose project.
    pub project: Option<String>,
}

#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait VmUseCases: Send + Sync {
    /// Validates everything, then creates the VM's runtime files and
    /// definition (and starts it when asked). On failure nothing is left.
    async fn create(&self, request: CreateVm) -> Result<VmRecord, UseCaseError>;
    /// Starts a VM that is not running.
    async fn start(&self, name: &VmName) -> Result<VmRecord, UseCaseError>;
    /// Stops a running VM; restart policies leave it stopped.
    async fn stop(&self, name: &VmName, how: StopVm) -> Result<VmRecord, UseCaseError>;
    /// Stops a running VM (forced after the timeout) and starts it again.
    async fn restart(
        &self,
        name: &VmName,
        timeout: Option<Duration>,
    ) -> Result<VmRecord, UseCaseError>;
    /// Undefines a VM and deletes its runtime files. A running VM is refused
    /// unless `force`, which powers it off first.
    async fn remove(&self, name: &VmName, force: bool) -> Result<(), UseCaseError>;
    /// VMs sorted by name.
    async fn list(&self, filter: VmFilter) -> Result<Vec<VmRecord>, UseCaseError>;
    async fn inspect(&self, name: &VmName) -> Result<VmDetails, UseCaseError>;
}
