//! Push: every blob the registry lacks (asked with HEAD; mounted from
//! another repository of the same registry when one is known to hold it;
//! uploaded from the store otherwise), then the manifest with its exact local
//! bytes, so the registry's digest is the local one.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tracing::{debug, info};
use vmr_domain::image::{
    Chunk, Descriptor, Digest, DiskFormat, Manifest, Repository, annotations, plan_chunks,
};
use vmr_ports::driving::{
    BlobProgress, ErrorKind, TransferDone, TransferEvent, TransferRequest, UseCaseError,
};
use vmr_ports::{
    BlobSource, Blobs, ByteStream, ManifestReference, RegistryClient, RegistryTarget, StoreError,
};

use super::chunks::{self, ChunkIndex, ChunkSettings};
use super::{KnownBlobs, Progress, TransferService, registry_target};

/// A range of a local file (a chunk of the disk, or a compressed chunk's
/// spool file) as an upload's source.
struct FileRange {
    path: PathBuf,
    range: Range<u64>,
}

#[async_trait]
impl BlobSource for FileRange {
    async fn open(&self, offset: u64) -> Result<ByteStream, StoreError> {
        let start = self.range.start.saturating_add(offset).min(self.range.end);
        chunks::file_range_stream(&self.path, start..self.range.end).await
    }
}

/// A blob of the local store as an upload's source: read whole, it is
/// verified (a corrupt blob fails the upload before its last byte leaves);
/// resumed at an offset, the registry's digest check stands in.
struct StoredBlob {
    store: Arc<dyn Blobs>,
    digest: Digest,
    size: u64,
}

#[async_trait]
impl BlobSource for StoredBlob {
    async fn open(&self, offset: u64) -> Result<ByteStream, StoreError> {
        let range = (offset > 0).then_some(offset..self.size);
        self.store.open_blob(&self.digest, range).await
    }
}

/// A push checked and ready to run.
pub(super) struct PushJob {
    store: Arc<dyn Blobs>,
    client: Arc<dyn RegistryClient>,
    known: Arc<KnownBlobs>,
    chunking: Arc<ChunkSettings>,
    chunks: Arc<ChunkIndex>,
    repository: Repository,
    remote: ManifestReference,
    manifest: Manifest,
    manifest_bytes: Bytes,
    reference: String,
}

