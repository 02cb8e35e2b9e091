//! Image use cases over a `BlobStore`: import (disk, config and manifest
//! blobs, then tags), list, inspect, tag, remove and garbage collection
//! (see `gc`), with leases keeping in-flight blobs from it (see `leases`).

mod gc;
mod import;
mod leases;
mod shared;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::{Mutex, RwLock};
use tracing::{info, instrument, warn};
use vmr_domain::image::{
    Descriptor, Digest, DiskFormat, ImageConfig, MAX_CONFIG_BYTES, Manifest, Reference, Repository,
    Tag, annotations, qcow2_virtual_size,
};
use vmr_domain::vmfile::VmFile;
use vmr_ports::blobstore::{BlobStore, BlobWriter, StoreError};
use vmr_ports::driving::events::{EventType, NewEvent};
use vmr_ports::driving::{
    DiskSource, ErrorKind, ImageDetails, ImageInfo, ImageUseCases, ImportOutcome, ImportRequest,
    PruneOutcome, RemoveOutcome, StoreCheck, UploadStream, UseCaseError,
};
use vmr_ports::leases::{NoSharedLeases, SharedLeases};
use vmr_ports::{ByteFlow, MetricsRecorder, NoMetrics};

use crate::service::events::{Publisher, no_events};

pub use leases::{Lease, Leases};
pub use shared::Heartbeat;

/// Which manifest digests VMs use (so their blobs are never collected and
/// their images are not removed without force).
#[async_trait]
pub trait ImagesInUse: Send + Sync {
    async fn manifest_digests_in_use(&self) -> Result<BTreeSet<Digest>, UseCaseError>;
}

/// For a core assembled without a hypervisor: nothing is in use.
#[derive(Debug, Default)]
pub struct NoVms;

#[async_trait]
impl ImagesInUse for NoVms {
    async fn manifest_digests_in_use(&self) -> Result<BTreeSet<Digest>, UseCaseError> {
        Ok(BTreeSet::new())
    }
}

/// The image use cases.
pub struct ImageService {
    store: Arc<dyn BlobStore>,
    /// Where imports, tags and removals are told.
    events: Publisher,
    /// Where imported bytes are counted.
    metrics: Arc<dyn MetricsRecorder>,
    in_use: Arc<dyn ImagesInUse>,
    /// Blobs written or read by operations in flight; never collected.
    leases: Arc<Leases>,
    /// One garbage collection (with the untagging before it) at a time.
    gc: Mutex<()>,
    /// Held shared while a lease is taken or grows (and from reading a tag
    /// until its blobs are leased; a blob whose digest was not known in
    /// advance is leased before it is published); exclusively by garbage
    /// collection from its snapshot of the leases to its last delete. So no
    /// lease appears during a collection, and every blob leased by then is
    /// in its snapshot, even if the lease is dropped before the delete.
    commits: RwLock<()>,
    /// Parsed configs by digest. Blobs are content-addressed and never
    /// change, so an entry can only go stale by the blob being corrupted,
    /// which `inspect` (it re-reads and verifies) and `system check` report.
    /// Listing 200 images then reads 200 small manifests, not 400 files.
    configs: std::sync::Mutex<HashMap<Digest, Arc<ImageConfig>>>,
    /// Parsed manifests and what a listing shows of them, by manifest
    /// digest: content-addressed like the configs, so a listing parses only
    /// manifests it has not seen before.
    described: std::sync::Mutex<HashMap<Digest, Arc<Described>>>,
    /// The digest of the manifest each tag last pointed at, kept with those
    /// bytes: a tag's digest is reused only while its bytes are identical
    /// (a comparison instead of a sha256 per image in every listing).
    tag_digests: std::sync::Mutex<HashMap<Repository, TagDigests>>,
    /// The leases shared with other daemons on the same store (none on a
    /// store this daemon alone uses).
    shared: Arc<dyn SharedLeases>,
    /// One publication of this host's record at a time.
    publishing: Mutex<()>,
    /// The VMs' images as of the last renewal of the shared record.
    vm_images: std::sync::Mutex<BTreeSet<Digest>>,
    /// How often a long collection renews its announcement.
    renew_every: std::time::Duration,
}

/// A repository's tags, each with the manifest bytes it held when last
/// hashed and their digest.
type TagDigests = HashMap<Tag, (Bytes, Digest)>;

/// A manifest and the image summary built from it and its config; the
/// summary's repository and tags are the caller's to fill.
struct Described {
    info: ImageInfo,
    manifest: Manifest,
}

/// Entries kept in the config cache before it is emptied.
const CONFIG_CACHE_LIMIT: usize = 4096;

impl ImageService {
    /// Publishes imports, tags and removals to `events`.
    #[must_use]
    pub fn with_events(mut self, events: Publisher) -> Self {
        self.events = events;
        self
    }

