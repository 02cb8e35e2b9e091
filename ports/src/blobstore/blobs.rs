//! The blobs of the store: content named by its sha256 digest, written
//! through writers that publish it only once it hashes to its name.

use std::ops::Range;
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use vmr_domain::image::Digest;

use super::{BlobWriter, ByteStream, PlacedWriter, StoreError};

/// Blobs named by their digest: written, read, listed and removed.
#[async_trait]
pub trait Blobs: Send + Sync {
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
    /// A local file holding the blob's verified bytes, for the hypervisor.
    /// The filesystem store returns the blob itself; S3 keeps a verified copy
    /// in a local cache. The file must never be written through this path.
    async fn local_path(&self, digest: &Digest) -> Result<PathBuf, StoreError>;
}
