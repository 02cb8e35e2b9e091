//! Embedding vmr's core in another program, without gRPC and with an adapter
//! of your own: here a `BlobStore` wrapper that counts what is written, in
//! front of the in-memory store. Any type that implements a port can stand in
//! for vmr's adapters.
//!
//! Run: `cargo run -p vmr-app --example embed`

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use vmr_adapters::blobstore::OpendalStore;
use vmr_app::service::{ImageService, NoVms};
use vmr_domain::image::{Digest, Repository, Tag};
use vmr_ports::blobstore::{BlobStore, BlobWriter, ByteStream, StoreError};
use vmr_ports::driving::{DiskSource, ImageUseCases, ImportRequest};

/// A store adapter of our own: counts manifest writes, delegates the rest.
struct CountingStore {
    inner: Arc<dyn BlobStore>,
    manifests_written: AtomicU64,
}

#[async_trait]
impl BlobStore for CountingStore {
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
        format!("counting({})", self.inner.describe())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let store = Arc::new(CountingStore {
        inner: Arc::new(OpendalStore::memory()?),
        manifests_written: AtomicU64::new(0),
    });
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
        store.manifests_written.load(Ordering::Relaxed),
        store.describe()
    );
    Ok(())
}
