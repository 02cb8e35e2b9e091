//! Image use cases: import from a VMFile, list, inspect, tag, remove, prune.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use vmr_domain::image::{Digest, DiskFormat, Manifest, Reference, Repository, Tag};

use super::UseCaseError;

/// The disk's bytes as they arrive from a client.
pub type UploadStream = BoxStream<'static, Result<Bytes, UseCaseError>>;

/// Where an import's disk comes from.
pub enum DiskSource {
    /// Bytes streamed by the client.
    Stream(UploadStream),
    /// An open regular file of `size` bytes that a local caller handed over
    /// (never a path). It is read from offset 0 with positional reads, and
    /// the stored blob is hashed from what the store wrote, not from the
    /// file again: the caller may still change it.
    File { file: std::fs::File, size: u64 },
}

impl From<UploadStream> for DiskSource {
    fn from(stream: UploadStream) -> Self {
        Self::Stream(stream)
    }
}

impl std::fmt::Debug for DiskSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stream(_) => f.write_str("DiskSource::Stream"),
            Self::File { size, .. } => write!(f, "DiskSource::File({size} bytes)"),
        }
    }
}

/// What a client sends before the disk.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The VMFile's YAML text.
    pub vmfile: String,
    /// Tags to write; empty means `latest`.
    pub tags: Vec<String>,
    /// Exact length of the disk that follows.
    pub disk_size: u64,
    /// Optional digest the disk must hash to.
    pub disk_digest: Option<String>,
    /// The disk's file name, for the layer's title annotation.
    pub disk_file_name: Option<String>,
}

/// One image (one manifest) and the tags that point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub repository: Repository,
    pub tags: Vec<Tag>,
    pub digest: Digest,
    /// Bytes of the manifest, its config and its layers.
    pub size: u64,
    pub disk_format: DiskFormat,
    pub created: String,
    pub cpu: u32,
    pub memory_bytes: u64,
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct ImageDetails {
    pub info: ImageInfo,
    pub manifest: Manifest,
    pub manifest_bytes: Bytes,
    pub config_bytes: Bytes,
}

#[derive(Debug, Clone)]
pub struct ImportOutcome {
    pub image: ImageInfo,
    /// `repository:tag` written.
    pub references: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoveOutcome {
    pub untagged: Vec<String>,
    pub deleted: Vec<Digest>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOutcome {
    pub untagged: Vec<String>,
    pub deleted: Vec<Digest>,
    pub reclaimed_bytes: u64,
}

/// What `check` can find wrong in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoreProblemKind {
    /// A blob's content no longer hashes to its name.
    CorruptBlob,
    /// A tag's manifest names a blob the store does not have.
    DanglingManifestBlob,
    /// A tag's manifest is not a valid image manifest.
    UnparsableManifest,
    /// A temporary that no writer owns (left by a crash).
    LeftoverTemporary,
    /// A lease record or collection announcement in a shared store that
    /// its host stopped renewing (it died or lost the store): it pins
    /// nothing any more, and the next collection on any host removes it.
    ExpiredLease,
}

/// One problem `check` found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoreProblem {
    pub kind: StoreProblemKind,
    /// The blob digest, `repository:tag`, the temporary's name, or the
    /// expired lease's key.
    pub subject: String,
    pub message: String,
}

/// The outcome of a store check: problems are findings, not errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCheck {
    pub problems: Vec<StoreProblem>,
    pub blobs_checked: u64,
    pub manifests_checked: u64,
}

#[async_trait]
pub trait ImageUseCases: Send + Sync {
    /// Stores the disk, its config and manifest, then writes the tags. On any
    /// failure nothing becomes visible.
    async fn import(
        &self,
        request: ImportRequest,
        disk: DiskSource,
    ) -> Result<ImportOutcome, UseCaseError>;
    /// Every local image, optionally of one repository.
    async fn list(&self, repository: Option<Repository>) -> Result<Vec<ImageInfo>, UseCaseError>;
    async fn inspect(&self, reference: &Reference) -> Result<ImageDetails, UseCaseError>;
    /// Points `target` at the manifest `source` points at.
    async fn tag(&self, source: &Reference, target: &Reference) -> Result<Digest, UseCaseError>;
    /// Removes a tag (or, for a digest reference, every tag of that image),
    /// then collects the blobs no longer referenced. An image in use by a VM
    /// is refused unless `force`.
    async fn remove(
        &self,
        reference: &Reference,
        force: bool,
    ) -> Result<RemoveOutcome, UseCaseError>;
    /// Removes blobs that no manifest and no VM references; with `all`, first
    /// removes every tag no VM uses.
    async fn prune(&self, all: bool) -> Result<PruneOutcome, UseCaseError>;
    /// Re-hashes every blob, checks that every tag's manifest parses and that
    /// all its blobs exist, and lists leftover temporaries.
    async fn check(&self) -> Result<StoreCheck, UseCaseError>;
}
