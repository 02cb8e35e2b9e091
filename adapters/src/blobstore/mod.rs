//! The content-addressed image store: one [`OpendalStore`] serving the
//! store's ports (`Blobs`, `Manifests`, `StoreUpkeep`: see `blobs`,
//! `manifests` and `upkeep`) from a local directory, an S3 bucket or memory;
//! and [`IndexedManifests`], which keeps the manifests of a store this daemon
//! alone writes in memory.
//!
//! opendal reads, lists and deletes for every backend. Blob writes never go
//! through it directly: bytes are spooled to a local temporary while being
//! hashed (see `spool`), and only a verified, fsynced file is published. On
//! the filesystem that is an atomic rename into `blobs/sha256/<hex>`; on S3
//! and memory it is an upload of the verified file, which is then kept as
//! the local cache copy the hypervisor needs (`local_path`).

mod blobs;
mod bucket;
mod cached;
mod error;
mod indexed;
mod layout;
mod local;
mod manifests;
mod placed;
mod s3;
mod s3_uploads;
mod spool;
mod upkeep;
mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use opendal::Operator;
use tempfile::TempDir;
use vmr_ports::blobstore::StoreError;
use vmr_ports::leases::{NoSharedLeases, SharedLeases};

pub use bucket::{BucketLeases, LeaseSettings};
pub use indexed::IndexedManifests;
pub use s3::S3Settings;
pub use s3_uploads::{DEFAULT_UPLOAD_EXPIRY, delete_bucket};

use error::backend_error;
use spool::ActiveTemps;

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

    /// Whether this daemon is the only writer of the store's manifests, so
    /// a copy of them kept in memory cannot go stale (see [`IndexedManifests`]):
    /// the local filesystem and memory. An S3 bucket may be shared.
    pub fn is_exclusive(&self) -> bool {
        match &self.inner.backend {
            Backend::Filesystem { .. } => true,
            // Memory has a scratch directory; S3 has none and may be shared.
            Backend::Remote { scratch, .. } => scratch.is_some(),
        }
    }
}
