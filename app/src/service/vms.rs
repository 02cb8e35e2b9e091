//! VM use cases over the hypervisor and the image store: create (and run),
//! start, stop, restart, remove, list and inspect. libvirt (or the fake)
//! holds every VM's state; this service adds the runtime files, the checks
//! made before anything is created, the rollback when a step fails, and the
//! record of stops asked for through vmr that restart policies honour.
//! It also tells image garbage collection which images VMs use.

mod runtime;
pub mod ways_in;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tracing::{info, instrument};
use vmr_domain::image::Digest;
use vmr_domain::network::DEFAULT_NETWORK;
use vmr_domain::vm::VmName;
use vmr_ports::driving::{
    CreateVm, ErrorKind, NicRequest, StopVm, UseCaseError, VmFilter, VmUseCases,
};
use vmr_ports::{HypervisorError, NetworkDriver, StopMode, VmDetails, VmDriver, VmRecord};

pub use runtime::RuntimeDirs;

use super::images::{ImageService, ImagesInUse};
use super::provision::{Phases, PreparedVm, Provision, Provisioner, VmBlueprint, VmMedia};
use super::{DefaultNetworks, NetworkService};

/// Digests of the images a set of VMs runs from.
pub fn image_digests(vms: &[VmRecord]) -> BTreeSet<Digest> {
    vms.iter()
        .filter_map(|vm| vm.spec.labels.image_digest.clone())
        .collect()
}

/// How long a stop or restart waits for the guest when the caller gives no
/// timeout.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which images VMs use: those of every defined VM (from the hypervisor's
/// records) and those of VMs being created right now, so that garbage
/// collection never takes a disk from under a VM.
pub struct VmImages {
    hypervisor: Arc<dyn VmDriver>,
    in_flight: Mutex<BTreeMap<Digest, usize>>,
}

impl VmImages {
    pub fn new(hypervisor: Arc<dyn VmDriver>) -> Self {
        Self {
            hypervisor,
            in_flight: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts `digest` as in use until the returned guard is dropped.
    pub(crate) fn hold(self: &Arc<Self>, digest: Digest) -> ImageHold {
        *lock(&self.in_flight).entry(digest.clone()).or_insert(0) += 1;
        ImageHold {
            images: Arc::clone(self),
            digest,
        }
    }
}

pub(crate) struct ImageHold {
    images: Arc<VmImages>,
    digest: Digest,
}

impl Drop for ImageHold {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.images.in_flight);
        if let Some(count) = in_flight.get_mut(&self.digest) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&self.digest);
            }
        }
    }
}

#[async_trait]
impl ImagesInUse for VmImages {
    async fn manifest_digests_in_use(&self) -> Result<BTreeSet<Digest>, UseCaseError> {
        let held: Vec<Digest> = lock(&self.in_flight).keys().cloned().collect();
        let mut digests = image_digests(&self.hypervisor.list_vms().await?);
        digests.extend(held);
        Ok(digests)
    }
}

struct Inner {
    hypervisor: Arc<dyn VmDriver>,
    runtime: RuntimeDirs,
    provisioner: Provisioner,
    /// VMs being created or removed: one such change per name at a time.
    busy: Mutex<BTreeSet<VmName>>,
    defaults: Arc<DefaultNetworks>,
}

/// Marks a name busy until dropped.
struct Busy {
    inner: Arc<Inner>,
    name: VmName,
}

impl Drop for Busy {
    fn drop(&mut self) {
        lock(&self.inner.busy).remove(&self.name);
    }
}

/// The VM use cases.
#[derive(Clone)]
pub struct VmService {
    inner: Arc<Inner>,
}

