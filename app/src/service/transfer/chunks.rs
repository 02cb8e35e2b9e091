//! The chunk work of chunked pushes and pulls (docs/chunked-images.md): on
//! push, a chunk of the local disk is read, hashed and compressed into a
//! spool file (kept only when zstd pays); on pull, a chunk's bytes
//! (downloaded and decompressed, or copied from a local disk that holds the
//! same bytes) are verified as they stream and written at their offset in
//! the disk blob's placed temporary.
//! Memory stays bounded: pieces of [`PIECE`] bytes, never a whole chunk.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
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
    /// Push spool files and pull journals of chunk transfers.
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
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
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

/// Plain pieces ready to be written, each with its offset in the disk.
pub(crate) type Pieces = Vec<(u64, Bytes)>;

/// A chunk's stored bytes on their way into the disk: decompressed when
/// zstd, hashed both ways (once when stored plain: then the stored bytes are
/// the plain bytes and one digest answers for both), size-checked as they come (a chunk that
/// decompresses past its size is stopped at once), and cut into pieces of
/// [`PIECE`] plain bytes, each with its offset in the disk, to be written in
/// place.
pub(crate) struct Place {
    /// Disk offset of the next plain byte handed out.
    next: u64,
    pending: BytesMut,
    plain: Sha256,
    written: u64,
    size: u64,
    /// Present for compressed chunks.
    decoder: Option<zstd::stream::raw::Decoder<'static>>,
    scratch: Vec<u8>,
    /// The hash of the compressed bytes; a plain chunk's is `plain`.
    stored: Option<Sha256>,
}

impl Place {
    pub(crate) fn new(offset: u64, size: u64, zstd: bool) -> std::io::Result<Self> {
        Ok(Self {
            next: offset,
            pending: BytesMut::new(),
            plain: Sha256::new(),
            written: 0,
            size,
            decoder: if zstd {
                Some(zstd::stream::raw::Decoder::new()?)
            } else {
                None
            },
            scratch: if zstd { vec![0u8; PIECE] } else { Vec::new() },
            stored: zstd.then(Sha256::new),
        })
    }

    /// Takes plain bytes; full pieces go to `out`.
    fn take_plain(&mut self, mut bytes: &[u8], out: &mut Pieces) -> std::io::Result<()> {
        if self.written + bytes.len() as u64 > self.size {
            return Err(std::io::Error::other(format!(
                "the chunk is longer than its announced {} bytes",
                self.size
            )));
        }
        self.plain.update(bytes);
        self.written += bytes.len() as u64;
        while !bytes.is_empty() {
            if self.pending.capacity() == 0 {
                self.pending.reserve(PIECE);
            }
            let take = (PIECE - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == PIECE {
                self.flush(out);
            }
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Pieces) {
        if self.pending.is_empty() {
            return;
        }
        let piece = self.pending.split().freeze();
        let at = self.next;
        self.next += piece.len() as u64;
        out.push((at, piece));
    }

    /// Takes the next bytes as the registry stores them; returns the plain
    /// pieces now ready to be written, with their disk offsets.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> std::io::Result<Pieces> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        if let Some(stored) = &mut self.stored {
            stored.update(bytes);
        }
        let mut out = Vec::new();
        let Some(mut decoder) = self.decoder.take() else {
            self.take_plain(bytes, &mut out)?;
            return Ok(out);
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut input = InBuffer::around(bytes);
        let result = (|| {
            while input.pos < bytes.len() {
                let mut output = OutBuffer::around(&mut scratch[..]);
                decoder.run(&mut input, &mut output)?;
                let n = output.pos();
                self.take_plain(&scratch[..n], &mut out)?;
            }
            Ok(())
        })();
        self.decoder = Some(decoder);
        self.scratch = scratch;
        result.map(|()| out)
    }

    /// The last pieces, and whether the chunk checks out: the stored and
    /// plain digests and the size; otherwise the reason.
    pub(crate) fn finish(
        mut self,
        stored: &Digest,
        plain: &Digest,
    ) -> std::io::Result<(Pieces, Result<(), String>)> {
        use zstd::stream::raw::{Operation, OutBuffer};
        let mut out = Vec::new();
        if let Some(mut decoder) = self.decoder.take() {
            let mut scratch = std::mem::take(&mut self.scratch);
            loop {
                let mut output = OutBuffer::around(&mut scratch[..]);
                let left = decoder.flush(&mut output)?;
                let n = output.pos();
                self.take_plain(&scratch[..n], &mut out)?;
                if left == 0 && n == 0 {
                    break;
                }
            }
        }
        self.flush(&mut out);
        let got_plain = Digest::from_hasher(self.plain);
        let got_stored = match self.stored {
            Some(stored) => Digest::from_hasher(stored),
            None => got_plain.clone(),
        };
        let verdict = if &got_stored != stored {
            Err(format!("its bytes hash to {got_stored}"))
        } else if self.written != self.size {
            Err(format!(
                "it holds {} bytes, the manifest says {}",
                self.written, self.size
            ))
        } else if &got_plain != plain {
            Err(format!("its uncompressed bytes hash to {got_plain}"))
        } else {
            Ok(())
        };
        Ok((out, verdict))
    }
}

#[cfg(test)]
#[path = "chunks_tests.rs"]
mod tests;
