//! Creating a VM in two steps. [`prepare`] checks everything a request can
//! get wrong (name, resources, image, networks, addresses, MACs, cloud-init)
//! and builds the spec and the cloud-init seed without touching anything.
//! [`materialize`] then makes the runtime directory, the disk, the seed ISO
//! and the definition, and starts the VM when asked, undoing all of it when
//! a step fails.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::Ipv4Net;
use vmr_adapters::cloudinit::write_cidata_iso;
use vmr_domain::cloudinit::{CloudInitSeed, MetaData, NetworkConfigV2, NicConfig};
use vmr_domain::image::{
    CPU_RANGE, Digest, DiskFormat, ImageConfig, MIN_MEMORY_BYTES, Manifest, Reference,
};
use vmr_domain::network::{MacAddr, NetworkMode, NetworkName};
use vmr_domain::units::ByteSize;
use vmr_domain::validation::check_simple_name;
use vmr_domain::vm::{NetworkAttachment, VmLabels, VmSpec};
use vmr_ports::blobstore::BlobStore;
use vmr_ports::driving::{CreateVm, ErrorKind, NicRequest, UseCaseError};
use vmr_ports::{
    DiskAttachment, Hypervisor, HypervisorError, NetworkRecord, StopMode, VmDefinition, VmRecord,
};

use super::runtime::RuntimeDirs;
use crate::service::ImageService;

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
}

fn with_field(mut error: UseCaseError, field: impl Into<String>) -> UseCaseError {
    error.field = Some(field.into());
    error
}

async fn load_image(
    images: &ImageService,
    reference: &Reference,
) -> Result<ImageFacts, UseCaseError> {
    let (_, manifest_bytes) = images
        .resolve(reference)
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
    })
}

/// Addresses and MACs already taken, by whom.
struct Taken {
    macs: BTreeMap<MacAddr, String>,
    addresses: BTreeMap<(NetworkName, Ipv4Addr), String>,
}

impl Taken {
    fn of(vms: &[VmRecord]) -> Self {
        let mut taken = Self {
            macs: BTreeMap::new(),
            addresses: BTreeMap::new(),
        };
        for vm in vms {
            let owner = vm.spec.name.to_string();
            for nic in &vm.spec.networks {
                taken.macs.insert(nic.mac, owner.clone());
                if let Some(ip) = nic.static_ip {
                    taken
                        .addresses
                        .insert((nic.network.clone(), ip.addr()), owner.clone());
                }
            }
            for iface in &vm.interfaces {
                if let Some(ip) = iface.ip {
                    taken
                        .addresses
                        .insert((iface.network.clone(), ip), owner.clone());
                }
            }
        }
        taken
    }
}

