//! An in-memory index of the store's manifests (tag → manifest bytes), for a
//! store this daemon alone writes (`BlobStore::is_exclusive`): listing and
//! resolving tags then costs map lookups instead of a directory walk and a
//! file read per tag. It wraps the store every use case shares, so each
//! manifest write (import, tag, rmi, pull, repairs) passes through it and
//! updates it after the store has accepted the write. Blobs are not indexed:
//! every blob call goes straight to the store.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Mutex;
use vmr_domain::image::{Digest, Repository, Tag};
use vmr_ports::blobstore::{BlobStore, BlobWriter, ByteStream, StoreError};

type Manifests = BTreeMap<(Repository, Tag), Bytes>;

/// A store whose manifests are read once, then served from memory.
pub struct IndexedStore {
    inner: Arc<dyn BlobStore>,
    /// The current index; `None` until first loaded. Readers clone the
    /// `Arc` and never wait on a writer's store I/O.
    index: std::sync::RwLock<Option<Arc<Manifests>>>,
    /// Serialises loading and manifest writes, so a load never installs a
    /// listing older than a write that finished before it.
    writes: Mutex<()>,
}

impl IndexedStore {
    /// Wraps an exclusive store; a shared one (S3) is returned as it is.
    pub fn wrap(inner: Arc<dyn BlobStore>) -> Arc<dyn BlobStore> {
        if inner.is_exclusive() {
            Arc::new(Self {
                inner,
                index: std::sync::RwLock::new(None),
                writes: Mutex::new(()),
            })
        } else {
            inner
        }
    }

