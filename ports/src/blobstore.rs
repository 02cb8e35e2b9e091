//! The content-addressed store: blobs named by their sha256 digest, and
//! manifests named by repository and tag. A blob becomes visible only when
//! its bytes hash to its name and are durable.
//!
//! Small ports, joined where a backend offers them together: [`Blobs`],
//! [`Manifests`] and [`StoreUpkeep`]; [`BlobStore`] is all three, which every
//! type implementing them is. A use case takes the narrowest it needs. A
//! copy of the store kept in memory is controlled through [`StoreCache`],
//! which no backend has to offer. An adapter wrapping one port of a store
//! joins the rest of it with [`StoreParts`].

mod blobs;
mod cache;
mod error;
mod manifests;
mod parts;
mod upkeep;

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use vmr_domain::image::Digest;

pub use blobs::Blobs;
pub use cache::StoreCache;
pub use error::{Cause, StoreError};
pub use manifests::Manifests;
pub use parts::StoreParts;
pub use upkeep::StoreUpkeep;

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

/// The blob and manifest store (filesystem, S3 or memory): blobs,
/// manifests and upkeep from one backend.
pub trait BlobStore: Blobs + Manifests + StoreUpkeep {}

impl<T: Blobs + Manifests + StoreUpkeep + ?Sized> BlobStore for T {}
