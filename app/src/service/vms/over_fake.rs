//! The VM use cases wired over the fake hypervisor and a filesystem store in
//! a directory of the test's, as the unit tests of the use cases built on
//! them (VMs, compose) need them.

use std::path::Path;
use std::sync::Arc;

use vmr_adapters::blobstore::OpendalStore;
use vmr_adapters::cloudinit::CidataIso;
use vmr_adapters::fake::hypervisor::FakeHypervisor;

use super::{RuntimeDirs, VmImages, VmService};
use crate::service::{ImageService, VmMedia};

/// What [`over_fake`] wires.
pub(crate) struct FakeVms {
    pub fake: Arc<FakeHypervisor>,
    pub images: Arc<ImageService>,
    pub vms: VmService,
}

/// The VM use cases over a new fake (its VMs, networks and disks: it
/// scripts the disks over the real disk adapter) and a store and runtime
/// directory under `root`.
pub(crate) fn over_fake(root: &Path) -> FakeVms {
    let store: Arc<dyn vmr_ports::BlobStore> =
        Arc::new(OpendalStore::filesystem(root.join("store")).unwrap());
    let fake = Arc::new(FakeHypervisor::new());
    let usage = Arc::new(VmImages::new(fake.clone()));
    let images = Arc::new(ImageService::new(store, usage.clone()));
    let media = VmMedia {
        disks: fake.clone(),
        seeds: Arc::new(CidataIso),
    };
    let vms = VmService::new(
        fake.clone(),
        fake.clone(),
        media,
        images.clone(),
        RuntimeDirs::new(root.join("runtime")),
        usage,
    );
    FakeVms { fake, images, vms }
}
