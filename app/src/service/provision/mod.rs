//! The one way from an image to a VM, for `vmr create`/`run` and every
//! compose service alike. [`Provisioner::prepare`] reads the image (leased,
//! so that garbage collection cannot take its blobs before the VM is
//! defined), resolves the NICs, and applies the domain's rule
//! ([`vmr_domain::provision`]) for the spec and the cloud-init seed,
//! creating nothing; [`Provisioner::create`] then makes them real (runtime
//! directory, disk, seed medium, definition, start), undoing everything
//! when a step fails.

mod image;
mod make;
mod nics;
mod phases;

use std::collections::BTreeMap;
use std::sync::Arc;

use vmr_domain::cloudinit::CloudInitSeed;
use vmr_domain::image::{CPU_RANGE, Digest, DiskFormat, MIN_MEMORY_BYTES};
use vmr_domain::network::NetworkName;
use vmr_domain::provision::{Nic, Overrides, SeedInput, provision};
use vmr_domain::units::ByteSize;
use vmr_domain::validation::check_simple_name;
use vmr_domain::vm::{VmName, VmSpec};
use vmr_ports::driving::{CreateVm, ErrorKind, UseCaseError};
use vmr_ports::{NetworkDriver, NetworkRecord, OverlayDisks, SeedMedia, VmDriver, VmRecord};

use crate::service::images::Lease;
use crate::service::vms::RuntimeDirs;
use crate::service::{ImageService, VmImages};
pub(crate) use phases::Phases;

/// Where a VM's NICs come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Nics {
    /// From `request.networks`, checked against the networks and VMs that
    /// exist (addresses, MACs, active networks), for a new VM: its name must
    /// be free and the request's values in range.
    #[default]
    Requested,
    /// Decided by a compose plan, whose addresses and MACs the domain
    /// checked against the file: the networks may not exist yet, and the VM
    /// may (compose compares its hash).
    Planned(Vec<Nic>),
}

/// What a VM is made from: a VM request plus what only some callers give.
/// New inputs (a default network, an SSH key) become fields here.
#[derive(Debug, Clone)]
pub struct VmBlueprint {
    pub request: CreateVm,
    pub nics: Nics,
    /// Extra meta-data keys.
    pub extra_meta_data: BTreeMap<String, serde_yaml::Value>,
    /// A network-config that replaces the generated one.
    pub network_config: Option<String>,
}

impl From<CreateVm> for VmBlueprint {
    fn from(request: CreateVm) -> Self {
        Self {
            request,
            nics: Nics::Requested,
            extra_meta_data: BTreeMap::new(),
            network_config: None,
        }
    }
}

/// A checked VM, ready to be created.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedVm {
    pub spec: VmSpec,
    pub seed: CloudInitSeed,
    /// `spec.spec_hash_with_seed(seed)`: what compose compares.
    pub spec_hash: String,
    /// The image's disk blob and its format (from the layer's media type).
    pub disk_digest: Digest,
    pub disk_format: DiskFormat,
    pub start: bool,
}

impl PreparedVm {
    pub fn name(&self) -> &VmName {
        &self.spec.name
    }
}

/// A prepared VM with the lease on its image's blobs, held until the VM is
/// defined (then its image is in use).
#[derive(Debug)]
pub struct Provision {
    pub vm: PreparedVm,
    lease: Lease,
}

fn with_field(mut error: UseCaseError, field: impl Into<String>) -> UseCaseError {
    error.field = Some(field.into());
    error
}

/// The driven ports a VM's files are made with, beside the hypervisor.
#[derive(Clone)]
pub struct VmMedia {
    /// Its disk: an overlay over the image's blob, or a blank disk.
    pub disks: Arc<dyn OverlayDisks>,
    /// Its cloud-init seed medium.
    pub seeds: Arc<dyn SeedMedia>,
}

/// Turns blueprints into VMs.
#[derive(Clone)]
pub struct Provisioner {
    hypervisor: Arc<dyn VmDriver>,
    /// Only read: the networks a VM's NICs attach to.
    networks: Arc<dyn NetworkDriver>,
    media: VmMedia,
    images: Arc<ImageService>,
    runtime: RuntimeDirs,
    usage: Arc<VmImages>,
}

impl Provisioner {
    pub fn new(
        hypervisor: Arc<dyn VmDriver>,
        networks: Arc<dyn NetworkDriver>,
        media: VmMedia,
        images: Arc<ImageService>,
        runtime: RuntimeDirs,
        usage: Arc<VmImages>,
    ) -> Self {
        Self {
            hypervisor,
            networks,
            media,
            images,
            runtime,
            usage,
        }
    }

    pub fn runtime(&self) -> &RuntimeDirs {
        &self.runtime
    }

