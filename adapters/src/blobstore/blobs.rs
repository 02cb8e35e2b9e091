//! The store's blobs over opendal: writers spooling to local temporaries,
//! reads verified against the digest, and the verified local copies S3 and
//! memory blobs get for the hypervisor (`local_path`).

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use opendal::ErrorKind;
use vmr_domain::image::Digest;
use vmr_ports::blobstore::{BlobWriter, Blobs, ByteStream, PlacedWriter, StoreError};

use super::error::{backend_error, stream_error};
use super::layout::{self, BLOBS_DIR, blob_key};
use super::spool::{self, Spool, Spooled, TempFile, spawn_io};
use super::writer::StoreWriter;
use super::{Backend, Inner, LOCAL_READ_CHUNK, OpendalStore, cached, local, verify};

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
}

#[async_trait]
impl Blobs for OpendalStore {
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
}
