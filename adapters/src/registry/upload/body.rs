//! Request bodies of uploads: a blob's stream regrouped into chunks of an
//! exact total size, and a source's stream metered as it is sent.

use super::*;

/// Reads a blob's stream in chunks, insisting on exactly the announced size.
pub(super) struct ChunkReader {
    stream: ByteStream,
    pending: Bytes,
    digest: Digest,
    pub(super) size: u64,
    remaining: u64,
    /// The stream said it is over (it must not be polled again).
    ended: bool,
}

impl ChunkReader {
    pub(super) fn new(stream: ByteStream, digest: Digest, size: u64) -> Self {
        Self {
            stream,
            pending: Bytes::new(),
            digest,
            size,
            remaining: size,
            ended: false,
        }
    }

    pub(super) fn source_error(&self, source: StoreError) -> RegistryError {
        RegistryError::Source {
            digest: self.digest.clone(),
            source,
        }
    }

    pub(super) fn size_mismatch(&self, actual: u64) -> RegistryError {
        self.source_error(StoreError::SizeMismatch {
            expected: self.size,
            actual,
        })
    }

    /// The next chunk of at most `max` bytes; `None` once `size` bytes were
    /// read and the stream is over.
    pub(super) async fn next_chunk(&mut self, max: usize) -> Result<Option<Bytes>, RegistryError> {
        if self.remaining == 0 {
            while self.pending.is_empty() {
                if self.ended {
                    return Ok(None);
                }
                match self.stream.next().await {
                    Some(Ok(more)) => self.pending = more,
                    Some(Err(e)) => return Err(self.source_error(e)),
                    None => self.ended = true,
                }
            }
            return Err(self.size_mismatch(self.size + self.pending.len() as u64));
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(max.max(1));
        let mut buffer = BytesMut::new();
        while buffer.len() < want {
            if self.pending.is_empty() {
                match self.stream.next().await {
                    Some(Ok(more)) => self.pending = more,
                    Some(Err(e)) => return Err(self.source_error(e)),
                    None => {
                        self.ended = true;
                        let read = self.size - self.remaining + buffer.len() as u64;
                        return Err(self.size_mismatch(read));
                    }
                }
                continue;
            }
            let take = (want - buffer.len()).min(self.pending.len());
            if buffer.is_empty() && take == want {
                // The common case: one stream item covers the chunk, no copy.
                let chunk = self.pending.split_to(take);
                self.remaining -= take as u64;
                return Ok(Some(chunk));
            }
            buffer.extend_from_slice(&self.pending.split_to(take));
        }
        self.remaining -= want as u64;
        Ok(Some(buffer.freeze()))
    }
}

/// Where a streamed body keeps its source's error, for the caller to report
/// instead of the transport failure it caused.
pub(super) type Failure = Arc<Mutex<Option<StoreError>>>;

/// A source's stream as a request body of exactly `expected` bytes: counts
/// what goes out (progress), and holds back the last piece until the source
/// says it is over, so that a source failing at its end (as a verifying read
/// of a corrupt blob does) fails the request before its last byte.
pub(super) struct Metered {
    pub(super) inner: ByteStream,
    /// Where the body starts in the blob.
    pub(super) base: u64,
    pub(super) expected: u64,
    pub(super) sent: u64,
    pub(super) held: Option<Bytes>,
    pub(super) over: bool,
    pub(super) failure: Failure,
    pub(super) progress: Option<UploadProgress>,
}

impl Metered {
    pub(super) fn fail(&mut self, error: StoreError) -> std::io::Error {
        self.over = true;
        let message = error.to_string();
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
        std::io::Error::other(message)
    }

    pub(super) fn report(&self) {
        if let Some(progress) = &self.progress {
            progress(self.base + self.sent);
        }
    }
}

impl futures::Stream for Metered {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.over {
            return Poll::Ready(None);
        }
        loop {
            let Some(item) = futures::ready!(this.inner.poll_next_unpin(cx)) else {
                this.over = true;
                if this.sent < this.expected {
                    let error = StoreError::SizeMismatch {
                        expected: this.base + this.expected,
                        actual: this.base + this.sent,
                    };
                    return Poll::Ready(Some(Err(this.fail(error))));
                }
                this.report();
                return Poll::Ready(this.held.take().map(Ok));
            };
            let piece = match item {
                Ok(piece) if piece.is_empty() => continue,
                Ok(piece) => piece,
                Err(error) => return Poll::Ready(Some(Err(this.fail(error)))),
            };
            let sent = this.sent + piece.len() as u64;
            if this.held.is_some() || sent > this.expected {
                let error = StoreError::SizeMismatch {
                    expected: this.base + this.expected,
                    actual: this.base + sent.max(this.expected + 1),
                };
                return Poll::Ready(Some(Err(this.fail(error))));
            }
            this.sent = sent;
            if sent == this.expected {
                this.held = Some(piece);
                continue;
            }
            this.report();
            return Poll::Ready(Some(Ok(piece)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(items: Vec<&'static [u8]>, size: u64) -> ChunkReader {
        let stream =
            futures::stream::iter(items.into_iter().map(|b| Ok(Bytes::from_static(b)))).boxed();
        ChunkReader::new(stream, Digest::of(b""), size)
    }

    #[tokio::test]
    async fn chunks_regroup_the_stream() {
        let mut r = reader(vec![b"ab", b"cdefg", b"h"], 8);
        let mut chunks = Vec::new();
        while let Some(c) = r.next_chunk(3).await.unwrap() {
            chunks.push(c);
        }
        assert_eq!(chunks, vec![&b"abc"[..], &b"def"[..], &b"gh"[..]]);
    }

    #[tokio::test]
    async fn wrong_sizes_are_errors() {
        let mut short = reader(vec![b"ab"], 3);
        assert!(matches!(
            short.next_chunk(10).await,
            Err(RegistryError::Source {
                source: StoreError::SizeMismatch {
                    expected: 3,
                    actual: 2
                },
                ..
            })
        ));
        let mut long = reader(vec![b"abcd"], 3);
        assert_eq!(long.next_chunk(10).await.unwrap().unwrap(), &b"abc"[..]);
        assert!(matches!(
            long.next_chunk(10).await,
            Err(RegistryError::Source { .. })
        ));
        let mut empty = reader(vec![], 0);
        assert!(empty.next_chunk(10).await.unwrap().is_none());
    }
}
