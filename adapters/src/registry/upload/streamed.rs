//! Uploads streamed from a [`BlobSource`]: the source's stream is the
//! request body, and a failed request is resent by opening the source again.

use super::*;

impl Uploader<'_> {
    /// An upload streamed from `source` (see the module's documentation).
    pub(in crate::registry) async fn upload_from(
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

    pub(super) fn source_error(digest: &Digest, source: StoreError) -> RegistryError {
        RegistryError::Source {
            digest: digest.clone(),
            source,
        }
    }

    /// `source` from `offset` as a request body; the source's own error, if
    /// it fails, lands in the returned slot.
    pub(super) async fn body(
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

    pub(super) fn failed_source(digest: &Digest, failure: &Failure) -> Option<RegistryError> {
        let error = failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        Some(Self::source_error(digest, error))
    }

    /// A PATCH sending bytes `from..to` of a blob to the session at `location`.
    pub(super) fn patch_request(
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

    pub(super) fn length(&self, bytes: u64) -> Result<HeaderValue, RegistryError> {
        HeaderValue::from_str(&bytes.to_string()).map_err(|e| self.internal(e.to_string()))
    }

    /// The whole blob in one streamed `PUT ?digest=` on the session at
    /// `location`. `Ok(Err(reason))` for a transient failure after which the
    /// registry does not have the blob (the caller starts over).
    pub(super) async fn put_streamed(
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
    pub(super) async fn patch_streamed(
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
}
