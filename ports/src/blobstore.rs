//! The content-addressed store: blobs named by their sha256 digest, and
//! manifests named by repository and tag. A blob becomes visible only when
//! its bytes hash to its name and are durable.

use std::ops::Range;
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use vmr_domain::image::{Digest, Repository, Tag};

/// What a store error keeps as its cause: the backend's own error (opendal,
/// HTTP, a background task), or a sentence where the backend gave none.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong in a blob store, in the user's words.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob {0} not found")]
    BlobNotFound(Digest),
    #[error("manifest {repository}:{tag} not found")]
    ManifestNotFound { repository: String, tag: String },
    #[error("digest mismatch: expected {expected}, content hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest} is corrupt: its content hashes to {actual}")]
    Corrupt { digest: Digest, actual: Digest },
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    /// A read or write reaching outside a blob (the caller's mistake):
    /// `doing` names the range.
    #[error("{doing}: outside blob {digest} of {size} bytes")]
    OutOfBounds {
        doing: String,
        digest: Digest,
        size: u64,
    },
    /// A writer used again after one of its writes failed (that failure
    /// was reported then).
    #[error("blob writer already failed; start a new one")]
    WriterFailed,
    /// A store setting that cannot work (`field` is its name in the config).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("store is out of space: {doing}: {source}")]
    NoSpace {
        doing: String,
        #[source]
        source: Cause,
    },
    /// The storage service or the store's machinery failed while `doing`
    /// something (S3 unreachable or refusing, a background task gone).
    #[error("store backend error: {doing}: {source}")]
    Backend {
        doing: String,
        #[source]
        source: Cause,
    },
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// A backend failure while `doing` something, keeping its cause.
    pub fn backend(doing: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Backend {
            doing: doing.into(),
            source: source.into(),
        }
    }

    /// A blocking task of the store that died (it panicked, or the runtime
    /// is shutting down) while `doing` something.
    pub fn task(doing: &str, source: tokio::task::JoinError) -> Self {
        Self::backend(format!("{doing}: background task failed"), source)
    }
}

/// A stream of blob bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// An unfinished blob: bytes are hashed as they are written; nothing is
/// visible under a digest until `commit` succeeds. Dropping a writer without
/// committing leaves nothing visible (temporaries are removed best-effort, and
/// at the next start at the latest).
#[async_trait]
pub trait BlobWriter: Send {
    /// Appends a chunk.
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError>;
    /// Appends the first `len` bytes of `file`, read with positional reads
    /// from offset 0 (a file a local caller handed over). A file that ends
    /// before `len` is `SizeMismatch` (`actual`: the bytes it had). Stores
    /// that can copy in the kernel do, and hash what they wrote, never the
    /// caller's file a second time; this default reads `file` in 1 MiB
    /// chunks through [`BlobWriter::write`].
    async fn write_file(&mut self, file: std::fs::File, len: u64) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt as _;
        let file = std::sync::Arc::new(file);
        let mut offset = 0;
        while offset < len {
            let want = usize::try_from((len - offset).min(1 << 20)).unwrap_or(1 << 20);
            let source = std::sync::Arc::clone(&file);
            let chunk = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0; want];
                let mut filled = 0;
                while filled < want {
                    match source.read_at(&mut buf[filled..], offset + filled as u64) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf.truncate(filled);
                Ok(buf)
            })
            .await
            .map_err(|e| StoreError::task("reading a passed file", e))??;
            if chunk.is_empty() {
                return Err(StoreError::SizeMismatch {
                    expected: len,
                    actual: offset,
                });
            }
            offset += chunk.len() as u64;
            self.write(Bytes::from(chunk)).await?;
        }
        Ok(())
    }
    /// Bytes written so far (for a resumed writer, including what was there).
    fn written(&self) -> u64;
    /// Finishes the data and learns its digest, but makes nothing visible
    /// yet: a caller that must lease the digest before anyone can list the
    /// blob (another host's garbage collection) does so between `seal` and
    /// [`SealedBlob::publish`]. With `expected`, a different digest is
    /// `DigestMismatch` and the data is discarded.
    async fn seal(
        self: Box<Self>,
        expected: Option<&Digest>,
    ) -> Result<Box<dyn SealedBlob>, StoreError>;
    /// Makes the data durable and visible under its digest: [`Self::seal`]
    /// then [`SealedBlob::publish`]. Committing a blob that already exists is
    /// not an error.
    async fn commit(
        self: Box<Self>,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), StoreError> {
        self.seal(expected).await?.publish().await
    }
    /// Discards the data.
    async fn abort(self: Box<Self>) -> Result<(), StoreError>;
}

/// A blob whose bytes are complete and verified but not yet visible.
/// Dropped without `publish`, nothing becomes visible (the temporary goes
/// as an uncommitted writer's does).
#[async_trait]
pub trait SealedBlob: Send {
    /// The digest the bytes hash to.
    fn digest(&self) -> &Digest;
    /// Their length.
    fn size(&self) -> u64;
    /// Makes the blob durable and visible under its digest.
    async fn publish(self: Box<Self>) -> Result<(Digest, u64), StoreError>;
}

