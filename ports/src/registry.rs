//! OCI registries (Distribution spec v1.1): what push and pull need from one.
//! A [`RegistryConnector`] opens a [`RegistryClient`] for one target (base
//! URL, TLS policy, the user's credential); the client handles the registry's
//! auth challenges, retries and chunking itself, so callers see blobs,
//! manifests and tags only.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use vmr_domain::image::{Digest, Repository, Tag};

use crate::auth::Credential;
use crate::blobstore::{ByteStream, StoreError};

/// Which registry to talk to, and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryTarget {
    /// `https://registry.example.com`, `http://127.0.0.1:5000`; a bare
    /// `host[:port]` means https, or http for loopback hosts.
    pub base_url: String,
    /// Accept plain http:// to any host and unverified TLS certificates.
    pub insecure: bool,
    /// Sent when the registry asks (a Basic challenge), or exchanged for a
    /// registry token (a Bearer challenge). `None` is anonymous.
    pub credential: Option<Credential>,
}

/// A manifest's name in a repository: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ManifestReference {
    Tag(Tag),
    Digest(Digest),
}

impl fmt::Display for ManifestReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(tag) => f.write_str(tag.as_str()),
            Self::Digest(digest) => write!(f, "{digest}"),
        }
    }
}

impl From<Tag> for ManifestReference {
    fn from(tag: Tag) -> Self {
        Self::Tag(tag)
    }
}

impl From<Digest> for ManifestReference {
    fn from(digest: Digest) -> Self {
        Self::Digest(digest)
    }
}

/// A manifest as the registry serves it. `digest` is the sha256 of `bytes`
/// (checked against the registry's `Docker-Content-Digest` and, when fetched
/// by digest, against the digest asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteManifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

/// A blob download. The stream starts at the offset asked for and yields
/// exactly `size - offset` bytes, or ends with an error.
pub struct BlobDownload {
    /// The blob's total size.
    pub size: u64,
    pub stream: RegistryByteStream,
}

impl fmt::Debug for BlobDownload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobDownload")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Bytes from the registry.
pub type RegistryByteStream = BoxStream<'static, Result<Bytes, RegistryError>>;

/// Called with the number of bytes of a blob the registry has accepted so
/// far (monotonic, ends at the blob's size).
pub type UploadProgress = Arc<dyn Fn(u64) + Send + Sync>;

/// Where an upload's bytes come from: opened again at any offset, so that a
/// request that failed is resent from the source instead of from a copy
/// held in memory.
#[async_trait]
pub trait BlobSource: Send + Sync {
    /// The blob's bytes from `offset` to its end.
    async fn open(&self, offset: u64) -> Result<ByteStream, StoreError>;
}

/// What can go wrong with a registry, each message a sentence naming the
/// registry and carrying the registry's own error text (the OCI error body)
/// when it sent one. The gRPC edge maps `Unauthorized` to UNAUTHENTICATED,
/// `Denied` to PERMISSION_DENIED, `NotFound` to NOT_FOUND, `Unavailable` to
/// UNAVAILABLE, `DigestMismatch` to DATA_LOSS, `TooLarge` to
/// RESOURCE_EXHAUSTED, the target errors to
/// INVALID_ARGUMENT, `Rejected` to FAILED_PRECONDITION, `InvalidResponse` to
/// INTERNAL (or UNAVAILABLE).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry URL `{url}` is not usable: {reason}")]
    InvalidTarget { url: String, reason: String },
    #[error(
        "refusing plain http:// to registry {host}: only loopback registries may use http unless the context is marked insecure"
    )]
    InsecureRefused { host: String },
    #[error("registry {registry}: authentication required or failed: {message}")]
    Unauthorized { registry: String, message: String },
    #[error("registry {registry}: access denied: {message}")]
    Denied { registry: String, message: String },
    #[error("registry {registry}: {what} not found: {message}")]
    NotFound {
        registry: String,
        what: String,
        message: String,
    },
    #[error("registry {registry} is unavailable: {message}")]
    Unavailable { registry: String, message: String },
    #[error("registry {registry} rejected the request: {message}")]
    Rejected { registry: String, message: String },
    #[error("registry {registry} sent an invalid response: {message}")]
    InvalidResponse { registry: String, message: String },
    #[error("registry {registry}: {what} is larger than the {limit} bytes allowed")]
    TooLarge {
        registry: String,
        what: String,
        limit: u64,
    },
    #[error("registry {registry}: {what} has digest {actual}, expected {expected}")]
    DigestMismatch {
        registry: String,
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("reading local blob {digest} for upload failed: {source}")]
    Source {
        digest: Digest,
        #[source]
        source: StoreError,
    },
}