/// Builds one NIC: its attachment and its network-config entry.
fn attach(
    vm: &str,
    index: usize,
    nic: &NicRequest,
    network: &NetworkRecord,
    taken: &mut Taken,
    occurrence: usize,
) -> Result<(NetworkAttachment, NicConfig), UseCaseError> {
    let field = |name: &str| format!("networks[{index}].{name}");
    let ipv4 = network.spec.ipv4;
    let static_ip = match nic.static_ip {
        None => None,
        Some(requested) => {
            let net = match (ipv4, requested.prefix_len) {
                (Some(cfg), prefix) => {
                    if let Some(prefix) = prefix
                        && prefix != cfg.subnet.prefix_len()
                    {
                        return Err(UseCaseError::invalid(
                            field("static_ip"),
                            format!(
                                "{}/{prefix} does not match the subnet {} of network {}",
                                requested.addr, cfg.subnet, nic.network
                            ),
                        ));
                    }
                    cfg.check_static_ip(requested.addr).map_err(|reason| {
                        UseCaseError::invalid(
                            field("static_ip"),
                            format!("{reason} of network {}", nic.network),
                        )
                    })?;
                    cfg.with_prefix(requested.addr)
                }
                (None, Some(prefix)) => Ipv4Net::new(requested.addr, prefix).map_err(|_| {
                    UseCaseError::invalid(
                        field("static_ip"),
                        format!("/{prefix} is not an IPv4 prefix length"),
                    )
                })?,
                (None, None) => {
                    return Err(UseCaseError::invalid(
                        field("static_ip"),
                        format!(
                            "network {} is {} and has no subnet vmr knows: give the address with its prefix length, like {}/24",
                            nic.network, network.spec.mode, requested.addr
                        ),
                    ));
                }
            };
            let key = (nic.network.clone(), net.addr());
            if let Some(owner) = taken.addresses.get(&key) {
                return Err(UseCaseError::invalid(
                    field("static_ip"),
                    format!(
                        "{} is already used by VM {owner} on network {}",
                        net.addr(),
                        nic.network
                    ),
                ));
            }
            taken.addresses.insert(key, vm.to_owned());
            Some(net)
        }
    };
    let gateway = match (nic.gateway, ipv4) {
        (Some(gateway), Some(cfg)) if !cfg.subnet.contains(&gateway) => {
            return Err(UseCaseError::invalid(
                field("gateway"),
                format!(
                    "{gateway} is outside the subnet {} of network {}",
                    cfg.subnet, nic.network
                ),
            ));
        }
        (Some(gateway), _) => Some(gateway),
        // A static address on a network that forwards routes through the
        // host, as DHCP would have told the guest.
        (None, Some(cfg))
            if static_ip.is_some()
                && matches!(
                    network.spec.mode,
                    NetworkMode::Nat | NetworkMode::Routed | NetworkMode::Open
                ) =>
        {
            Some(cfg.gateway)
        }
        (None, _) => None,
    };
    let mac = match nic.mac {
        Some(mac) => {
            if let Some(owner) = taken.macs.get(&mac) {
                return Err(UseCaseError::invalid(
                    field("mac"),
                    format!("{mac} is already used by VM {owner}"),
                ));
            }
            mac
        }
        None => derive_mac(vm, &nic.network, occurrence, &taken.macs),
    };
    taken.macs.insert(mac, vm.to_owned());
    // dnsmasq answers DNS on the gateway of the networks vmr addresses;
    // DHCP tells a guest so itself, a static one needs it written down.
    let nameservers = match (static_ip, ipv4) {
        (Some(_), Some(cfg)) => vec![cfg.gateway],
        _ => Vec::new(),
    };
    let attachment = NetworkAttachment {
        network: nic.network.clone(),
        mac,
        static_ip,
        gateway,
    };
    let config = NicConfig {
        mac,
        address: static_ip,
        gateway,
        nameservers,
    };
    Ok((attachment, config))
}

/// A stable MAC for the VM's `occurrence`-th NIC on `network`, avoiding the
/// (unlikely) clash with one already in use.
fn derive_mac(
    vm: &str,
    network: &NetworkName,
    occurrence: usize,
    taken: &BTreeMap<MacAddr, String>,
) -> MacAddr {
    let seed = if occurrence == 0 {
        format!("{vm}/{network}")
    } else {
        format!("{vm}/{network}/{occurrence}")
    };
    let mut mac = MacAddr::derive(&seed);
    for attempt in 1..=64 {
        if !taken.contains_key(&mac) {
            break;
        }
        mac = MacAddr::derive(&format!("{seed}#{attempt}"));
    }
    mac
}

/// Checks a request against the image store and the hypervisor's VMs and
/// networks; creates nothing.
pub async fn prepare(
    hypervisor: &dyn Hypervisor,
    images: &ImageService,
    blueprint: &VmBlueprint,
) -> Result<PreparedVm, UseCaseError> {
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
            format!("{cpu} is outside {}..={}", CPU_RANGE.start(), CPU_RANGE.end()),
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
        let (attachment, config) = attach(
            name.as_str(),
            index,
            nic,
            network,
            &mut taken,
            *occurrence,
        )?;
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
    Ok(PreparedVm {
        spec,
        seed,
        spec_hash,
        disk_digest: image.disk_digest,
        disk_format: image.disk_format,
        start: request.start,
    })
}

/// Changes with the spec, so that a recreated, different VM is a new
/// instance to cloud-init.
fn instance_id(spec: &VmSpec) -> String {
    format!("vmr-{}-{}", spec.name, &spec.spec_hash()[..12])
}

/// What has been made so far, to undo on failure.
#[derive(Default)]
struct Made {
    dir: bool,
    defined: bool,
}

