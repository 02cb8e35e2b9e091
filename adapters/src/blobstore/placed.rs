//! Blobs written by position (chunked pulls): a pre-sized local temporary,
//! `partial-<hex>-placed`, that ranges are written into with `pwrite` from
//! blocking threads, in any order. Ranges the caller settles are hashed as
//! soon as they extend the hashed prefix (one read of page-cache-hot bytes),
//! so that a pull in disk order has little left to hash at commit; commit
//! hashes the rest, fsyncs, and publishes the file like any verified
//! temporary (a rename, or an upload then a rename into the cache).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use vmr_domain::image::Digest;
use vmr_ports::blobstore::{PlacedWriter, StoreError};

use super::Inner;
use super::layout::placed_name;
use super::spool::{PARTIAL_HANDOVER, TempFile, hash_range, spawn_io};

/// What has been hashed: the prefix `..upto`, and settled ranges beyond it.
struct Hashed {
    hasher: Sha256,
    upto: u64,
    /// start → end of settled ranges not yet hashed.
    settled: BTreeMap<u64, u64>,
    buffer: Vec<u8>,
}

impl Hashed {
    /// Hashes `file` from `upto` to `end`.
    fn hash_to(&mut self, file: &File, end: u64) -> io::Result<()> {
        if self.upto < end {
            hash_range(&mut self.hasher, file, self.upto..end, &mut self.buffer)?;
            self.upto = end;
        }
        Ok(())
    }

    /// Hashes every settled range the prefix now reaches.
    fn advance(&mut self, file: &File) -> io::Result<()> {
        while let Some((&start, &end)) = self.settled.first_key_value() {
            if start > self.upto {
                break;
            }
            self.settled.remove(&start);
            if end > self.upto {
                self.hash_to(file, end)?;
            }
        }
        Ok(())
    }
}

/// A blob being written by position.
pub(super) struct Placed {
    store: Arc<Inner>,
    expected: Digest,
    size: u64,
    resumed: bool,
    file: Arc<File>,
    temp: TempFile,
    hashed: Arc<Mutex<Hashed>>,
}

impl Inner {
    /// Opens (or creates) the placed temporary of `expected`, `size` bytes
    /// long. When another writer still holds it after a grace period, a
    /// fresh temporary is used instead.
    pub(super) async fn place(
        self: &Arc<Self>,
        expected: &Digest,
        size: u64,
    ) -> Result<Placed, StoreError> {
        let name = placed_name(expected);
        let guard = self.temps.claim(&name, PARTIAL_HANDOVER).await;
        let dir = self.temp_dir.clone();
        let temps = Arc::clone(&self.temps);
        let (temp, file, resumed) = spawn_io("opening a placed blob", move || {
            let Some(guard) = guard else {
                tracing::debug!(name, "placed blob busy, writing a fresh one");
                let mut temp = TempFile::fresh(&dir, &temps)?;
                temp.file().set_len(size)?;
                let file = temp.file().try_clone()?;
                return Ok((temp, file, false));
            };
            let path = dir.join(&name);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            let resumed = size > 0 && file.metadata()?.len() == size;
            if !resumed {
                // Stale or of another size: start from a clean, sparse file.
                file.set_len(0)?;
                file.set_len(size)?;
            }
            let shared = file.try_clone()?;
            Ok((TempFile::partial(file, path, guard), shared, resumed))
        })
        .await?;
        if resumed {
            tracing::info!(digest = %expected, size, "resuming a placed blob");
        }
        Ok(Placed {
            store: Arc::clone(self),
            expected: expected.clone(),
            size,
            resumed,
            file: Arc::new(file),
            temp,
            hashed: Arc::new(Mutex::new(Hashed {
                hasher: Sha256::new(),
                upto: 0,
                settled: BTreeMap::new(),
                buffer: Vec::new(),
            })),
        })
    }
}

#[async_trait]
impl PlacedWriter for Placed {
    fn size(&self) -> u64 {
        self.size
    }

    fn resumed(&self) -> bool {
        self.resumed
    }

    async fn write_at(&self, offset: u64, bytes: Bytes) -> Result<(), StoreError> {
        let end = offset.checked_add(bytes.len() as u64);
        if end.is_none_or(|end| end > self.size) {
            return Err(StoreError::OutOfBounds {
                doing: format!("writing {} bytes at offset {offset}", bytes.len()),
                digest: self.expected.clone(),
                size: self.size,
            });
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let file = Arc::clone(&self.file);
        spawn_io("writing a placed blob", move || {
            file.write_all_at(&bytes, offset)
        })
        .await
    }

    async fn settle(&self, range: Range<u64>) -> Result<(), StoreError> {
        if range.is_empty() {
            return Ok(());
        }
        if range.end > self.size {
            return Err(StoreError::OutOfBounds {
                doing: format!("settling bytes {}..{}", range.start, range.end),
                digest: self.expected.clone(),
                size: self.size,
            });
        }
        let file = Arc::clone(&self.file);
        let hashed = Arc::clone(&self.hashed);
        spawn_io("hashing a placed blob", move || {
            let mut hashed = hashed.lock().unwrap_or_else(PoisonError::into_inner);
            let end = hashed.settled.entry(range.start).or_insert(range.end);
            *end = (*end).max(range.end);
            hashed.advance(&file)
        })
        .await
    }

    async fn commit(self: Box<Self>) -> Result<(Digest, u64), StoreError> {
        let Self {
            store,
            expected,
            size,
            file,
            temp,
            hashed,
            ..
        } = *self;
        let (temp, digest) = spawn_io("finishing a placed blob", move || {
            let mut hashed = hashed.lock().unwrap_or_else(PoisonError::into_inner);
            hashed.hash_to(&file, size)?;
            let digest = Digest::from_hasher(std::mem::take(&mut hashed.hasher));
            file.sync_all()?;
            Ok((temp, digest))
        })
        .await?;
        if digest != expected {
            spawn_io("removing a mismatched placed blob", move || temp.discard()).await?;
            tracing::warn!(%expected, actual = %digest, "placed blob digest mismatch, discarded");
            return Err(StoreError::DigestMismatch {
                expected,
                actual: digest,
            });
        }
        store.publish(temp, &digest, size).await?;
        tracing::debug!(%digest, size, "placed blob committed");
        Ok((digest, size))
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        let temp = self.temp;
        spawn_io("removing a placed blob", move || temp.discard()).await
    }
}
