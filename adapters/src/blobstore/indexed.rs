//! An in-memory index of the store's manifests (tag → manifest bytes), for a
//! store this daemon alone writes ([`OpendalStore::is_exclusive`]): listing and
//! resolving tags then costs map lookups instead of a directory walk and a
//! file read per tag. It wraps the store every use case shares, so each
//! manifest write (import, tag, rmi, pull, repairs) passes through it and
//! updates it after the store has accepted the write. Blobs are not indexed:
//! joined with the store's own blobs and upkeep (`StoreParts`), every blob
//! call goes straight to the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Mutex;
use vmr_domain::image::{Repository, Tag};
use vmr_ports::blobstore::{Manifests, StoreCache, StoreError};

#[cfg(doc)]
use super::OpendalStore;

type Index = BTreeMap<(Repository, Tag), Bytes>;

/// A store's manifests, read once, then served from memory.
pub struct IndexedManifests {
    inner: Arc<dyn Manifests>,
    /// The current index; `None` until first loaded. Readers clone the
    /// `Arc` and never wait on a writer's store I/O.
    index: std::sync::RwLock<Option<Arc<Index>>>,
    /// Serialises loading and manifest writes, so a load never installs a
    /// listing older than a write that finished before it.
    writes: Mutex<()>,
}

impl IndexedManifests {
    /// Indexes the manifests of `inner`, which this daemon alone must write:
    /// a change by anyone else is seen only after [`StoreCache::reload`].
    pub fn new(inner: Arc<dyn Manifests>) -> Self {
        Self {
            inner,
            index: std::sync::RwLock::new(None),
            writes: Mutex::new(()),
        }
    }

    /// Forgets the index: the next read loads it from the store again.
    fn forget(&self) {
        *self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn current(&self) -> Option<Arc<Index>> {
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn install(&self, manifests: Arc<Index>) {
        *self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(manifests);
    }

    /// The index, read from the store the first time.
    async fn manifests(&self) -> Result<Arc<Index>, StoreError> {
        if let Some(index) = self.current() {
            return Ok(index);
        }
        let _writes = self.writes.lock().await;
        if let Some(index) = self.current() {
            return Ok(index);
        }
        let mut manifests = Index::new();
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
    fn update(&self, change: impl FnOnce(&mut Index)) {
        if let Some(current) = self.current() {
            let mut next = Index::clone(&current);
            change(&mut next);
            self.install(Arc::new(next));
        }
    }
}

#[async_trait]
impl Manifests for IndexedManifests {
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
            Err(_) => self.forget(),
        }
        result
    }

    async fn list_manifests(&self) -> Result<Vec<(Repository, Tag)>, StoreError> {
        Ok(self.manifests().await?.keys().cloned().collect())
    }
}

#[async_trait]
impl StoreCache for IndexedManifests {
    async fn reload(&self) {
        let _writes = self.writes.lock().await;
        self.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobstore::OpendalStore;

    fn name(s: &str) -> (Repository, Tag) {
        let (r, t) = s.split_once(':').unwrap();
        (r.parse().unwrap(), t.parse().unwrap())
    }

    #[tokio::test]
    async fn serves_tags_from_memory_and_follows_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn Manifests> = Arc::new(OpendalStore::filesystem(dir.path()).unwrap());
        let (repo, one) = name("demo/a:1");
        let (_, two) = name("demo/a:2");
        fs.put_manifest(&repo, &one, Bytes::from_static(b"{\"v\":1}"))
            .await
            .unwrap();
        let store = IndexedManifests::new(Arc::clone(&fs));

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
        let fs: Arc<dyn Manifests> = Arc::new(OpendalStore::filesystem(dir.path()).unwrap());
        let store = IndexedManifests::new(fs);
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

    #[tokio::test]
    async fn reload_shows_what_changed_behind_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn Manifests> = Arc::new(OpendalStore::filesystem(dir.path()).unwrap());
        let store = IndexedManifests::new(Arc::clone(&fs));
        let (repo, tag) = name("demo/c:1");
        assert_eq!(store.list_manifests().await.unwrap(), vec![]);
        // Written by hand, past the index.
        fs.put_manifest(&repo, &tag, Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(store.list_manifests().await.unwrap(), vec![]);
        store.reload().await;
        assert_eq!(
            store.list_manifests().await.unwrap(),
            vec![name("demo/c:1")]
        );
    }
}
