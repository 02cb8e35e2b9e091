//! The chunk work of chunked pushes and pulls (docs/chunked-images.md): on
//! push, a chunk of the local disk is read, hashed and compressed into a
//! spool file (kept only when zstd pays); on pull, a chunk is staged as a
//! verified file (downloaded and decompressed, or copied from a local disk
//! that holds the same bytes) before it is appended to the disk blob.
//! Memory stays bounded: pieces of [`PIECE`] bytes, never a whole chunk.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use vmr_domain::image::{Descriptor, Digest, DiskFormat};
use vmr_ports::{ByteStream, StoreError};

/// Bytes read or written at a time.
pub(crate) const PIECE: usize = 1024 * 1024;
/// zstd level of chunks: fast, and deterministic (same bytes, same blob).
const ZSTD_LEVEL: i32 = 1;
/// A compressed chunk is kept when it is at most this share of the plain one
/// (per mille); otherwise the plain bytes travel.
const PAYS_PER_MILLE: u64 = 900;
/// Before a chunk is compressed, this many samples of [`SAMPLE`] bytes
/// (evenly spread from its start) are; unless one of them pays, the whole
/// chunk is not tried (random or already compressed data costs a hash only).
const SAMPLES: u64 = 4;
const SAMPLE: u64 = 256 * 1024;
/// Chunk locations remembered for dedupe; past this the memory starts over.
const MAX_CHUNKS: usize = 1 << 20;

/// How large disks are cut and moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSettings {
    /// Disks larger than this are pushed in chunks of this size; 0: never.
    pub chunk_bytes: u64,
    /// Chunks in flight at once.
    pub parallel: usize,
    /// Spool and staging files of chunk transfers.
    pub staging: PathBuf,
}

impl Default for ChunkSettings {
    fn default() -> Self {
        Self {
            chunk_bytes: 32 * 1024 * 1024,
            parallel: 3,
            staging: std::env::temp_dir().join("vmr-chunks"),
        }
    }
}

/// Where plain chunk bytes are known to be in the local store (a disk blob
/// and an offset), and which layer a range of a local disk became when pushed. Memory
/// only: after a restart chunks are hashed and compressed again.
#[derive(Default)]
pub(crate) struct ChunkIndex {
    located: Mutex<HashMap<Digest, (Digest, u64)>>,
    /// (disk, offset, length, format) → the layer that range became.
    layers: Mutex<HashMap<(Digest, u64, u64, DiskFormat), Descriptor>>,
}

impl ChunkIndex {
    pub(crate) fn locate(&self, chunk: &Digest, disk: &Digest, offset: u64) {
        let mut located = self.located.lock().unwrap_or_else(PoisonError::into_inner);
        if located.len() >= MAX_CHUNKS {
            located.clear();
        }
        located.insert(chunk.clone(), (disk.clone(), offset));
    }

    /// A local disk and offset holding the chunk's bytes.
    pub(crate) fn location(&self, chunk: &Digest) -> Option<(Digest, u64)> {
        let located = self.located.lock().unwrap_or_else(PoisonError::into_inner);
        located.get(chunk).cloned()
    }

    pub(crate) fn remember_layer(
        &self,
        disk: &Digest,
        range: &Range<u64>,
        format: DiskFormat,
        layer: &Descriptor,
    ) {
        let mut layers = self.layers.lock().unwrap_or_else(PoisonError::into_inner);
        if layers.len() >= MAX_CHUNKS {
            layers.clear();
        }
        layers.insert(
            (disk.clone(), range.start, range.end - range.start, format),
            layer.clone(),
        );
    }

    pub(crate) fn layer(
        &self,
        disk: &Digest,
        range: &Range<u64>,
        format: DiskFormat,
    ) -> Option<Descriptor> {
        let layers = self.layers.lock().unwrap_or_else(PoisonError::into_inner);
        layers
            .get(&(disk.clone(), range.start, range.end - range.start, format))
            .cloned()
    }
}

static SPOOL_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh spool file name in `dir`.
pub(crate) fn spool_path(dir: &Path, what: &str) -> PathBuf {
    let seq = SPOOL_SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{what}-{}-{seq}", std::process::id()))
}

