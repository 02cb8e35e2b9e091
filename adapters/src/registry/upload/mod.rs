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

mod body;
mod streamed;

use body::{ChunkReader, Failure, Metered};

const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

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