    fn current(&self) -> Option<Arc<Manifests>> {
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn install(&self, manifests: Arc<Manifests>) {
        *self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(manifests);
    }

    /// The index, read from the store the first time.
    async fn manifests(&self) -> Result<Arc<Manifests>, StoreError> {
        if let Some(index) = self.current() {
            return Ok(index);
        }
        let _writes = self.writes.lock().await;
        if let Some(index) = self.current() {
            return Ok(index);
        }
        let mut manifests = Manifests::new();
        for (repository, tag) in self.inner.list_manifests().await? {
            match self.inner.get_manifest(&repository, &tag).await {
                Ok(bytes) => {
                    manifests.insert((repository, tag), bytes);
                }
                Err(StoreError::ManifestNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let manifests = Arc::new(manifests);
        self.install(Arc::clone(&manifests));
        tracing::debug!(tags = manifests.len(), "manifest index loaded");
        Ok(manifests)
    }

    /// Applies a change to a loaded index (copy on write; writes are rare).
    fn update(&self, change: impl FnOnce(&mut Manifests)) {
        if let Some(current) = self.current() {
            let mut next = Manifests::clone(&current);
            change(&mut next);
            self.install(Arc::new(next));
        }
    }
}

#[async_trait]
impl BlobStore for IndexedStore {
    async fn begin_blob(&self) -> Result<Box<dyn BlobWriter>, StoreError> {
        self.inner.begin_blob().await
    }

    async fn resume_blob(&self, expected: &Digest) -> Result<Box<dyn BlobWriter>, StoreError> {
        self.inner.resume_blob(expected).await
    }
    async fn place_blob(
        &self,
        expected: &Digest,
        size: u64,
    ) -> Result<Box<dyn vmr_ports::PlacedWriter>, StoreError> {
        self.inner.place_blob(expected, size).await
    }

    async fn blob_exists(&self, digest: &Digest) -> Result<bool, StoreError> {
        self.inner.blob_exists(digest).await
    }

    async fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        self.inner.blob_size(digest).await
    }

    async fn read_blob(&self, digest: &Digest) -> Result<Bytes, StoreError> {
        self.inner.read_blob(digest).await
    }

    async fn open_blob(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StoreError> {
        self.inner.open_blob(digest, range).await
    }

    async fn verify_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        self.inner.verify_blob(digest).await
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        self.inner.delete_blob(digest).await
    }

    async fn list_blobs(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        self.inner.list_blobs().await
    }

    async fn put_manifest(
        &self,
        repository: &Repository,
        tag: &Tag,
        manifest: Bytes,
    ) -> Result<(), StoreError> {
        let _writes = self.writes.lock().await;
        self.inner
            .put_manifest(repository, tag, manifest.clone())
            .await?;
        self.update(|m| {
            m.insert((repository.clone(), tag.clone()), manifest);
        });
        Ok(())
    }

    async fn get_manifest(&self, repository: &Repository, tag: &Tag) -> Result<Bytes, StoreError> {
        // Keyed by owned names: one lookup clones them (cheap next to a read).
        self.manifests()
            .await?
            .get(&(repository.clone(), tag.clone()))
            .cloned()
            .ok_or_else(|| StoreError::ManifestNotFound {
                repository: repository.to_string(),
                tag: tag.to_string(),
            })
    }

    async fn delete_manifest(&self, repository: &Repository, tag: &Tag) -> Result<(), StoreError> {
        let _writes = self.writes.lock().await;
        let result = self.inner.delete_manifest(repository, tag).await;
        // Even a failed delete may have removed the file: forget the index
        // and read it again next time rather than guess.
        match &result {
            Ok(()) => self.update(|m| {
                m.remove(&(repository.clone(), tag.clone()));
            }),
            Err(_) => {
                *self
                    .index
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            }
        }
        result
    }

    async fn list_manifests(&self) -> Result<Vec<(Repository, Tag)>, StoreError> {
        Ok(self.manifests().await?.keys().cloned().collect())
    }

    async fn local_path(&self, digest: &Digest) -> Result<PathBuf, StoreError> {
        self.inner.local_path(digest).await
    }

    async fn clean_temporaries(&self) -> Result<usize, StoreError> {
        self.inner.clean_temporaries().await
    }

    async fn list_temporaries(&self) -> Result<Vec<String>, StoreError> {
        self.inner.list_temporaries().await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn is_exclusive(&self) -> bool {
        self.inner.is_exclusive()
    }

    async fn reload(&self) {
        let _writes = self.writes.lock().await;
        *self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.inner.reload().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmr_adapters::blobstore::OpendalStore;

    fn name(s: &str) -> (Repository, Tag) {
        let (r, t) = s.split_once(':').unwrap();
        (r.parse().unwrap(), t.parse().unwrap())
    }

    #[tokio::test]
    async fn serves_tags_from_memory_and_follows_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn BlobStore> = Arc::new(OpendalStore::filesystem(dir.path()).unwrap());
        let (repo, one) = name("demo/a:1");
        let (_, two) = name("demo/a:2");
        fs.put_manifest(&repo, &one, Bytes::from_static(b"{\"v\":1}"))
            .await
            .unwrap();
        let store = IndexedStore::wrap(Arc::clone(&fs));

        assert_eq!(
            store.list_manifests().await.unwrap(),
            vec![name("demo/a:1")]
        );
        // Loaded: the file is no longer read (removed behind its back, the
        // index still answers).
        std::fs::remove_dir_all(dir.path().join("manifests")).unwrap();
        assert_eq!(
            store.get_manifest(&repo, &one).await.unwrap(),
            Bytes::from_static(b"{\"v\":1}")
        );

        store
            .put_manifest(&repo, &two, Bytes::from_static(b"{\"v\":2}"))
            .await
            .unwrap();
        assert_eq!(
            store.list_manifests().await.unwrap(),
            vec![name("demo/a:1"), name("demo/a:2")]
        );
        assert_eq!(
            fs.get_manifest(&repo, &two).await.unwrap().as_ref(),
            b"{\"v\":2}"
        );

        store.delete_manifest(&repo, &two).await.unwrap();
        assert_eq!(
            store.list_manifests().await.unwrap(),
            vec![name("demo/a:1")]
        );
        assert!(matches!(
            store.get_manifest(&repo, &two).await,
            Err(StoreError::ManifestNotFound { .. })
        ));
        assert!(matches!(
            fs.get_manifest(&repo, &two).await,
            Err(StoreError::ManifestNotFound { .. })
        ));
    }

    #[tokio::test]
    async fn a_write_before_the_first_read_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn BlobStore> = Arc::new(OpendalStore::filesystem(dir.path()).unwrap());
        let store = IndexedStore::wrap(fs);
        let (repo, tag) = name("demo/b:latest");
        store
            .put_manifest(&repo, &tag, Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(
            store.list_manifests().await.unwrap(),
            vec![name("demo/b:latest")]
        );
    }

    #[test]
    fn only_exclusive_stores_are_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn BlobStore> = Arc::new(OpendalStore::filesystem(dir.path()).unwrap());
        assert!(fs.is_exclusive());
        let memory: Arc<dyn BlobStore> = Arc::new(OpendalStore::memory().unwrap());
        assert!(memory.is_exclusive());
        let wrapped = IndexedStore::wrap(Arc::clone(&fs));
        assert!(!Arc::ptr_eq(&wrapped, &fs));
    }
}
