//! Writing blobs: a writer spools and hashes (see `spool`), checks the
//! digest when sealed, and publishes the verified temporary: an atomic
//! rename on the filesystem, or an upload then a rename into the local cache
//! on S3 and memory.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use vmr_domain::image::Digest;
use vmr_ports::blobstore::{BlobWriter, SealedBlob, StoreError};

use super::error::backend_error;
use super::layout::{BLOBS_DIR, blob_key};
use super::spool::{Spool, Spooled, TempFile, spawn_io};
use super::{Backend, Inner, local};

/// An open blob: spooled locally, published on commit.
pub(super) struct StoreWriter {
    pub(super) store: Arc<Inner>,
    pub(super) spool: Spool,
    /// The digest a resumed writer was started for.
    pub(super) resumed_for: Option<Digest>,
}

#[async_trait]
impl BlobWriter for StoreWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        self.spool.write(chunk).await
    }

    async fn write_file(&mut self, file: std::fs::File, len: u64) -> Result<(), StoreError> {
        self.spool.write_file(file, len).await
    }

    fn written(&self) -> u64 {
        self.spool.written()
    }

    async fn seal(
        self: Box<Self>,
        expected: Option<&Digest>,
    ) -> Result<Box<dyn SealedBlob>, StoreError> {
        let Self {
            store,
            spool,
            resumed_for,
        } = *self;
        let Spooled { temp, digest, size } = spool.finish().await?;
        if let Some(want) = [resumed_for.as_ref(), expected]
            .into_iter()
            .flatten()
            .find(|want| **want != digest)
        {
            let want = want.clone();
            spawn_io("removing a mismatched blob temporary", move || {
                temp.discard()
            })
            .await?;
            tracing::warn!(expected = %want, actual = %digest, "blob digest mismatch, discarded");
            return Err(StoreError::DigestMismatch {
                expected: want,
                actual: digest,
            });
        }
        Ok(Box::new(Sealed {
            store,
            temp,
            digest,
            size,
        }))
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        self.spool.abort().await
    }
}

/// A verified temporary, published on request (its drop removes it).
struct Sealed {
    store: Arc<Inner>,
    temp: TempFile,
    digest: Digest,
    size: u64,
}

#[async_trait]
impl SealedBlob for Sealed {
    fn digest(&self) -> &Digest {
        &self.digest
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn publish(self: Box<Self>) -> Result<(Digest, u64), StoreError> {
        let Self {
            store,
            temp,
            digest,
            size,
        } = *self;
        store.publish(temp, &digest, size).await?;
        tracing::debug!(%digest, size, "blob committed");
        Ok((digest, size))
    }
}

impl Inner {
    /// Makes a verified temporary visible under its digest.
    pub(super) async fn publish(
        &self,
        mut temp: TempFile,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StoreError> {
        let (dir, doing) = match &self.backend {
            Backend::Filesystem { root } => (root.join(BLOBS_DIR), "publishing blob"),
            Backend::Remote {
                cache_dir, upload, ..
            } => {
                temp = self.upload(temp, digest, size, *upload).await?;
                (cache_dir.clone(), "caching blob")
            }
        };
        let cache = matches!(self.backend, Backend::Remote { .. });
        let target = dir.join(digest.hex());
        spawn_io(doing, move || {
            temp.persist(&target)?;
            local::sync_dir(&dir)?;
            if cache {
                super::cached::record(&target)?;
            }
            Ok(())
        })
        .await
    }

    /// Uploads a verified temporary to `blobs/sha256/<hex>`; S3 makes the
    /// object visible only once it is complete.
    async fn upload(
        &self,
        temp: TempFile,
        digest: &Digest,
        size: u64,
        upload: Option<(usize, usize)>,
    ) -> Result<TempFile, StoreError> {
        // Uploaded even when the key exists: a damaged object is healed by
        // committing its content again, and an equal one is just replaced.
        let key = blob_key(digest);
        let doing = format!("uploading blob {digest} ({size} bytes)");
        let writer = self.op.writer_with(&key);
        let writer = match upload {
            Some((chunk, concurrency)) => writer.chunk(chunk).concurrent(concurrency),
            None => writer,
        };
        let mut writer = writer.await.map_err(|e| backend_error(&doing, e))?;
        if let Err(e) = local::copy_file_to(temp.path(), &mut writer, &doing).await {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(%digest, error = %abort, "aborting the blob upload failed");
            }
            return Err(e);
        }
        writer.close().await.map_err(|e| backend_error(&doing, e))?;
        Ok(temp)
    }
}