/// A chunk of the local disk, read and hashed, and compressed when it pays.
pub(crate) struct ReadChunk {
    pub(crate) digest: Digest,
    /// The compressed bytes' file, digest and size, when zstd pays.
    pub(crate) zstd: Option<(PathBuf, Digest, u64)>,
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
    limit: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            return Err(std::io::Error::other(format!(
                "the chunk is longer than its announced {} bytes",
                self.limit
            )));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads `range` of the disk file at `disk`, hashes it, and compresses it
/// into a spool file in `dir` (removed again when zstd does not pay).
/// Blocking: run it on a blocking thread.
pub(crate) fn read_chunk(
    disk: &Path,
    range: &Range<u64>,
    dir: &Path,
    compress: bool,
) -> std::io::Result<ReadChunk> {
    let mut file = std::fs::File::open(disk)?;
    let len = range.end - range.start;
    let compress = compress && samples_pay(&mut file, range)?;
    file.seek(SeekFrom::Start(range.start))?;
    let mut input = file.take(len);
    let mut plain = Sha256::new();
    let mut buffer = vec![0u8; PIECE];
    if !compress {
        let mut read = 0;
        loop {
            let n = input.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            plain.update(&buffer[..n]);
            read += n as u64;
        }
        check_len(read, len)?;
        return Ok(ReadChunk {
            digest: Digest::from_hasher(plain),
            zstd: None,
        });
    }
    std::fs::create_dir_all(dir)?;
    let path = spool_path(dir, "push");
    let out = Hashing {
        inner: std::io::BufWriter::with_capacity(PIECE, std::fs::File::create(&path)?),
        hasher: Sha256::new(),
        written: 0,
        limit: u64::MAX,
    };
    let result = (|| {
        let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
        // Framed with the content size, so readers may size their buffers.
        encoder.set_pledged_src_size(Some(len))?;
        let mut read = 0;
        loop {
            let n = input.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            plain.update(&buffer[..n]);
            encoder.write_all(&buffer[..n])?;
            read += n as u64;
        }
        check_len(read, len)?;
        let mut out = encoder.finish()?;
        out.flush()?;
        Ok::<_, std::io::Error>((Digest::from_hasher(out.hasher), out.written))
    })();
    let (zdigest, zsize) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let pays = zsize.saturating_mul(1000) <= len.saturating_mul(PAYS_PER_MILLE);
    let zstd = if pays {
        Some((path, zdigest, zsize))
    } else {
        let _ = std::fs::remove_file(&path);
        None
    };
    Ok(ReadChunk {
        digest: Digest::from_hasher(plain),
        zstd,
    })
}

/// Whether any of the chunk's samples compresses to at most
/// [`PAYS_PER_MILLE`] of its size: the cheap test of whether compressing the
/// whole chunk may pay. Same bytes, same answer.
fn samples_pay(file: &mut std::fs::File, range: &Range<u64>) -> std::io::Result<bool> {
    let len = range.end - range.start;
    let sample = SAMPLE.min(len);
    let mut buffer = vec![0u8; usize::try_from(sample).unwrap_or(PIECE)];
    for k in 0..SAMPLES {
        let at = range.start + (len - sample) * k / (SAMPLES - 1).max(1);
        file.seek(SeekFrom::Start(at))?;
        match file.read_exact(&mut buffer) {
            // A short disk: the full read says so, clearly.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(true),
            read => read?,
        }
        let packed = zstd::bulk::compress(&buffer, ZSTD_LEVEL)?;
        if (packed.len() as u64).saturating_mul(1000) <= sample.saturating_mul(PAYS_PER_MILLE) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn check_len(read: u64, len: u64) -> std::io::Result<()> {
    if read == len {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the disk ended {} bytes short of a chunk", len - read),
        ))
    }
}

/// A file's bytes as a stream, in pieces.
pub(crate) async fn file_stream(path: &Path) -> Result<ByteStream, StoreError> {
    let file = tokio::fs::File::open(path).await?;
    Ok(tokio_util::io::ReaderStream::with_capacity(file, PIECE)
        .map(|piece| piece.map_err(StoreError::from))
        .boxed())
}

/// `range` of a file's bytes as a stream, in pieces.
pub(crate) async fn file_range_stream(
    path: &Path,
    range: Range<u64>,
) -> Result<ByteStream, StoreError> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(SeekFrom::Start(range.start)).await?;
    let limited = file.take(range.end - range.start);
    Ok(tokio_util::io::ReaderStream::with_capacity(limited, PIECE)
        .map(|piece| piece.map_err(StoreError::from))
        .boxed())
}

/// A staging file being written with a chunk's plain bytes: checked against
/// the chunk's size and digest, and renamed into place only then.
pub(crate) struct Stage {
    part: PathBuf,
    out: Hashing<std::io::BufWriter<std::fs::File>>,
    /// Present for compressed chunks.
    decoder: Option<zstd::stream::raw::Decoder<'static>>,
    scratch: Vec<u8>,
    stored: Sha256,
}

impl Stage {
    pub(crate) fn create(part: PathBuf, size: u64, zstd: bool) -> std::io::Result<Self> {
        let file = std::fs::File::create(&part)?;
        Ok(Self {
            part,
            out: Hashing {
                inner: std::io::BufWriter::with_capacity(PIECE, file),
                hasher: Sha256::new(),
                written: 0,
                limit: size,
            },
            decoder: if zstd {
                Some(zstd::stream::raw::Decoder::new()?)
            } else {
                None
            },
            scratch: if zstd { vec![0u8; PIECE] } else { Vec::new() },
            stored: Sha256::new(),
        })
    }

