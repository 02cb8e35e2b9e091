//! The content-addressed image store: one [`OpendalStore`] serving the
//! `BlobStore` port from a local directory, an S3 bucket or memory.
//!
//! opendal reads, lists and deletes for every backend. Blob writes never go
//! through it directly: bytes are spooled to a local temporary while being
//! hashed (see `spool`), and only a verified, fsynced file is published. On
//! the filesystem that is an atomic rename into `blobs/sha256/<hex>`; on S3
//! and memory it is an upload of the verified file, which is then kept as
//! the local cache copy the hypervisor needs (`local_path`).

mod bucket;
mod cached;
mod error;
mod layout;
mod local;
mod placed;
mod s3;
mod s3_uploads;
mod spool;
mod verify;
mod writer;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use opendal::{ErrorKind, Operator};
use tempfile::TempDir;
use vmr_domain::image::{Digest, Repository, Tag};
use vmr_ports::blobstore::{BlobStore, BlobWriter, ByteStream, PlacedWriter, StoreError};
use vmr_ports::leases::{NoSharedLeases, SharedLeases};

pub use bucket::{BucketLeases, LeaseSettings};
pub use s3::S3Settings;
pub use s3_uploads::{DEFAULT_UPLOAD_EXPIRY, delete_bucket};

use error::{backend_error, stream_error};
use layout::{BLOBS_DIR, MANIFESTS_DIR, blob_key, manifest_key};
use spool::{ActiveTemps, Spool, Spooled, TempFile, spawn_io};
use writer::StoreWriter;

/// Read size for streamed reads: 1 MiB locally (see
/// research/stream-throughput.md); larger, concurrent ranged GETs on S3.
const LOCAL_READ_CHUNK: usize = 1 << 20;
const REMOTE_READ_CHUNK: usize = 8 << 20;
const REMOTE_READ_CONCURRENCY: usize = 4;
/// S3 multipart part size and parallel part uploads.
const UPLOAD_CHUNK: usize = 16 << 20;
const UPLOAD_CONCURRENCY: usize = 4;

/// The image store over opendal: `filesystem`, `s3` or `memory`.
#[derive(Clone)]
pub struct OpendalStore {
    inner: Arc<Inner>,
}

struct Inner {
    op: Operator,
    backend: Backend,
    /// Local temporaries: `<root>/tmp` (filesystem, so a rename into
    /// `blobs/` is atomic) or `<local_root>/cache/tmp`.
    temp_dir: PathBuf,
    temps: Arc<ActiveTemps>,
    description: String,
}

enum Backend {
    Filesystem {
        root: PathBuf,
    },
    /// S3 or memory: blobs live behind opendal, verified copies in a local cache.
    Remote {
        cache_dir: PathBuf,
        read_chunk: usize,
        read_concurrency: usize,
        upload: Option<(usize, usize)>,
        /// S3: what unfinished multipart uploads are looked up with.
        s3: Option<Box<(S3Settings, reqwest::Client)>>,
        /// Keeps the memory store's scratch directory alive.
        scratch: Option<TempDir>,
    },
}

impl OpendalStore {
    /// A store rooted at a local directory (created if missing):
    /// `blobs/sha256/<hex>`, `manifests/<repository>/<tag>/manifest.json`,
    /// and `tmp/` for temporaries.
    pub fn filesystem(root: impl AsRef<Path>) -> Result<Self, StoreError> {
        let root = local::prepare_root(root.as_ref())?;
        let root_str = root.to_str().ok_or_else(|| StoreError::Invalid {
            field: "fs-path".to_owned(),
            reason: format!("{} is not valid UTF-8", root.display()),
        })?;
        let op = Operator::new(opendal::services::Fs::default().root(root_str))
            .map_err(|e| backend_error(&format!("fs-path {}", root.display()), e))?;
        Ok(Self::assemble(
            op,
            root.join(local::TEMP_DIR),
            format!("filesystem {}", root.display()),
            Backend::Filesystem { root },
        ))
    }

