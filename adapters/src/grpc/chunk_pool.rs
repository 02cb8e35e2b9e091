//! Recycled chunk buffers for reading a large file into `Bytes`.
//!
//! A fresh 1 MiB buffer per chunk is mapped and unmapped by glibc each time,
//! so every page of a 4 GiB import costs page faults on both sides; a small
//! pool of buffers, handed back when the last `Bytes` of a chunk drops (on
//! whichever thread that is), touches each page once (docs/benchmarks.md).

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Buffers of one size, at most `keep` of them kept for reuse.
#[derive(Debug, Clone)]
pub(crate) struct ChunkPool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    size: usize,
    keep: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl ChunkPool {
    pub(crate) fn new(size: usize, keep: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                size,
                keep,
                free: Mutex::new(Vec::with_capacity(keep)),
            }),
        }
    }

    /// A buffer of the pool's size, initialised (recycled buffers hold old
    /// bytes; new ones are zeroed).
    pub(crate) fn take(&self) -> Vec<u8> {
        let recycled = self
            .shared
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        recycled.unwrap_or_else(|| vec![0; self.shared.size])
    }

    /// The first `len` bytes of `buf` as `Bytes`; `buf` goes back to the
    /// pool when the last clone is dropped.
    pub(crate) fn freeze(&self, buf: Vec<u8>, len: usize) -> Bytes {
        debug_assert!(len <= buf.len());
        Bytes::from_owner(Pooled {
            buf,
            len,
            shared: Arc::clone(&self.shared),
        })
    }
}

struct Pooled {
    buf: Vec<u8>,
    len: usize,
    shared: Arc<Shared>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.len() != self.shared.size {
            return;
        }
        let mut free = self
            .shared
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if free.len() < self.shared.keep {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_chunk_gives_its_buffer_back() {
        let pool = ChunkPool::new(64, 2);
        let mut buf = pool.take();
        assert_eq!(buf.len(), 64);
        buf[..3].copy_from_slice(b"abc");
        let address = buf.as_ptr();
        let chunk = pool.freeze(buf, 3);
        assert_eq!(&chunk[..], b"abc");
        let clone = chunk.clone();
        drop(chunk);
        // Still referenced: a new take cannot get the same buffer.
        let other = pool.take();
        assert_ne!(other.as_ptr(), address);
        drop(clone);
        let recycled = pool.take();
        assert_eq!(recycled.as_ptr(), address);
    }

    #[test]
    fn the_pool_keeps_at_most_its_bound() {
        let pool = ChunkPool::new(16, 1);
        let chunks: Vec<Bytes> = (0..3).map(|_| pool.freeze(pool.take(), 16)).collect();
        drop(chunks);
        let free = pool.shared.free.lock().expect("lock");
        assert_eq!(free.len(), 1);
    }

    #[test]
    fn chunks_dropped_on_another_thread_come_back() {
        let pool = ChunkPool::new(32, 4);
        let chunk = pool.freeze(pool.take(), 10);
        std::thread::spawn(move || drop(chunk))
            .join()
            .expect("thread");
        assert_eq!(pool.shared.free.lock().expect("lock").len(), 1);
    }
}
