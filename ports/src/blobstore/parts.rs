//! A store assembled from parts, so that an adapter wrapping one port of a
//! store (its manifests, say) serves with the rest of that store as it is.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use vmr_domain::image::{Digest, Repository, Tag};

use super::{
    BlobStore, BlobWriter, Blobs, ByteStream, Manifests, PlacedWriter, StoreError, StoreUpkeep,
};

/// Blobs, manifests and upkeep, each from an object of its own.
pub struct StoreParts {
    blobs: Arc<dyn Blobs>,
    manifests: Arc<dyn Manifests>,
    upkeep: Arc<dyn StoreUpkeep>,
}

impl StoreParts {
    /// `store`, with its manifests served by `manifests` (which usually
    /// wraps those of `store`).
    pub fn with_manifests(store: Arc<dyn BlobStore>, manifests: Arc<dyn Manifests>) -> Self {
        Self {
            blobs: Arc::clone(&store) as Arc<dyn Blobs>,
            manifests,
            upkeep: store,
        }
    }
}

#[async_trait]
impl Blobs for StoreParts {
    async fn begin_blob(&self) -> Result<Box<dyn BlobWriter>, StoreError> {
        self.blobs.begin_blob().await
    }
    async fn resume_blob(&self, expected: &Digest) -> Result<Box<dyn BlobWriter>, StoreError> {
        self.blobs.resume_blob(expected).await
    }
    async fn place_blob(
        &self,
        expected: &Digest,
        size: u64,
    ) -> Result<Box<dyn PlacedWriter>, StoreError> {
        self.blobs.place_blob(expected, size).await
    }
    async fn blob_exists(&self, digest: &Digest) -> Result<bool, StoreError> {
        self.blobs.blob_exists(digest).await
    }
    async fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        self.blobs.blob_size(digest).await
    }
    async fn read_blob(&self, digest: &Digest) -> Result<Bytes, StoreError> {
        self.blobs.read_blob(digest).await
    }
    async fn open_blob(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StoreError> {
        self.blobs.open_blob(digest, range).await
    }
    async fn verify_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        self.blobs.verify_blob(digest).await
    }
    async fn delete_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        self.blobs.delete_blob(digest).await
    }
    async fn list_blobs(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        self.blobs.list_blobs().await
    }
    async fn local_path(&self, digest: &Digest) -> Result<PathBuf, StoreError> {
        self.blobs.local_path(digest).await
    }
}

#[async_trait]
impl Manifests for StoreParts {
    async fn put_manifest(
        &self,
        repository: &Repository,
        tag: &Tag,
        manifest: Bytes,
    ) -> Result<(), StoreError> {
        self.manifests.put_manifest(repository, tag, manifest).await
    }
    async fn get_manifest(&self, repository: &Repository, tag: &Tag) -> Result<Bytes, StoreError> {
        self.manifests.get_manifest(repository, tag).await
    }
    async fn delete_manifest(&self, repository: &Repository, tag: &Tag) -> Result<(), StoreError> {
        self.manifests.delete_manifest(repository, tag).await
    }
    async fn list_manifests(&self) -> Result<Vec<(Repository, Tag)>, StoreError> {
        self.manifests.list_manifests().await
    }
}

#[async_trait]
impl StoreUpkeep for StoreParts {
    async fn clean_temporaries(&self) -> Result<usize, StoreError> {
        self.upkeep.clean_temporaries().await
    }
    async fn list_temporaries(&self) -> Result<Vec<String>, StoreError> {
        self.upkeep.list_temporaries().await
    }
    fn describe(&self) -> String {
        self.upkeep.describe()
    }
}