    /// Where pushes and pulls of this store's images are told.
    pub fn events(&self) -> &Publisher {
        &self.events
    }

    /// Counts the bytes of imports (and, through [`Self::metrics`], of
    /// pushes and pulls) in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<dyn MetricsRecorder>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Where the bytes of transfers of this store's images are counted.
    pub fn metrics(&self) -> &Arc<dyn MetricsRecorder> {
        &self.metrics
    }

    pub fn new(store: Arc<dyn BlobStore>, in_use: Arc<dyn ImagesInUse>) -> Self {
        Self {
            store,
            events: no_events(),
            metrics: Arc::new(NoMetrics),
            in_use,
            leases: Arc::default(),
            gc: Mutex::new(()),
            commits: RwLock::new(()),
            configs: std::sync::Mutex::new(HashMap::new()),
            described: std::sync::Mutex::new(HashMap::new()),
            tag_digests: std::sync::Mutex::new(HashMap::new()),
            shared: Arc::new(NoSharedLeases),
            publishing: Mutex::new(()),
            vm_images: std::sync::Mutex::new(BTreeSet::new()),
            renew_every: std::time::Duration::from_secs(30),
        }
    }

    /// Shares leases with the other daemons on the store through `shared`,
    /// renewing long collections every `renew_every`.
    #[must_use]
    pub fn with_shared_leases(
        mut self,
        shared: Arc<dyn SharedLeases>,
        renew_every: std::time::Duration,
    ) -> Self {
        if shared.is_shared() {
            self.leases.track_released();
        }
        self.shared = shared;
        self.renew_every = renew_every;
        self
    }

    /// The parsed config blob, from the cache or the store (verified).
    async fn config(&self, digest: &Digest) -> Result<Arc<ImageConfig>, UseCaseError> {
        if let Some(config) = self.cached_config(digest) {
            return Ok(config);
        }
        let bytes = self.store.read_blob(digest).await?;
        let config = Arc::new(ImageConfig::from_json(&bytes)?);
        if let Ok(mut cache) = self.configs.lock() {
            if cache.len() >= CONFIG_CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(digest.clone(), config.clone());
        }
        Ok(config)
    }

    fn cached_config(&self, digest: &Digest) -> Option<Arc<ImageConfig>> {
        self.configs.lock().ok()?.get(digest).cloned()
    }

    /// Keeps `digests` from garbage collection until the lease is dropped.
    /// Lease a blob before writing it, or before reading something that
    /// names it (and then check that it still exists).
    pub async fn lease(&self, digests: impl IntoIterator<Item = Digest>) -> Lease {
        let lease = {
            let _commits = self.commits.read().await;
            self.leases.lease(digests)
        };
        self.share_best_effort().await;
        lease
    }

    /// Adds `digest` to `lease`.
    pub async fn extend_lease(&self, lease: &mut Lease, digest: Digest) {
        {
            let _commits = self.commits.read().await;
            lease.add(digest);
        }
        self.share_best_effort().await;
    }

    /// Commits a blob whose digest was not known in advance, leased (and the
    /// lease published) before the blob becomes visible: a collection on
    /// this host or another that lists the blob also reads the lease.
    pub async fn commit_leased(
        &self,
        writer: Box<dyn BlobWriter>,
        expected: Option<&Digest>,
        lease: &mut Lease,
    ) -> Result<(Digest, u64), StoreError> {
        let sealed = writer.seal(expected).await?;
        self.extend_lease(lease, sealed.digest().clone()).await;
        sealed.publish().await
    }

    /// Resolves a reference like [`Self::resolve`] and leases the manifest
    /// and the blobs it names, with no garbage collection in between: what
    /// the reference named when it was read stays until the lease is dropped.
    pub async fn resolve_leased(
        &self,
        reference: &Reference,
    ) -> Result<(Repository, Bytes, Lease), UseCaseError> {
        let leased = {
            let _commits = self.commits.read().await;
            let (repository, bytes) = self.resolve(reference).await?;
            let mut lease = self.leases.lease([Digest::of(&bytes)]);
            if let Ok(manifest) = Manifest::from_json(&bytes) {
                lease.extend(manifest.blobs().into_iter().map(|d| d.digest.clone()));
            }
            (repository, bytes, lease)
        };
        // Published before the caller looks the blobs up: a collection on
        // another host either keeps them or has ended (and the lookup fails
        // cleanly) when this returns.
        self.share_best_effort().await;
        Ok(leased)
    }

