//! Blob uploads: POST to open a session, then one PUT with the whole blob
//! (small blobs) or PATCH chunks and a closing `PUT ?digest=`. A chunk is
//! held in memory so that a chunk the registry failed on can be resent from
//! the offset the registry reports it has; the final PUT is checked with a
//! HEAD when its answer is lost. A failed upload's session is deleted.
//!
//! Uploads from a [`BlobSource`] hold nothing in memory: the source's stream
//! is the request body ([`Metered`]), and a failed request is resent by
//! opening the source again: a whole streamed `PUT ?digest=` from a new
//! session (blobs up to `streamed_put_limit`), or one streamed PATCH from
//! the offset the registry reports it has (larger blobs).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::header::{
    CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION,
};
use reqwest::{Method, Response, StatusCode, Url};
use vmr_domain::image::{Digest, Repository};
use vmr_ports::{BlobSource, ByteStream, RegistryError, StoreError, UploadProgress};

use super::client::OciRegistryClient;
use super::header_str;
use super::http::is_transient_status;
use super::transport::{Request, Streamed, push_scope};

const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

/// Reads a blob's stream in chunks, insisting on exactly the announced size.
struct ChunkReader {
    stream: ByteStream,
    pending: Bytes,
    digest: Digest,
    size: u64,
    remaining: u64,
    /// The stream said it is over (it must not be polled again).
    ended: bool,
}

impl ChunkReader {
    fn new(stream: ByteStream, digest: Digest, size: u64) -> Self {
        Self {
            stream,
            pending: Bytes::new(),
            digest,
            size,
            remaining: size,
            ended: false,
        }
    }

    fn source_error(&self, source: StoreError) -> RegistryError {
        RegistryError::Source {
            digest: self.digest.clone(),
            source,
        }
    }

    fn size_mismatch(&self, actual: u64) -> RegistryError {
        self.source_error(StoreError::SizeMismatch {
            expected: self.size,
            actual,
        })
    }

