//! The per-VM runtime directory `<fs-path>/runtime/<vm>/`: the writable
//! disk, the cloud-init seed, the console log, and the one fact vmr keeps
//! outside libvirt: a marker saying the VM's last stop was asked for through
//! vmr, so that restart policies leave it stopped, also across daemon
//! restarts. VM names are validated (`VmName`), so they are safe as path
//! components.

use std::io;
use std::path::{Path, PathBuf};

use vmr_domain::vm::VmName;

const DISK: &str = "disk.qcow2";
const CIDATA: &str = "cidata.iso";
const CONSOLE_LOG: &str = "console.log";
const STOPPED_MARKER: &str = "stopped-by-vmr";

/// Where VMs' runtime files live.
#[derive(Debug, Clone)]
pub struct RuntimeDirs {
    root: PathBuf,
}

impl RuntimeDirs {
    /// `root` must be absolute: libvirt resolves paths in its own process.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, vm: &VmName) -> PathBuf {
        self.root.join(vm.as_str())
    }

    /// The VM's writable disk: an overlay over the image, or a blank disk.
    pub fn disk(&self, vm: &VmName) -> PathBuf {
        self.dir(vm).join(DISK)
    }

    pub fn cidata(&self, vm: &VmName) -> PathBuf {
        self.dir(vm).join(CIDATA)
    }

    pub fn console_log(&self, vm: &VmName) -> PathBuf {
        self.dir(vm).join(CONSOLE_LOG)
    }

    fn stopped_marker(&self, vm: &VmName) -> PathBuf {
        self.dir(vm).join(STOPPED_MARKER)
    }

    /// Creates the VM's directory; it must not exist yet.
    pub async fn create(&self, vm: &VmName) -> io::Result<PathBuf> {
        tokio::fs::create_dir_all(&self.root).await?;
        let dir = self.dir(vm);
        tokio::fs::create_dir(&dir).await?;
        Ok(dir)
    }

    pub async fn exists(&self, vm: &VmName) -> bool {
        tokio::fs::try_exists(self.dir(vm)).await.unwrap_or(false)
    }

    /// Deletes the VM's directory and everything in it; absent is fine.
    pub async fn remove(&self, vm: &VmName) -> io::Result<()> {
        match tokio::fs::remove_dir_all(self.dir(vm)).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Records that the VM was stopped through vmr.
    pub async fn mark_stopped(&self, vm: &VmName) {
        if let Err(e) = tokio::fs::write(self.stopped_marker(vm), b"").await {
            // Without the marker a restart policy may start the VM again
            // after a daemon restart; the stop itself still happens.
            tracing::warn!(vm = %vm, error = %e, "cannot record the stop request");
        }
    }

    /// The VM was started again through vmr: the stop no longer holds.
    pub async fn clear_stopped(&self, vm: &VmName) {
        match tokio::fs::remove_file(self.stopped_marker(vm)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(vm = %vm, error = %e, "cannot clear the stop request");
            }
            _ => {}
        }
    }

    /// Whether the VM's last stop was asked for through vmr.
    pub async fn stopped_by_vmr(&self, vm: &VmName) -> bool {
        tokio::fs::try_exists(self.stopped_marker(vm))
            .await
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn layout_marker_and_removal() {
        let tmp = tempfile::tempdir().unwrap();
        let runtime = RuntimeDirs::new(tmp.path().join("runtime"));
        let vm: VmName = "web".parse().unwrap();
        assert!(!runtime.exists(&vm).await);
        let dir = runtime.create(&vm).await.unwrap();
        assert_eq!(dir, tmp.path().join("runtime/web"));
        assert_eq!(runtime.disk(&vm), dir.join("disk.qcow2"));
        assert_eq!(runtime.cidata(&vm), dir.join("cidata.iso"));
        assert_eq!(runtime.console_log(&vm), dir.join("console.log"));
        assert!(runtime.create(&vm).await.is_err(), "a second create fails");

        assert!(!runtime.stopped_by_vmr(&vm).await);
        runtime.mark_stopped(&vm).await;
        assert!(runtime.stopped_by_vmr(&vm).await);
        runtime.clear_stopped(&vm).await;
        runtime.clear_stopped(&vm).await;
        assert!(!runtime.stopped_by_vmr(&vm).await);

        tokio::fs::write(runtime.disk(&vm), b"x").await.unwrap();
        runtime.remove(&vm).await.unwrap();
        assert!(!dir.exists());
        runtime.remove(&vm).await.unwrap();
    }
}