    /// A store in an S3 bucket (created unless `skip_bucket_creation`), with
    /// temporaries and verified local copies under `<local_root>/cache/`.
    /// Fails with a message naming the bucket when it cannot be listed with
    /// the given credentials.
    pub async fn s3(
        settings: S3Settings,
        local_root: impl AsRef<Path>,
    ) -> Result<Self, StoreError> {
        let (op, client) = s3::connect(&settings).await?;
        let (temp_dir, cache_dir) = local::prepare_cache(local_root.as_ref())?;
        let description = format!(
            "s3 bucket {} at {} (cache {})",
            settings.bucket,
            settings.endpoint(),
            cache_dir.display()
        );
        let backend = Backend::Remote {
            cache_dir,
            read_chunk: REMOTE_READ_CHUNK,
            read_concurrency: REMOTE_READ_CONCURRENCY,
            upload: Some((UPLOAD_CHUNK, UPLOAD_CONCURRENCY)),
            s3: Some(Box::new((settings, client))),
            scratch: None,
        };
        Ok(Self::assemble(op, temp_dir, description, backend))
    }

    /// A store in memory (tests and the fake mode); `local_path` copies
    /// land in a scratch directory removed with the last clone of the store.
    pub fn memory() -> Result<Self, StoreError> {
        let op = Operator::new(opendal::services::Memory::default())
            .map_err(|e| backend_error("memory store", e))?;
        let scratch = tempfile::Builder::new()
            .prefix("vmr-memory-store-")
            .tempdir()
            .map_err(|e| error::io_error("creating the memory store's scratch directory", e))?;
        let (temp_dir, cache_dir) = local::prepare_cache(scratch.path())?;
        let backend = Backend::Remote {
            cache_dir,
            read_chunk: LOCAL_READ_CHUNK,
            read_concurrency: 1,
            upload: None,
            s3: None,
            scratch: Some(scratch),
        };
        Ok(Self::assemble(op, temp_dir, "memory".to_owned(), backend))
    }

    fn assemble(op: Operator, temp_dir: PathBuf, description: String, backend: Backend) -> Self {
        Self {
            inner: Arc::new(Inner {
                op,
                backend,
                temp_dir,
                temps: Arc::default(),
                description,
            }),
        }
    }

    /// The opendal operator on the store's keys, for tools and tests that
    /// look behind the store (writing through it bypasses every check).
    pub fn operator(&self) -> &Operator {
        &self.inner.op
    }

    /// The leases this daemon shares with the others on the same store: in
    /// the bucket for S3 (docs/shared-bucket.md); none for the filesystem
    /// and memory, which one daemon alone uses.
    pub fn shared_leases(&self, settings: LeaseSettings) -> Arc<dyn SharedLeases> {
        match &self.inner.backend {
            Backend::Remote {
                s3: Some(_),
                cache_dir,
                ..
            } => {
                let id_file = cache_dir.parent().unwrap_or(cache_dir).join("host-id");
                Arc::new(BucketLeases::new(self.inner.op.clone(), settings, &id_file))
            }
            _ => Arc::new(NoSharedLeases),
        }
    }

    /// The local directory holding temporaries and partial downloads.
    pub fn temporaries_dir(&self) -> &Path {
        &self.inner.temp_dir
    }
}

impl Inner {
    fn not_found(&self, digest: &Digest, doing: &str, err: opendal::Error) -> StoreError {
        if err.kind() == ErrorKind::NotFound {
            StoreError::BlobNotFound(digest.clone())
        } else {
            backend_error(&format!("{doing} {digest} in {}", self.description), err)
        }
    }

