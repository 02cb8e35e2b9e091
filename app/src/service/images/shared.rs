//! A store shared with other daemons (an S3 bucket): this host's leases and
//! its VMs' images published in the store, renewed by a heartbeat, and the
//! check before a tag is written that its blobs survived any collection on
//! another host (docs/shared-bucket.md). On a store no one else uses every
//! step here returns at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::warn;
use vmr_domain::image::{Digest, Manifest};
use vmr_ports::blobstore::StoreError;
use vmr_ports::driving::UseCaseError;
use vmr_ports::leases::HostRecord;

use super::ImageService;

/// Renews this host's record while it lives; stops when dropped.
#[derive(Debug)]
pub struct Heartbeat(Option<tokio::task::JoinHandle<()>>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl ImageService {
    /// Publishes this host's record (what its operations lease, what its
    /// VMs use) and waits out any collection on another host that may have
    /// read the previous one.
    pub(super) async fn share(&self) -> Result<(), StoreError> {
        if !self.shared.is_shared() {
            return Ok(());
        }
        let _one = self.publishing.lock().await;
        let (released, _) = self.leases.released_since_renewal();
        let mut digests = self.leases.snapshot();
        digests.extend(released);
        let images = self.vm_images.lock().map(|i| i.clone()).unwrap_or_default();
        self.shared.publish(&HostRecord { digests, images }).await
    }

    /// [`Self::share`] where a failure is not yet fatal: what the lease
    /// protects is checked again by [`Self::confirm`] before any tag.
    pub(super) async fn share_best_effort(&self) {
        if let Err(e) = self.share().await {
            warn!(error = %e, "could not publish this host's leases to the shared store");
        }
    }

    /// Before a tag naming `manifest_bytes` is written (the caller leases
    /// its blobs): publishes the leases, waits out collections on other
    /// hosts, then checks that the manifest and every blob it names are
    /// still there. A no-op on a store no other daemon uses.
    pub async fn confirm(&self, manifest_bytes: &Bytes) -> Result<(), UseCaseError> {
        if !self.shared.is_shared() {
            return Ok(());
        }
        self.share().await?;
        let mut needed = vec![Digest::of(manifest_bytes)];
        if let Ok(manifest) = Manifest::from_json(manifest_bytes) {
            needed.extend(manifest.blobs().into_iter().map(|d| d.digest.clone()));
        }
        for digest in needed {
            if !self.store.blob_exists(&digest).await? {
                return Err(UseCaseError::precondition(format!(
                    "blob {digest} was removed by a garbage collection on another host sharing \
                     the store before the tag was written; nothing was tagged, try again"
                )));
            }
        }
        Ok(())
    }

    /// Re-reads the VMs' images and publishes the record; releases seen
    /// before the re-read are dropped from it.
    pub async fn renew_shared(&self) -> Result<(), UseCaseError> {
        if !self.shared.is_shared() {
            return Ok(());
        }
        let (_, mark) = self.leases.released_since_renewal();
        let in_use = self.in_use.manifest_digests_in_use().await?;
        if let Ok(mut images) = self.vm_images.lock() {
            *images = in_use;
        }
        self.leases.forget_released(mark);
        Ok(self.share().await?)
    }

    /// Renews the record every `every` (at once first), while the returned
    /// value lives. Nothing runs for a store no other daemon uses.
    pub fn spawn_heartbeat(self: &Arc<Self>, every: Duration) -> Heartbeat {
        if !self.shared.is_shared() {
            return Heartbeat(None);
        }
        let images = Arc::clone(self);
        Heartbeat(Some(tokio::spawn(async move {
            loop {
                if let Err(e) = images.renew_shared().await {
                    warn!(error = %e, "could not renew this host's leases in the shared store");
                }
                tokio::time::sleep(every).await;
            }
        })))
    }

    /// Removes this host's record (a clean stop).
    pub async fn withdraw_shared(&self) {
        if let Err(e) = self.shared.withdraw().await {
            warn!(error = %e, "could not remove this host's leases from the shared store");
        }
    }

    /// The images a VM uses, on this host or (by their live records) any
    /// other sharing the store.
    pub(super) async fn images_in_use_anywhere(&self) -> Result<BTreeSet<Digest>, UseCaseError> {
        let mut in_use = self.in_use.manifest_digests_in_use().await?;
        if self.shared.is_shared() {
            in_use.extend(self.shared.images_in_use_elsewhere().await?);
        }
        Ok(in_use)
    }
}
