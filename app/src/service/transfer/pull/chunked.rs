//! Pulling a chunked image: the disk rebuilt in place from its chunks
//! (each copied from a local disk with the same bytes, or downloaded and
//! verified), with a journal of the chunks already written so that a pull
//! cut short resumes where it stopped.

use bytes::Bytes;
use futures::TryStreamExt as _;
use futures::stream::BoxStream;

use super::*;

impl PullJob {
    /// A chunked image: the config, then the disk rebuilt from its chunks,
    /// then the single-layer manifest they stand for (the local form).
    /// `lease` keeps every blob until the tag is written.
    pub(super) async fn run_chunked(
        self,
        progress: Progress,
        lease: Lease,
    ) -> Result<TransferDone, UseCaseError> {
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
        self.images.confirm(&plain_bytes).await?;
        if let Some(tag) = &self.tag {
            self.store
                .put_manifest(&self.repository, tag, plain_bytes)
                .await?;
        }
        drop(lease);
        info!(registry = %registry, remote = %self.digest, digest = %digest, bytes = transferred, "pulled in chunks");
        Ok(TransferDone {
            reference: self.reference,
            digest,
            bytes_transferred: transferred,
        })
    }

    /// Writes the disk from its chunks, each at its offset in the disk
    /// blob's placed temporary: `parallel` chunks at once (downloaded, or
    /// copied from a local disk holding the same bytes), each verified as it
    /// streams and settled in disk order, so the store hashes the disk as
    /// it grows. Verified chunks are recorded in a journal: a failed pull
    /// keeps the file and the journal, and the next one writes only the
    /// chunks the journal lacks. Returns the bytes downloaded.
    pub(super) async fn assemble(
        &self,
        disk: &ChunkedDisk,
        progress: &Progress,
    ) -> Result<u64, UseCaseError> {
        let target = &disk.disk.digest;
        let placed_blob = self.store.place_blob(target, disk.disk.size).await?;
        let dir = self.chunking.staging.join(target.hex());
        let journal = Journal::open(&dir, placed_blob.resumed()).await?;
        if !journal.done.is_empty() {
            info!(digest = %target, chunks = journal.done.len(), "resuming the disk");
        }
        let writer = &*placed_blob;
        let journal_ref = &journal;
        let mut placed = futures::stream::iter(disk.chunks.iter().cloned())
            .map(|chunk: Chunk| async move {
                let chunk = &chunk;
                let sent = if journal_ref.has(chunk) {
                    let layer = &chunk.layer;
                    progress.send(blob_event(layer, layer.size, true)).await?;
                    0
                } else {
                    let sent = self.place(chunk, writer, progress).await?;
                    journal_ref.record(chunk).await?;
                    sent
                };
                writer
                    .settle(chunk.offset..chunk.offset + chunk.size)
                    .await?;
                Ok::<_, UseCaseError>(sent)
            })
            .buffered(self.chunking.parallel.max(1));
        let mut transferred = 0;
        while let Some(sent) = placed.next().await {
            transferred += sent?;
        }
        drop(placed);
        let committed = placed_blob.commit().await;
        if matches!(committed, Err(StoreError::DigestMismatch { .. })) {
            // The store dropped the file: the journal speaks of nothing now.
            journal.remove().await;
        }
        committed.map_err(|e| match e {
            StoreError::DigestMismatch { expected, actual } => UseCaseError::new(
                ErrorKind::DataLoss,
                format!(
                    "the chunks of disk {expected} from registry {} make a disk that hashes to {actual}; nothing was stored",
                    self.client.describe()
                ),
            ),
            other => other.into(),
        })?;
        journal.remove().await;
        Ok(transferred)
    }

