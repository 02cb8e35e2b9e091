//! [`ComposeRuntime`] over the VM and network use cases: starting and
//! removing VMs, and everything about networks, go through them (so the
//! stop marker restart policies read, the per-VM exclusion and the network
//! checks apply to compose too), and a VM is created by `vmr create`'s own
//! second step ([`materialize`]: runtime directory, disk, seed ISO,
//! definition, rollback). What compose needs that they do not offer is
//! here: a VM prepared from a *validated plan* (whose addresses, MACs and
//! cloud-init the domain already checked, and whose VM may exist, so that
//! its hash can be compared), which `vmr create`'s first step refuses.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use vmr_domain::cloudinit::{CloudInitSeed, MetaData, NetworkConfigV2, NicConfig};
use vmr_domain::compose::PlannedService;
use vmr_domain::image::{Digest, DiskFormat, ImageConfig, Manifest};
use vmr_domain::network::{NetworkName, NetworkSpec};
use vmr_domain::units::ByteSize;
use vmr_domain::vm::{VmLabels, VmName, VmSpec, VmState};
use vmr_ports::driving::{ErrorKind, NetworkUseCases, UseCaseError, VmFilter, VmUseCases};
use vmr_ports::{Hypervisor, HypervisorError, NetworkRecord, VmRecord};

use super::runtime::{ComposeRuntime, PreparedVm, ResolvedImage};
use crate::service::vms::{self, materialize};
use crate::service::{ImageService, RuntimeDirs, VmService};

/// Compose's runtime over vmr's own use cases.
pub struct ServiceRuntime {
    hypervisor: Arc<dyn Hypervisor>,
    images: Arc<ImageService>,
    vms: Arc<VmService>,
    networks: Arc<dyn NetworkUseCases>,
}

impl ServiceRuntime {
    pub fn new(
        hypervisor: Arc<dyn Hypervisor>,
        images: Arc<ImageService>,
        vms: Arc<VmService>,
        networks: Arc<dyn NetworkUseCases>,
    ) -> Self {
        Self {
            hypervisor,
            images,
            vms,
            networks,
        }
    }

    fn dirs(&self) -> &RuntimeDirs {
        self.vms.runtime()
    }

    /// The image's manifest digest, config and disk layer.
    async fn resolve_image(
        &self,
        service: &PlannedService,
    ) -> Result<(ResolvedImage, ImageConfig), UseCaseError> {
        let (_, manifest_bytes) = self.images.resolve(&service.image).await?;
        let unusable = |reason: String| {
            UseCaseError::precondition(format!("image {} cannot be run: {reason}", service.image))
        };
        let manifest = Manifest::from_json(&manifest_bytes).map_err(|e| unusable(e.to_string()))?;
        let layer = manifest
            .disk_layers()
            .first()
            .copied()
            .cloned()
            .ok_or_else(|| unusable("its manifest has no disk layer".into()))?;
        let config_bytes = self
            .images
            .store()
            .read_blob(&manifest.config.digest)
            .await?;
        let config = ImageConfig::from_json(&config_bytes).map_err(|e| unusable(e.to_string()))?;
        Ok((
            ResolvedImage {
                manifest: Digest::of(&manifest_bytes),
                disk: layer.digest,
                format: config.spec.disk_format,
            },
            config,
        ))
    }
}

/// The seed of a compose VM, like `vmr create`'s: hostname = VM name
/// (unique on a shared network), an instance-id that changes with the spec,
/// each static NIC's gateway as its nameserver (libvirt's dnsmasq answers
/// there).
fn seed_for(spec: &VmSpec, service: &PlannedService) -> Result<CloudInitSeed, UseCaseError> {
    let instance_id = format!("vmr-{}-{}", spec.name, &spec.spec_hash()[..12]);
    let mut meta = MetaData::new(instance_id, spec.name.as_str());
    meta.extra = service.extra_meta_data.clone();
    let nics = service
        .networks
        .iter()
        .map(|nic| {
            let nameservers: Vec<_> = match (nic.static_ip, nic.gateway) {
                (Some(_), Some(gateway)) => vec![gateway],
                _ => Vec::new(),
            };
            NicConfig::from_attachment(nic, &nameservers)
        })
        .collect();
    CloudInitSeed::build(
        Some(service.user_data.clone()),
        &meta,
        &NetworkConfigV2 { nics },
        service.network_config.clone(),
    )
    .map_err(|e| {
        UseCaseError::invalid(
            format!("services.{}.{}", service.service, e.field),
            &e.reason,
        )
    })
}

