//! The manifests of the store, named by repository and tag.

use async_trait::async_trait;
use bytes::Bytes;
use vmr_domain::image::{Repository, Tag};

use super::StoreError;

/// Tags and their manifest bytes.
#[async_trait]
pub trait Manifests: Send + Sync {
    /// Writes `manifests/<repository>/<tag>/manifest.json` atomically.
    async fn put_manifest(
        &self,
        repository: &Repository,
        tag: &Tag,
        manifest: Bytes,
    ) -> Result<(), StoreError>;
    /// Reads a tag's manifest bytes.
    async fn get_manifest(&self, repository: &Repository, tag: &Tag) -> Result<Bytes, StoreError>;
    /// Removes a tag (no error if absent).
    async fn delete_manifest(&self, repository: &Repository, tag: &Tag) -> Result<(), StoreError>;
    /// Every tag in the store.
    async fn list_manifests(&self) -> Result<Vec<(Repository, Tag)>, StoreError>;
}
