//! The store's manifests over opendal: `manifests/<repository>/<tag>/manifest.json`,
//! written durably (an fsynced rename) on the filesystem.

use async_trait::async_trait;
use bytes::Bytes;
use opendal::ErrorKind;
use vmr_domain::image::{Repository, Tag};
use vmr_ports::blobstore::{Manifests, StoreError};

use super::error::backend_error;
use super::layout::{self, MANIFESTS_DIR, manifest_key};
use super::{Backend, Inner, OpendalStore, local};

impl Inner {
    fn manifest_error(
        &self,
        repository: &Repository,
        tag: &Tag,
        doing: &str,
        err: opendal::Error,
    ) -> StoreError {
        if err.kind() == ErrorKind::NotFound {
            StoreError::ManifestNotFound {
                repository: repository.to_string(),
                tag: tag.to_string(),
            }
        } else {
            backend_error(
                &format!("{doing} {repository}:{tag} in {}", self.description),
                err,
            )
        }
    }
}

#[async_trait]
impl Manifests for OpendalStore {
    async fn put_manifest(
        &self,
        repository: &Repository,
        tag: &Tag,
        manifest: Bytes,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let key = manifest_key(repository, tag);
        match &inner.backend {
            Backend::Filesystem { root } => {
                local::write_durably(root, &key, &inner.temp_dir, &inner.temps, manifest).await
            }
            Backend::Remote { .. } => inner
                .op
                .write(&key, manifest)
                .await
                .map(drop)
                .map_err(|e| inner.manifest_error(repository, tag, "writing manifest", e)),
        }
    }

    async fn get_manifest(&self, repository: &Repository, tag: &Tag) -> Result<Bytes, StoreError> {
        let inner = &self.inner;
        if let Backend::Filesystem { root } = &inner.backend {
            return match tokio::fs::read(root.join(manifest_key(repository, tag))).await {
                Ok(bytes) => Ok(Bytes::from(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(StoreError::ManifestNotFound {
                        repository: repository.to_string(),
                        tag: tag.to_string(),
                    })
                }
                Err(e) => Err(StoreError::Io(e)),
            };
        }
        let buffer = inner
            .op
            .read(&manifest_key(repository, tag))
            .await
            .map_err(|e| inner.manifest_error(repository, tag, "reading manifest", e))?;
        Ok(buffer.to_bytes())
    }

    async fn delete_manifest(&self, repository: &Repository, tag: &Tag) -> Result<(), StoreError> {
        let inner = &self.inner;
        let key = manifest_key(repository, tag);
        inner
            .op
            .delete(&key)
            .await
            .map_err(|e| inner.manifest_error(repository, tag, "deleting manifest", e))?;
        if let Backend::Filesystem { root } = &inner.backend {
            local::prune_empty_dirs(root, &key).await?;
        }
        Ok(())
    }

    async fn list_manifests(&self) -> Result<Vec<(Repository, Tag)>, StoreError> {
        if let Backend::Filesystem { root } = &self.inner.backend {
            let root = root.clone();
            return tokio::task::spawn_blocking(move || local::list_manifest_keys(&root))
                .await
                .map_err(|e| StoreError::task("listing manifests", e))?;
        }
        let entries = match self
            .inner
            .op
            .list_with(&format!("{MANIFESTS_DIR}/"))
            .recursive(true)
            .await
        {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(backend_error("listing manifests", e)),
        };
        let mut manifests: Vec<_> = entries
            .iter()
            .filter_map(|entry| layout::parse_manifest_key(entry.path()))
            .collect();
        manifests.sort();
        manifests.dedup();
        Ok(manifests)
    }
}
