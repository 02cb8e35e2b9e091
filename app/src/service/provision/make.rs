//! The second step of creating a VM: [`create`] makes the runtime
//! directory, the disk (an overlay over the image's blob, or a blank disk
//! for an `iso` image), the cloud-init seed ISO and the definition, and
//! starts the VM when asked, undoing all of it when a step fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vmr_domain::image::DiskFormat;
use vmr_domain::units::ByteSize;
use vmr_ports::blobstore::Blobs;
use vmr_ports::driving::UseCaseError;
use vmr_ports::{DiskAttachment, HypervisorError, StopMode, VmDefinition, VmDriver, VmRecord};

use super::{Phases, PreparedVm, VmMedia};
use crate::service::vms::RuntimeDirs;

/// What has been made so far, to undo on failure.
#[derive(Default)]
struct Made {
    dir: bool,
    defined: bool,
}

/// Creates the runtime files and the definition, and starts the VM when
/// asked. On failure, undoes what it made and returns the first error.
pub(super) async fn create(
    hypervisor: &Arc<dyn VmDriver>,
    media: &VmMedia,
    store: &dyn Blobs,
    runtime: &RuntimeDirs,
    prepared: PreparedVm,
) -> Result<VmRecord, UseCaseError> {
    let name = prepared.spec.name.clone();
    let mut made = Made::default();
    let result = build(hypervisor, media, store, runtime, prepared, &mut made).await;
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

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> UseCaseError {
    UseCaseError::internal(format!("cannot {what} {}: {e}", path.display()))
}

async fn build(
    hypervisor: &Arc<dyn VmDriver>,
    media: &VmMedia,
    store: &dyn Blobs,
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
    let mut phases = Phases::new(&name);
    let mut phase = |what: &'static str| phases.create(what);
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
    phase("prepare");

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
                    media
                        .disks
                        .create_blank_disk(&disk_path, size.bytes())
                        .await?;
                    Some(qcow2(disk_path))
                }
                None => None,
            };
            (disk, vec![base, cidata.clone()], true)
        }
        DiskFormat::Qcow2 | DiskFormat::Raw => {
            media
                .disks
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
    phase("disk");
    media
        .seeds
        .write_seed(&seed, &cidata)
        .await
        .map_err(|e| UseCaseError::internal(e.to_string()).with_source(e))?;
    phase("seed");

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
    phase("define");
    if !start {
        return Ok(record);
    }
    hypervisor.start_vm(&name).await?;
    phase("start");
    let record = hypervisor.inspect_vm(&name).await?.record;
    phase("inspect");
    Ok(record)
}
