//! The OCI Distribution operations of [`OciRegistryClient`]: probe, blob
//! HEAD, cross-repository mount, manifests and tags. Uploads live in
//! `upload.rs`, downloads in `download.rs`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LINK, LOCATION,
};
use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;
use vmr_domain::image::{Digest, MANIFEST_MEDIA_TYPE, MAX_MANIFEST_BYTES, Repository, Tag};
use vmr_ports::{
    BlobDownload, BlobSource, ByteStream, ManifestReference, RegistryClient, RegistryError,
    RemoteManifest, UploadProgress,
};

use super::download::download;
use super::http::{LimitedReadError, read_bounded, read_limited};
use super::transport::{Request, Transport, pull_scope, push_scope};
use super::upload::Uploader;
use super::{RegistryOptions, header_str};

/// Manifest media types a pull accepts (OCI first; Docker's for registries
/// that convert).
const ACCEPTED_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";
/// Tags asked for per page.
const TAGS_PAGE: u32 = 1000;
/// Pages followed at most (a registry looping its `Link` must not hang us).
const MAX_TAG_PAGES: usize = 10_000;

/// A registry, as one user, for one push or pull.
pub struct OciRegistryClient {
    pub(super) transport: Transport,
    pub(super) options: RegistryOptions,
}

impl OciRegistryClient {
    pub(super) fn url(&self, path: &str) -> Url {
        self.transport.endpoint().join(path)
    }

    pub(super) fn invalid(&self, message: String) -> RegistryError {
        RegistryError::InvalidResponse {
            registry: self.transport.registry(),
            message,
        }
    }

    /// The digest the registry names in `Docker-Content-Digest`, if it is a
    /// sha256 one (others are not comparable, so ignored).
    fn content_digest(headers: &HeaderMap) -> Option<Digest> {
        header_str(headers, "docker-content-digest").and_then(|d| d.parse().ok())
    }

    pub(super) async fn fail(&self, what: &str, response: Response) -> RegistryError {
        self.transport.error(what, response).await
    }
}

/// The `tags/list` answer.
#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// `Link: </v2/x/tags/list?last=a&n=100>; rel="next"` → the URL.
fn next_link(headers: &HeaderMap, base: &Url) -> Option<Url> {
    let value = header_str(headers, LINK.as_str())?;
    value.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        if !params.replace(' ', "").contains("rel=\"next\"") && !params.contains("rel=next") {
            return None;
        }
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        base.join(target).ok()
    })
}