    async fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let meta = self
            .op
            .stat(&blob_key(digest))
            .await
            .map_err(|e| self.not_found(digest, "reading blob", e))?;
        Ok(meta.content_length())
    }

    /// An unverified stream of `range` of a blob.
    async fn raw_stream(
        &self,
        digest: &Digest,
        range: Range<u64>,
    ) -> Result<ByteStream, StoreError> {
        if range.is_empty() {
            return Ok(futures::stream::empty().boxed());
        }
        let (chunk, concurrency) = match &self.backend {
            Backend::Filesystem { .. } => (LOCAL_READ_CHUNK, 1),
            Backend::Remote {
                read_chunk,
                read_concurrency,
                ..
            } => (*read_chunk, *read_concurrency),
        };
        let reader = self
            .op
            .reader_with(&blob_key(digest))
            .chunk(chunk)
            .concurrent(concurrency)
            .await
            .map_err(|e| self.not_found(digest, "reading blob", e))?;
        let stream = reader
            .into_bytes_stream(range)
            .await
            .map_err(|e| self.not_found(digest, "reading blob", e))?;
        let doing = format!("reading blob {digest}");
        Ok(stream.map_err(move |e| stream_error(&doing, e)).boxed())
    }

    /// Streams a whole blob through a fresh temporary and returns it only if
    /// it verifies (S3 and memory `local_path`).
    async fn download_verified(&self, digest: &Digest) -> Result<TempFile, StoreError> {
        let size = self.blob_size(digest).await?;
        let mut stream = self.raw_stream(digest, 0..size).await?;
        let mut spool = Spool::start(spool::open_fresh(&self.temp_dir, &self.temps).await?);
        while let Some(chunk) = stream.next().await {
            spool.write(chunk?).await?;
        }
        let Spooled {
            temp,
            digest: actual,
            ..
        } = spool.finish().await?;
        if actual != *digest {
            spawn_io("removing a corrupt download", move || temp.discard()).await?;
            tracing::error!(%digest, %actual, "stored blob does not match its digest");
            return Err(StoreError::Corrupt {
                digest: digest.clone(),
                actual,
            });
        }
        Ok(temp)
    }

    fn manifest_error(
        &self,
        repository: &Repository,
        tag: &Tag,
        doing: &str,
        err: opendal::Error,
    ) -> StoreError {
        if err.kind() == ErrorKind::NotFound {
            StoreError::ManifestNotFound {
                repository: repository.to_string(),
                tag: tag.to_string(),
            }
        } else {
            backend_error(
                &format!("{doing} {repository}:{tag} in {}", self.description),
                err,
            )
        }
    }
}

#[async_trait]
impl BlobStore for OpendalStore {
    async fn begin_blob(&self) -> Result<Box<dyn BlobWriter>, StoreError> {
        let inner = &self.inner;
        let opened = spool::open_fresh(&inner.temp_dir, &inner.temps).await?;
        Ok(Box::new(StoreWriter {
            store: Arc::clone(inner),
            spool: Spool::start(opened),
            resumed_for: None,
        }))
    }

    async fn resume_blob(&self, expected: &Digest) -> Result<Box<dyn BlobWriter>, StoreError> {
        let inner = &self.inner;
        let opened = spool::open_partial(&inner.temp_dir, &inner.temps, expected).await?;
        if opened.written > 0 {
            tracing::info!(digest = %expected, bytes = opened.written, "resuming partial blob");
        }
        Ok(Box::new(StoreWriter {
            store: Arc::clone(inner),
            spool: Spool::start(opened),
            resumed_for: Some(expected.clone()),
        }))
    }

    async fn place_blob(
        &self,
        expected: &Digest,
        size: u64,
    ) -> Result<Box<dyn PlacedWriter>, StoreError> {
        Ok(Box::new(self.inner.place(expected, size).await?))
    }