/// Opens registry clients: one per call, for that call's target.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait RegistryConnector: Send + Sync {
    /// A client for `target`. Fails at once, without network traffic, when
    /// the URL is malformed or uses http:// where it must not.
    fn connect(&self, target: &RegistryTarget) -> Result<Arc<dyn RegistryClient>, RegistryError>;
}

/// One registry, as one user. Tokens fetched for Bearer challenges are cached
/// in the client until they expire, so a client should live as long as one
/// push or pull.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait RegistryClient: Send + Sync {
    /// `GET /v2/`: the registry answers and accepts the credential.
    async fn ping(&self) -> Result<(), RegistryError>;
    /// `HEAD` a blob: its size when the repository has it.
    async fn blob_exists(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError>;
    /// Cross-repository mount of a blob known in `from` (same registry).
    /// `false` when the registry declined (the caller uploads instead).
    async fn mount_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        from: &Repository,
    ) -> Result<bool, RegistryError>;
    /// Uploads a blob of known size and digest: one PUT for small blobs,
    /// POST + PATCH chunks + PUT otherwise. A chunk that fails transiently is
    /// resent after asking the registry how far it got. `progress`, if
    /// given, hears the bytes accepted so far.
    async fn upload_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        size: u64,
        data: ByteStream,
        progress: Option<UploadProgress>,
    ) -> Result<(), RegistryError>;
    /// Uploads a blob of known size and digest, streaming it from `source`
    /// as the request body (no copy of it in memory): small blobs as
    /// [`upload_blob`](Self::upload_blob) does, blobs up to the client's
    /// streamed-PUT limit in one POST + `PUT ?digest=` (resent whole, from a
    /// new session, after a transient failure), larger ones in one streamed
    /// PATCH resumed from the offset the registry reports, then the closing
    /// PUT. By default, `upload_blob` of `source` opened at 0.
    async fn upload_blob_from(
        &self,
        repository: &Repository,
        digest: &Digest,
        size: u64,
        source: Arc<dyn BlobSource>,
        progress: Option<UploadProgress>,
    ) -> Result<(), RegistryError> {
        let data = source
            .open(0)
            .await
            .map_err(|source| RegistryError::Source {
                digest: digest.clone(),
                source,
            })?;
        self.upload_blob(repository, digest, size, data, progress)
            .await
    }
    /// Streams a blob from `offset` (an HTTP Range request when `offset > 0`;
    /// if the registry ignores the range, the skipped prefix is discarded
    /// here). The stream is length-checked but not digest-checked: a resumed
    /// download cannot be, so the caller verifies while writing
    /// (`BlobWriter::commit(Some(digest))` hashes the whole blob).
    async fn get_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobDownload, RegistryError>;
    /// A manifest by tag or digest, with OCI and Docker manifest media types
    /// accepted. Bounded in size; digest-checked.
    async fn get_manifest(
        &self,
        repository: &Repository,
        reference: &ManifestReference,
    ) -> Result<RemoteManifest, RegistryError>;
    /// Stores a manifest under a tag or its digest; returns its digest. The
    /// registry refuses it (`Rejected`) when a blob it names is missing.
    async fn put_manifest(
        &self,
        repository: &Repository,
        reference: &ManifestReference,
        manifest: Bytes,
        media_type: &str,
    ) -> Result<Digest, RegistryError>;
    /// Every tag of a repository (following pagination), sorted.
    async fn list_tags(&self, repository: &Repository) -> Result<Vec<Tag>, RegistryError>;
    /// The registry, for logs and messages (`registry.example.com:5000`).
    fn describe(&self) -> String;
}
