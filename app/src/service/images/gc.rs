//! Garbage collection: `rmi` and `prune` untag, then delete every blob that
//! no tag, no VM and no lease keeps. One collection runs at a time on a
//! host; on a store shared with other daemons it also keeps what their live
//! records name and every blob inside the grace window, and announces itself
//! in the store while it runs (docs/shared-bucket.md).

use std::collections::BTreeSet;
use std::time::Instant;

use bytes::Bytes;
use tracing::info;
use vmr_domain::image::{Digest, Manifest, Reference, Tag};
use vmr_ports::driving::{PruneOutcome, RemoveOutcome, UseCaseError};
use vmr_ports::leases::CollectionView;

use super::ImageService;

impl ImageService {
    pub(super) async fn remove_and_collect(
        &self,
        reference: &Reference,
        force: bool,
    ) -> Result<RemoveOutcome, UseCaseError> {
        let _gc = self.gc.lock().await;
        let (repository, bytes) = self.resolve(reference).await?;
        let digest = Digest::of(&bytes);
        let index = self.tag_index().await?;
        let doomed: Vec<Tag> = match &reference.digest {
            Some(_) => index
                .iter()
                .filter(|(r, _, d, _)| r == &repository && d == &digest)
                .map(|(_, t, _, _)| t.clone())
                .collect(),
            None => vec![reference.tag_or_latest()],
        };
        let remaining = index
            .iter()
            .filter(|(r, t, d, _)| d == &digest && !(r == &repository && doomed.contains(t)))
            .count();
        if remaining == 0 && !force && self.images_in_use_anywhere().await?.contains(&digest) {
            return Err(UseCaseError::precondition(format!(
                "image {reference} is used by a VM (on this host or another sharing the store); \
                 remove the VM first or use --force"
            )));
        }
        let mut outcome = RemoveOutcome::default();
        for tag in doomed {
            self.store.delete_manifest(&repository, &tag).await?;
            outcome.untagged.push(format!("{repository}:{tag}"));
        }
        outcome.deleted = self.collect_garbage().await?.0;
        Ok(outcome)
    }

    pub(super) async fn prune_and_collect(&self, all: bool) -> Result<PruneOutcome, UseCaseError> {
        let _gc = self.gc.lock().await;
        let mut outcome = PruneOutcome::default();
        if all {
            let in_use = self.images_in_use_anywhere().await?;
            for (repository, tag, digest, _) in self.tag_index().await? {
                if !in_use.contains(&digest) {
                    self.store.delete_manifest(&repository, &tag).await?;
                    outcome.untagged.push(format!("{repository}:{tag}"));
                }
            }
        }
        let (deleted, reclaimed) = self.collect_garbage().await?;
        outcome.deleted = deleted;
        outcome.reclaimed_bytes = reclaimed;
        Ok(outcome)
    }

    /// Deletes every blob that no tag, no VM and no lease references. The
    /// caller holds the GC mutex; the commit gate is held exclusively from
    /// the snapshot of the leases to the last delete, so no lease appears
    /// meanwhile and every blob leased at its start is kept.
    async fn collect_garbage(&self) -> Result<(Vec<Digest>, u64), UseCaseError> {
        let _commits = self.commits.write().await;
        let leased = self.leases.snapshot();
        // Announced before the other hosts' records are read, which is
        // before the tags are: see docs/shared-bucket.md.
        let view = self.shared.begin_collection().await?;
        let swept = self.sweep(leased, &view).await;
        let ended = self.shared.end_collection(view).await;
        let swept = swept?;
        match ended {
            Ok(0) => {}
            Ok(expired) => info!(expired, "removed expired leases of other hosts"),
            Err(e) => return Err(e.into()),
        }
        Ok(swept)
    }

    async fn sweep(
        &self,
        leased: BTreeSet<Digest>,
        view: &CollectionView,
    ) -> Result<(Vec<Digest>, u64), UseCaseError> {
        let mut keep = view.others.digests.clone();
        let mut manifests: Vec<Bytes> = Vec::new();
        for digest in &view.others.images {
            if let Ok(bytes) = self.store.read_blob(digest).await {
                manifests.push(bytes);
            }
            keep.insert(digest.clone());
        }
        for (_, _, digest, bytes) in self.tag_index().await? {
            keep.insert(digest);
            manifests.push(bytes);
        }
        for digest in self.in_use.manifest_digests_in_use().await? {
            if let Ok(bytes) = self.store.read_blob(&digest).await {
                manifests.push(bytes);
            }
            keep.insert(digest);
        }
        for bytes in &manifests {
            // A tag whose manifest no longer parses keeps nothing alive but
            // itself; `vmr system check` reports it.
            if let Ok(manifest) = Manifest::from_json(bytes) {
                keep.insert(manifest.config.digest.clone());
                keep.extend(manifest.layers.iter().map(|l| l.digest.clone()));
            }
        }
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        let mut spared = 0;
        let mut young = 0;
        let mut renewed = Instant::now();
        for (digest, size) in self.store.list_blobs().await? {
            if keep.contains(&digest) {
                continue;
            }
            if leased.contains(&digest) {
                spared += 1;
                continue;
            }
            if view.old.as_ref().is_some_and(|old| !old.contains(&digest)) {
                young += 1;
                continue;
            }
            if renewed.elapsed() >= self.renew_every {
                self.shared.renew_collection(view).await?;
                renewed = Instant::now();
            }
            self.store.delete_blob(&digest).await?;
            reclaimed += size;
            deleted.push(digest);
        }
        if spared > 0 {
            info!(spared, "kept unreferenced blobs that are leased");
        }
        if young > 0 {
            info!(
                young,
                "kept unreferenced blobs younger than the grace window"
            );
        }
        Ok((deleted, reclaimed))
    }
}
