//! The one rule that turns an image and a caller's overrides into what a VM
//! is created from: its [`VmSpec`] (the image's cpu, memory and bootloader
//! unless overridden, an overlay never smaller than the image's disk, the
//! labels vmr keeps) and its cloud-init seed (hostname = VM name, an
//! instance-id that changes with the spec, each static NIC told the DNS
//! server of its network). `vmr create`/`run` and every compose service go
//! through [`provision`], so the two cannot drift apart.

use std::collections::BTreeMap;

use crate::ValidationError;
use crate::cloudinit::{CloudInitSeed, MetaData, NetworkConfigV2, NicConfig};
use crate::image::{Digest, DiskFormat, ImageConfig, Manifest, Reference};
use crate::network::Ipv4Config;
use crate::units::ByteSize;
use crate::vm::{NetworkAttachment, RestartPolicy, VmLabels, VmName, VmSpec};

/// Why an image in the store cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnusableImage {
    #[error("its manifest has no disk layer")]
    NoDiskLayer,
}

/// The disk of an image: its first disk layer's blob and the format its
/// media type names (the one place a VM's disk format is taken from).
pub fn disk_layer(manifest: &Manifest) -> Result<(Digest, DiskFormat), UnusableImage> {
    manifest
        .disk_layers()
        .first()
        .and_then(|layer| Some((layer.digest.clone(), layer.disk_format()?)))
        .ok_or(UnusableImage::NoDiskLayer)
}

/// A local image, as far as running it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnableImage {
    /// The manifest's digest (kept in the VM's labels).
    pub manifest_digest: Digest,
    /// The disk blob and its format.
    pub disk_digest: Digest,
    pub disk_format: DiskFormat,
    pub config: ImageConfig,
}

/// What the caller sets instead of the image's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overrides {
    pub name: VmName,
    /// The reference as the user wrote it (kept in the labels).
    pub image: Reference,
    pub cpu: Option<u32>,
    pub memory: Option<ByteSize>,
    pub disk_size: Option<ByteSize>,
    pub restart_policy: RestartPolicy,
    /// Compose project and service.
    pub project: Option<String>,
    pub service: Option<String>,
}

/// One NIC: its attachment, and its network's IPv4 settings when vmr knows
/// them (libvirt's dnsmasq answers DNS on that gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub attachment: NetworkAttachment,
    pub ipv4: Option<Ipv4Config>,
}

impl Nic {
    /// The NIC's network-config entry: a static address needs its DNS server
    /// written down (DHCP tells the guest itself), the network's gateway.
    pub fn config(&self) -> NicConfig {
        let nameservers = match (self.attachment.static_ip, self.ipv4) {
            (Some(_), Some(cfg)) => vec![cfg.gateway],
            _ => Vec::new(),
        };
        NicConfig::from_attachment(&self.attachment, &nameservers)
    }
}

/// The cloud-init input besides what the spec decides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeedInput {
    /// `None`: a minimal `#cloud-config`.
    pub user_data: Option<Vec<u8>>,
    /// Extra meta-data keys (compose `metaData`).
    pub extra_meta_data: BTreeMap<String, serde_yaml::Value>,
    /// A network-config that replaces the generated one.
    pub network_config: Option<String>,
}

/// A VM ready to be created: its spec, its seed and the hash of both.
#[derive(Debug, Clone, PartialEq)]
pub struct Provisioned {
    pub spec: VmSpec,
    pub seed: CloudInitSeed,
    /// `spec.spec_hash_with_seed(seed)`: what compose compares with a VM.
    pub spec_hash: String,
}

/// The size of the VM's disk: an overlay is at least as large as the
/// image's disk (a smaller size cannot shrink it); an `iso` image gets a
/// blank disk only when a size is asked.
pub fn disk_size(
    format: DiskFormat,
    requested: Option<ByteSize>,
    image_virtual_size: u64,
) -> Option<ByteSize> {
    match format {
        DiskFormat::Iso => requested,
        DiskFormat::Qcow2 | DiskFormat::Raw => Some(ByteSize(
            requested.map_or(0, ByteSize::bytes).max(image_virtual_size),
        )),
    }
}

/// The VM's spec: the image's values unless overridden.
pub fn vm_spec(image: &RunnableImage, overrides: &Overrides, nics: &[Nic]) -> VmSpec {
    let resources = image.config.spec.resources;
    VmSpec {
        name: overrides.name.clone(),
        cpu: overrides.cpu.unwrap_or(resources.cpu),
        memory: overrides.memory.unwrap_or(ByteSize(resources.memory)),
        disk_size: disk_size(
            image.disk_format,
            overrides.disk_size,
            image.config.disk.virtual_size,
        ),
        bootloader: resources.bootloader,
        networks: nics.iter().map(|n| n.attachment.clone()).collect(),
        restart_policy: overrides.restart_policy,
        labels: VmLabels {
            image: overrides.image.to_string(),
            image_digest: Some(image.manifest_digest.clone()),
            project: overrides.project.clone(),
            service: overrides.service.clone(),
        },
    }
}

/// Changes with the spec, so that a recreated, different VM is a new
/// instance to cloud-init.
pub fn instance_id(spec: &VmSpec) -> String {
    format!("vmr-{}-{}", spec.name, &spec.spec_hash()[..12])
}

/// The spec and the seed of a VM made from `image` with `overrides`.
/// Errors name the cloud-init field at fault (`cloudInit.userData`, ...).
pub fn provision(
    image: &RunnableImage,
    overrides: &Overrides,
    nics: &[Nic],
    seed: SeedInput,
) -> Result<Provisioned, ValidationError> {
    let spec = vm_spec(image, overrides, nics);
    let mut meta = MetaData::new(instance_id(&spec), spec.name.as_str());
    meta.extra = seed.extra_meta_data;
    let seed = CloudInitSeed::build(
        seed.user_data,
        &meta,
        &NetworkConfigV2 {
            nics: nics.iter().map(Nic::config).collect(),
        },
        seed.network_config,
    )?;
    let spec_hash = spec.spec_hash_with_seed(Some(&seed));
    Ok(Provisioned {
        spec,
        seed,
        spec_hash,
    })
}

#[cfg(test)]
mod tests;