    /// Checks a blueprint against the image store (and, for requested NICs,
    /// the hypervisor's VMs and networks) and builds the VM's spec and seed;
    /// creates nothing.
    pub async fn prepare(&self, blueprint: &VmBlueprint) -> Result<Provision, UseCaseError> {
        let request = &blueprint.request;
        let (image, lease, nics) = match &blueprint.nics {
            Nics::Requested => {
                let vms = self.check_new(request).await?;
                let (image, lease) = image::load(&self.images, &request.image).await?;
                let nics = self.requested_nics(request, &vms).await?;
                (image, lease, nics)
            }
            Nics::Planned(nics) => {
                let (image, lease) = image::load(&self.images, &request.image).await?;
                (image, lease, nics.clone())
            }
        };
        let overrides = Overrides {
            name: request.name.clone(),
            image: request.image.clone(),
            cpu: request.cpu,
            memory: request.memory,
            disk_size: request.disk_size,
            restart_policy: request.restart_policy,
            project: request.project.clone(),
            service: request.service.clone(),
        };
        let made = provision(
            &image,
            &overrides,
            &nics,
            SeedInput {
                user_data: request.user_data.clone(),
                extra_meta_data: blueprint.extra_meta_data.clone(),
                network_config: blueprint.network_config.clone(),
            },
        )?;
        let vm = PreparedVm {
            spec: made.spec,
            seed: made.seed,
            spec_hash: made.spec_hash,
            disk_digest: image.disk_digest,
            disk_format: image.disk_format,
            start: request.start,
        };
        Ok(Provision { vm, lease })
    }

    /// A new VM's checks: its name is free, its values in range. Returns
    /// the VMs that exist.
    async fn check_new(&self, request: &CreateVm) -> Result<Vec<VmRecord>, UseCaseError> {
        let name = &request.name;
        let vms = self.hypervisor.list_vms().await?;
        if vms.iter().any(|vm| &vm.spec.name == name) {
            return Err(UseCaseError::new(
                ErrorKind::AlreadyExists,
                format!("VM {name} already exists"),
            ));
        }
        if let Some(cpu) = request.cpu
            && !CPU_RANGE.contains(&u64::from(cpu))
        {
            return Err(UseCaseError::invalid(
                "cpu",
                format!(
                    "{cpu} is outside {}..={}",
                    CPU_RANGE.start(),
                    CPU_RANGE.end()
                ),
            ));
        }
        if let Some(memory) = request.memory
            && memory.bytes() < MIN_MEMORY_BYTES
        {
            return Err(UseCaseError::invalid(
                "memory",
                format!(
                    "{memory} is less than the minimum of {}",
                    ByteSize(MIN_MEMORY_BYTES)
                ),
            ));
        }
        if request.disk_size == Some(ByteSize(0)) {
            return Err(UseCaseError::invalid(
                "disk_size",
                "must be larger than 0 bytes",
            ));
        }
        for (field, value) in [("project", &request.project), ("service", &request.service)] {
            if let Some(value) = value {
                check_simple_name(field, value)?;
            }
        }
        Ok(vms)
    }

    /// The request's NICs, checked against the networks and the VMs.
    async fn requested_nics(
        &self,
        request: &CreateVm,
        vms: &[VmRecord],
    ) -> Result<Vec<Nic>, UseCaseError> {
        let networks: BTreeMap<NetworkName, NetworkRecord> = self
            .networks
            .list_networks()
            .await?
            .into_iter()
            .map(|n| (n.spec.name.clone(), n))
            .collect();
        let mut taken = nics::Taken::of(vms);
        let mut nics = Vec::with_capacity(request.networks.len());
        let mut seen: BTreeMap<&NetworkName, usize> = BTreeMap::new();
        for (index, nic) in request.networks.iter().enumerate() {
            let network = networks.get(&nic.network).ok_or_else(|| {
                with_field(
                    UseCaseError::not_found(format!("network {} not found", nic.network)),
                    format!("networks[{index}].network"),
                )
            })?;
            if request.start && !network.active {
                return Err(UseCaseError::precondition(format!(
                    "network {0} is not active; start it with `vmr network start {0}`",
                    nic.network
                )));
            }
            let occurrence = seen.entry(&nic.network).or_insert(0);
            nics.push(nics::attach(
                request.name.as_str(),
                index,
                nic,
                network,
                &mut taken,
                *occurrence,
            )?);
            *occurrence += 1;
        }
        Ok(nics)
    }

    /// Creates the prepared VM: runtime directory, disk, seed medium and
    /// definition, and starts it when asked; on failure, nothing is left.
    /// Runs on a task of its own: a caller that goes away mid-way must not
    /// leave half a VM behind, so the steps and their rollback finish;
    /// `guard` (the caller's claim on the name) lives as long as they do.
    pub async fn create<G: Send + 'static>(
        &self,
        provision: Provision,
        guard: G,
    ) -> Result<VmRecord, UseCaseError> {
        let Provision { vm, lease } = provision;
        let hold = vm
            .spec
            .labels
            .image_digest
            .clone()
            .map(|digest| self.usage.hold(digest));
        let this = self.clone();
        let task = tokio::spawn(async move {
            let _guard = guard;
            let _hold = hold;
            let _lease = lease;
            make::create(
                &this.hypervisor,
                &this.media,
                this.images.store().as_ref(),
                &this.runtime,
                vm,
            )
            .await
        });
        task.await
            .map_err(|e| UseCaseError::internal(format!("the create task failed: {e}")))?
    }
}
