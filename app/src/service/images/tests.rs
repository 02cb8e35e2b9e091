//! Garbage collection against leases: what an import, a tag or a reader
//! holds survives a prune that runs in the middle of it.

use std::sync::Mutex as StdMutex;

use futures::StreamExt as _;
use tokio::sync::oneshot;
use vmr_adapters::blobstore::OpendalStore;
use vmr_ports::blobstore::{Manifests, StoreParts};

use super::*;

const VMFILE: &str = "apiVersion: v1\nmetadata:\n  name: leased\nspec:\n  diskImage: disk.raw\n  diskFormat: raw\n  resources:\n    cpu: 1\n    memory: 64MiB\n";

/// A store that stops the first `put_manifest` until the test lets it go,
/// telling the test it got there.
struct PausingStore {
    inner: Arc<dyn Manifests>,
    pause: StdMutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

#[async_trait]
impl Manifests for PausingStore {
    async fn put_manifest(
        &self,
        repository: &Repository,
        tag: &Tag,
        manifest: Bytes,
    ) -> Result<(), StoreError> {
        let pause = self.pause.lock().expect("pause").take();
        if let Some((arrived, go)) = pause {
            let _ = arrived.send(());
            let _ = go.await;
        }
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

struct Fixture {
    images: Arc<ImageService>,
    store: Arc<dyn BlobStore>,
    _dir: tempfile::TempDir,
}

/// A service over a filesystem store; with `pause`, its first
/// `put_manifest` waits as [`PausingStore`] describes.
fn fixture(pause: Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let inner: Arc<dyn BlobStore> =
        Arc::new(OpendalStore::filesystem(dir.path().join("store")).expect("store"));
    let pausing = Arc::new(PausingStore {
        inner: Arc::clone(&inner) as Arc<dyn Manifests>,
        pause: StdMutex::new(pause),
    });
    let store: Arc<dyn BlobStore> = Arc::new(StoreParts::with_manifests(inner, pausing));
    let images = Arc::new(ImageService::new(store.clone(), Arc::new(NoVms)));
    Fixture {
        images,
        store,
        _dir: dir,
    }
}

async fn import(images: &ImageService, tag: &str, disk: &'static [u8]) -> ImportOutcome {
    let request = ImportRequest {
        vmfile: VMFILE.into(),
        tags: vec![tag.into()],
        disk_size: disk.len() as u64,
        disk_digest: None,
        disk_file_name: None,
    };
    let stream = futures::stream::iter([Ok(Bytes::from_static(disk))]).boxed();
    images.import(request, stream.into()).await.expect("import")
}

#[tokio::test]
async fn a_prune_while_an_import_writes_its_tag_deletes_none_of_its_blobs() {
    let (arrived_tx, arrived) = oneshot::channel();
    let (go, go_rx) = oneshot::channel();
    let fixture = fixture(Some((arrived_tx, go_rx)));
    let images = fixture.images.clone();
    let importing = tokio::spawn(async move { import(&images, "v1", b"disk bytes").await });
    arrived.await.expect("the import reaches its tag");
    // Disk, config and manifest are committed and no tag names them yet.
    assert_eq!(fixture.store.list_blobs().await.expect("list").len(), 3);

    let pruned = fixture.images.prune(false).await.expect("prune");
    assert!(pruned.deleted.is_empty(), "pruned {:?}", pruned.deleted);
    go.send(()).expect("resume");
    let outcome = importing.await.expect("import task");

    let check = fixture.images.check().await.expect("check");
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    assert_eq!(check.manifests_checked, 1);
    let reference: Reference = outcome.references[0].parse().expect("reference");
    fixture.images.inspect(&reference).await.expect("inspect");
}

#[tokio::test]
async fn a_leased_blob_is_kept_until_its_lease_is_dropped() {
    let fixture = fixture(None);
    let mut writer = fixture.store.begin_blob().await.expect("writer");
    writer
        .write(Bytes::from_static(b"orphan"))
        .await
        .expect("write");
    let digest = Digest::of(b"orphan");
    let lease = fixture.images.lease([digest.clone()]).await;
    writer.commit(Some(&digest)).await.expect("commit");

    let pruned = fixture.images.prune(false).await.expect("prune");
    assert!(pruned.deleted.is_empty());
    assert!(fixture.store.blob_exists(&digest).await.expect("exists"));

    drop(lease);
    let pruned = fixture.images.prune(false).await.expect("prune");
    assert_eq!(pruned.deleted, vec![digest.clone()]);
    assert!(!fixture.store.blob_exists(&digest).await.expect("exists"));
}

#[tokio::test]
async fn an_image_resolved_with_a_lease_survives_its_removal_until_released() {
    let fixture = fixture(None);
    let outcome = import(&fixture.images, "v1", b"the disk").await;
    let reference: Reference = outcome.references[0].parse().expect("reference");
    let blobs: Vec<Digest> = fixture
        .store
        .list_blobs()
        .await
        .expect("list")
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(blobs.len(), 3);

    let (_, manifest_bytes, lease) = fixture
        .images
        .resolve_leased(&reference)
        .await
        .expect("resolve");
    let removed = fixture.images.remove(&reference, false).await.expect("rmi");
    assert!(removed.deleted.is_empty(), "deleted {:?}", removed.deleted);
    // What the reader got still names blobs that exist: a tag written from
    // it now (as `tag` does) would not dangle.
    let manifest = Manifest::from_json(&manifest_bytes).expect("manifest");
    for descriptor in manifest.blobs() {
        assert!(
            fixture
                .store
                .blob_exists(&descriptor.digest)
                .await
                .expect("exists")
        );
    }

    drop(lease);
    let pruned = fixture.images.prune(false).await.expect("prune");
    assert_eq!(pruned.deleted.len(), 3);
}

#[tokio::test]
async fn one_manifest_under_two_names_lists_each_with_its_own_name_and_tags() {
    let fixture = fixture(None);
    let images = &fixture.images;
    import(images, "v1", b"same disk").await;
    // Listed once, so the manifest's summary is cached under its digest.
    let first = images.list(None).await.expect("list");
    assert_eq!(first.len(), 1);
    let source: Reference = "leased:v1".parse().expect("reference");
    let other: Reference = "other/name:blue".parse().expect("reference");
    images.tag(&source, &other).await.expect("tag");
    images
        .tag(&source, &"leased:v2".parse().expect("reference"))
        .await
        .expect("tag");

    let listed = images.list(None).await.expect("list");
    let summary: Vec<(String, Vec<String>)> = listed
        .iter()
        .map(|i| {
            let tags = i.tags.iter().map(ToString::to_string).collect();
            (i.repository.to_string(), tags)
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("leased".to_owned(), vec!["v1".to_owned(), "v2".to_owned()]),
            ("other/name".to_owned(), vec!["blue".to_owned()]),
        ]
    );
    assert!(listed.iter().all(|i| i.digest == first[0].digest));
    let details = images.inspect(&other).await.expect("inspect");
    assert_eq!(details.info.repository.to_string(), "other/name");
    assert_eq!(details.info.tags.len(), 1);
}

#[tokio::test]
async fn a_retagged_name_lists_its_new_digest_with_or_without_the_index() {
    let fixture = fixture(None);
    let index = Arc::new(vmr_adapters::blobstore::IndexedManifests::new(
        Arc::clone(&fixture.store) as Arc<dyn Manifests>,
    ));
    let indexed: Arc<dyn BlobStore> = Arc::new(StoreParts::with_manifests(
        fixture.store.clone(),
        index.clone(),
    ));
    let through_index = ImageService::new(indexed.clone(), Arc::new(NoVms)).with_cache(index);
    for images in [&*fixture.images, &through_index] {
        let first = import(images, "v1", b"first disk").await;
        let listed = images.list(None).await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].digest, first.image.digest);
        // Listed again: the same digest, now from the memo.
        assert_eq!(
            images.list(None).await.expect("list")[0].digest,
            first.image.digest
        );

        // The same name now holds another manifest.
        let second = import(images, "v1", b"second disk").await;
        assert_ne!(second.image.digest, first.image.digest);
        let listed = images.list(None).await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].digest, second.image.digest);
        let stored = indexed
            .get_manifest(
                &"leased".parse().expect("repository"),
                &"v1".parse().expect("tag"),
            )
            .await
            .expect("manifest");
        assert_eq!(listed[0].digest, Digest::of(&stored));
        images
            .remove(&"leased:v1".parse().expect("reference"), true)
            .await
            .expect("remove");
    }
}