    /// Takes the next bytes as the registry stores them.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        self.stored.update(bytes);
        let Some(decoder) = self.decoder.as_mut() else {
            return self.out.write_all(bytes);
        };
        let mut input = InBuffer::around(bytes);
        while input.pos < bytes.len() {
            let mut output = OutBuffer::around(&mut self.scratch[..]);
            decoder.run(&mut input, &mut output)?;
            let n = output.pos();
            self.out.write_all(&self.scratch[..n])?;
        }
        Ok(())
    }

    /// Checks the stored and plain digests and the size; renames the file
    /// to `to`. On a mismatch the part is removed and the reason returned.
    pub(crate) fn finish(
        mut self,
        stored: &Digest,
        plain: &Digest,
        to: &Path,
    ) -> std::io::Result<Result<(), String>> {
        use zstd::stream::raw::{Operation, OutBuffer};
        if let Some(decoder) = self.decoder.as_mut() {
            loop {
                let mut output = OutBuffer::around(&mut self.scratch[..]);
                let left = decoder.flush(&mut output)?;
                let n = output.pos();
                self.out.write_all(&self.scratch[..n])?;
                if left == 0 && n == 0 {
                    break;
                }
            }
        }
        self.out.flush()?;
        let got_stored = Digest::from_hasher(self.stored);
        let got_plain = Digest::from_hasher(self.out.hasher);
        let problem = if &got_stored != stored {
            Some(format!("its bytes hash to {got_stored}"))
        } else if self.out.written != self.out.limit {
            Some(format!(
                "it holds {} bytes, the manifest says {}",
                self.out.written, self.out.limit
            ))
        } else if &got_plain != plain {
            Some(format!("its uncompressed bytes hash to {got_plain}"))
        } else {
            None
        };
        if let Some(problem) = problem {
            let _ = std::fs::remove_file(&self.part);
            return Ok(Err(problem));
        }
        std::fs::rename(&self.part, to)?;
        Ok(Ok(()))
    }

    pub(crate) fn discard(self) {
        let _ = std::fs::remove_file(&self.part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_then_stage_round_trips_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        let mut bytes = vec![0u8; 300_000];
        for (i, b) in bytes.iter_mut().enumerate().take(100_000) {
            *b = (i * 7919 % 251) as u8;
        }
        std::fs::write(&disk, &bytes).unwrap();
        let range = 1000..250_000;
        let plain = Digest::of(&bytes[1000..250_000]);

        let read = read_chunk(&disk, &range, dir.path(), true).unwrap();
        assert_eq!(read.digest, plain);
        let (zpath, zdigest, zsize) = read.zstd.expect("zeros compress");
        let compressed = std::fs::read(&zpath).unwrap();
        assert_eq!(compressed.len() as u64, zsize);
        assert_eq!(Digest::of(&compressed), zdigest);
        // Deterministic: the same chunk makes the same blob.
        let again = read_chunk(&disk, &range, dir.path(), true).unwrap();
        assert_eq!(again.zstd.unwrap().1, zdigest);

        let to = dir.path().join("staged");
        let mut stage = Stage::create(dir.path().join("part"), 249_000, true).unwrap();
        for piece in compressed.chunks(777) {
            stage.write(piece).unwrap();
        }
        stage.finish(&zdigest, &plain, &to).unwrap().unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), &bytes[1000..250_000]);

        // A wrong plain digest is refused and leaves nothing behind.
        let part = dir.path().join("part2");
        let mut stage = Stage::create(part.clone(), 249_000, true).unwrap();
        stage.write(&compressed).unwrap();
        let other = dir.path().join("other");
        let refused = stage.finish(&zdigest, &zdigest, &other).unwrap();
        assert!(refused.unwrap_err().contains("uncompressed"));
        assert!(!part.exists() && !other.exists());

        // A chunk that decompresses past its size fails as it is written.
        let mut stage = Stage::create(dir.path().join("part3"), 10, true).unwrap();
        assert!(stage.write(&compressed).is_err());
        stage.discard();
    }

    #[test]
    fn random_chunks_are_not_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let bytes: Vec<u8> = (0..200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(&disk, &bytes).unwrap();
        let read = read_chunk(&disk, &(0..200_000), dir.path(), true).unwrap();
        assert!(read.zstd.is_none());
        assert_eq!(read.digest, Digest::of(&bytes));
        // Only the disk is left: the spool file went.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(read_chunk(&disk, &(0..300_000), dir.path(), false).is_err());
        let short = read_chunk(&disk, &(0..300_000), dir.path(), true);
        assert!(
            short
                .err()
                .unwrap()
                .to_string()
                .contains("short of a chunk")
        );
    }

    #[test]
    fn a_chunk_random_at_its_start_only_is_still_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut bytes: Vec<u8> = (0..1024 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        bytes.resize(4 * 1024 * 1024, 0);
        std::fs::write(&disk, &bytes).unwrap();
        let read = read_chunk(&disk, &(0..bytes.len() as u64), dir.path(), true).unwrap();
        let (_, _, zsize) = read.zstd.expect("three quarters are zeros");
        assert!(zsize < 2 * 1024 * 1024, "{zsize}");
        // The random quarter alone is not worth trying.
        let random = read_chunk(&disk, &(0..1024 * 1024), dir.path(), true).unwrap();
        assert!(random.zstd.is_none());
        assert_eq!(random.digest, Digest::of(&bytes[..1024 * 1024]));
    }
}
