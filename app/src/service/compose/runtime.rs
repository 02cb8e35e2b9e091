//! What compose needs from the VM and network machinery, as one small
//! trait: list what exists, turn a planned service into a ready-to-define VM
//! (image resolved, resources applied, cloud-init seed built, spec hashed),
//! create, start and remove VMs, create, start and remove networks. Compose
//! decides *what* to do from these; the implementation knows *how*.

use std::path::PathBuf;

use async_trait::async_trait;
use vmr_domain::cloudinit::CloudInitSeed;
use vmr_domain::compose::PlannedService;
use vmr_domain::image::{Digest, DiskFormat};
use vmr_domain::network::{NetworkName, NetworkSpec};
use vmr_domain::vm::{VmName, VmSpec, VmState};
use vmr_ports::driving::UseCaseError;
use vmr_ports::{NetworkRecord, VmRecord};

/// The local image a service's VM is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The manifest's digest (kept in the VM's labels).
    pub manifest: Digest,
    /// The disk blob.
    pub disk: Digest,
    pub format: DiskFormat,
}

/// A service turned into everything its VM is defined from, before anything
/// is created.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedVm {
    /// The service's key in the file.
    pub service: String,
    pub spec: VmSpec,
    pub seed: CloudInitSeed,
    pub image: ResolvedImage,
    /// `spec.spec_hash_with_seed(seed)`: what a running VM is compared with.
    pub spec_hash: String,
}

impl PreparedVm {
    pub fn name(&self) -> &VmName {
        &self.spec.name
    }
}

/// The operations compose is made of. Errors are the user's sentences; the
/// caller adds which service or network they are about.
#[async_trait]
pub trait ComposeRuntime: Send + Sync {
    /// Every VM vmr defined.
    async fn vms(&self) -> Result<Vec<VmRecord>, UseCaseError>;
    /// Every network, vmr's and the host's.
    async fn networks(&self) -> Result<Vec<NetworkRecord>, UseCaseError>;
    /// Resolves the service's image in the local store and builds its VM's
    /// spec, seed and hash. Reads only.
    async fn prepare(
        &self,
        project: &str,
        service: &PlannedService,
    ) -> Result<PreparedVm, UseCaseError>;
    /// Creates the VM's runtime files (overlay disk, cloud-init ISO) and
    /// defines it, not started. Leaves nothing behind when it fails.
    async fn create_vm(&self, vm: &PreparedVm) -> Result<(), UseCaseError>;
    /// Starts a defined VM.
    async fn start_vm(&self, name: &VmName) -> Result<(), UseCaseError>;
    /// The VM's state, `None` when it does not exist.
    async fn vm_state(&self, name: &VmName) -> Result<Option<VmState>, UseCaseError>;
    /// Powers the VM off if it runs (its disk is thrown away), undefines it
    /// and deletes its runtime files.
    async fn remove_vm(&self, name: &VmName) -> Result<(), UseCaseError>;
    /// Deletes the runtime files of a VM that is not defined (what a crash
    /// in the middle of a creation left); whether there were any.
    async fn remove_runtime_files(&self, name: &VmName) -> Result<bool, UseCaseError>;
    /// Where the VM's serial console is logged.
    fn console_log(&self, name: &VmName) -> PathBuf;
    /// Defines and starts a network, labelled with the project.
    async fn create_network(&self, spec: &NetworkSpec, project: &str) -> Result<(), UseCaseError>;
    /// Starts an inactive network.
    async fn start_network(&self, name: &NetworkName) -> Result<(), UseCaseError>;
    /// Stops the network if it is active and removes it.
    async fn remove_network(&self, name: &NetworkName) -> Result<(), UseCaseError>;
}