/// A blob whose size and digest are known in advance, written by position
/// (a chunked pull): a pre-sized local file whose ranges are written in any
/// order and concurrently. The caller marks ranges as final with `settle`;
/// the store hashes the contiguous settled prefix as it grows and, on
/// `commit`, the rest, and publishes the blob only if it hashes to its
/// digest. Nothing is visible before. Dropped without `commit`, the file is
/// kept (as a partial download is) for the next `place_blob` of the digest.
#[async_trait]
pub trait PlacedWriter: Send + Sync {
    /// The blob's size.
    fn size(&self) -> u64;
    /// Whether the file was left by an earlier writer of the same digest and
    /// size: ranges that writer wrote and the caller knows to be good need
    /// not be written again. When false, every range must be written.
    fn resumed(&self) -> bool;
    /// Writes `bytes` at `offset`; a write past the size is an error.
    async fn write_at(&self, offset: u64, bytes: Bytes) -> Result<(), StoreError>;
    /// Declares `range` final: it will not be written again.
    async fn settle(&self, range: Range<u64>) -> Result<(), StoreError>;
    /// Hashes what is not hashed yet, makes the data durable and visible
    /// under the digest; `DigestMismatch` (and the file dropped) otherwise.
    async fn commit(self: Box<Self>) -> Result<(Digest, u64), StoreError>;
    /// Discards the file.
    async fn abort(self: Box<Self>) -> Result<(), StoreError>;
}

/// The blob and manifest store (filesystem, S3 or memory).
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Starts a new blob.
    async fn begin_blob(&self) -> Result<Box<dyn BlobWriter>, StoreError>;
    /// Starts or continues a blob whose digest is known in advance (a pull):
    /// what an earlier, interrupted writer for the same digest left is kept,
    /// re-hashed, and `written()` tells where to continue. Its `commit` also
    /// checks against `expected`; `abort` or a mismatch drops the partial.
    async fn resume_blob(&self, expected: &Digest) -> Result<Box<dyn BlobWriter>, StoreError>;
    /// Starts or continues a blob of `size` bytes written by position (see
    /// [`PlacedWriter`]).
    async fn place_blob(
        &self,
        expected: &Digest,
        size: u64,
    ) -> Result<Box<dyn PlacedWriter>, StoreError>;
    /// Whether a committed blob exists.
    async fn blob_exists(&self, digest: &Digest) -> Result<bool, StoreError>;
    /// The size of a committed blob.
    async fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError>;
    /// Reads a whole (small) blob and verifies it: `Corrupt` when it no
    /// longer hashes to its name.
    async fn read_blob(&self, digest: &Digest) -> Result<Bytes, StoreError>;
    /// Streams a blob, or a byte range of it. A full read verifies the digest
    /// at the end and fails the stream with `Corrupt` on mismatch. A range
    /// reaching past the end is cut there (as HTTP Range is); one starting
    /// past the end is an error. Ranged reads are not verified.
    async fn open_blob(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StoreError>;
    /// Re-hashes a blob: `Corrupt` on mismatch.
    async fn verify_blob(&self, digest: &Digest) -> Result<(), StoreError>;
    /// Removes a blob (no error if absent).
    async fn delete_blob(&self, digest: &Digest) -> Result<(), StoreError>;
    /// Every committed blob with its size.
    async fn list_blobs(&self) -> Result<Vec<(Digest, u64)>, StoreError>;

    /// Writes `manifests/<repository>/<tag>/manifest.json` atomically.
    async fn put_manifest(
        &self,
        repository: &Repository,
        tag: &Tag,
        manifest: Bytes,
    ) -> Result<(), StoreError>;
    /// Reads a tag's manifest bytes.
    async fn get_manifest(&self, repository: &Repository, tag: &Tag) -> Result<Bytes, StoreError>;
    /// Removes a tag (no error if absent).
    async fn delete_manifest(&self, repository: &Repository, tag: &Tag) -> Result<(), StoreError>;
    /// Every tag in the store.
    async fn list_manifests(&self) -> Result<Vec<(Repository, Tag)>, StoreError>;

    /// A local file holding the blob's verified bytes, for the hypervisor.
    /// The filesystem store returns the blob itself; S3 keeps a verified copy
    /// in a local cache. The file must never be written through this path.
    async fn local_path(&self, digest: &Digest) -> Result<PathBuf, StoreError>;
    /// Removes temporaries left by a crash; returns how many it removed.
    async fn clean_temporaries(&self) -> Result<usize, StoreError>;
    /// The names of the temporaries `clean_temporaries` would remove now:
    /// those no live writer owns (resumable partial downloads are kept a day
    /// and are not listed while they may still be resumed).
    async fn list_temporaries(&self) -> Result<Vec<String>, StoreError>;
    /// A short description for logs and health ("filesystem /var/lib/vm-registry").
    fn describe(&self) -> String;
    /// Whether this daemon is the only writer of the store's manifests, so a
    /// copy of them kept in memory cannot go stale (the local filesystem and
    /// memory stores). An S3 bucket may be shared between daemons: false.
    fn is_exclusive(&self) -> bool {
        false
    }
    /// Drops any copy of the store's contents kept in memory, so the next
    /// read sees the store itself (what `vmr system check` inspects, even
    /// after someone changed the files by hand). A no-op for stores that keep
    /// none.
    async fn reload(&self) {}
}
