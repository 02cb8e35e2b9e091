//! VM disks made with `qemu-img`: copy-on-write qcow2 overlays over an
//! image's disk blob, and blank qcow2 disks for `iso` images. The base is
//! only ever read: its size is probed with a shared (`-U`) open, and the
//! overlay is created with `-u`, so qemu-img never opens the base for
//! writing, even when other VMs run from it.

use std::path::Path;
use std::process::Stdio;

use serde::Deserialize;
use tokio::process::Command;
use vmr_domain::image::DiskFormat;
use vmr_ports::HypervisorError;

const QEMU_IMG: &str = "qemu-img";

/// Creates a qcow2 overlay over `base` with a virtual size of
/// `max(size, base's virtual size)`.
pub(crate) async fn create_overlay(
    base: &Path,
    base_format: DiskFormat,
    overlay: &Path,
    size: Option<u64>,
) -> Result<(), HypervisorError> {
    if base_format == DiskFormat::Iso {
        return Err(HypervisorError::invalid(
            "diskFormat",
            "an iso image boots as a CD-ROM and cannot back an overlay disk",
        ));
    }
    let base = absolute_existing(base).await?;
    ensure_absent(overlay).await?;
    let base_size = virtual_size(&base, base_format).await?;
    let final_size = size.map_or(base_size, |s| s.max(base_size));
    let mut cmd = Command::new(QEMU_IMG);
    cmd.arg("create")
        .args(["-q", "-f", "qcow2", "-u", "-F", base_format.as_str(), "-b"])
        .arg(&base)
        .arg(overlay)
        .arg(final_size.to_string());
    run(cmd, "create the overlay disk").await
}

/// Creates an empty qcow2 disk of `size` bytes.
pub(crate) async fn create_blank_disk(path: &Path, size: u64) -> Result<(), HypervisorError> {
    if size == 0 {
        return Err(HypervisorError::invalid(
            "diskSize",
            "must be larger than 0 bytes",
        ));
    }
    ensure_absent(path).await?;
    let mut cmd = Command::new(QEMU_IMG);
    cmd.args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size.to_string());
    run(cmd, "create the blank disk").await
}

#[derive(Deserialize)]
struct ImageInfo {
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
}

/// The virtual size of a disk image, read without taking a write lock.
pub(crate) async fn virtual_size(path: &Path, format: DiskFormat) -> Result<u64, HypervisorError> {
    let output = Command::new(QEMU_IMG)
        .args(["info", "-U", "--output=json", "-f", format.as_str()])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| spawn_error(&e))?;
    if !output.status.success() {
        return Err(HypervisorError::invalid(
            "disk",
            format!(
                "qemu-img cannot read {} as {format}: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    let info: ImageInfo = serde_json::from_slice(&output.stdout)
        .map_err(|e| HypervisorError::Backend(format!("unexpected qemu-img info output: {e}")))?;
    Ok(info.virtual_size)
}

async fn absolute_existing(path: &Path) -> Result<std::path::PathBuf, HypervisorError> {
    tokio::fs::canonicalize(path)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => HypervisorError::NotFound {
                kind: "disk",
                name: path.display().to_string(),
            },
            _ => HypervisorError::Backend(format!("cannot resolve {}: {e}", path.display())),
        })
}

async fn ensure_absent(path: &Path) -> Result<(), HypervisorError> {
    match tokio::fs::symlink_metadata(path).await {
        Ok(_) => Err(HypervisorError::AlreadyExists {
            kind: "disk",
            name: path.display().to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(HypervisorError::Backend(format!(
            "cannot check {}: {e}",
            path.display()
        ))),
    }
}

async fn run(mut cmd: Command, what: &str) -> Result<(), HypervisorError> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| spawn_error(&e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(HypervisorError::Backend(format!(
            "qemu-img could not {what}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

fn spawn_error(e: &std::io::Error) -> HypervisorError {
    HypervisorError::Unavailable(format!(
        "cannot run {QEMU_IMG} (is qemu-utils installed?): {e}"
    ))
}
