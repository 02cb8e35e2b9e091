//! [`ComposeRuntime`] over the driven ports: images come from the local
//! store (through [`ImageService`]), VMs and networks from the hypervisor.
//! A VM's files live in `runtime/<vm>/`: `disk.qcow2` (an overlay over the
//! image's disk blob, or a blank disk for an `iso` image given a
//! `diskSize`), `cidata.iso` (the cloud-init seed) and `console.log`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use vmr_adapters::cloudinit::write_cidata_iso;
use vmr_domain::cloudinit::{CloudInitSeed, MetaData, NetworkConfigV2};
use vmr_domain::compose::PlannedService;
use vmr_domain::image::{Digest, DiskFormat, ImageConfig, Manifest};
use vmr_domain::network::{NetworkName, NetworkSpec};
use vmr_domain::units::ByteSize;
use vmr_domain::vm::{VmLabels, VmName, VmSpec, VmState};
use vmr_ports::driving::{ErrorKind, UseCaseError};
use vmr_ports::{
    DiskAttachment, Hypervisor, HypervisorError, NetworkDefinition, NetworkRecord, StopMode,
    VmDefinition, VmRecord,
};

use super::runtime::{ComposeRuntime, PreparedVm, ResolvedImage};
use crate::service::ImageService;

const DISK_FILE: &str = "disk.qcow2";
const SEED_FILE: &str = "cidata.iso";
const CONSOLE_FILE: &str = "console.log";

/// Compose's runtime over a hypervisor and the local image store.
pub struct HypervisorRuntime {
    hypervisor: Arc<dyn Hypervisor>,
    images: Arc<ImageService>,
    /// `<fs-path>/runtime`.
    runtime_root: PathBuf,
}

impl HypervisorRuntime {
    pub fn new(
        hypervisor: Arc<dyn Hypervisor>,
        images: Arc<ImageService>,
        runtime_root: PathBuf,
    ) -> Self {
        Self {
            hypervisor,
            images,
            runtime_root,
        }
    }

    fn vm_dir(&self, name: &VmName) -> PathBuf {
        // VmName is a simple name (no separators, no `..`): safe as a path.
        self.runtime_root.join(name.as_str())
    }

    /// The image's manifest digest, config and disk layer.
    async fn resolve_image(
        &self,
        service: &PlannedService,
    ) -> Result<(ResolvedImage, ImageConfig), UseCaseError> {
        let (_, manifest_bytes) = self.images.resolve(&service.image).await?;
        let manifest = Manifest::from_json(&manifest_bytes)?;
        let config_bytes = self
            .images
            .store()
            .read_blob(&manifest.config.digest)
            .await?;
        let config = ImageConfig::from_json(&config_bytes)?;
        let layer = manifest.disk_layers().first().copied().ok_or_else(|| {
            UseCaseError::new(
                ErrorKind::FailedPrecondition,
                format!("image {} has no disk layer", service.image),
            )
        })?;
        Ok((
            ResolvedImage {
                manifest: Digest::of(&manifest_bytes),
                disk: layer.digest.clone(),
                format: config.spec.disk_format,
            },
            config,
        ))
    }

    /// Creates the disk and the seed in `dir` and defines the VM.
    async fn create_in(&self, vm: &PreparedVm, dir: &Path) -> Result<(), UseCaseError> {
        let store = self.images.store();
        let base = store.local_path(&vm.image.disk).await?;
        let seed_path = dir.join(SEED_FILE);
        let disk_path = dir.join(DISK_FILE);
        let size = vm.spec.disk_size.map(ByteSize::bytes);
        let (disk, cdroms, boot_from_cdrom) = if vm.image.format == DiskFormat::Iso {
            let disk = match size {
                Some(size) => {
                    self.hypervisor
                        .create_blank_disk(&disk_path, size)
                        .await
                        .map_err(hypervisor_error)?;
                    Some(DiskAttachment {
                        path: disk_path,
                        format: DiskFormat::Qcow2,
                    })
                }
                None => None,
            };
            (disk, vec![base, seed_path.clone()], true)
        } else {
            self.hypervisor
                .create_overlay(&base, vm.image.format, &disk_path, size)
                .await
                .map_err(hypervisor_error)?;
            let disk = DiskAttachment {
                path: disk_path,
                format: DiskFormat::Qcow2,
            };
            (Some(disk), vec![seed_path.clone()], false)
        };
        write_cidata_iso(&vm.seed, &seed_path)
            .await
            .map_err(|e| UseCaseError::internal(e.to_string()).with_source(e))?;
        let definition = VmDefinition {
            spec: vm.spec.clone(),
            disk,
            cdroms,
            boot_from_cdrom,
            console_log: dir.join(CONSOLE_FILE),
            spec_hash: vm.spec_hash.clone(),
        };
        self.hypervisor
            .define_vm(&definition)
            .await
            .map_err(hypervisor_error)?;
        Ok(())
    }
}

/// The seed of a compose VM: hostname = service, instance-id = VM name (a
/// recreated VM gets a fresh disk, so cloud-init runs again anyway), the
/// static NICs' gateways as nameservers (libvirt's dnsmasq answers there).
fn seed_for(service: &PlannedService) -> Result<CloudInitSeed, UseCaseError> {
    let mut meta = MetaData::new(service.vm_name.as_str(), service.service.as_str());
    meta.extra = service.extra_meta_data.clone();
    let mut nameservers: Vec<Ipv4Addr> = Vec::new();
    for nic in &service.networks {
        if let (Some(_), Some(gw)) = (nic.static_ip, nic.gateway)
            && !nameservers.contains(&gw)
        {
            nameservers.push(gw);
        }
    }
    let nics = NetworkConfigV2::from_attachments(&service.networks, &nameservers);
    let seed = CloudInitSeed::build(
        Some(service.user_data.clone()),
        &meta,
        &nics,
        service.network_config.clone(),
    )
    .map_err(|e| {
        let field = format!("services.{}.{}", service.service, e.field);
        UseCaseError::invalid(field, &e.reason)
    })?;
    Ok(seed)
}