#[async_trait]
impl RegistryClient for OciRegistryClient {
    async fn ping(&self) -> Result<(), RegistryError> {
        let response = self
            .transport
            .send(&Request::new(Method::GET, self.url("/v2/"), Vec::new()))
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.fail("the API root /v2/", response).await)
        }
    }

    async fn blob_exists(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let url = self.url(&format!("/v2/{}/blobs/{digest}", repository.as_str()));
        let response = self
            .transport
            .send(&Request::new(
                Method::HEAD,
                url,
                vec![pull_scope(repository.as_str())],
            ))
            .await?;
        match response.status() {
            s if s.is_success() => {
                // The header, not `content_length()`: a HEAD answer has no body.
                let size = header_str(response.headers(), CONTENT_LENGTH.as_str())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        self.invalid(format!("HEAD of blob {digest} has no Content-Length"))
                    })?;
                Ok(Some(size))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self
                .fail(
                    &format!("blob {digest} in {}", repository.as_str()),
                    response,
                )
                .await),
        }
    }

    async fn mount_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        from: &Repository,
    ) -> Result<bool, RegistryError> {
        let mut url = self.url(&format!("/v2/{}/blobs/uploads/", repository.as_str()));
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from.as_str());
        let scopes = vec![push_scope(repository.as_str()), pull_scope(from.as_str())];
        let request = Request::new(Method::POST, url, scopes)
            .header(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let response = self.transport.send(&request).await?;
        match response.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // The registry opened an upload instead; close it, the
                // caller uploads through its own session.
                if let Some(location) = header_str(response.headers(), LOCATION.as_str())
                    && let Ok(location) = response.url().join(location)
                {
                    Uploader::new(self).cancel(&location, repository).await;
                }
                Ok(false)
            }
            _ => match self
                .fail(&format!("blob {digest} in {}", from.as_str()), response)
                .await
            {
                // No read access to the source: an upload may still work.
                RegistryError::Denied { .. } | RegistryError::NotFound { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn upload_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        size: u64,
        data: ByteStream,
        progress: Option<UploadProgress>,
    ) -> Result<(), RegistryError> {
        Uploader::new(self)
            .upload(repository, digest, size, data, progress)
            .await
    }

    async fn upload_blob_from(
        &self,
        repository: &Repository,
        digest: &Digest,
        size: u64,
        source: Arc<dyn BlobSource>,
        progress: Option<UploadProgress>,
    ) -> Result<(), RegistryError> {
        Uploader::new(self)
            .upload_from(repository, digest, size, source.as_ref(), progress)
            .await
    }

    async fn get_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobDownload, RegistryError> {
        download(self, repository, digest, offset).await
    }

    async fn get_manifest(
        &self,
        repository: &Repository,
        reference: &ManifestReference,
    ) -> Result<RemoteManifest, RegistryError> {
        let what = format!("manifest {}:{reference}", repository.as_str());
        let url = self.url(&format!(
            "/v2/{}/manifests/{reference}",
            repository.as_str()
        ));
        let request = Request::new(Method::GET, url, vec![pull_scope(repository.as_str())])
            .header(ACCEPT, HeaderValue::from_static(ACCEPTED_MANIFESTS));
        let response = self.transport.send(&request).await?;
        if !response.status().is_success() {
            return Err(self.fail(&what, response).await);
        }
        let announced = Self::content_digest(response.headers());
        let content_type = header_str(response.headers(), CONTENT_TYPE.as_str())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
            .filter(|v| !v.is_empty());
        let bytes = read_limited(response, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| match e {
                LimitedReadError::TooLarge { limit } => RegistryError::TooLarge {
                    registry: self.transport.registry(),
                    what: what.clone(),
                    limit: limit as u64,
                },
                LimitedReadError::Broken(message) => self.invalid(format!("{what}: {message}")),
            })?;
        let digest = Digest::of(&bytes);
        let registry = self.transport.registry();
        let expected = match reference {
            ManifestReference::Digest(asked) => Some(asked.clone()),
            ManifestReference::Tag(_) => announced,
        };
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(RegistryError::DigestMismatch {
                registry,
                what,
                expected,
                actual: digest,
            });
        }
        let media_type = match content_type {
            Some(t) if t != "application/json" && t != "text/plain" => t,
            // Some registries serve a generic type; the document names its own.
            _ => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| MANIFEST_MEDIA_TYPE.to_owned()),
        };
        Ok(RemoteManifest {
            bytes: Bytes::from(bytes),
            media_type,
            digest,
        })
    }

    async fn put_manifest(
        &self,
        repository: &Repository,
        reference: &ManifestReference,
        manifest: Bytes,
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let what = format!("manifest {}:{reference}", repository.as_str());
        let registry = self.transport.registry();
        if manifest.len() > MAX_MANIFEST_BYTES {
            return Err(RegistryError::Rejected {
                registry,
                message: format!(
                    "{what} is {} bytes, more than {MAX_MANIFEST_BYTES}",
                    manifest.len()
                ),
            });
        }
        let digest = Digest::of(&manifest);
        if let ManifestReference::Digest(asked) = reference
            && *asked != digest
        {
            return Err(RegistryError::DigestMismatch {
                registry,
                what,
                expected: asked.clone(),
                actual: digest,
            });
        }
        let content_type =
            HeaderValue::from_str(media_type).map_err(|_| RegistryError::Rejected {
                registry: registry.clone(),
                message: format!(
                    "media type `{}` is not a valid header value",
                    media_type.escape_debug()
                ),
            })?;
        let url = self.url(&format!(
            "/v2/{}/manifests/{reference}",
            repository.as_str()
        ));
        let request = Request::new(Method::PUT, url, vec![push_scope(repository.as_str())])
            .header(CONTENT_TYPE, content_type)
            .body(manifest);
        let response = self.transport.send(&request).await?;
        if !response.status().is_success() {
            return Err(self.fail(&what, response).await);
        }
        if let Some(stored) = Self::content_digest(response.headers())
            && stored != digest
        {
            return Err(RegistryError::DigestMismatch {
                registry,
                what,
                expected: digest,
                actual: stored,
            });
        }
        Ok(digest)
    }

    async fn list_tags(&self, repository: &Repository) -> Result<Vec<Tag>, RegistryError> {
        let what = format!("repository {}", repository.as_str());
        let mut url = self.url(&format!("/v2/{}/tags/list", repository.as_str()));
        url.query_pairs_mut()
            .append_pair("n", &TAGS_PAGE.to_string());
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let request = Request::new(
                Method::GET,
                url.clone(),
                vec![pull_scope(repository.as_str())],
            );
            let response = self.transport.send(&request).await?;
            if !response.status().is_success() {
                return Err(self.fail(&what, response).await);
            }
            let next = next_link(response.headers(), response.url());
            let body = read_bounded(response, 16 * 1024 * 1024)
                .await
                .map_err(|e| self.invalid(format!("tags of {what}: {e}")))?;
            let page: TagList = serde_json::from_slice(&body).map_err(|e| {
                self.invalid(format!("tags of {what} are not the expected JSON: {e}"))
            })?;
            for name in page.tags.unwrap_or_default() {
                match name.parse::<Tag>() {
                    Ok(tag) => tags.push(tag),
                    Err(e) => {
                        tracing::warn!(tag = %name.escape_debug(), error = %e, "ignoring a tag vmr cannot name")
                    }
                }
            }
            match next {
                Some(next) if next != url => url = next,
                _ => break,
            }
        }
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    fn describe(&self) -> String {
        self.transport.registry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let base = Url::parse("http://127.0.0.1:5000/v2/a/tags/list?n=2").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            r#"</v2/a/tags/list?last=b&n=2>; rel="next""#.parse().unwrap(),
        );
        assert_eq!(
            next_link(&h, &base).unwrap().as_str(),
            "http://127.0.0.1:5000/v2/a/tags/list?last=b&n=2"
        );
        h.insert(LINK, r#"</x>; rel="prev""#.parse().unwrap());
        assert_eq!(next_link(&h, &base), None);
    }
}
