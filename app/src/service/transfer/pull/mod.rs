//! Pull: the manifest (validated as a vmr image before any blob moves), then
//! every blob the store lacks, streamed through a resumable store writer
//! that hashes as it writes and commits only when the digest matches. A
//! download cut short leaves its bytes on disk; the next attempt (in this
//! pull, or the next one) asks the registry for the rest with HTTP Range.
//! The manifest blob and the tag come last, under the writer guard that
//! keeps garbage collection away from blobs no tag names yet.

use std::sync::Arc;

use futures::StreamExt;
use tracing::{debug, info, warn};
use vmr_domain::image::{
    Chunk, ChunkedDisk, Descriptor, Digest, ImageConfig, MAX_CONFIG_BYTES, Manifest, Reference,
    Repository, Tag,
};
use vmr_ports::driving::{
    BlobProgress, ErrorKind, TransferDone, TransferEvent, TransferRequest, UseCaseError,
};
use vmr_ports::{
    BlobStore, BlobWriter, ManifestReference, PlacedWriter, RegistryClient, RegistryError,
    StoreError,
};

use super::chunks::{ChunkIndex, ChunkSettings, Place};
use super::{KnownBlobs, Progress, TransferService, registry_target};
use crate::service::images::{ImageService, Lease};

mod chunked;

/// Progress is reported about this often (in bytes) while a blob streams.
const PROGRESS_STEP: u64 = 8 * 1024 * 1024;
/// A download cut short is resumed this many times within one pull before
/// the pull gives up (each attempt already retries its request).
const MAX_RESUMES: u32 = 2;

/// A pull whose manifest is fetched and checked.
pub(super) struct PullJob {
    images: Arc<ImageService>,
    store: Arc<dyn BlobStore>,
    client: Arc<dyn RegistryClient>,
    known: Arc<KnownBlobs>,
    chunking: Arc<ChunkSettings>,
    chunks: Arc<ChunkIndex>,
    repository: Repository,
    /// The local tag; `None` for a pull by digest alone.
    tag: Option<Tag>,
    manifest: Manifest,
    manifest_bytes: bytes::Bytes,
    digest: Digest,
    reference: String,
}

fn not_a_vm_image(
    reference: &Reference,
    registry: &str,
    reason: impl std::fmt::Display,
) -> UseCaseError {
    UseCaseError::precondition(format!(
        "{reference} in registry {registry} is not a vmr VM image: {reason}"
    ))
}

/// Resolves the registry and fetches and validates the manifest, so that a
/// missing image or a refused login fails the call itself.
pub(super) async fn prepare(
    service: &TransferService,
    request: TransferRequest,
) -> Result<PullJob, UseCaseError> {
    let TransferRequest {
        reference,
        context,
        credential,
    } = request;
    let context = service.contexts.resolve(&context).await?;
    let target = registry_target(&context, reference.registry.as_deref(), credential)?;
    let client = service.registries.connect(&target)?;
    let registry = client.describe();
    let (remote, tag) = match (&reference.tag, &reference.digest) {
        (tag, Some(digest)) => (ManifestReference::Digest(digest.clone()), tag.clone()),
        (_, None) => {
            let tag = reference.tag_or_latest();
            (ManifestReference::Tag(tag.clone()), Some(tag))
        }
    };
    let fetched = client
        .get_manifest(&reference.repository, &remote)
        .await
        .map_err(|e| match e {
            RegistryError::NotFound { .. } => UseCaseError::not_found(format!(
                "image {reference} not found in registry {registry}"
            ))
            .with_source(e),
            other => other.into(),
        })?;
    if let Some(wanted) = &reference.digest
        && *wanted != fetched.digest
    {
        return Err(UseCaseError::new(
            ErrorKind::DataLoss,
            format!(
                "registry {registry} answered {reference} with a manifest whose digest is {}",
                fetched.digest
            ),
        ));
    }
    let manifest = Manifest::from_json(&fetched.bytes)
        .map_err(|e| not_a_vm_image(&reference, &registry, e))?;
    if manifest.config.size > MAX_CONFIG_BYTES as u64 {
        return Err(not_a_vm_image(
            &reference,
            &registry,
            format!(
                "its config is {} bytes, more than the {MAX_CONFIG_BYTES} allowed",
                manifest.config.size
            ),
        ));
    }
    Ok(PullJob {
        images: service.images.clone(),
        store: service.images.store().clone(),
        client,
        known: service.known.clone(),
        chunking: service.chunking.clone(),
        chunks: service.chunks.clone(),
        repository: reference.repository.clone(),
        tag,
        manifest,
        digest: fetched.digest,
        manifest_bytes: fetched.bytes,
        reference: reference.to_string(),
    })
}

fn blob_event(descriptor: &Descriptor, done: u64, skipped: bool) -> TransferEvent {
    TransferEvent::Blob(BlobProgress {
        digest: descriptor.digest.clone(),
        media_type: descriptor.media_type.clone(),
        done,
        total: descriptor.size,
        skipped,
    })
}

/// A registry failure worth resuming after: the connection broke or the
/// registry went away (not: it sent something wrong).
fn resumable(error: &UseCaseError) -> bool {
    error.source.as_ref().is_some_and(|source| {
        matches!(
            source.downcast_ref::<RegistryError>(),
            Some(RegistryError::Unavailable { .. })
        )
    })
}