/// What can be checked before anything travels: the context, the registry
/// URL, and the local image.
pub(super) async fn prepare(
    service: &TransferService,
    request: TransferRequest,
) -> Result<PushJob, UseCaseError> {
    let TransferRequest {
        reference,
        context,
        credential,
    } = request;
    let context = service.contexts.resolve(&context).await?;
    let target: RegistryTarget =
        registry_target(&context, reference.registry.as_deref(), credential)?;
    let (repository, manifest_bytes) = service.images.resolve(&reference).await?;
    let manifest = Manifest::from_json(&manifest_bytes)?;
    // A digest alone pushes the manifest untagged; with a tag, it is tagged.
    let remote = match (&reference.tag, &reference.digest) {
        (None, Some(digest)) => ManifestReference::Digest(digest.clone()),
        _ => ManifestReference::Tag(reference.tag_or_latest()),
    };
    let client = service.registries.connect(&target)?;
    Ok(PushJob {
        store: service.images.blobs(),
        client,
        known: service.known.clone(),
        chunking: service.chunking.clone(),
        chunks: service.chunks.clone(),
        repository,
        remote,
        manifest,
        manifest_bytes,
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

impl PushJob {
    pub(super) async fn run(self, progress: Progress) -> Result<TransferDone, UseCaseError> {
        if self.chunkable() {
            return self.run_chunked(progress).await;
        }
        let registry = self.client.describe();
        let mut transferred = 0;
        for descriptor in self.manifest.blobs() {
            if self.already_there(&registry, descriptor).await? {
                progress
                    .send(blob_event(descriptor, descriptor.size, true))
                    .await?;
            } else {
                progress.send(blob_event(descriptor, 0, false)).await?;
                self.upload(descriptor, &progress).await?;
                transferred += descriptor.size;
                progress
                    .send(blob_event(descriptor, descriptor.size, false))
                    .await?;
            }
            self.known
                .remember(&registry, &descriptor.digest, &self.repository);
        }
        let digest = self.put_manifest(self.manifest_bytes.clone()).await?;
        info!(registry = %registry, digest = %digest, bytes = transferred, "pushed");
        Ok(TransferDone {
            reference: self.reference,
            digest,
            bytes_transferred: transferred,
        })
    }

    /// Stores `bytes` as the manifest; checks the registry's digest of it.
    async fn put_manifest(&self, bytes: Bytes) -> Result<Digest, UseCaseError> {
        let registry = self.client.describe();
        let digest = self
            .client
            .put_manifest(
                &self.repository,
                &self.remote,
                bytes.clone(),
                &self.manifest.media_type,
            )
            .await?;
        let local = Digest::of(&bytes);
        if digest != local {
            return Err(UseCaseError::new(
                ErrorKind::DataLoss,
                format!(
                    "registry {registry} stored the manifest of {} as {digest}, but its bytes hash to {local}",
                    self.reference
                ),
            ));
        }
        Ok(digest)
    }

    /// Whether the disk goes in chunks: one disk layer larger than a chunk,
    /// annotated with its title only (so a puller rebuilds this manifest).
    fn chunkable(&self) -> bool {
        let chunk = self.chunking.chunk_bytes;
        match self.manifest.layers.as_slice() {
            [disk] => {
                chunk > 0
                    && disk.size > chunk
                    && disk.disk_format().is_some()
                    && disk.annotations.len() == 1
                    && disk.annotations.contains_key(annotations::TITLE)
            }
            _ => false,
        }
    }

    /// The config, then the disk's chunks (`parallel` at once, each skipped
    /// when the registry has it), then the chunked manifest.
    async fn run_chunked(self, progress: Progress) -> Result<TransferDone, UseCaseError> {
        let registry = self.client.describe();
        let disk = self.manifest.layers[0].clone();
        let format = disk.disk_format().ok_or_else(|| {
            UseCaseError::precondition(format!("{} has no disk format", self.reference))
        })?;
        let mut transferred = 0;
        let config = self.manifest.config.clone();
        if self.already_there(&registry, &config).await? {
            progress
                .send(blob_event(&config, config.size, true))
                .await?;
        } else {
            self.upload(&config, &progress).await?;
            transferred += config.size;
            progress
                .send(blob_event(&config, config.size, false))
                .await?;
        }
        let path = self.store.local_path(&disk.digest).await?;
        let plan = plan_chunks(disk.size, self.chunking.chunk_bytes);
        info!(
            chunks = plan.len(),
            size = disk.size,
            "pushing the disk in chunks"
        );
        let job = &self;
        let disk = &disk;
        let mut pushes = futures::stream::iter(plan)
            .map(|range| {
                let path = path.clone();
                let progress = progress.clone();
                async move { job.push_chunk(&path, range, format, disk, &progress).await }
            })
            .buffered(self.chunking.parallel.max(1));
        let mut layers = Vec::new();
        while let Some(pushed) = pushes.next().await {
            let (layer, sent) = pushed?;
            transferred += sent;
            layers.push(layer);
        }
        drop(pushes);
        let chunked = self.manifest.chunked(layers).ok_or_else(|| {
            UseCaseError::internal(format!(
                "the chunked manifest of {} does not rebuild its manifest",
                self.reference
            ))
        })?;
        let digest = self
            .put_manifest(Bytes::from(chunked.to_json_bytes()))
            .await?;
        info!(registry = %registry, digest = %digest, bytes = transferred, "pushed in chunks");
        Ok(TransferDone {
            reference: self.reference,
            digest,
            bytes_transferred: transferred,
        })
    }

    /// One chunk: hashed (and compressed when that pays) unless the layer it
    /// became is known, then skipped if the registry has it, uploaded
    /// otherwise. Returns the layer and the bytes sent.
    async fn push_chunk(
        &self,
        path: &std::path::Path,
        range: std::ops::Range<u64>,
        format: DiskFormat,
        disk: &Descriptor,
        progress: &Progress,
    ) -> Result<(Descriptor, u64), UseCaseError> {
        let registry = self.client.describe();
        let staging = self.chunking.staging.clone();
        // A chunk of this disk pushed before (by this daemon) keeps its
        // layer: found without reading it again.
        if let Some(layer) = self.chunks.layer(&disk.digest, &range, format)
            && self.already_there(&registry, &layer).await?
        {
            progress.send(blob_event(&layer, layer.size, true)).await?;
            self.known
                .remember(&registry, &layer.digest, &self.repository);
            return Ok((layer, 0));
        }
        let (source, dir, r) = (path.to_path_buf(), staging, range.clone());
        let read = tokio::task::spawn_blocking(move || chunks::read_chunk(&source, &r, &dir, true))
            .await
            .map_err(|e| UseCaseError::internal(format!("chunk reader: {e}")))?
            .map_err(vmr_ports::StoreError::from)?;
        let plain = read.digest.clone();
        self.chunks.locate(&plain, &disk.digest, range.start);
        let (layer, source) = match &read.zstd {
            Some((spool, digest, size)) => (
                Chunk::layer(format, true, (digest.clone(), *size), &range, &plain),
                FileRange {
                    path: spool.clone(),
                    range: 0..*size,
                },
            ),
            None => (
                Chunk::layer(
                    format,
                    false,
                    (plain.clone(), range.end - range.start),
                    &range,
                    &plain,
                ),
                // The registry checks the digest read_chunk computed.
                FileRange {
                    path: path.to_path_buf(),
                    range: range.clone(),
                },
            ),
        };
        let result = async {
            if self.already_there(&registry, &layer).await? {
                progress.send(blob_event(&layer, layer.size, true)).await?;
                return Ok(0);
            }
            progress.send(blob_event(&layer, 0, false)).await?;
            self.client
                .upload_blob_from(
                    &self.repository,
                    &layer.digest,
                    layer.size,
                    Arc::new(source),
                    None,
                )
                .await?;
            progress.send(blob_event(&layer, layer.size, false)).await?;
            Ok::<_, UseCaseError>(layer.size)
        }
        .await;
        if let Some((spool, ..)) = &read.zstd {
            let _ = tokio::fs::remove_file(spool).await;
        }
        let sent = result?;
        self.chunks
            .remember_layer(&disk.digest, &range, format, &layer);
        self.known
            .remember(&registry, &layer.digest, &self.repository);
        debug!(offset = range.start, digest = %layer.digest, sent, "chunk pushed");
        Ok((layer, sent))
    }

    /// Whether the repository has the blob, or got it by a mount.
    async fn already_there(
        &self,
        registry: &str,
        descriptor: &Descriptor,
    ) -> Result<bool, UseCaseError> {
        let digest = &descriptor.digest;
        if self
            .client
            .blob_exists(&self.repository, digest)
            .await?
            .is_some()
        {
            debug!(%digest, "the registry has the blob");
            return Ok(true);
        }
        if let Some(from) = self.known.elsewhere(registry, digest, &self.repository) {
            if self
                .client
                .mount_blob(&self.repository, digest, &from)
                .await?
            {
                debug!(%digest, from = %from, "mounted");
                return Ok(true);
            }
            debug!(%digest, from = %from, "the registry declined the mount");
        }
        Ok(false)
    }

    async fn upload(
        &self,
        descriptor: &Descriptor,
        progress: &Progress,
    ) -> Result<(), UseCaseError> {
        // A full read verifies the local blob: a corrupt one fails the
        // upload (DATA_LOSS) instead of reaching the registry.
        let source = Arc::new(StoredBlob {
            store: self.store.clone(),
            digest: descriptor.digest.clone(),
            size: descriptor.size,
        });
        let reporter = progress.clone();
        let described = descriptor.clone();
        let on_progress = Arc::new(move |done: u64| {
            reporter.offer(blob_event(&described, done, false));
        });
        self.client
            .upload_blob_from(
                &self.repository,
                &descriptor.digest,
                descriptor.size,
                source,
                Some(on_progress),
            )
            .await?;
        Ok(())
    }
}