impl VmService {
    /// The VM use cases over `hypervisor`'s VMs; `networks` is read (for
    /// the NICs' checks) and holds the default networks it makes.
    pub fn new(
        hypervisor: Arc<dyn VmDriver>,
        networks: Arc<dyn NetworkDriver>,
        media: VmMedia,
        images: Arc<ImageService>,
        runtime: RuntimeDirs,
        usage: Arc<VmImages>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                // Default networks are published like the ones users create.
                defaults: Arc::new(
                    DefaultNetworks::new(NetworkService::new(
                        Arc::clone(&networks),
                        Arc::clone(&hypervisor),
                    ))
                    .with_events(images.events().clone()),
                ),
                provisioner: Provisioner::new(
                    hypervisor.clone(),
                    networks,
                    media,
                    images,
                    runtime.clone(),
                    usage,
                ),
                hypervisor,
                runtime,
                busy: Mutex::new(BTreeSet::new()),
            }),
        }
    }

    pub fn runtime(&self) -> &RuntimeDirs {
        &self.inner.runtime
    }

    /// The default networks, shared with compose so that every first use
    /// is serialised through one lock.
    pub fn default_networks(&self) -> &Arc<DefaultNetworks> {
        &self.inner.defaults
    }

    fn claim(&self, name: &VmName, kind: ErrorKind) -> Result<Busy, UseCaseError> {
        if !lock(&self.inner.busy).insert(name.clone()) {
            return Err(UseCaseError::new(
                kind,
                format!("VM {name} is being created or removed right now"),
            ));
        }
        Ok(Busy {
            inner: Arc::clone(&self.inner),
            name: name.clone(),
        })
    }

    /// The one way VMs are made from images, compose's too.
    pub fn provisioner(&self) -> &Provisioner {
        &self.inner.provisioner
    }

    /// Checks a blueprint and builds what it would create, creating nothing.
    pub async fn prepare(&self, blueprint: &VmBlueprint) -> Result<PreparedVm, UseCaseError> {
        Ok(self.inner.provisioner.prepare(blueprint).await?.vm)
    }

    /// Creates a VM from a blueprint; see [`VmUseCases::create`].
    #[instrument(skip_all, fields(vm = %blueprint.request.name))]
    pub async fn create_from(&self, blueprint: VmBlueprint) -> Result<VmRecord, UseCaseError> {
        let busy = self.claim(&blueprint.request.name, ErrorKind::AlreadyExists)?;
        let provision = self.inner.provisioner.prepare(&blueprint).await?;
        self.create_claimed(busy, provision).await
    }

    /// Creates a VM another use case prepared (compose), under the same
    /// per-name exclusion as `create` and `remove`.
    #[instrument(skip_all, fields(vm = %provision.vm.spec.name))]
    pub async fn create_prepared(&self, provision: Provision) -> Result<VmRecord, UseCaseError> {
        let busy = self.claim(provision.vm.name(), ErrorKind::AlreadyExists)?;
        self.create_claimed(busy, provision).await
    }

    async fn create_claimed(
        &self,
        busy: Busy,
        provision: Provision,
    ) -> Result<VmRecord, UseCaseError> {
        let record = self.inner.provisioner.create(provision, busy).await?;
        info!(vm = %record.spec.name, state = %record.state, "VM created");
        Ok(record)
    }

    async fn record(&self, name: &VmName) -> Result<VmRecord, UseCaseError> {
        Ok(self.inner.hypervisor.inspect_vm(name).await?.record)
    }

    async fn remove_now(inner: &Inner, name: &VmName, force: bool) -> Result<(), UseCaseError> {
        let record = inner.hypervisor.inspect_vm(name).await?.record;
        if record.state.is_active() {
            if !force {
                return Err(UseCaseError::precondition(format!(
                    "VM {name} is {}; stop it first or remove it with --force",
                    record.state
                )));
            }
            inner.runtime.mark_stopped(name).await;
        }
        // A restart its policy had scheduled before the stop mark may still
        // start it between the stop and the undefine: stop it again.
        let mut active = record.state.is_active();
        let mut attempts = 0;
        loop {
            if active {
                match inner.hypervisor.stop_vm(name, StopMode::Force).await {
                    // It went down by itself meanwhile.
                    Ok(()) | Err(HypervisorError::InvalidState { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match inner.hypervisor.undefine_vm(name).await {
                Err(HypervisorError::InvalidState { .. }) if force && attempts < 3 => {
                    attempts += 1;
                    active = true;
                    inner.runtime.mark_stopped(name).await;
                }
                other => break other?,
            }
        }
        inner.runtime.remove(name).await.map_err(|e| {
            UseCaseError::internal(format!(
                "VM {name} is removed, but its runtime files in {} are not: {e}",
                inner.runtime.dir(name).display()
            ))
        })?;
        Ok(())
    }
}

/// The hypervisor's stop mode for a request: forced at once when forced
/// without a timeout; ACPI then forced when forced with one; ACPI only
/// (with the default timeout) otherwise.
pub fn stop_mode(how: StopVm) -> StopMode {
    match (how.force, how.timeout) {
        (true, None) => StopMode::Force,
        (true, Some(timeout)) => StopMode::GracefulThenForce { timeout },
        (false, timeout) => StopMode::Graceful {
            timeout: timeout.unwrap_or(DEFAULT_STOP_TIMEOUT),
        },
    }
}

#[async_trait]
impl VmUseCases for VmService {
    async fn create(&self, mut request: CreateVm) -> Result<VmRecord, UseCaseError> {
        ways_in::add_ssh_keys(&mut request)?;
        ways_in::check_network_choice(&request)?;
        if request.networks.is_empty() && !request.no_network {
            // Everything else is checked first: a bad request must not
            // leave a new default network behind.
            self.prepare(&request.clone().into()).await?;
            let network = self.inner.defaults.ensure(DEFAULT_NETWORK, None).await?;
            request.networks.push(NicRequest {
                network,
                static_ip: None,
                gateway: None,
                mac: None,
            });
        }
        self.create_from(request.into()).await
    }

    #[instrument(skip(self))]
    async fn start(&self, name: &VmName) -> Result<VmRecord, UseCaseError> {
        let mut phases = Phases::new(name);
        self.inner.hypervisor.start_vm(name).await?;
        phases.start("start");
        self.inner.runtime.clear_stopped(name).await;
        info!(vm = %name, "VM started");
        let record = self.record(name).await;
        phases.start("inspect");
        record
    }

    #[instrument(skip(self))]
    async fn stop(&self, name: &VmName, how: StopVm) -> Result<VmRecord, UseCaseError> {
        // Known before the VM goes down, so that no restart policy races it;
        // kept even if the stop fails: the user wants the VM down.
        self.inner.hypervisor.inspect_vm(name).await?;
        self.inner.runtime.mark_stopped(name).await;
        self.inner.hypervisor.stop_vm(name, stop_mode(how)).await?;
        info!(vm = %name, "VM stopped");
        self.record(name).await
    }

    #[instrument(skip(self))]
    async fn restart(
        &self,
        name: &VmName,
        timeout: Option<Duration>,
    ) -> Result<VmRecord, UseCaseError> {
        let timeout = timeout.unwrap_or(DEFAULT_STOP_TIMEOUT);
        self.inner
            .hypervisor
            .restart_vm(name, StopMode::GracefulThenForce { timeout })
            .await?;
        self.inner.runtime.clear_stopped(name).await;
        info!(vm = %name, "VM restarted");
        self.record(name).await
    }

    #[instrument(skip(self))]
    async fn remove(&self, name: &VmName, force: bool) -> Result<(), UseCaseError> {
        let busy = self.claim(name, ErrorKind::FailedPrecondition)?;
        let inner = Arc::clone(&self.inner);
        let name = name.clone();
        // Like create: once begun, a removal finishes even if the caller
        // goes away.
        tokio::spawn(async move {
            let _busy = busy;
            Self::remove_now(&inner, &name, force).await?;
            info!(vm = %name, "VM removed");
            Ok(())
        })
        .await
        .map_err(|e| UseCaseError::internal(format!("the remove task failed: {e}")))?
    }

    async fn list(&self, filter: VmFilter) -> Result<Vec<VmRecord>, UseCaseError> {
        let mut vms: Vec<VmRecord> = self
            .inner
            .hypervisor
            .list_vms()
            .await?
            .into_iter()
            .filter(|vm| filter.all || vm.state.is_active())
            .filter(|vm| {
                filter
                    .project
                    .as_ref()
                    .is_none_or(|p| vm.spec.labels.project.as_ref() == Some(p))
            })
            .collect();
        vms.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(vms)
    }

    async fn inspect(&self, name: &VmName) -> Result<VmDetails, UseCaseError> {
        Ok(self.inner.hypervisor.inspect_vm(name).await?)
    }
}

#[cfg(test)]
pub(crate) mod over_fake;
#[cfg(test)]
mod tests;