/// Creates the runtime files and the definition, and starts the VM when
/// asked. On failure, undoes what it made and returns the first error.
pub async fn materialize(
    hypervisor: &Arc<dyn Hypervisor>,
    store: &Arc<dyn BlobStore>,
    runtime: &RuntimeDirs,
    prepared: PreparedVm,
) -> Result<VmRecord, UseCaseError> {
    let name = prepared.spec.name.clone();
    let mut made = Made::default();
    let result = build(hypervisor, store, runtime, prepared, &mut made).await;
    if let Err(error) = &result {
        tracing::warn!(vm = %name, %error, "creating the VM failed; undoing");
        if made.defined {
            if let Err(e) = hypervisor.stop_vm(&name, StopMode::Force).await
                && !matches!(e, HypervisorError::InvalidState { .. })
            {
                tracing::warn!(vm = %name, error = %e, "rollback: cannot power the VM off");
            }
            if let Err(e) = hypervisor.undefine_vm(&name).await {
                tracing::warn!(vm = %name, error = %e, "rollback: cannot undefine the VM");
            }
        }
        if made.dir
            && let Err(e) = runtime.remove(&name).await
        {
            tracing::warn!(vm = %name, error = %e, "rollback: cannot remove the runtime files");
        }
    }
    result
}

fn io_error(what: &str, path: &std::path::Path, e: &std::io::Error) -> UseCaseError {
    UseCaseError::internal(format!("cannot {what} {}: {e}", path.display()))
}

async fn build(
    hypervisor: &Arc<dyn Hypervisor>,
    store: &Arc<dyn BlobStore>,
    runtime: &RuntimeDirs,
    prepared: PreparedVm,
    made: &mut Made,
) -> Result<VmRecord, UseCaseError> {
    let PreparedVm {
        spec,
        seed,
        spec_hash,
        disk_digest,
        disk_format,
        start,
    } = prepared;
    let name = spec.name.clone();
    let base = store.local_path(&disk_digest).await?;

    // No VM has this name (checked), so a directory of that name is what a
    // crash during an earlier create or remove left behind.
    if runtime.exists(&name).await {
        tracing::warn!(vm = %name, "removing runtime files left by an earlier VM of that name");
        runtime
            .remove(&name)
            .await
            .map_err(|e| io_error("remove", &runtime.dir(&name), &e))?;
    }
    runtime
        .create(&name)
        .await
        .map_err(|e| io_error("create", &runtime.dir(&name), &e))?;
    made.dir = true;

    let disk_path = runtime.disk(&name);
    let qcow2 = |path: PathBuf| DiskAttachment {
        path,
        format: DiskFormat::Qcow2,
    };
    let cidata = runtime.cidata(&name);
    let (disk, cdroms, boot_from_cdrom) = match disk_format {
        DiskFormat::Iso => {
            let disk = match spec.disk_size {
                Some(size) => {
                    hypervisor
                        .create_blank_disk(&disk_path, size.bytes())
                        .await?;
                    Some(qcow2(disk_path))
                }
                None => None,
            };
            (disk, vec![base, cidata.clone()], true)
        }
        DiskFormat::Qcow2 | DiskFormat::Raw => {
            hypervisor
                .create_overlay(
                    &base,
                    disk_format,
                    &disk_path,
                    spec.disk_size.map(ByteSize::bytes),
                )
                .await?;
            (Some(qcow2(disk_path)), vec![cidata.clone()], false)
        }
    };
    write_cidata_iso(&seed, &cidata)
        .await
        .map_err(|e| UseCaseError::internal(e.to_string()).with_source(e))?;

    let definition = VmDefinition {
        spec,
        disk,
        cdroms,
        boot_from_cdrom,
        console_log: runtime.console_log(&name),
        spec_hash,
    };
    let record = hypervisor.define_vm(&definition).await?;
    made.defined = true;
    if !start {
        return Ok(record);
    }
    hypervisor.start_vm(&name).await?;
    Ok(hypervisor.inspect_vm(&name).await?.record)
}

/// Digests of the images a set of VMs runs from.
pub fn image_digests(vms: &[VmRecord]) -> BTreeSet<Digest> {
    vms.iter()
        .filter_map(|vm| vm.spec.labels.image_digest.clone())
        .collect()
}
