//! The first step of creating a VM: [`prepare`] checks everything a request
//! can get wrong (name, resources, image, networks, addresses, MACs,
//! cloud-init) and builds the spec and the cloud-init seed without touching
//! anything. `materialize` then makes them real.

use std::collections::BTreeMap;

use vmr_domain::cloudinit::{CloudInitSeed, MetaData, NetworkConfigV2};
use vmr_domain::image::{
    CPU_RANGE, Digest, DiskFormat, ImageConfig, MIN_MEMORY_BYTES, Manifest, Reference,
};
use vmr_domain::network::NetworkName;
use vmr_domain::units::ByteSize;
use vmr_domain::validation::check_simple_name;
use vmr_domain::vm::{VmLabels, VmSpec};
use vmr_ports::driving::{CreateVm, ErrorKind, UseCaseError};
use vmr_ports::{Hypervisor, NetworkRecord};

use super::nics::{Taken, attach};
use crate::service::ImageService;
use crate::service::images::Lease;

/// A VM request plus what only compose gives: extra meta-data keys and a
/// network-config that replaces the generated one.
#[derive(Debug, Clone)]
pub struct VmBlueprint {
    pub request: CreateVm,
    pub extra_meta_data: BTreeMap<String, serde_yaml::Value>,
    pub network_config: Option<String>,
}

impl From<CreateVm> for VmBlueprint {
    fn from(request: CreateVm) -> Self {
        Self {
            request,
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
    /// The image's disk blob and its format.
    pub disk_digest: Digest,
    pub disk_format: DiskFormat,
    pub start: bool,
}

/// What the image says, read from the store.
struct ImageFacts {
    manifest_digest: Digest,
    disk_digest: Digest,
    disk_format: DiskFormat,
    config: ImageConfig,
    /// The image's blobs, kept from garbage collection.
    lease: Lease,
}

fn with_field(mut error: UseCaseError, field: impl Into<String>) -> UseCaseError {
    error.field = Some(field.into());
    error
}

async fn load_image(
    images: &ImageService,
    reference: &Reference,
) -> Result<ImageFacts, UseCaseError> {
    let (_, manifest_bytes, lease) = images
        .resolve_leased(reference)
        .await
        .map_err(|e| with_field(e, "image"))?;
    let unusable = |reason: String| {
        UseCaseError::precondition(format!("image {reference} cannot be run: {reason}"))
    };
    let manifest = Manifest::from_json(&manifest_bytes).map_err(|e| unusable(e.to_string()))?;
    let layer = manifest
        .disk_layers()
        .first()
        .copied()
        .cloned()
        .ok_or_else(|| unusable("its manifest has no disk layer".into()))?;
    let disk_format = layer
        .disk_format()
        .ok_or_else(|| unusable("its disk layer has no disk format".into()))?;
    let config_bytes = images.store().read_blob(&manifest.config.digest).await?;
    let config = ImageConfig::from_json(&config_bytes).map_err(|e| unusable(e.to_string()))?;
    Ok(ImageFacts {
        manifest_digest: Digest::of(&manifest_bytes),
        disk_digest: layer.digest,
        disk_format,
        config,
        lease,
    })
}

/// Checks a request against the image store and the hypervisor's VMs and
/// networks; creates nothing.
pub async fn prepare(
    hypervisor: &dyn Hypervisor,
    images: &ImageService,
    blueprint: &VmBlueprint,
) -> Result<PreparedVm, UseCaseError> {
    Ok(prepare_leased(hypervisor, images, blueprint).await?.0)
}

/// [`prepare`], with a lease on the image's blobs taken when it was read:
/// hold it until the VM is defined (then its image is in use).
pub async fn prepare_leased(
    hypervisor: &dyn Hypervisor,
    images: &ImageService,
    blueprint: &VmBlueprint,
) -> Result<(PreparedVm, Lease), UseCaseError> {
    let request = &blueprint.request;
    let name = &request.name;
    let vms = hypervisor.list_vms().await?;
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

    let image = load_image(images, &request.image).await?;

    let networks: BTreeMap<NetworkName, NetworkRecord> = hypervisor
        .list_networks()
        .await?
        .into_iter()
        .map(|n| (n.spec.name.clone(), n))
        .collect();
    let mut taken = Taken::of(&vms);
    let mut attachments = Vec::with_capacity(request.networks.len());
    let mut nic_configs = Vec::with_capacity(request.networks.len());
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
        let (attachment, config) =
            attach(name.as_str(), index, nic, network, &mut taken, *occurrence)?;
        *occurrence += 1;
        attachments.push(attachment);
        nic_configs.push(config);
    }

    let resources = image.config.spec.resources;
    let disk_size = match image.disk_format {
        DiskFormat::Iso => request.disk_size,
        // The overlay is at least as large as the image's disk: a smaller
        // size cannot shrink it.
        DiskFormat::Qcow2 | DiskFormat::Raw => Some(ByteSize(
            request
                .disk_size
                .map_or(0, ByteSize::bytes)
                .max(image.config.disk.virtual_size),
        )),
    };
    let spec = VmSpec {
        name: name.clone(),
        cpu: request.cpu.unwrap_or(resources.cpu),
        memory: request.memory.unwrap_or(ByteSize(resources.memory)),
        disk_size,
        bootloader: resources.bootloader,
        networks: attachments,
        restart_policy: request.restart_policy,
        labels: VmLabels {
            image: request.image.to_string(),
            image_digest: Some(image.manifest_digest.clone()),
            project: request.project.clone(),
            service: request.service.clone(),
        },
    };

    let mut meta = MetaData::new(instance_id(&spec), name.as_str());
    meta.extra = blueprint.extra_meta_data.clone();
    let seed = CloudInitSeed::build(
        request.user_data.clone(),
        &meta,
        &NetworkConfigV2 { nics: nic_configs },
        blueprint.network_config.clone(),
    )?;
    let spec_hash = spec.spec_hash_with_seed(Some(&seed));
    let prepared = PreparedVm {
        spec,
        seed,
        spec_hash,
        disk_digest: image.disk_digest,
        disk_format: image.disk_format,
        start: request.start,
    };
    Ok((prepared, image.lease))
}

/// Changes with the spec, so that a recreated, different VM is a new
/// instance to cloud-init.
fn instance_id(spec: &VmSpec) -> String {
    format!("vmr-{}-{}", spec.name, &spec.spec_hash()[..12])
}