/// Maps a hypervisor failure onto a use-case error of the matching kind.
pub(crate) fn hypervisor_error(e: HypervisorError) -> UseCaseError {
    let kind = match &e {
        HypervisorError::NotFound { .. } => ErrorKind::NotFound,
        HypervisorError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
        HypervisorError::InvalidState { .. } | HypervisorError::Timeout { .. } => {
            ErrorKind::FailedPrecondition
        }
        HypervisorError::Invalid { .. } => ErrorKind::InvalidArgument,
        HypervisorError::Unavailable(_) => ErrorKind::Unavailable,
        HypervisorError::Backend(_) => ErrorKind::Internal,
    };
    UseCaseError::new(kind, e.to_string()).with_source(e)
}

async fn remove_dir(dir: &Path) -> Result<bool, UseCaseError> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(UseCaseError::internal(format!(
            "cannot remove {}: {e}",
            dir.display()
        ))
        .with_source(e)),
    }
}

#[async_trait]
impl ComposeRuntime for HypervisorRuntime {
    async fn vms(&self) -> Result<Vec<VmRecord>, UseCaseError> {
        self.hypervisor.list_vms().await.map_err(hypervisor_error)
    }

    async fn networks(&self) -> Result<Vec<NetworkRecord>, UseCaseError> {
        self.hypervisor.list_networks().await.map_err(hypervisor_error)
    }

    async fn prepare(
        &self,
        project: &str,
        service: &PlannedService,
    ) -> Result<PreparedVm, UseCaseError> {
        let (image, config) = self.resolve_image(service).await?;
        let resources = config.spec.resources;
        let spec = VmSpec {
            name: service.vm_name.clone(),
            cpu: service.cpu.unwrap_or(resources.cpu),
            memory: service.memory.unwrap_or(ByteSize(resources.memory)),
            disk_size: service.disk_size,
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
        let seed = seed_for(service)?;
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
        let dir = self.vm_dir(vm.name());
        // Only a crash mid-creation leaves a directory without a VM (the
        // caller checked that none is defined): start from a clean one.
        remove_dir(&dir).await?;
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            UseCaseError::internal(format!("cannot create {}: {e}", dir.display())).with_source(e)
        })?;
        let created = self.create_in(vm, &dir).await;
        if created.is_err()
            && let Err(e) = remove_dir(&dir).await
        {
            tracing::warn!(vm = %vm.name(), error = %e, "cannot clean up after a failed creation");
        }
        created
    }

    async fn start_vm(&self, name: &VmName) -> Result<(), UseCaseError> {
        self.hypervisor
            .start_vm(name)
            .await
            .map_err(hypervisor_error)
    }

    async fn vm_state(&self, name: &VmName) -> Result<Option<VmState>, UseCaseError> {
        match self.hypervisor.inspect_vm(name).await {
            Ok(details) => Ok(Some(details.record.state)),
            Err(HypervisorError::NotFound { .. }) => Ok(None),
            Err(e) => Err(hypervisor_error(e)),
        }
    }

    async fn remove_vm(&self, name: &VmName) -> Result<(), UseCaseError> {
        match self.hypervisor.stop_vm(name, StopMode::Force).await {
            Ok(()) | Err(HypervisorError::InvalidState { .. } | HypervisorError::NotFound { .. }) => {
            }
            Err(e) => return Err(hypervisor_error(e)),
        }
        match self.hypervisor.undefine_vm(name).await {
            Ok(()) | Err(HypervisorError::NotFound { .. }) => {}
            Err(e) => return Err(hypervisor_error(e)),
        }
        remove_dir(&self.vm_dir(name)).await?;
        Ok(())
    }

    async fn remove_runtime_files(&self, name: &VmName) -> Result<bool, UseCaseError> {
        remove_dir(&self.vm_dir(name)).await
    }

    fn console_log(&self, name: &VmName) -> PathBuf {
        self.vm_dir(name).join(CONSOLE_FILE)
    }

    async fn create_network(&self, spec: &NetworkSpec, project: &str) -> Result<(), UseCaseError> {
        let definition = NetworkDefinition {
            spec: spec.clone(),
            project: Some(project.to_owned()),
        };
        self.hypervisor
            .define_network(&definition)
            .await
            .map_err(hypervisor_error)?;
        self.start_network(&spec.name).await
    }

    async fn start_network(&self, name: &NetworkName) -> Result<(), UseCaseError> {
        self.hypervisor
            .start_network(name)
            .await
            .map_err(hypervisor_error)
    }

    async fn remove_network(&self, name: &NetworkName) -> Result<(), UseCaseError> {
        match self.hypervisor.stop_network(name).await {
            Ok(()) | Err(HypervisorError::InvalidState { .. } | HypervisorError::NotFound { .. }) => {
            }
            Err(e) => return Err(hypervisor_error(e)),
        }
        match self.hypervisor.remove_network(name).await {
            Ok(()) | Err(HypervisorError::NotFound { .. }) => Ok(()),
            Err(e) => Err(hypervisor_error(e)),
        }
    }
}
