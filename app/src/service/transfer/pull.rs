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
    BlobStore, BlobWriter, ManifestReference, RegistryClient, RegistryError, StoreError,
};

use super::chunks::{self, ChunkIndex, ChunkSettings, Stage};
use super::{KnownBlobs, Progress, TransferService, registry_target};
use crate::service::images::ImageService;

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
            let done = self.run_chunked(progress).await;
            drop(lease);
            return done;
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

    /// A chunked image: the config, then the disk rebuilt from its chunks,
    /// then the single-layer manifest they stand for (the local form).
    async fn run_chunked(self, progress: Progress) -> Result<TransferDone, UseCaseError> {
        let registry = self.client.describe();
        let bad = |e: vmr_domain::validation::ValidationError| {
            UseCaseError::precondition(format!("{} is not a vmr VM image: {e}", self.reference))
        };
        let disk = self.manifest.chunked_disk().map_err(bad)?;
        let plain = self.manifest.unchunked().map_err(bad)?;
        let plain_bytes = bytes::Bytes::from(plain.to_json_bytes());
        let mut transferred = 0;
        let config = self.manifest.config.clone();
        if self.store.blob_exists(&config.digest).await? {
            progress
                .send(blob_event(&config, config.size, true))
                .await?;
        } else {
            transferred += self.fetch(&config, &progress).await?;
        }
        self.check_config().await?;
        if self.store.blob_exists(&disk.disk.digest).await? {
            debug!(digest = %disk.disk.digest, "the disk is already in the store");
            for chunk in &disk.chunks {
                progress
                    .send(blob_event(&chunk.layer, chunk.layer.size, true))
                    .await?;
            }
        } else {
            transferred += self.assemble(&disk, &progress).await?;
        }
        for chunk in &disk.chunks {
            self.chunks
                .locate(&chunk.digest, &disk.disk.digest, chunk.offset);
            self.known
                .remember(&registry, &chunk.layer.digest, &self.repository);
        }
        let digest = Digest::of(&plain_bytes);
        let mut writer = self.store.begin_blob().await?;
        writer.write(plain_bytes.clone()).await?;
        writer.commit(Some(&digest)).await?;
        if let Some(tag) = &self.tag {
            self.store
                .put_manifest(&self.repository, tag, plain_bytes)
                .await?;
        }
        info!(registry = %registry, remote = %self.digest, digest = %digest, bytes = transferred, "pulled in chunks");
        Ok(TransferDone {
            reference: self.reference,
            digest,
            bytes_transferred: transferred,
        })
    }

    /// Writes the disk from its chunks: `parallel` chunks staged at once
    /// (downloaded, or copied from a local disk holding the same bytes),
    /// appended in order. Staged chunks and the partial disk survive a
    /// failed pull for the next one. Returns the bytes downloaded.
    async fn assemble(&self, disk: &ChunkedDisk, progress: &Progress) -> Result<u64, UseCaseError> {
        let target = &disk.disk.digest;
        let mut writer = self.store.resume_blob(target).await?;
        if writer.written() > disk.disk.size {
            writer.abort().await?;
            writer = self.store.resume_blob(target).await?;
        }
        let start = writer.written();
        if start > 0 {
            info!(digest = %target, from = start, "resuming the disk");
        }
        let dir = self.chunking.staging.join(target.hex());
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(StoreError::from)?;
        let todo: Vec<Chunk> = disk
            .chunks
            .iter()
            .filter(|c| c.offset + c.size > start)
            .cloned()
            .collect();
        let mut staged = futures::stream::iter(todo)
            .map(|chunk: Chunk| {
                let dir = dir.clone();
                async move {
                    let staged = self.stage(&chunk, &dir, progress).await;
                    staged.map(|r| (chunk, r))
                }
            })
            .buffered(self.chunking.parallel.max(1));
        let mut transferred = 0;
        while let Some(next) = staged.next().await {
            let (chunk, (path, sent)) = next?;
            transferred += sent;
            let skip = start.saturating_sub(chunk.offset);
            let mut stream = chunks::file_stream(&path).await?;
            let mut seen = 0u64;
            while let Some(piece) = stream.next().await {
                let mut piece = piece?;
                if seen < skip {
                    let drop = (skip - seen).min(piece.len() as u64) as usize;
                    seen += drop as u64;
                    let _ = piece.split_to(drop);
                }
                if !piece.is_empty() {
                    writer.write(piece).await?;
                }
            }
            let _ = tokio::fs::remove_file(&path).await;
        }
        drop(staged);
        writer.commit(Some(target)).await.map_err(|e| match e {
            StoreError::DigestMismatch { expected, actual } => UseCaseError::new(
                ErrorKind::DataLoss,
                format!(
                    "the chunks of disk {expected} from registry {} make a disk that hashes to {actual}; nothing was stored",
                    self.client.describe()
                ),
            ),
            other => other.into(),
        })?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(transferred)
    }

    /// One chunk as a verified staging file: kept from an earlier attempt,
    /// copied from a local disk with the same bytes, or downloaded.
    async fn stage(
        &self,
        chunk: &Chunk,
        dir: &std::path::Path,
        progress: &Progress,
    ) -> Result<(std::path::PathBuf, u64), UseCaseError> {
        // Named by offset too: a disk may hold the same chunk twice.
        let path = dir.join(format!("{}-{}", chunk.offset, chunk.digest.hex()));
        let layer = &chunk.layer;
        if tokio::fs::metadata(&path)
            .await
            .is_ok_and(|m| m.len() == chunk.size)
        {
            progress.send(blob_event(layer, layer.size, true)).await?;
            return Ok((path, 0));
        }
        if let Some((local, offset)) = self.chunks.location(&chunk.digest)
            && self.store.blob_exists(&local).await?
        {
            let plain = Descriptor {
                media_type: layer.media_type.clone(),
                digest: chunk.digest.clone(),
                size: chunk.size,
                annotations: Default::default(),
            };
            let data = self
                .store
                .open_blob(&local, Some(offset..offset + chunk.size))
                .await?;
            match self.stage_stream(&plain, chunk, &path, data, false).await? {
                Ok(()) => {
                    debug!(digest = %chunk.digest, from = %local, "chunk copied from a local disk");
                    progress.send(blob_event(layer, layer.size, true)).await?;
                    return Ok((path, 0));
                }
                Err(problem) => {
                    warn!(digest = %chunk.digest, from = %local, problem = %problem, "the local copy of a chunk differs; downloading it");
                }
            }
        }
        progress.send(blob_event(layer, 0, false)).await?;
        let mut resumes = 0;
        loop {
            let attempt = async {
                let download = self
                    .client
                    .get_blob(&self.repository, &layer.digest, 0)
                    .await?;
                if download.size != layer.size {
                    return Err(UseCaseError::new(
                        ErrorKind::DataLoss,
                        format!(
                            "registry {} has chunk {} with {} bytes, the manifest says {}",
                            self.client.describe(),
                            layer.digest,
                            download.size,
                            layer.size
                        ),
                    ));
                }
                let data = download
                    .stream
                    .map(|piece| piece.map_err(|e| StoreError::Backend(e.to_string())))
                    .boxed();
                self.stage_stream(layer, chunk, &path, data, chunk.zstd)
                    .await
            };
            match attempt.await {
                Ok(Ok(())) => break,
                Ok(Err(problem)) => {
                    return Err(UseCaseError::new(
                        ErrorKind::DataLoss,
                        format!(
                            "registry {} sent chunk {} at offset {} of disk {}, but {problem}; nothing was stored",
                            self.client.describe(),
                            layer.digest,
                            chunk.offset,
                            self.reference
                        ),
                    ));
                }
                Err(e)
                    if (resumable(&e) || matches!(e.kind, ErrorKind::Unavailable))
                        && resumes < MAX_RESUMES =>
                {
                    resumes += 1;
                    warn!(digest = %layer.digest, error = %e, "chunk download cut short, fetching it again");
                }
                Err(e) => return Err(e),
            }
        }
        progress.send(blob_event(layer, layer.size, false)).await?;
        Ok((path, layer.size))
    }

    /// Writes `data` (the chunk as `stored` describes it) into a staging
    /// file at `path`: the inner result says why it was refused.
    async fn stage_stream(
        &self,
        stored: &Descriptor,
        chunk: &Chunk,
        path: &std::path::Path,
        mut data: vmr_ports::ByteStream,
        zstd: bool,
    ) -> Result<Result<(), String>, UseCaseError> {
        let part = chunks::spool_path(path.parent().unwrap_or(path), "pull");
        let mut stage = Stage::create(part, chunk.size, zstd).map_err(StoreError::from)?;
        while let Some(piece) = data.next().await {
            let written = match piece {
                Ok(piece) => stage.write(&piece),
                Err(e) => {
                    stage.discard();
                    return Err(match e {
                        StoreError::Backend(message) => {
                            UseCaseError::new(ErrorKind::Unavailable, message)
                        }
                        other => other.into(),
                    });
                }
            };
            if let Err(e) = written {
                stage.discard();
                return Ok(Err(format!("it does not decode: {e}")));
            }
        }
        Ok(stage
            .finish(&stored.digest, &chunk.digest, path)
            .map_err(StoreError::from)?)
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