    /// One chunk written in place: copied from a local disk with the same
    /// bytes, or downloaded (fetched again from its start when the
    /// connection breaks). Returns the bytes downloaded.
    pub(super) async fn place(
        &self,
        chunk: &Chunk,
        writer: &dyn PlacedWriter,
        progress: &Progress,
    ) -> Result<u64, UseCaseError> {
        let layer = &chunk.layer;
        if let Some((local, offset)) = self.chunks.location(&chunk.digest)
            && self.store.blob_exists(&local).await?
        {
            let data = self
                .store
                .open_blob(&local, Some(offset..offset + chunk.size))
                .await?
                .map_err(UseCaseError::from)
                .boxed();
            // Plain bytes: their stored digest is the chunk digest.
            match self
                .place_stream(&chunk.digest, chunk, writer, data, false)
                .await?
            {
                Ok(()) => {
                    debug!(digest = %chunk.digest, from = %local, "chunk copied from a local disk");
                    progress.send(blob_event(layer, layer.size, true)).await?;
                    return Ok(0);
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
                // However the registry's stream broke, fetching the chunk
                // again may help: it is unavailable, not wrong.
                let data = download
                    .stream
                    .map_err(|e| {
                        UseCaseError::new(ErrorKind::Unavailable, e.to_string()).with_source(e)
                    })
                    .boxed();
                self.place_stream(&layer.digest, chunk, writer, data, chunk.zstd)
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
        Ok(layer.size)
    }

    /// Writes `data` (the chunk as stored, with digest `stored`) at the
    /// chunk's offset, verifying it as it comes: the inner result says why
    /// it was refused. Refused bytes stay in the unpublished file until the
    /// chunk is written again.
    pub(super) async fn place_stream(
        &self,
        stored: &Digest,
        chunk: &Chunk,
        writer: &dyn PlacedWriter,
        mut data: BoxStream<'static, Result<Bytes, UseCaseError>>,
        zstd: bool,
    ) -> Result<Result<(), String>, UseCaseError> {
        let mut place = Place::new(chunk.offset, chunk.size, zstd).map_err(StoreError::from)?;
        while let Some(piece) = data.next().await {
            let piece = piece?;
            match place.push(&piece) {
                Ok(pieces) => {
                    for (offset, bytes) in pieces {
                        writer.write_at(offset, bytes).await?;
                    }
                }
                Err(e) => return Ok(Err(format!("it does not decode: {e}"))),
            }
        }
        let (pieces, verdict) = match place.finish(stored, &chunk.digest) {
            Ok(done) => done,
            Err(e) => return Ok(Err(format!("it does not decode: {e}"))),
        };
        for (offset, bytes) in pieces {
            writer.write_at(offset, bytes).await?;
        }
        Ok(verdict)
    }
}

/// The chunks of a disk already written and verified in its placed file,
/// one `<offset> <chunk digest>` line each in `<staging>/<disk hex>/done`.
/// Kept with the placed file across failed pulls; trusted only while the
/// store reports that file as resumed (a lost line only costs a download,
/// a wrong one is caught by the disk's digest at commit).
struct Journal {
    dir: std::path::PathBuf,
    done: std::collections::HashSet<(u64, Digest)>,
}

impl Journal {
    const FILE: &'static str = "done";

    async fn open(dir: &std::path::Path, resumed: bool) -> Result<Self, UseCaseError> {
        let path = dir.join(Self::FILE);
        let mut done = std::collections::HashSet::new();
        if resumed {
            match tokio::fs::read_to_string(&path).await {
                Ok(text) => {
                    for line in text.lines() {
                        let parsed = line.split_once(' ').and_then(|(offset, digest)| {
                            Some((offset.parse::<u64>().ok()?, digest.parse::<Digest>().ok()?))
                        });
                        // A line cut by a crash is ignored: that chunk comes again.
                        if let Some(entry) = parsed {
                            done.insert(entry);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::from(e).into()),
            }
        } else {
            let _ = tokio::fs::remove_file(&path).await;
        }
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(StoreError::from)?;
        Ok(Self {
            dir: dir.to_owned(),
            done,
        })
    }

    fn has(&self, chunk: &Chunk) -> bool {
        self.done.contains(&(chunk.offset, chunk.digest.clone()))
    }

    /// Appends a chunk (one short `O_APPEND` write: lines never interleave).
    async fn record(&self, chunk: &Chunk) -> Result<(), UseCaseError> {
        use tokio::io::AsyncWriteExt as _;
        let line = format!("{} {}\n", chunk.offset, chunk.digest);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(Self::FILE))
            .await
            .map_err(StoreError::from)?;
        file.write_all(line.as_bytes())
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn remove(&self) {
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
    }
}
