//! Spooling a blob to a local temporary file while hashing it. Chunks go to
//! two blocking threads at once, one hashing and one writing, so that sha256
//! (about 1.1 GB/s here) and the page-cache copy overlap instead of adding up;
//! the async caller only forwards reference-counted `Bytes`. Writeback of
//! what is written starts a window behind the writer, so the disk works while
//! sha256 does and the fsync before publishing only has the tail to flush.
//!
//! Temporaries are registered in an [`ActiveTemps`] set for as long as a
//! thread may touch them, so cleaning never removes a live one and a resumed
//! writer waits for the previous owner of a partial file to let go.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use vmr_domain::image::Digest;
use vmr_ports::blobstore::StoreError;

use super::error::io_error;
use super::layout::{TEMP_PREFIX, partial_name};

mod temps;

pub(crate) use temps::{ActiveTemps, Opened, TempFile, open_fresh, open_partial};

/// Chunks queued per thread: 4 × 1 MiB keeps both threads busy without
/// holding much memory (see research/stream-throughput.md, "pipelined").
/// (16 for the writer was measured: no faster for the stream, 20 MiB more.)
const QUEUE_DEPTH: usize = 4;
/// How long a resumed writer waits for an earlier writer of the same partial
/// file (typically one just dropped after a cut connection) to let it go.
pub(crate) const PARTIAL_HANDOVER: Duration = Duration::from_secs(5);
/// Written data is pushed towards the disk in windows of this size, one
/// window behind the writer, so that the disk works while sha256 does and the
/// final fsync only has the tail left.
const WRITEBACK_WINDOW: u64 = 16 << 20;
/// Read size when re-hashing a partial file.
const REHASH_BUFFER: usize = 1 << 20;

/// Runs blocking file work off the runtime.
pub(crate) async fn spawn_io<T, F>(doing: &'static str, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::task(doing, e))?
        .map_err(|e| io_error(doing, e))
}

/// Starts writing back `len` bytes at `offset` and lets the kernel drop them
/// from the page cache once clean (`POSIX_FADV_DONTNEED` on dirty pages
/// starts their writeback without waiting for it). Only an optimisation: the
/// fsync at commit is what makes the data durable, so failures are ignored.
fn start_writeback(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    let _ = nix::fcntl::posix_fadvise(
        file,
        offset,
        len,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

enum FileMessage {
    Chunk(Bytes),
    /// Append `len` bytes of `source` from its offset 0; `done` gets the
    /// count copied (short: the source ended).
    CopyFrom {
        source: File,
        len: u64,
        done: oneshot::Sender<u64>,
    },
    Finish,
    Abort,
}

enum HashMessage {
    Chunk(Bytes),
    /// `range` of the temporary, just written there by a copy: read back
    /// from the temporary (which only the store can change) and hashed.
    Written {
        file: Arc<File>,
        range: Range<u64>,
    },
}

/// Bytes copied from a passed file before the hasher is told about them.
const COPY_WINDOW: u64 = 4 << 20;

/// Appends up to `len` bytes of `source` (from its offset 0) to `temp`:
/// in the kernel (`copy_file_range`, one copy instead of a read and a write
/// through a user buffer) when the two files allow it, by positional reads
/// and writes otherwise. Each window is handed to the hasher as a range of
/// the temporary. Returns the count copied; less than `len` means the source
/// ended first.
fn copy_in(
    source: &File,
    len: u64,
    temp: &mut TempFile,
    hasher: &mpsc::Sender<HashMessage>,
    end: &mut u64,
    flushed: &mut u64,
) -> io::Result<u64> {
    let reader = Arc::new(temp.file().try_clone()?);
    let mut in_kernel = true;
    let mut buffer = Vec::new();
    let mut copied = 0u64;
    while copied < len {
        let window = (len - copied).min(COPY_WINDOW);
        let n = if in_kernel {
            match kernel_copy(source, copied, temp.file(), window) {
                Ok(n) => n,
                Err(e) if kernel_copy_unsupported(&e) => {
                    tracing::debug!(error = %e, "copy_file_range refused, copying through a buffer");
                    in_kernel = false;
                    continue;
                }
                Err(e) => return Err(e),
            }
        } else {
            buffered_copy(source, copied, temp.file(), window, &mut buffer)?
        };
        if n == 0 {
            break;
        }
        let start = *end;
        copied += n;
        *end += n;
        let message = HashMessage::Written {
            file: Arc::clone(&reader),
            range: start..*end,
        };
        if hasher.blocking_send(message).is_err() {
            return Err(io::Error::other("the hashing thread stopped"));
        }
        if *end - *flushed >= 2 * WRITEBACK_WINDOW {
            start_writeback(temp.file(), *flushed, WRITEBACK_WINDOW);
            *flushed += WRITEBACK_WINDOW;
        }
    }
    Ok(copied)
}

/// Copies up to `len` bytes at `offset` of `source` to `target`'s position.
fn kernel_copy(source: &File, offset: u64, target: &File, len: u64) -> io::Result<u64> {
    let mut off_in = i64::try_from(offset).map_err(io::Error::other)?;
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from(len - done).unwrap_or(usize::MAX);
        match nix::fcntl::copy_file_range(source, Some(&mut off_in), target, None, want) {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                if done > 0 {
                    // Report what was copied; the next call meets the error again.
                    break;
                }
                return Err(e.into());
            }
        }
    }
    Ok(done)
}