fn io_error(what: &str, path: &std::path::Path, e: std::io::Error) -> UseCaseError {
    UseCaseError::internal(format!("cannot {what} {}: {e}", path.display())).with_source(e)
}

#[async_trait]
impl ComposeRuntime for ServiceRuntime {
    async fn vms(&self) -> Result<Vec<VmRecord>, UseCaseError> {
        self.vms
            .list(VmFilter {
                all: true,
                project: None,
            })
            .await
    }

    async fn networks(&self) -> Result<Vec<NetworkRecord>, UseCaseError> {
        self.networks.list().await
    }

    async fn prepare(
        &self,
        project: &str,
        service: &PlannedService,
    ) -> Result<PreparedVm, UseCaseError> {
        let (image, config) = self.resolve_image(service).await?;
        let resources = config.spec.resources;
        // As `vmr create`: an overlay is never smaller than the image's
        // disk, so that is its size when none (or a smaller one) is asked.
        let disk_size = match image.format {
            DiskFormat::Iso => service.disk_size,
            DiskFormat::Qcow2 | DiskFormat::Raw => Some(ByteSize(
                service
                    .disk_size
                    .map_or(0, ByteSize::bytes)
                    .max(config.disk.virtual_size),
            )),
        };
        let spec = VmSpec {
            name: service.vm_name.clone(),
            cpu: service.cpu.unwrap_or(resources.cpu),
            memory: service.memory.unwrap_or(ByteSize(resources.memory)),
            disk_size,
            bootloader: resources.bootloader,
            networks: service.networks.clone(),
            restart_policy: service.restart_policy,
            labels: VmLabels {
                image: service.image.to_string(),
                image_digest: Some(image.manifest.clone()),
                project: Some(project.to_owned()),
                service: Some(service.service.clone()),
            },
        };
        let seed = seed_for(&spec, service)?;
        let spec_hash = spec.spec_hash_with_seed(Some(&seed));
        Ok(PreparedVm {
            service: service.service.clone(),
            spec,
            seed,
            image,
            spec_hash,
        })
    }

    async fn create_vm(&self, vm: &PreparedVm) -> Result<(), UseCaseError> {
        // `vmr create`'s own second step: runtime directory, disk, seed ISO
        // and definition, all undone when one fails.
        let prepared = vms::PreparedVm {
            spec: vm.spec.clone(),
            seed: vm.seed.clone(),
            spec_hash: vm.spec_hash.clone(),
            disk_digest: vm.image.disk.clone(),
            disk_format: vm.image.format,
            start: false,
        };
        // Its blobs were there when `prepare` read the image; leased now,
        // they stay until the VM is defined (a collection in between makes
        // the disk lookup fail cleanly with NOT_FOUND).
        let _lease = self
            .images
            .lease([vm.image.manifest.clone(), vm.image.disk.clone()])
            .await;
        materialize(&self.hypervisor, self.images.store(), self.dirs(), prepared)
            .await
            .map(drop)
    }

    async fn start_vm(&self, name: &VmName) -> Result<(), UseCaseError> {
        self.vms.start(name).await.map(drop)
    }

    async fn vm_state(&self, name: &VmName) -> Result<Option<VmState>, UseCaseError> {
        match self.hypervisor.inspect_vm(name).await {
            Ok(details) => Ok(Some(details.record.state)),
            Err(HypervisorError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn remove_vm(&self, name: &VmName) -> Result<(), UseCaseError> {
        match self.vms.remove(name, true).await {
            Err(e) if e.kind == ErrorKind::NotFound => {
                // Gone already; its files may not be.
                self.dirs()
                    .remove(name)
                    .await
                    .map_err(|e| io_error("remove", &self.dirs().dir(name), e))
            }
            other => other,
        }
    }

    async fn remove_runtime_files(&self, name: &VmName) -> Result<bool, UseCaseError> {
        let dirs = self.dirs();
        if !dirs.exists(name).await {
            return Ok(false);
        }
        dirs.remove(name)
            .await
            .map_err(|e| io_error("remove", &dirs.dir(name), e))?;
        Ok(true)
    }

    fn console_log(&self, name: &VmName) -> PathBuf {
        self.dirs().console_log(name)
    }

    async fn create_network(&self, spec: &NetworkSpec, project: &str) -> Result<(), UseCaseError> {
        self.networks
            .create(spec.clone(), Some(project.to_owned()))
            .await
            .map(drop)
    }

    async fn start_network(&self, name: &NetworkName) -> Result<(), UseCaseError> {
        self.networks.start(name).await.map(drop)
    }

    async fn remove_network(&self, name: &NetworkName) -> Result<(), UseCaseError> {
        match self.networks.remove(name).await {
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}