    async fn blob_exists(&self, digest: &Digest) -> Result<bool, StoreError> {
        match self.inner.blob_size(digest).await {
            Ok(_) => Ok(true),
            Err(StoreError::BlobNotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        self.inner.blob_size(digest).await
    }

    async fn read_blob(&self, digest: &Digest) -> Result<Bytes, StoreError> {
        if let Backend::Filesystem { root } = &self.inner.backend {
            // Small reads straight from the file: opendal's reader costs about
            // a millisecond and large transient buffers per call, which made
            // listing 200 images take 300 ms.
            let bytes = match tokio::fs::read(root.join(blob_key(digest))).await {
                Ok(bytes) => Bytes::from(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::BlobNotFound(digest.clone()));
                }
                Err(e) => return Err(StoreError::Io(e)),
            };
            return verify::check_bytes(digest, bytes).await;
        }
        let buffer = self
            .inner
            .op
            .read(&blob_key(digest))
            .await
            .map_err(|e| self.inner.not_found(digest, "reading blob", e))?;
        verify::check_bytes(digest, buffer.to_bytes()).await
    }

    async fn open_blob(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StoreError> {
        let size = self.inner.blob_size(digest).await?;
        match range {
            None => {
                let stream = self.inner.raw_stream(digest, 0..size).await?;
                Ok(verify::verified(digest.clone(), stream))
            }
            Some(range) if range.start <= range.end && range.start <= size => {
                self.inner
                    .raw_stream(digest, range.start..range.end.min(size))
                    .await
            }
            Some(range) => Err(StoreError::OutOfBounds {
                doing: format!("reading range {}..{}", range.start, range.end),
                digest: digest.clone(),
                size,
            }),
        }
    }

    async fn verify_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        let mut stream = self.open_blob(digest, None).await?;
        while stream.try_next().await?.is_some() {}
        Ok(())
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner
            .op
            .delete(&blob_key(digest))
            .await
            .map_err(|e| backend_error(&format!("deleting blob {digest}"), e))?;
        if let Backend::Remote { cache_dir, .. } = &inner.backend {
            let copy = cache_dir.join(digest.hex());
            spawn_io("removing a cached blob", move || cached::remove(&copy)).await?;
        }
        Ok(())
    }

    async fn list_blobs(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        let op = &self.inner.op;
        let entries = match op.list(&format!("{BLOBS_DIR}/")).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(backend_error("listing blobs", e)),
        };
        let mut blobs = Vec::with_capacity(entries.len());
        for entry in entries {
            let Some(digest) = layout::parse_blob_name(entry.path()) else {
                continue;
            };
            let meta = entry.metadata();
            let size = if meta.is_file() {
                meta.content_length()
            } else if meta.is_dir() {
                continue;
            } else {
                // Listings that carry no sizes (memory).
                match self.inner.blob_size(&digest).await {
                    Ok(size) => size,
                    Err(StoreError::BlobNotFound(_)) => continue,
                    Err(e) => return Err(e),
                }
            };
            blobs.push((digest, size));
        }
        blobs.sort();
        Ok(blobs)
    }

    async fn put_manifest(
        &self,
        repository: &Repository,
        tag: &Tag,
        manifest: Bytes,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let key = manifest_key(repository, tag);
        match &inner.backend {
            Backend::Filesystem { root } => {
                local::write_durably(root, &key, &inner.temp_dir, &inner.temps, manifest).await
            }
            Backend::Remote { .. } => inner
                .op
                .write(&key, manifest)
                .await
                .map(drop)
                .map_err(|e| inner.manifest_error(repository, tag, "writing manifest", e)),
        }
    }