    /// The store, for other use cases that read images.
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    /// Resolves a reference to its repository and manifest bytes.
    pub async fn resolve(
        &self,
        reference: &Reference,
    ) -> Result<(Repository, Bytes), UseCaseError> {
        let repository = reference.repository.clone();
        let bytes = match &reference.digest {
            Some(digest) => self.store.read_blob(digest).await.map_err(|e| match e {
                StoreError::BlobNotFound(_) => image_not_found(reference),
                other => other.into(),
            })?,
            None => {
                let tag = reference.tag_or_latest();
                self.store
                    .get_manifest(&repository, &tag)
                    .await
                    .map_err(|e| match e {
                        StoreError::ManifestNotFound { .. } => image_not_found(reference),
                        other => other.into(),
                    })?
            }
        };
        Ok((repository, bytes))
    }

    /// Writes a small blob, leased (by its digest) before it is written.
    async fn write_small_blob(
        &self,
        bytes: Bytes,
        lease: &mut Lease,
    ) -> Result<(Digest, u64), UseCaseError> {
        let digest = Digest::of(&bytes);
        self.extend_lease(lease, digest.clone()).await;
        let mut writer = self.store.begin_blob().await?;
        writer.write(bytes).await?;
        Ok(writer.commit(Some(&digest)).await?)
    }

    async fn describe(
        &self,
        repository: &Repository,
        tags: Vec<Tag>,
        manifest_bytes: &Bytes,
    ) -> Result<(ImageInfo, Manifest), UseCaseError> {
        let described = self
            .described(repository, &Digest::of(manifest_bytes), manifest_bytes)
            .await?;
        let info = ImageInfo {
            repository: repository.clone(),
            tags,
            ..described.info.clone()
        };
        Ok((info, described.manifest.clone()))
    }

    /// The parsed manifest with digest `digest` (its bytes are
    /// `manifest_bytes`) and its summary, from the cache or parsed now.
    async fn described(
        &self,
        repository: &Repository,
        digest: &Digest,
        manifest_bytes: &Bytes,
    ) -> Result<Arc<Described>, UseCaseError> {
        let cached = self
            .described
            .lock()
            .ok()
            .and_then(|cache| cache.get(digest).cloned());
        if let Some(described) = cached {
            return Ok(described);
        }
        let manifest = Manifest::from_json(manifest_bytes)?;
        let config = self.config(&manifest.config.digest).await?;
        let size = manifest_bytes.len() as u64
            + manifest.config.size
            + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        let info = ImageInfo {
            repository: repository.clone(),
            tags: Vec::new(),
            digest: digest.clone(),
            size,
            disk_format: config.spec.disk_format,
            created: manifest
                .annotations
                .get(annotations::CREATED)
                .cloned()
                .unwrap_or_default(),
            cpu: config.spec.resources.cpu,
            memory_bytes: config.spec.resources.memory,
            description: config.metadata.description.clone().unwrap_or_default(),
        };
        let described = Arc::new(Described { info, manifest });
        if let Ok(mut cache) = self.described.lock() {
            if cache.len() >= CONFIG_CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(digest.clone(), described.clone());
        }
        Ok(described)
    }

    /// The digest of `bytes`, the manifest `repository:tag` holds now.
    fn manifest_digest(&self, repository: &Repository, tag: &Tag, bytes: &Bytes) -> Digest {
        if let Ok(memo) = self.tag_digests.lock()
            && let Some((seen, digest)) = memo.get(repository).and_then(|tags| tags.get(tag))
            // The memo holds its bytes, so the same address and length are
            // the same bytes (the store's index hands out clones).
            && ((seen.as_ptr() == bytes.as_ptr() && seen.len() == bytes.len()) || seen == bytes)
        {
            return digest.clone();
        }
        let digest = Digest::of(bytes);
        if let Ok(mut memo) = self.tag_digests.lock() {
            // Bounded by tags, not repositories: one repository whose tags
            // come and go (a CI tagging every build) must not grow it forever.
            if memo.values().map(HashMap::len).sum::<usize>() >= CONFIG_CACHE_LIMIT {
                memo.clear();
            }
            memo.entry(repository.clone())
                .or_default()
                .insert(tag.clone(), (bytes.clone(), digest.clone()));
        }
        digest
    }

