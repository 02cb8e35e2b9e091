//! Embedding vmr's core in another program, without gRPC and with an adapter
//! of your own: here a wrapper of the store's `Manifests` port that counts
//! what is written, in front of the in-memory store, joined with that
//! store's blobs and upkeep by `StoreParts`. Any type that implements a port
//! can stand in for vmr's adapters.
//!
//! Run: `cargo run -p vmr-app --example embed`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use vmr_adapters::blobstore::OpendalStore;
use vmr_app::service::{ImageService, NoVms};
use vmr_domain::image::{Repository, Tag};
use vmr_ports::blobstore::{BlobStore, Manifests, StoreError, StoreParts, StoreUpkeep as _};
use vmr_ports::driving::{DiskSource, ImageUseCases, ImportRequest};

/// A manifests adapter of our own: counts writes, delegates the rest.
struct CountingStore {
    inner: Arc<dyn Manifests>,
    manifests_written: AtomicU64,
}

#[async_trait]
impl Manifests for CountingStore {
    async fn put_manifest(
        &self,
        repository: &Repository,
        tag: &Tag,
        manifest: Bytes,
    ) -> Result<(), StoreError> {
        self.manifests_written.fetch_add(1, Ordering::Relaxed);
        self.inner.put_manifest(repository, tag, manifest).await
    }
    async fn get_manifest(&self, repository: &Repository, tag: &Tag) -> Result<Bytes, StoreError> {
        self.inner.get_manifest(repository, tag).await
    }
    async fn delete_manifest(&self, repository: &Repository, tag: &Tag) -> Result<(), StoreError> {
        self.inner.delete_manifest(repository, tag).await
    }
    async fn list_manifests(&self) -> Result<Vec<(Repository, Tag)>, StoreError> {
        self.inner.list_manifests().await
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let memory: Arc<dyn BlobStore> = Arc::new(OpendalStore::memory()?);
    let counting = Arc::new(CountingStore {
        inner: Arc::clone(&memory) as Arc<dyn Manifests>,
        manifests_written: AtomicU64::new(0),
    });
    let store = Arc::new(StoreParts::with_manifests(memory, counting.clone()));
    let images = ImageService::new(store.clone(), Arc::new(NoVms));

    let disk = Bytes::from(vec![0u8; 1024 * 1024]);
    let request = ImportRequest {
        vmfile: "apiVersion: v1\nmetadata: {name: demo/blank}\nspec:\n  diskImage: blank.raw\n  diskFormat: raw\n  resources: {cpu: 1, memory: 256MiB}\n".into(),
        tags: vec!["v1".into(), "stable".into()],
        disk_size: disk.len() as u64,
        disk_digest: None,
        disk_file_name: Some("blank.raw".into()),
    };
    let upload = futures::stream::iter([Ok(disk)]);
    let outcome = images
        .import(request, DiskSource::Stream(Box::pin(upload)))
        .await?;
    println!(
        "imported {} as {}",
        outcome.image.digest,
        outcome.references.join(", ")
    );
    for image in images.list(None).await? {
        println!("{} {:?} {} bytes", image.repository, image.tags, image.size);
    }
    println!(
        "{} manifest writes went through our adapter ({})",
        counting.manifests_written.load(Ordering::Relaxed),
        store.describe()
    );
    Ok(())
}
