//! The disks port ([`OverlayDisks`]) on the host's filesystem, for every
//! hypervisor backend: copy-on-write qcow2 overlays over an image's disk
//! blob, written natively (see `qcow2`), and blank qcow2 disks for `iso`
//! images, made with `qemu-img`. The base is only ever read (its length, or
//! its qcow2 header for the virtual size), even when other VMs run from it.

mod qcow2;

use std::path::Path;
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use vmr_domain::image::DiskFormat;
use vmr_ports::{HypervisorError, OverlayDisks};

const QEMU_IMG: &str = "qemu-img";

/// VM disks as qcow2 files next to the VM's other runtime files.
#[derive(Debug, Clone, Copy, Default)]
pub struct QemuDisks;

#[async_trait]
impl OverlayDisks for QemuDisks {
    async fn create_overlay(
        &self,
        base: &Path,
        base_format: DiskFormat,
        overlay: &Path,
        size: Option<u64>,
    ) -> Result<(), HypervisorError> {
        create_overlay(base, base_format, overlay, size).await
    }

    async fn create_blank_disk(&self, path: &Path, size: u64) -> Result<(), HypervisorError> {
        create_blank_disk(path, size).await
    }
}

/// Creates a qcow2 overlay over `base` with a virtual size of
/// `max(size, base's virtual size)`.
async fn create_overlay(
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
    let backing = base.to_str().ok_or_else(|| {
        HypervisorError::invalid("disk", format!("{} is not UTF-8", base.display()))
    })?;
    let (bytes, len) = qcow2::overlay(backing, base_format.as_str(), final_size)
        .map_err(|e| HypervisorError::invalid("diskSize", e))?;
    let path = overlay.to_owned();
    tokio::task::spawn_blocking(move || write_new(&path, &bytes, len))
        .await
        .map_err(|e| HypervisorError::backend(format!("the overlay writer failed: {e}"), e))?
        .map_err(|e| {
            HypervisorError::backend(
                format!("cannot write the overlay disk {}: {e}", overlay.display()),
                e,
            )
        })
}

/// Writes a new file (never replacing one) of `len` bytes starting with
/// `bytes`, the rest a hole; a failed write leaves no file behind.
fn write_new(path: &Path, bytes: &[u8], len: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let written = file.write_all(bytes).and_then(|()| file.set_len(len));
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Creates an empty qcow2 disk of `size` bytes.
async fn create_blank_disk(path: &Path, size: u64) -> Result<(), HypervisorError> {
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

/// The virtual size of a disk image, read from its length (raw) or its
/// header (qcow2) without opening it for writing.
async fn virtual_size(path: &Path, format: DiskFormat) -> Result<u64, HypervisorError> {
    let unreadable = |e: String| {
        HypervisorError::invalid(
            "disk",
            format!("cannot read {} as {format}: {e}", path.display()),
        )
    };
    match format {
        DiskFormat::Qcow2 => {
            let mut header = [0u8; 32];
            let mut file = tokio::fs::File::open(path)
                .await
                .map_err(|e| unreadable(e.to_string()))?;
            file.read_exact(&mut header)
                .await
                .map_err(|e| unreadable(e.to_string()))?;
            qcow2::virtual_size(&header).map_err(unreadable)
        }
        _ => Ok(tokio::fs::metadata(path)
            .await
            .map_err(|e| unreadable(e.to_string()))?
            .len()),
    }
}

async fn absolute_existing(path: &Path) -> Result<std::path::PathBuf, HypervisorError> {
    tokio::fs::canonicalize(path)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => HypervisorError::NotFound {
                kind: "disk",
                name: path.display().to_string(),
            },
            _ => HypervisorError::backend(format!("cannot resolve {}: {e}", path.display()), e),
        })
}

async fn ensure_absent(path: &Path) -> Result<(), HypervisorError> {
    match tokio::fs::symlink_metadata(path).await {
        Ok(_) => Err(HypervisorError::AlreadyExists {
            kind: "disk",
            name: path.display().to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(HypervisorError::backend(
            format!("cannot check {}: {e}", path.display()),
            e,
        )),
    }
}

async fn run(mut cmd: Command, what: &str) -> Result<(), HypervisorError> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(spawn_error)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(HypervisorError::Backend(
            format!(
                "qemu-img could not {what}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into(),
        ))
    }
}

fn spawn_error(e: std::io::Error) -> HypervisorError {
    HypervisorError::unavailable(
        format!("cannot run {QEMU_IMG} (is qemu-utils installed?): {e}"),
        e,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_img(args: &[&str]) -> std::process::Output {
        let out = std::process::Command::new(QEMU_IMG)
            .args(args)
            .output()
            .expect("qemu-img (qemu-utils) is needed by this test");
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn info(path: &Path) -> serde_json::Value {
        let out = qemu_img(&["info", "-U", "--output=json", path.to_str().unwrap()]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[tokio::test]
    async fn native_overlays_pass_qemu_img_check_and_read_as_their_base() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("base.raw");
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&raw, &data).unwrap();
        let over = dir.path().join("raw.qcow2");
        create_overlay(&raw, DiskFormat::Raw, &over, Some(3 << 30))
            .await
            .unwrap();
        qemu_img(&["check", over.to_str().unwrap()]);
        let got = info(&over);
        assert_eq!(got["format"], "qcow2");
        assert_eq!(got["virtual-size"], 3u64 << 30);
        assert_eq!(got["backing-filename"], raw.to_str().unwrap());
        assert_eq!(got["backing-filename-format"], "raw");
        // Beyond the base's end the overlay reads zeros: identical.
        qemu_img(&[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            raw.to_str().unwrap(),
            over.to_str().unwrap(),
        ]);

        let base = dir.path().join("base.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "5M"]);
        assert_eq!(
            virtual_size(&base, DiskFormat::Qcow2).await.unwrap(),
            5 << 20
        );
        let over2 = dir.path().join("q.qcow2");
        create_overlay(&base, DiskFormat::Qcow2, &over2, Some(1 << 20))
            .await
            .unwrap();
        qemu_img(&["check", over2.to_str().unwrap()]);
        assert_eq!(info(&over2)["virtual-size"], 5u64 << 20);
        qemu_img(&[
            "compare",
            "-F",
            "qcow2",
            base.to_str().unwrap(),
            over2.to_str().unwrap(),
        ]);
    }

    #[tokio::test]
    async fn bad_bases_and_existing_overlays_are_refused_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let notq = dir.path().join("not.qcow2");
        std::fs::write(&notq, b"plain bytes, no qcow2 magic here at all....").unwrap();
        let over = dir.path().join("o.qcow2");
        let err = create_overlay(&notq, DiskFormat::Qcow2, &over, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a qcow2 image"), "{err}");
        assert!(!over.exists());
        std::fs::write(&over, b"x").unwrap();
        let err = create_overlay(&notq, DiskFormat::Raw, &over, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, HypervisorError::AlreadyExists { .. }),
            "{err}"
        );
        assert_eq!(std::fs::read(&over).unwrap(), b"x");
    }
}
