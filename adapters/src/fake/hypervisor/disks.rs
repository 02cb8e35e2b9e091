//! The disks port for tests that script the fake: every call is logged and
//! can be failed or delayed like a hypervisor call ([`FakeCall::CreateOverlay`],
//! [`FakeCall::CreateBlankDisk`]); otherwise the real disk adapter
//! ([`QemuDisks`]) makes the disk, so the files are what libvirt would get.

use std::path::Path;

use async_trait::async_trait;
use vmr_domain::image::DiskFormat;
use vmr_ports::{HypervisorError, OverlayDisks};

use super::{FakeCall, FakeHypervisor};
use crate::disks::QemuDisks;

#[async_trait]
impl OverlayDisks for FakeHypervisor {
    async fn create_overlay(
        &self,
        base: &Path,
        base_format: DiskFormat,
        overlay: &Path,
        size: Option<u64>,
    ) -> Result<(), HypervisorError> {
        let target = overlay.display().to_string();
        self.script
            .run_async(
                FakeCall::CreateOverlay,
                &target,
                QemuDisks.create_overlay(base, base_format, overlay, size),
            )
            .await
    }

    async fn create_blank_disk(&self, path: &Path, size: u64) -> Result<(), HypervisorError> {
        let target = path.display().to_string();
        self.script
            .run_async(
                FakeCall::CreateBlankDisk,
                &target,
                QemuDisks.create_blank_disk(path, size),
            )
            .await
    }
}