/// Errors after which a plain copy may still work (other file systems,
/// kernels or file kinds; an append-only temporary).
fn kernel_copy_unsupported(e: &io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EXDEV | Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EBADF)
    )
}

/// Copies up to `len` bytes at `offset` of `source` to `target`'s position
/// through `buffer`.
fn buffered_copy(
    source: &File,
    offset: u64,
    target: &mut File,
    len: u64,
    buffer: &mut Vec<u8>,
) -> io::Result<u64> {
    buffer.resize(REHASH_BUFFER, 0);
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from(len - done).map_or(buffer.len(), |w| w.min(buffer.len()));
        let n = match source.read_at(&mut buffer[..want], offset + done) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        target.write_all(&buffer[..n])?;
        done += n as u64;
    }
    Ok(done)
}

/// Hashes `range` of `file`, read through `buffer`.
pub(super) fn hash_range(
    hasher: &mut Sha256,
    file: &File,
    range: Range<u64>,
    buffer: &mut Vec<u8>,
) -> io::Result<()> {
    buffer.resize(REHASH_BUFFER, 0);
    let mut at = range.start;
    while at < range.end {
        let want = usize::try_from(range.end - at).map_or(buffer.len(), |w| w.min(buffer.len()));
        match file.read_at(&mut buffer[..want], at) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the blob temporary is shorter than what was written to it",
                ));
            }
            Ok(n) => {
                hasher.update(&buffer[..n]);
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a finished spool hands back: the fsynced temporary and its digest.
pub(crate) struct Spooled {
    pub(crate) temp: TempFile,
    pub(crate) digest: Digest,
    pub(crate) size: u64,
}

/// Chunks in, a hashed and fsynced temporary out.
pub(crate) struct Spool {
    to_file: mpsc::Sender<FileMessage>,
    to_hasher: mpsc::Sender<HashMessage>,
    file_task: Option<JoinHandle<io::Result<Option<TempFile>>>>,
    hasher_task: JoinHandle<io::Result<Sha256>>,
    written: u64,
    failed: bool,
}

impl Spool {
    /// Starts the hashing and writing threads. Dropping the spool without
    /// `finish` or `abort` stops them; a fresh temporary is then deleted, a
    /// partial one kept.
    pub(crate) fn start(opened: Opened) -> Self {
        let Opened {
            mut temp,
            mut hasher,
            written,
        } = opened;
        let (to_file, mut file_rx) = mpsc::channel::<FileMessage>(QUEUE_DEPTH);
        let (to_hasher, mut hasher_rx) = mpsc::channel::<HashMessage>(QUEUE_DEPTH);
        let copies_to_hasher = to_hasher.clone();
        let file_task = tokio::task::spawn_blocking(move || {
            let mut end = written;
            let mut flushed = written;
            loop {
                match file_rx.blocking_recv() {
                    Some(FileMessage::Chunk(chunk)) => {
                        temp.file().write_all(&chunk)?;
                        end += chunk.len() as u64;
                        if end - flushed >= 2 * WRITEBACK_WINDOW {
                            start_writeback(temp.file(), flushed, WRITEBACK_WINDOW);
                            flushed += WRITEBACK_WINDOW;
                        }
                    }
                    Some(FileMessage::CopyFrom { source, len, done }) => {
                        let copied = copy_in(
                            &source,
                            len,
                            &mut temp,
                            &copies_to_hasher,
                            &mut end,
                            &mut flushed,
                        )?;
                        let _ = done.send(copied);
                    }
                    Some(FileMessage::Finish) => {
                        temp.file().sync_all()?;
                        return Ok(Some(temp));
                    }
                    Some(FileMessage::Abort) => {
                        temp.discard()?;
                        return Ok(None);
                    }
                    // The writer was dropped: `temp`'s own drop decides what stays.
                    None => return Ok(None),
                }
            }
        });
        let hasher_task = tokio::task::spawn_blocking(move || {
            let mut buffer = Vec::new();
            while let Some(message) = hasher_rx.blocking_recv() {
                match message {
                    HashMessage::Chunk(chunk) => hasher.update(&chunk),
                    HashMessage::Written { file, range } => {
                        hash_range(&mut hasher, &file, range, &mut buffer)?;
                    }
                }
            }
            Ok(hasher)
        });
        Self {
            to_file,
            to_hasher,
            file_task: Some(file_task),
            hasher_task,
            written,
            failed: false,
        }
    }

    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    pub(crate) async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::WriterFailed);
        }
        if chunk.is_empty() {
            return Ok(());
        }
        let len = chunk.len() as u64;
        let sent = self
            .to_hasher
            .send(HashMessage::Chunk(chunk.clone()))
            .await
            .is_ok()
            && self.to_file.send(FileMessage::Chunk(chunk)).await.is_ok();
        if !sent {
            // A thread stopped early: only the file thread does that, on an error.
            self.failed = true;
            return Err(self.file_failure().await);
        }
        self.written += len;
        Ok(())
    }

    /// Appends the first `len` bytes of `source` (see [`copy_in`]); a source
    /// that ends first is `SizeMismatch` and fails the writer.
    pub(crate) async fn write_file(&mut self, source: File, len: u64) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::WriterFailed);
        }
        if len == 0 {
            return Ok(());
        }
        let (done, copied) = oneshot::channel();
        let message = FileMessage::CopyFrom { source, len, done };
        if self.to_file.send(message).await.is_err() {
            self.failed = true;
            return Err(self.file_failure().await);
        }
        match copied.await {
            Ok(n) if n == len => {
                self.written += len;
                Ok(())
            }
            Ok(n) => {
                self.failed = true;
                Err(StoreError::SizeMismatch {
                    expected: len,
                    actual: n,
                })
            }
            Err(_) => {
                self.failed = true;
                Err(self.file_failure().await)
            }
        }
    }

    async fn file_failure(&mut self) -> StoreError {
        let Some(task) = self.file_task.take() else {
            return StoreError::WriterFailed;
        };
        match task.await {
            Ok(Err(e)) => io_error("writing blob temporary", e),
            Ok(Ok(_)) => {
                StoreError::backend("writing blob temporary", "the writer thread stopped early")
            }
            Err(e) => StoreError::task("writing blob temporary", e),
        }
    }

    /// Flushes and fsyncs the temporary and returns it with its digest.
    pub(crate) async fn finish(mut self) -> Result<Spooled, StoreError> {
        if self.failed {
            return Err(StoreError::WriterFailed);
        }
        if self.to_file.send(FileMessage::Finish).await.is_err() {
            return Err(self.file_failure().await);
        }
        let Some(file_task) = self.file_task.take() else {
            return Err(StoreError::WriterFailed);
        };
        let Self {
            to_hasher,
            hasher_task,
            written,
            ..
        } = self;
        drop(to_hasher);
        let temp = match file_task.await {
            Ok(Ok(Some(temp))) => temp,
            Ok(Ok(None)) => {
                return Err(StoreError::backend(
                    "writing blob temporary",
                    "the temporary vanished",
                ));
            }
            Ok(Err(e)) => return Err(io_error("writing blob temporary", e)),
            Err(e) => return Err(StoreError::task("writing blob temporary", e)),
        };
        let hasher = hasher_task
            .await
            .map_err(|e| StoreError::task("hashing blob", e))?
            .map_err(|e| io_error("hashing blob", e))?;
        Ok(Spooled {
            temp,
            digest: Digest::from_hasher(hasher),
            size: written,
        })
    }

    /// Stops and deletes the temporary (a partial one too).
    pub(crate) async fn abort(mut self) -> Result<(), StoreError> {
        if self.to_file.send(FileMessage::Abort).await.is_err() {
            // The thread already stopped on an error and dropped the file.
            return Ok(());
        }
        match self.file_task.take() {
            Some(task) => match task.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(io_error("removing blob temporary", e)),
                Err(e) => Err(StoreError::task("removing blob temporary", e)),
            },
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spool whose file is `/dev/full` (through a symlink, so nothing in
    /// this test can ever remove the device itself).
    fn spool_into_dev_full(dir: &Path, temps: &Arc<ActiveTemps>) -> Spool {
        // Linux always has it; a test that passed by skipping proves nothing.
        assert!(Path::new("/dev/full").exists(), "this test needs /dev/full");
        let link = dir.join("partial-full");
        std::os::unix::fs::symlink("/dev/full", &link).unwrap();
        let file = OpenOptions::new().append(true).open(&link).unwrap();
        let temp = TempFile::partial(file, link, temps.try_claim("partial-full").unwrap());
        Spool::start(Opened {
            temp,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    #[tokio::test]
    async fn a_full_disk_is_no_space_and_ends_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let temps = Arc::new(ActiveTemps::default());
        let mut spool = spool_into_dev_full(dir.path(), &temps);
        let chunk = Bytes::from(vec![0u8; 1 << 20]);
        let mut result = Ok(());
        for _ in 0..=QUEUE_DEPTH + 2 {
            result = spool.write(chunk.clone()).await;
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(result, Err(StoreError::NoSpace { .. })),
            "{result:?}"
        );
        assert!(
            spool.write(chunk).await.is_err(),
            "a failed writer stays failed"
        );
        assert!(spool.finish().await.is_err());
        assert!(!temps.contains("partial-full"), "the temporary is let go");
    }

    #[tokio::test]
    async fn a_partial_is_handed_over_when_its_writer_lets_go() {
        let temps = Arc::new(ActiveTemps::default());
        let guard = temps.try_claim("partial-x").unwrap();
        assert!(temps.try_claim("partial-x").is_none());
        let waiter = {
            let temps = Arc::clone(&temps);
            tokio::spawn(async move { temps.claim("partial-x", Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(guard);
        let handed = waiter.await.unwrap();
        assert!(handed.is_some());
        assert!(temps.contains("partial-x"));
        // Nobody lets go within the patience: no claim.
        assert!(
            temps
                .claim("partial-x", Duration::from_millis(50))
                .await
                .is_none()
        );
        drop(handed);
        assert!(!temps.contains("partial-x"));
    }
}