/// Another host's view of the bucket, as a collection on a shared store
/// reads it when it begins: only `old` was listed older than the grace.
struct ListedAtStart {
    old: BTreeSet<Digest>,
}

#[async_trait]
impl vmr_ports::leases::SharedLeases for ListedAtStart {
    fn is_shared(&self) -> bool {
        true
    }
    async fn publish(&self, _: &vmr_ports::leases::HostRecord) -> Result<(), StoreError> {
        Ok(())
    }
    async fn begin_collection(&self) -> Result<vmr_ports::leases::CollectionView, StoreError> {
        Ok(vmr_ports::leases::CollectionView {
            old: Some(self.old.clone()),
            ..Default::default()
        })
    }
    async fn renew_collection(
        &self,
        _: &vmr_ports::leases::CollectionView,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    async fn end_collection(
        &self,
        _: vmr_ports::leases::CollectionView,
    ) -> Result<usize, StoreError> {
        Ok(0)
    }
    async fn images_in_use_elsewhere(&self) -> Result<BTreeSet<Digest>, StoreError> {
        Ok(BTreeSet::new())
    }
    async fn expired(&self) -> Result<Vec<vmr_ports::leases::ExpiredLease>, StoreError> {
        Ok(Vec::new())
    }
    async fn withdraw(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// On a shared store a blob that appeared after the collection's listing
/// (another host committed it a moment later, and leases it only once
/// committed) is as young as can be: the sweep, which lists the blobs
/// again, must not delete it.
#[tokio::test]
async fn a_shared_collection_deletes_only_blobs_it_listed_older_than_the_grace_window() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn BlobStore> =
        Arc::new(OpendalStore::filesystem(dir.path().join("store")).expect("store"));
    let mut digests = Vec::new();
    for bytes in [&b"listed and old"[..], b"committed after the listing"] {
        let mut writer = store.begin_blob().await.expect("writer");
        writer
            .write(Bytes::copy_from_slice(bytes))
            .await
            .expect("write");
        digests.push(writer.commit(None).await.expect("commit").0);
    }
    let shared = Arc::new(ListedAtStart {
        old: BTreeSet::from([digests[0].clone()]),
    });
    let images = ImageService::new(store.clone(), Arc::new(NoVms))
        .with_shared_leases(shared, std::time::Duration::from_secs(60));

    let pruned = images.prune(false).await.expect("prune");
    assert_eq!(pruned.deleted, vec![digests[0].clone()]);
    assert!(store.blob_exists(&digests[1]).await.expect("exists"));
}