    /// The next chunk of at most `max` bytes; `None` once `size` bytes were
    /// read and the stream is over.
    async fn next_chunk(&mut self, max: usize) -> Result<Option<Bytes>, RegistryError> {
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
type Failure = Arc<Mutex<Option<StoreError>>>;

/// A source's stream as a request body of exactly `expected` bytes: counts
/// what goes out (progress), and holds back the last piece until the source
/// says it is over, so that a source failing at its end (as a verifying read
/// of a corrupt blob does) fails the request before its last byte.
struct Metered {
    inner: ByteStream,
    /// Where the body starts in the blob.
    base: u64,
    expected: u64,
    sent: u64,
    held: Option<Bytes>,
    over: bool,
    failure: Failure,
    progress: Option<UploadProgress>,
}

impl Metered {
    fn fail(&mut self, error: StoreError) -> std::io::Error {
        self.over = true;
        let message = error.to_string();
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
        std::io::Error::other(message)
    }

    fn report(&self) {
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

/// One blob upload through a client.
pub(super) struct Uploader<'a> {
    client: &'a OciRegistryClient,
}

impl<'a> Uploader<'a> {
    pub(super) fn new(client: &'a OciRegistryClient) -> Self {
        Self { client }
    }

    pub(super) async fn upload(
        &self,
        repository: &Repository,
        digest: &Digest,
        size: u64,
        data: ByteStream,
        progress: Option<UploadProgress>,
    ) -> Result<(), RegistryError> {
        let mut reader = ChunkReader::new(data, digest.clone(), size);
        let (location, min_chunk) = self.start(repository).await?;
        let result = if size <= self.client.options.monolithic_limit {
            self.monolithic(repository, digest, &mut reader, location.clone())
                .await
        } else {
            let chunk_size = self.client.options.chunk_size.max(min_chunk);
            self.chunked(
                repository,
                digest,
                &mut reader,
                location.clone(),
                chunk_size,
                progress.as_ref(),
            )
            .await
        };
        match result {
            Ok(()) => {
                if let Some(progress) = progress {
                    progress(size);
                }
                tracing::debug!(%digest, size, repository = repository.as_str(), "blob uploaded");
                Ok(())
            }
            Err(error) => {
                self.cancel(&location, repository).await;
                Err(error)
            }
        }
    }

    /// An upload streamed from `source` (see the module's documentation).
    pub(super) async fn upload_from(
        &self,
        repository: &Repository,
        digest: &Digest,
        size: u64,
        source: &dyn BlobSource,
        progress: Option<UploadProgress>,
    ) -> Result<(), RegistryError> {
        if size <= self.client.options.monolithic_limit {
            let data = source
                .open(0)
                .await
                .map_err(|e| Self::source_error(digest, e))?;
            return self.upload(repository, digest, size, data, progress).await;
        }
        let whole_put = size <= self.client.options.streamed_put_limit;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (location, _) = self.start(repository).await?;
            let result = if whole_put {
                self.put_streamed(repository, digest, size, source, &location)
                    .await
            } else {
                self.patch_streamed(
                    repository,
                    digest,
                    size,
                    source,
                    location.clone(),
                    progress.as_ref(),
                )
                .await
                .map(Ok)
            };
            let reason = match result {
                Ok(Ok(())) => {
                    if let Some(progress) = progress {
                        progress(size);
                    }
                    tracing::debug!(%digest, size, repository = repository.as_str(), whole_put, "blob uploaded, streamed");
                    return Ok(());
                }
                Ok(Err(reason)) => reason,
                Err(error) => {
                    self.cancel(&location, repository).await;
                    return Err(error);
                }
            };
            self.cancel(&location, repository).await;
            let transport = &self.client.transport;
            let Some(delay) = transport.retry().delay(attempt, None) else {
                return Err(RegistryError::Unavailable {
                    registry: transport.registry(),
                    message: format!(
                        "uploading blob {digest} failed: {reason} (still failing after retries)"
                    ),
                });
            };
            tracing::debug!(%digest, ?delay, reason = %reason, "upload failed, sending it again from a new session");
            tokio::time::sleep(delay).await;
        }
    }

    fn source_error(digest: &Digest, source: StoreError) -> RegistryError {
        RegistryError::Source {
            digest: digest.clone(),
            source,
        }
    }

    /// `source` from `offset` as a request body; the source's own error, if
    /// it fails, lands in the returned slot.
    async fn body(
        digest: &Digest,
        source: &dyn BlobSource,
        offset: u64,
        size: u64,
        progress: Option<&UploadProgress>,
    ) -> Result<(reqwest::Body, Failure), RegistryError> {
        let inner = source
            .open(offset)
            .await
            .map_err(|e| Self::source_error(digest, e))?;
        let failure = Failure::default();
        let metered = Metered {
            inner,
            base: offset,
            expected: size - offset,
            sent: 0,
            held: None,
            over: false,
            failure: failure.clone(),
            progress: progress.cloned(),
        };
        Ok((reqwest::Body::wrap_stream(metered), failure))
    }

    fn failed_source(digest: &Digest, failure: &Failure) -> Option<RegistryError> {
        let error = failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        Some(Self::source_error(digest, error))
    }

    /// A PATCH sending bytes `from..to` of a blob to the session at `location`.
    fn patch_request(
        &self,
        repository: &Repository,
        location: &Url,
        from: u64,
        to: u64,
    ) -> Result<Request, RegistryError> {
        let range = HeaderValue::from_str(&format!("{from}-{}", to - 1))
            .map_err(|e| self.internal(e.to_string()))?;
        Ok(Request::new(
            Method::PATCH,
            location.clone(),
            vec![push_scope(repository.as_str())],
        )
        .header(CONTENT_TYPE, OCTET_STREAM)
        .header(CONTENT_RANGE, range))
    }

    fn length(&self, bytes: u64) -> Result<HeaderValue, RegistryError> {
        HeaderValue::from_str(&bytes.to_string()).map_err(|e| self.internal(e.to_string()))
    }

    /// The whole blob in one streamed `PUT ?digest=` on the session at
    /// `location`. `Ok(Err(reason))` for a transient failure after which the
    /// registry does not have the blob (the caller starts over).
    async fn put_streamed(
        &self,
        repository: &Repository,
        digest: &Digest,
        size: u64,
        source: &dyn BlobSource,
        location: &Url,
    ) -> Result<Result<(), String>, RegistryError> {
        use vmr_ports::RegistryClient as _;
        let transport = &self.client.transport;
        let request = Request::new(
            Method::PUT,
            Self::with_digest(location, digest),
            vec![push_scope(repository.as_str())],
        )
        .header(CONTENT_TYPE, OCTET_STREAM)
        .header(CONTENT_LENGTH, self.length(size)?);
        let mut challenged = false;
        let reason = loop {
            let (body, failure) = Self::body(digest, source, 0, size, None).await?;
            let sent = transport.send_streamed(&request, body, challenged).await;
            if let Some(error) = Self::failed_source(digest, &failure) {
                return Err(error);
            }
            match sent {
                Ok(Streamed::Challenged) => challenged = true,
                Ok(Streamed::Answered(response)) if response.status() == StatusCode::CREATED => {
                    return Ok(Ok(()));
                }
                Ok(Streamed::Answered(response)) if is_transient_status(response.status()) => {
                    break format!("HTTP {}", response.status());
                }
                Ok(Streamed::Answered(response)) => {
                    return Err(transport
                        .error(&Self::what(digest, repository), response)
                        .await);
                }
                Err(RegistryError::Unavailable { message, .. }) => break message,
                Err(other) => return Err(other),
            }
        };
        // The answer may be what was lost, after the registry stored the blob.
        if let Ok(Some(stored)) = self.client.blob_exists(repository, digest).await
            && stored == size
        {
            return Ok(Ok(()));
        }
        Ok(Err(reason))
    }

    /// The blob in one streamed PATCH on the session at `location`; after a
    /// transient failure, the registry is asked how far it got and the
    /// source is opened again there. Then the closing PUT.
    async fn patch_streamed(
        &self,
        repository: &Repository,
        digest: &Digest,
        size: u64,
        source: &dyn BlobSource,
        mut location: Url,
        progress: Option<&UploadProgress>,
    ) -> Result<(), RegistryError> {
        let transport = &self.client.transport;
        let mut offset = 0;
        let mut retry = 0;
        let mut challenged = false;
        while offset < size {
            let request = self
                .patch_request(repository, &location, offset, size)?
                .header(CONTENT_LENGTH, self.length(size - offset)?);
            let (body, failure) = Self::body(digest, source, offset, size, progress).await?;
            let sent = transport.send_streamed(&request, body, challenged).await;
            if let Some(error) = Self::failed_source(digest, &failure) {
                return Err(error);
            }
            let (transient, headers) = match sent {
                Ok(Streamed::Challenged) => {
                    challenged = true;
                    continue;
                }
                Ok(Streamed::Answered(response)) if response.status() == StatusCode::ACCEPTED => {
                    location = self.location(&response)?;
                    break;
                }
                Ok(Streamed::Answered(response)) if is_transient_status(response.status()) => (
                    format!("HTTP {}", response.status()),
                    Some(response.headers().clone()),
                ),
                Ok(Streamed::Answered(response)) => {
                    return Err(transport
                        .error(&Self::what(digest, repository), response)
                        .await);
                }
                Err(RegistryError::Unavailable { message, .. }) => (message, None),
                Err(other) => return Err(other),
            };
            retry += 1;
            let (next, stored) = self
                .how_far_after_failure(
                    repository,
                    digest,
                    &location,
                    offset..size,
                    &transient,
                    retry,
                    headers.as_ref(),
                )
                .await?;
            location = next;
            if stored < offset || stored > size {
                return Err(RegistryError::InvalidResponse {
                    registry: transport.registry(),
                    message: format!(
                        "the upload of blob {digest} went from byte {offset} to {stored} of {size}"
                    ),
                });
            }
            offset = stored;
        }
        let request = Request::new(
            Method::PUT,
            Self::with_digest(&location, digest),
            vec![push_scope(repository.as_str())],
        )
        .header(CONTENT_LENGTH, HeaderValue::from_static("0"));
        self.finish(repository, digest, size, &request).await
    }

    /// Deletes an upload session, best effort (it expires on its own too).
    pub(super) async fn cancel(&self, location: &Url, repository: &Repository) {
        let mut request = Request::new(
            Method::DELETE,
            location.clone(),
            vec![push_scope(repository.as_str())],
        );
        request.idempotent = false;
        if let Err(e) = self.client.transport.send(&request).await {
            tracing::debug!(error = %e, "could not delete an upload session");
        }
    }

    fn what(digest: &Digest, repository: &Repository) -> String {
        format!("upload of blob {digest} to {}", repository.as_str())
    }

    /// The `Location` of an answer, resolved against the request's URL.
    fn location(&self, response: &Response) -> Result<Url, RegistryError> {
        header_str(response.headers(), LOCATION.as_str())
            .and_then(|l| response.url().join(l).ok())
            .ok_or_else(|| RegistryError::InvalidResponse {
                registry: self.client.transport.registry(),
                message: format!(
                    "HTTP {} without a usable Location header",
                    response.status()
                ),
            })
    }

    /// Opens an upload session: its URL, and the registry's smallest chunk.
    async fn start(&self, repository: &Repository) -> Result<(Url, usize), RegistryError> {
        let url = self
            .client
            .url(&format!("/v2/{}/blobs/uploads/", repository.as_str()));
        let request = Request::new(Method::POST, url, vec![push_scope(repository.as_str())])
            .header(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let response = self.client.transport.send(&request).await?;
        if response.status() != StatusCode::ACCEPTED {
            let what = format!("blob upload to {}", repository.as_str());
            return Err(self.client.transport.error(&what, response).await);
        }
        let min_chunk = header_str(response.headers(), "oci-chunk-min-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok((self.location(&response)?, min_chunk))
    }

    fn with_digest(location: &Url, digest: &Digest) -> Url {
        let mut url = location.clone();
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        url
    }

    async fn monolithic(
        &self,
        repository: &Repository,
        digest: &Digest,
        reader: &mut ChunkReader,
        location: Url,
    ) -> Result<(), RegistryError> {
        let size = reader.size;
        let body = match reader
            .next_chunk(usize::try_from(size).unwrap_or(usize::MAX))
            .await?
        {
            Some(body) => body,
            None => Bytes::new(),
        };
        if reader.next_chunk(1).await?.is_some() {
            return Err(reader.size_mismatch(size + 1));
        }
        let request = Request::new(
            Method::PUT,
            Self::with_digest(&location, digest),
            vec![push_scope(repository.as_str())],
        )
        .header(CONTENT_TYPE, OCTET_STREAM)
        .body(body);
        self.finish(repository, digest, size, &request).await
    }

    async fn chunked(
        &self,
        repository: &Repository,
        digest: &Digest,
        reader: &mut ChunkReader,
        mut location: Url,
        chunk_size: usize,
        progress: Option<&UploadProgress>,
    ) -> Result<(), RegistryError> {
        let mut offset = 0u64;
        while let Some(chunk) = reader.next_chunk(chunk_size).await? {
            let length = chunk.len() as u64;
            location = self
                .patch(repository, digest, location, offset, chunk)
                .await?;
            offset += length;
            if let Some(progress) = progress {
                progress(offset);
            }
        }
        let request = Request::new(
            Method::PUT,
            Self::with_digest(&location, digest),
            vec![push_scope(repository.as_str())],
        )
        .header(CONTENT_LENGTH, HeaderValue::from_static("0"));
        self.finish(repository, digest, reader.size, &request).await
    }

    /// Sends one chunk starting at `start`; returns the session's next URL.
    async fn patch(
        &self,
        repository: &Repository,
        digest: &Digest,
        mut location: Url,
        mut start: u64,
        mut data: Bytes,
    ) -> Result<Url, RegistryError> {
        let transport = &self.client.transport;
        let end = start + data.len() as u64;
        let mut retry = 0;
        loop {
            retry += 1;
            let request = self
                .patch_request(repository, &location, start, start + data.len() as u64)?
                .body(data.clone());
            let (transient, headers) = match transport.send(&request).await {
                Ok(response) if response.status() == StatusCode::ACCEPTED => {
                    return self.location(&response);
                }
                Ok(response) if is_transient_status(response.status()) => (
                    format!("HTTP {}", response.status()),
                    Some(response.headers().clone()),
                ),
                Ok(response) => {
                    return Err(transport
                        .error(&Self::what(digest, repository), response)
                        .await);
                }
                Err(RegistryError::Unavailable { message, .. }) => (message, None),
                Err(other) => return Err(other),
            };
            let (next, stored) = self
                .how_far_after_failure(
                    repository,
                    digest,
                    &location,
                    start..end,
                    &transient,
                    retry,
                    headers.as_ref(),
                )
                .await?;
            location = next;
            if stored >= end {
                return Ok(location);
            }
            if stored < start {
                return Err(RegistryError::InvalidResponse {
                    registry: transport.registry(),
                    message: format!(
                        "the upload of blob {digest} went back from byte {start} to {stored}"
                    ),
                });
            }
            data = data.slice(usize::try_from(stored - start).unwrap_or(0)..);
            start = stored;
        }
    }

    /// `GET` on a session: its URL and how many bytes it holds.
    /// After bytes `range` of `digest` failed to go up (`transient`): waits
    /// the retry delay (an error once retries are spent) and asks the
    /// registry where the upload session stands: its next URL and how many
    /// bytes it holds.
    #[allow(clippy::too_many_arguments)]
    async fn how_far_after_failure(
        &self,
        repository: &Repository,
        digest: &Digest,
        location: &Url,
        range: std::ops::Range<u64>,
        transient: &str,
        retry: u32,
        headers: Option<&HeaderMap>,
    ) -> Result<(Url, u64), RegistryError> {
        let transport = &self.client.transport;
        let (start, end) = (range.start, range.end);
        let Some(delay) = transport.retry().delay(retry, headers) else {
            return Err(RegistryError::Unavailable {
                registry: transport.registry(),
                message: format!(
                    "sending bytes {start}..{end} of blob {digest} failed: {transient} (still failing after retries)"
                ),
            });
        };
        tracing::debug!(%digest, start, ?delay, reason = %transient, "upload failed, asking the registry how far it got");
        tokio::time::sleep(delay).await;
        match self.status(repository, location).await {
            // distribution forgets a session URL once a later chunk landed:
            // the bytes may be in, but there is no telling.
            Err(RegistryError::NotFound { message, .. }) => Err(RegistryError::Unavailable {
                registry: transport.registry(),
                message: format!(
                    "sending bytes {start}..{end} of blob {digest} failed ({transient}) and the registry \
                     no longer knows the upload session ({message}); push again"
                ),
            }),
            other => other,
        }
    }

    async fn status(
        &self,
        repository: &Repository,
        location: &Url,
    ) -> Result<(Url, u64), RegistryError> {
        let transport = &self.client.transport;
        let request = Request::new(
            Method::GET,
            location.clone(),
            vec![push_scope(repository.as_str())],
        );
        let response = transport.send(&request).await?;
        if !response.status().is_success() {
            return Err(transport
                .error(
                    &format!("blob upload session in {}", repository.as_str()),
                    response,
                )
                .await);
        }
        // `Range: 0-<last>`, inclusive; "0-0" is also what an empty session
        // says, and resending one byte too many is refused, not corrupting.
        let stored = header_str(response.headers(), "range")
            .and_then(|r| r.trim().strip_prefix("0-")?.parse::<u64>().ok())
            .map_or(0, |last| if last == 0 { 0 } else { last + 1 });
        let next = self
            .location(&response)
            .unwrap_or_else(|_| location.clone());
        Ok((next, stored))
    }

    /// The closing PUT. After a transient failure a HEAD tells whether the
    /// blob landed anyway; if not, the PUT is sent again (the session is
    /// still open when the registry never saw it).
    async fn finish(
        &self,
        repository: &Repository,
        digest: &Digest,
        size: u64,
        request: &Request,
    ) -> Result<(), RegistryError> {
        use vmr_ports::RegistryClient as _;
        let transport = &self.client.transport;
        let mut request = request.clone();
        // Resending a session the registry already closed fails, so the PUT
        // is only resent after the HEAD below.
        request.idempotent = false;
        let mut retry = 0;
        loop {
            retry += 1;
            let (reason, headers) = match transport.send(&request).await {
                Ok(response) if response.status() == StatusCode::CREATED => return Ok(()),
                Ok(response) if !is_transient_status(response.status()) => {
                    return Err(transport
                        .error(&Self::what(digest, repository), response)
                        .await);
                }
                Ok(response) => (
                    format!("HTTP {}", response.status()),
                    Some(response.headers().clone()),
                ),
                Err(RegistryError::Unavailable { message, .. }) => (message, None),
                Err(other) => return Err(other),
            };
            let delay = transport.retry().delay(retry, headers.as_ref());
            tokio::time::sleep(delay.unwrap_or(Duration::ZERO)).await;
            if let Ok(Some(stored)) = self.client.blob_exists(repository, digest).await
                && stored == size
            {
                return Ok(());
            }
            if delay.is_none() {
                return Err(RegistryError::Unavailable {
                    registry: transport.registry(),
                    message: format!(
                        "completing the upload of blob {digest} failed: {reason} (still failing after retries)"
                    ),
                });
            }
            tracing::debug!(%digest, reason = %reason, "completing the upload failed, sending it again");
        }
    }

    fn internal(&self, message: String) -> RegistryError {
        RegistryError::InvalidResponse {
            registry: self.client.transport.registry(),
            message,
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
