//! The three driven traits of a hypervisor backend, and their join. Each
//! use case takes the narrowest one it uses (the network use cases a
//! [`NetworkDriver`], the restart policy [`LifecycleEvents`] and a
//! [`VmDriver`]); a backend implements all three, and [`Hypervisor`] comes
//! with them by the blanket impl, so wiring hands one `Arc<dyn Hypervisor>`
//! around and each service upcasts it to the part it needs.

use async_trait::async_trait;
use futures::stream::BoxStream;
use vmr_domain::network::NetworkName;
use vmr_domain::vm::VmName;

use super::{
    HypervisorError, HypervisorInfo, LifecycleEvent, NetworkDefinition, NetworkDetails,
    NetworkRecord, StopMode, VmDefinition, VmDetails, VmRecord,
};

/// VMs: define, start, stop, restart, undefine, list, inspect.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait VmDriver: Send + Sync {
    /// Checks that the backend answers.
    async fn ping(&self) -> Result<HypervisorInfo, HypervisorError>;

    /// Defines a VM (state `Created`). `AlreadyExists` if the name is taken,
    /// `NotFound` if a network it attaches to does not exist.
    async fn define_vm(&self, definition: &VmDefinition) -> Result<VmRecord, HypervisorError>;
    /// Starts a `Created`, `Stopped` or `Crashed` VM. Its networks must be
    /// active (`InvalidState` otherwise).
    async fn start_vm(&self, name: &VmName) -> Result<(), HypervisorError>;
    /// Stops a running or paused VM; `InvalidState` if it is not active.
    async fn stop_vm(&self, name: &VmName, mode: StopMode) -> Result<(), HypervisorError>;
    /// Stops the VM with `mode` if it is active, then starts it.
    async fn restart_vm(&self, name: &VmName, mode: StopMode) -> Result<(), HypervisorError>;
    /// Removes a VM that is not active (its files are the caller's).
    async fn undefine_vm(&self, name: &VmName) -> Result<(), HypervisorError>;
    /// Every VM vmr defined.
    async fn list_vms(&self) -> Result<Vec<VmRecord>, HypervisorError>;
    /// One VM, with the backend's description of it.
    async fn inspect_vm(&self, name: &VmName) -> Result<VmDetails, HypervisorError>;
}

/// Virtual networks: define, start, stop, remove, list, inspect.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait NetworkDriver: Send + Sync {
    /// Defines a network (inactive). `AlreadyExists` if the name is taken;
    /// `Invalid` if its subnet overlaps another network's; `NotFound` if a
    /// bridged network's bridge or a macvtap network's interface is missing.
    async fn define_network(
        &self,
        definition: &NetworkDefinition,
    ) -> Result<NetworkRecord, HypervisorError>;
    /// Starts an inactive network; `InvalidState` if it is active.
    async fn start_network(&self, name: &NetworkName) -> Result<(), HypervisorError>;
    /// Stops an active network; `InvalidState` if it is not active.
    async fn stop_network(&self, name: &NetworkName) -> Result<(), HypervisorError>;
    /// Removes an inactive network; `InvalidState` if it is active or a
    /// defined VM still attaches to it.
    async fn remove_network(&self, name: &NetworkName) -> Result<(), HypervisorError>;
    /// Every network, vmr's and those found in the backend.
    async fn list_networks(&self) -> Result<Vec<NetworkRecord>, HypervisorError>;
    /// One network, with the backend's description of it.
    async fn inspect_network(&self, name: &NetworkName) -> Result<NetworkDetails, HypervisorError>;
}

/// What happens to VMs, as a stream, and when the backend came back.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait LifecycleEvents: Send + Sync {
    /// Lifecycle events from now on. Each call gets its own stream; a
    /// consumer that falls far behind misses events rather than blocking
    /// the backend.
    fn events(&self) -> BoxStream<'static, LifecycleEvent>;

    /// One item each time the backend's connection is re-established after
    /// an outage (libvirtd restarted): whatever happened meanwhile may need
    /// reconciling. Backends without a connection never yield.
    fn reconnects(&self) -> BoxStream<'static, ()> {
        Box::pin(futures::stream::pending())
    }
}

/// A whole hypervisor backend: VMs, networks and lifecycle events together.
/// Never implemented by hand: every type with the three parts is one.
pub trait Hypervisor: VmDriver + NetworkDriver + LifecycleEvents {}

impl<T: VmDriver + NetworkDriver + LifecycleEvents> Hypervisor for T {}