impl PullJob {
    pub(super) async fn run(self, progress: Progress) -> Result<TransferDone, UseCaseError> {
        // Every blob is leased before it is looked up or written, until the
        // tag is committed: garbage collection keeps them all meanwhile.
        let blobs = self.manifest.blobs();
        let mut lease = self
            .images
            .lease(
                blobs
                    .iter()
                    .map(|d| d.digest.clone())
                    .chain([self.digest.clone()]),
            )
            .await;
        let registry = self.client.describe();
        let mut transferred = 0;
        if self.manifest.is_chunked() {
            // The disk rebuilt from the chunks and the local single-layer
            // manifest are blobs of their own: leased as well.
            if let (Ok(disk), Ok(plain)) = (self.manifest.chunked_disk(), self.manifest.unchunked())
            {
                let manifest = Digest::of(&plain.to_json_bytes());
                self.images
                    .extend_lease(&mut lease, disk.disk.digest.clone())
                    .await;
                self.images.extend_lease(&mut lease, manifest).await;
            }
            return self.run_chunked(progress, lease).await;
        }
        for descriptor in blobs {
            if self.store.blob_exists(&descriptor.digest).await? {
                debug!(digest = %descriptor.digest, "already in the store");
                progress
                    .send(blob_event(descriptor, descriptor.size, true))
                    .await?;
            } else {
                transferred += self.fetch(descriptor, &progress).await?;
            }
            if descriptor.digest == self.manifest.config.digest {
                self.check_config().await?;
            }
            self.known
                .remember(&registry, &descriptor.digest, &self.repository);
        }
        let mut writer = self.store.begin_blob().await?;
        writer.write(self.manifest_bytes.clone()).await?;
        writer.commit(Some(&self.digest)).await?;
        self.images.confirm(&self.manifest_bytes).await?;
        if let Some(tag) = &self.tag {
            self.store
                .put_manifest(&self.repository, tag, self.manifest_bytes.clone())
                .await?;
        }
        info!(registry = %registry, digest = %self.digest, bytes = transferred, "pulled");
        Ok(TransferDone {
            reference: self.reference,
            digest: self.digest,
            bytes_transferred: transferred,
        })
    }

    /// The config must be a vmr config before the disk is worth fetching.
    async fn check_config(&self) -> Result<(), UseCaseError> {
        let bytes = self.store.read_blob(&self.manifest.config.digest).await?;
        ImageConfig::from_json(&bytes).map_err(|e| {
            UseCaseError::precondition(format!("{} is not a vmr VM image: {e}", self.reference))
        })?;
        Ok(())
    }

    /// Downloads one blob into the store; returns the bytes that travelled.
    async fn fetch(
        &self,
        descriptor: &Descriptor,
        progress: &Progress,
    ) -> Result<u64, UseCaseError> {
        let digest = &descriptor.digest;
        let mut writer = self.store.resume_blob(digest).await?;
        if writer.written() > descriptor.size {
            // Longer than the blob: not a prefix of it. Start over.
            writer.abort().await?;
            writer = self.store.resume_blob(digest).await?;
        }
        if writer.written() > 0 {
            info!(%digest, from = writer.written(), "resuming");
        }
        progress
            .send(blob_event(descriptor, writer.written(), false))
            .await?;
        let mut transferred = 0;
        let mut resumes = 0;
        while writer.written() < descriptor.size {
            let before = writer.written();
            match self
                .download(descriptor, &mut writer, &mut transferred, progress)
                .await
            {
                Ok(()) if writer.written() == before => {
                    return Err(UseCaseError::new(
                        ErrorKind::Unavailable,
                        format!(
                            "registry {} ended the download of blob {digest} at byte {before} of {}",
                            self.client.describe(),
                            descriptor.size
                        ),
                    ));
                }
                Ok(()) => {}
                Err(e) if resumable(&e) && resumes < MAX_RESUMES => {
                    resumes += 1;
                    warn!(%digest, at = writer.written(), error = %e, "download cut short, resuming");
                }
                // The registry lied about the blob (its size): what came is
                // no prefix worth resuming from.
                Err(e) if e.kind == ErrorKind::DataLoss => {
                    writer.abort().await?;
                    return Err(e);
                }
                // Otherwise the writer is dropped, not aborted: its bytes
                // stay for the next pull to resume from.
                Err(e) => return Err(e),
            }
        }
        writer.commit(Some(digest)).await.map_err(|e| match e {
            StoreError::DigestMismatch { expected, actual } => UseCaseError::new(
                ErrorKind::DataLoss,
                format!(
                    "registry {} sent blob {expected} with content that hashes to {actual}; nothing was stored",
                    self.client.describe()
                ),
            ),
            other => other.into(),
        })?;
        progress
            .send(blob_event(descriptor, descriptor.size, false))
            .await?;
        Ok(transferred)
    }

    /// One GET from where the writer stands, to the end or the first error.
    async fn download(
        &self,
        descriptor: &Descriptor,
        writer: &mut Box<dyn BlobWriter>,
        transferred: &mut u64,
        progress: &Progress,
    ) -> Result<(), UseCaseError> {
        let download = self
            .client
            .get_blob(&self.repository, &descriptor.digest, writer.written())
            .await?;
        if download.size != descriptor.size {
            return Err(UseCaseError::new(
                ErrorKind::DataLoss,
                format!(
                    "registry {} has blob {} with {} bytes, the manifest says {}",
                    self.client.describe(),
                    descriptor.digest,
                    download.size,
                    descriptor.size
                ),
            ));
        }
        let mut stream = download.stream;
        let mut reported = writer.written();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            *transferred += chunk.len() as u64;
            writer.write(chunk).await?;
            if writer.written() - reported >= PROGRESS_STEP {
                reported = writer.written();
                progress
                    .send(blob_event(descriptor, reported, false))
                    .await?;
            }
        }
        Ok(())
    }
}
