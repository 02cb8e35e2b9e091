//! The disks port: the writable disk a VM boots from, made in its runtime
//! directory before the VM is defined. A copy-on-write qcow2 overlay over
//! an image's disk blob (which is only ever read, even while other VMs run
//! from it), or a blank qcow2 disk for an `iso` image. Apart from the
//! hypervisor's ports because it is plain files: one adapter serves every
//! hypervisor backend. Its errors are the hypervisor's, so a disk that
//! cannot be made fails a create as a refused definition would.

use std::path::Path;

use async_trait::async_trait;
use vmr_domain::image::DiskFormat;

use crate::hypervisor::HypervisorError;

/// Makes VM disks.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait OverlayDisks: Send + Sync {
    /// Creates a qcow2 overlay at `overlay` over `base` (which is only ever
    /// read), with a virtual size of `size` bytes when that is larger than
    /// the base's. `AlreadyExists` if `overlay` exists, `NotFound` if `base`
    /// does not, `Invalid` for an `iso` base.
    async fn create_overlay(
        &self,
        base: &Path,
        base_format: DiskFormat,
        overlay: &Path,
        size: Option<u64>,
    ) -> Result<(), HypervisorError>;

    /// Creates an empty qcow2 disk of `size` bytes (for `iso` images).
    /// `AlreadyExists` if `path` exists, `Invalid` for a size of 0.
    async fn create_blank_disk(&self, path: &Path, size: u64) -> Result<(), HypervisorError>;
}