    /// Every tag with the digest of the manifest it points at.
    async fn tag_index(&self) -> Result<Vec<(Repository, Tag, Digest, Bytes)>, UseCaseError> {
        let mut out = Vec::new();
        for (repository, tag) in self.store.list_manifests().await? {
            match self.store.get_manifest(&repository, &tag).await {
                Ok(bytes) => {
                    let digest = self.manifest_digest(&repository, &tag, &bytes);
                    out.push((repository, tag, digest, bytes));
                }
                // Removed between list and get: not an error.
                Err(StoreError::ManifestNotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }
}

fn image_not_found(reference: &Reference) -> UseCaseError {
    UseCaseError::not_found(format!("image {reference} not found"))
}

#[async_trait]
impl ImageUseCases for ImageService {
    #[instrument(skip_all, fields(tags = ?request.tags, size = request.disk_size))]
    async fn import(
        &self,
        request: ImportRequest,
        disk: DiskSource,
    ) -> Result<ImportOutcome, UseCaseError> {
        self.import_image(request, disk).await
    }

    async fn list(&self, repository: Option<Repository>) -> Result<Vec<ImageInfo>, UseCaseError> {
        let mut grouped: BTreeMap<(Repository, Digest), (Vec<Tag>, Bytes)> = BTreeMap::new();
        for (repo, tag, digest, bytes) in self.tag_index().await? {
            if repository.as_ref().is_some_and(|r| r != &repo) {
                continue;
            }
            grouped
                .entry((repo, digest))
                .or_insert_with(|| (Vec::new(), bytes))
                .0
                .push(tag);
        }
        let mut images = Vec::with_capacity(grouped.len());
        for ((repo, digest), (mut tags, bytes)) in grouped {
            tags.sort();
            match self.described(&repo, &digest, &bytes).await {
                Ok(described) => {
                    let info = &described.info;
                    images.push(ImageInfo {
                        repository: repo,
                        tags,
                        digest: info.digest.clone(),
                        size: info.size,
                        disk_format: info.disk_format,
                        created: info.created.clone(),
                        cpu: info.cpu,
                        memory_bytes: info.memory_bytes,
                        description: info.description.clone(),
                    });
                }
                // A damaged image must not hide the others; `inspect` names
                // the damage and `vmr system check` reports it.
                Err(e)
                    if matches!(
                        e.kind,
                        ErrorKind::InvalidArgument | ErrorKind::NotFound | ErrorKind::DataLoss
                    ) =>
                {
                    warn!(image = %repo, %digest, error = %e, "not listing a damaged image");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(images)
    }

    async fn inspect(&self, reference: &Reference) -> Result<ImageDetails, UseCaseError> {
        let (repository, manifest_bytes) = self.resolve(reference).await?;
        let digest = Digest::of(&manifest_bytes);
        let tags = self
            .tag_index()
            .await?
            .into_iter()
            .filter(|(r, _, d, _)| r == &repository && d == &digest)
            .map(|(_, t, _, _)| t)
            .collect();
        let (info, manifest) = self.describe(&repository, tags, &manifest_bytes).await?;
        // Inspect shows the exact bytes, read and verified now (never cached).
        let config_bytes = self.store.read_blob(&manifest.config.digest).await?;
        Ok(ImageDetails {
            info,
            manifest,
            manifest_bytes,
            config_bytes,
        })
    }

    async fn tag(&self, source: &Reference, target: &Reference) -> Result<Digest, UseCaseError> {
        if target.digest.is_some() {
            return Err(UseCaseError::invalid(
                "target",
                "a tag target cannot name a digest",
            ));
        }
        let (_, bytes, mut lease) = self.resolve_leased(source).await?;
        let digest = Digest::of(&bytes);
        if !self.store.blob_exists(&digest).await? {
            // Older stores may lack the manifest blob: restore it.
            self.write_small_blob(bytes.clone(), &mut lease).await?;
        }
        self.confirm(&bytes).await?;
        self.store
            .put_manifest(&target.repository, &target.tag_or_latest(), bytes)
            .await?;
        self.events.publish(
            NewEvent::new(
                EventType::Image,
                "tag",
                format!("{}:{}", target.repository, target.tag_or_latest()),
            )
            .with("source", source.to_string())
            .with("digest", digest.to_string()),
        );
        Ok(digest)
    }

    async fn remove(
        &self,
        reference: &Reference,
        force: bool,
    ) -> Result<RemoveOutcome, UseCaseError> {
        let outcome = self.remove_and_collect(reference, force).await?;
        for untagged in &outcome.untagged {
            self.events
                .publish(NewEvent::new(EventType::Image, "remove", untagged));
        }
        Ok(outcome)
    }

    async fn prune(&self, all: bool) -> Result<PruneOutcome, UseCaseError> {
        self.prune_and_collect(all).await
    }

    async fn check(&self) -> Result<StoreCheck, UseCaseError> {
        // Imports go on; garbage collection waits, so that no blob
        // disappears between its listing and its check.
        let _gc = self.gc.lock().await;
        // The check reads the store itself, not the daemon's index of it.
        self.store.reload().await;
        let mut check = super::store_check::check_store(self.store.as_ref()).await?;
        // A dead host's record pins nothing (it expired) but is reported
        // until a collection on any host removes it.
        for expired in self.shared.expired().await? {
            check.problems.push(vmr_ports::driving::StoreProblem {
                kind: vmr_ports::driving::StoreProblemKind::LeftoverTemporary,
                message: format!(
                    "lease {} expired {} s ago (its host died or lost the store); \
                     the next collection removes it",
                    expired.key, expired.age_secs
                ),
                subject: format!("lease:{}", expired.key),
            });
        }
        Ok(check)
    }
}

#[cfg(test)]
mod tests;