    async fn get_manifest(&self, repository: &Repository, tag: &Tag) -> Result<Bytes, StoreError> {
        let inner = &self.inner;
        if let Backend::Filesystem { root } = &inner.backend {
            return match tokio::fs::read(root.join(manifest_key(repository, tag))).await {
                Ok(bytes) => Ok(Bytes::from(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(StoreError::ManifestNotFound {
                        repository: repository.to_string(),
                        tag: tag.to_string(),
                    })
                }
                Err(e) => Err(StoreError::Io(e)),
            };
        }
        let buffer = inner
            .op
            .read(&manifest_key(repository, tag))
            .await
            .map_err(|e| inner.manifest_error(repository, tag, "reading manifest", e))?;
        Ok(buffer.to_bytes())
    }

    async fn delete_manifest(&self, repository: &Repository, tag: &Tag) -> Result<(), StoreError> {
        let inner = &self.inner;
        let key = manifest_key(repository, tag);
        inner
            .op
            .delete(&key)
            .await
            .map_err(|e| inner.manifest_error(repository, tag, "deleting manifest", e))?;
        if let Backend::Filesystem { root } = &inner.backend {
            local::prune_empty_dirs(root, &key).await?;
        }
        Ok(())
    }

    async fn list_manifests(&self) -> Result<Vec<(Repository, Tag)>, StoreError> {
        if let Backend::Filesystem { root } = &self.inner.backend {
            let root = root.clone();
            return tokio::task::spawn_blocking(move || local::list_manifest_keys(&root))
                .await
                .map_err(|e| StoreError::task("listing manifests", e))?;
        }
        let entries = match self
            .inner
            .op
            .list_with(&format!("{MANIFESTS_DIR}/"))
            .recursive(true)
            .await
        {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(backend_error("listing manifests", e)),
        };
        let mut manifests: Vec<_> = entries
            .iter()
            .filter_map(|entry| layout::parse_manifest_key(entry.path()))
            .collect();
        manifests.sort();
        manifests.dedup();
        Ok(manifests)
    }

    async fn local_path(&self, digest: &Digest) -> Result<PathBuf, StoreError> {
        let inner = &self.inner;
        match &inner.backend {
            Backend::Filesystem { root } => {
                inner.blob_size(digest).await?;
                Ok(root.join(BLOBS_DIR).join(digest.hex()))
            }
            Backend::Remote { cache_dir, .. } => {
                let target = cache_dir.join(digest.hex());
                if local::exists(&target).await? {
                    let copy = target.clone();
                    let expected = digest.clone();
                    let good = spawn_io("checking a cached blob", move || {
                        if cached::unchanged(&copy)? {
                            return Ok(true);
                        }
                        // Changed since it was verified (or never recorded):
                        // its bytes decide.
                        let good = cached::hash(&copy)? == expected;
                        if good {
                            cached::record(&copy)?;
                        } else {
                            cached::remove(&copy)?;
                        }
                        Ok(good)
                    })
                    .await?;
                    if good {
                        return Ok(target);
                    }
                    tracing::warn!(%digest, path = %target.display(), "the cached copy of a blob is corrupt; fetching it again");
                }
                let temp = inner.download_verified(digest).await?;
                let dir = cache_dir.clone();
                let path = target.clone();
                spawn_io("caching blob", move || {
                    temp.persist(&path)?;
                    local::sync_dir(&dir)?;
                    cached::record(&path)
                })
                .await?;
                tracing::debug!(%digest, "blob fetched into the local cache");
                Ok(target)
            }
        }
    }

    async fn clean_temporaries(&self) -> Result<usize, StoreError> {
        let removed = local::clean_temporaries(&self.inner.temp_dir, &self.inner.temps).await?;
        if removed > 0 {
            tracing::info!(removed, dir = %self.inner.temp_dir.display(), "removed leftover temporaries");
        }
        let aborted = match &self.inner.backend {
            Backend::Remote { s3: Some(s3), .. } => {
                let (settings, client) = &**s3;
                s3_uploads::abort_stale_uploads(client, settings, settings.upload_expiry()).await?
            }
            _ => 0,
        };
        Ok(removed + aborted)
    }

    async fn list_temporaries(&self) -> Result<Vec<String>, StoreError> {
        let mut names = local::list_temporaries(&self.inner.temp_dir, &self.inner.temps).await?;
        if let Backend::Remote { s3: Some(s3), .. } = &self.inner.backend {
            let (settings, client) = &**s3;
            let expiry = settings.upload_expiry();
            names.extend(
                s3_uploads::list_uploads(client, settings)
                    .await?
                    .iter()
                    .filter(|upload| upload.age >= expiry)
                    .map(s3_uploads::Upload::name),
            );
        }
        Ok(names)
    }

    fn describe(&self) -> String {
        self.inner.description.clone()
    }

    fn is_exclusive(&self) -> bool {
        match &self.inner.backend {
            Backend::Filesystem { .. } => true,
            // Memory has a scratch directory; S3 has none and may be shared.
            Backend::Remote { scratch, .. } => scratch.is_some(),
        }
    }
}
