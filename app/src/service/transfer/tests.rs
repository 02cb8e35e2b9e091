//! Push and pull against the fake registry and real filesystem stores:
//! what travels, what is skipped, what a cut or corrupt download leaves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use vmr_adapters::blobstore::OpendalStore;
use vmr_adapters::fake::registry::FakeRegistry;
use vmr_domain::image::{Reference, Tag};
use vmr_ports::driving::{ImageUseCases, ImportRequest};
use vmr_ports::{
    BlobDownload, ByteStream, ManifestReference, RegistryClient, RegistryError, RegistryTarget,
    RemoteManifest, UploadProgress,
};

use super::*;
use crate::service::images::NoVms;

const REGISTRY: &str = "http://127.0.0.1:5000";
const HOST: &str = "127.0.0.1:5000";

fn vmfile(name: &str) -> String {
    format!(
        "apiVersion: v1\nmetadata:\n  name: {name}\nspec:\n  diskImage: disk.raw\n  diskFormat: raw\n  resources:\n    cpu: 1\n    memory: 64MiB\n"
    )
}

fn disk(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// One host: a store, its image and transfer services.
struct Host {
    images: Arc<ImageService>,
    transfers: TransferService,
    _dir: tempfile::TempDir,
}

impl Host {
    fn new(registries: Arc<dyn RegistryConnector>) -> Self {
        Self::with(registries, None)
    }

    /// A host that pushes disks over 1 MiB in 1 MiB chunks and moves
    /// `parallel` chunks at once.
    fn chunking(registries: Arc<dyn RegistryConnector>, parallel: usize) -> Self {
        Self::with(registries, Some(parallel))
    }

    fn with(registries: Arc<dyn RegistryConnector>, chunking: Option<usize>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn vmr_ports::BlobStore> =
            Arc::new(OpendalStore::filesystem(dir.path().join("store")).expect("store"));
        let images = Arc::new(ImageService::new(store, Arc::new(NoVms)));
        let contexts = Arc::new(ContextService::new(
            dir.path().join("contexts.json"),
            Some(REGISTRY.into()),
            None,
        ));
        let mut transfers = TransferService::new(images.clone(), contexts, registries);
        if let Some(parallel) = chunking {
            transfers = transfers.with_chunking(ChunkSettings {
                chunk_bytes: 1 << 20,
                parallel,
                staging: dir.path().join("store/chunks"),
            });
        }
        Self {
            images,
            transfers,
            _dir: dir,
        }
    }

    async fn import(&self, name: &str, tag: &str, disk: Vec<u8>) -> Digest {
        let request = ImportRequest {
            vmfile: vmfile(name),
            tags: vec![tag.into()],
            disk_size: disk.len() as u64,
            disk_digest: None,
            disk_file_name: None,
        };
        let stream = futures::stream::iter([Ok(Bytes::from(disk))]).boxed();
        self.images
            .import(request, stream.into())
            .await
            .expect("import")
            .image
            .digest
    }
}

fn request(reference: &str) -> TransferRequest {
    TransferRequest {
        reference: reference.parse().expect("reference"),
        context: String::new(),
        credential: None,
    }
}

/// Every event of a transfer, and how it ended.
async fn follow(
    stream: Result<TransferEventStream, UseCaseError>,
) -> (Vec<BlobProgressSeen>, Result<TransferDone, UseCaseError>) {
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(e) => return (Vec::new(), Err(e)),
    };
    let mut blobs = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(TransferEvent::Blob(blob)) => blobs.push(BlobProgressSeen {
                done: blob.done,
                total: blob.total,
                skipped: blob.skipped,
            }),
            Ok(TransferEvent::Done(done)) => return (blobs, Ok(done)),
            Err(e) => return (blobs, Err(e)),
        }
    }
    panic!("the stream ended without a result");
}

#[derive(Debug)]
struct BlobProgressSeen {
    done: u64,
    total: u64,
    skipped: bool,
}

#[tokio::test]
async fn push_then_pull_elsewhere_keeps_the_digest_and_a_second_push_skips_every_blob() {
    let registry = FakeRegistry::new();
    let here = Host::new(Arc::new(registry.clone()));
    let digest = here.import("team/vm", "1", disk(3 << 20)).await;

    let (events, done) = follow(here.transfers.push(request("team/vm:1")).await).await;
    let done = done.expect("push");
    assert_eq!(done.digest, digest);
    assert_eq!(registry.uploads(HOST), 2, "config and disk uploaded");
    assert!(done.bytes_transferred > 3 << 20);
    assert!(events.iter().all(|e| !e.skipped));
    assert_eq!(
        registry.tags(HOST, &"team/vm".parse().expect("repo")),
        vec!["1".parse::<Tag>().expect("tag")]
    );

    let (events, again) = follow(here.transfers.push(request("team/vm:1")).await).await;
    let again = again.expect("second push");
    assert_eq!(again.bytes_transferred, 0);
    assert_eq!(registry.uploads(HOST), 2, "nothing uploaded again");
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.skipped && e.done == e.total));

    // Another repository of the same registry gets the blobs by mount.
    here.images
        .tag(
            &"team/vm:1".parse().expect("reference"),
            &"other/vm:2".parse().expect("reference"),
        )
        .await
        .expect("tag");
    let (_, mounted) = follow(here.transfers.push(request("other/vm:2")).await).await;
    assert_eq!(mounted.expect("push by mount").bytes_transferred, 0);
    assert_eq!(registry.uploads(HOST), 2);

    // The host part of a reference names the registry; locally it is dropped.
    let there = Host::new(Arc::new(registry.clone()));
    let (_, pulled) = follow(
        there
            .transfers
            .pull(request("127.0.0.1:5000/team/vm:1"))
            .await,
    )
    .await;
    let pulled = pulled.expect("pull");
    assert_eq!(pulled.digest, digest);
    let details = there
        .images
        .inspect(&"team/vm:1".parse().expect("reference"))
        .await
        .expect("pulled image");
    assert_eq!(details.info.digest, digest);
    let disk_digest = &details.manifest.layers[0].digest;
    assert_eq!(
        there
            .images
            .store()
            .read_blob(disk_digest)
            .await
            .expect("disk"),
        Bytes::from(disk(3 << 20))
    );

    // Pulling what is there moves nothing.
    let (events, again) = follow(there.transfers.pull(request("team/vm:1")).await).await;
    assert_eq!(again.expect("second pull").bytes_transferred, 0);
    assert!(events.iter().all(|e| e.skipped));
}

#[tokio::test]
async fn a_pull_by_digest_alone_stores_the_image_untagged() {
    let registry = FakeRegistry::new();
    let source = Host::new(Arc::new(registry.clone()));
    let digest = source.import("team/vm", "1", disk(4096)).await;
    follow(source.transfers.push(request("team/vm:1")).await)
        .await
        .1
        .expect("push");

    let host = Host::new(Arc::new(registry));
    let by_digest = format!("team/vm@{digest}");
    let (_, pulled) = follow(host.transfers.pull(request(&by_digest)).await).await;
    assert_eq!(pulled.expect("pull by digest").digest, digest);
    assert!(
        host.images.list(None).await.expect("list").is_empty(),
        "no tag"
    );
    let reference: Reference = by_digest.parse().expect("reference");
    assert_eq!(
        host.images
            .inspect(&reference)
            .await
            .expect("found by digest")
            .info
            .digest,
        digest
    );
    // With a tag too, it is tagged.
    let tagged = format!("team/vm:2@{digest}");
    follow(host.transfers.pull(request(&tagged)).await)
        .await
        .1
        .expect("pull by digest with a tag");
    let listed = host.images.list(None).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].tags, vec!["2".parse::<Tag>().expect("tag")]);
}

#[tokio::test]
async fn failures_before_any_transfer_fail_the_call() {
    let registry = FakeRegistry::new();
    let host = Host::new(Arc::new(registry.clone()));
    let err = host
        .transfers
        .push(request("team/none:1"))
        .await
        .err()
        .expect("no image");
    assert_eq!(err.kind, ErrorKind::NotFound);
    let err = host
        .transfers
        .pull(request("team/none:1"))
        .await
        .err()
        .expect("no image");
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(
        err.message.contains("team/none:1 not found in registry"),
        "{err}"
    );

    registry.set_unavailable(HOST, true);
    let err = host
        .transfers
        .pull(request("team/none:1"))
        .await
        .err()
        .expect("down");
    assert_eq!(err.kind, ErrorKind::Unavailable);

    let mut unknown = request("team/none:1");
    unknown.context = "nope".into();
    let err = host
        .transfers
        .pull(unknown)
        .await
        .err()
        .expect("no context");
    assert_eq!(err.kind, ErrorKind::NotFound);
}

/// What the tampering client does to blob downloads.
#[derive(Clone, Copy)]
enum Tamper {
    /// Leave downloads alone.
    None,
    /// Flip one byte in the middle.
    Corrupt,
    /// End the first download longer than this with a dropped connection
    /// after this many bytes; later downloads are whole.
    CutOnceAfter(u64),
    /// Every download breaks off after this many bytes.
    CutAlwaysAfter(u64),
    /// Flip one byte in downloads larger than this (chunks, not the config).
    CorruptLargerThan(u64),
    /// Downloads fail as the registry going away once the connector's
    /// `budget` of downloads is spent.
    Budget,
}

/// A registry whose downloads are tampered with; records download offsets.
/// Clones share the tampering and the counters.
#[derive(Clone)]
struct TamperingConnector {
    inner: FakeRegistry,
    tamper: Tamper,
    cut_once: Arc<AtomicBool>,
    offsets: Arc<Mutex<Vec<u64>>>,
    received: Arc<AtomicU64>,
    budget: Arc<AtomicU64>,
}

impl RegistryConnector for TamperingConnector {
    fn connect(&self, target: &RegistryTarget) -> Result<Arc<dyn RegistryClient>, RegistryError> {
        Ok(Arc::new(TamperingClient {
            inner: self.inner.connect(target)?,
            tamper: self.tamper,
            cut_once: self.cut_once.clone(),
            offsets: self.offsets.clone(),
            received: self.received.clone(),
            budget: self.budget.clone(),
        }))
    }
}

struct TamperingClient {
    inner: Arc<dyn RegistryClient>,
    tamper: Tamper,
    cut_once: Arc<AtomicBool>,
    offsets: Arc<Mutex<Vec<u64>>>,
    received: Arc<AtomicU64>,
    budget: Arc<AtomicU64>,
}

fn cut(stream: vmr_ports::RegistryByteStream, after: u64) -> vmr_ports::RegistryByteStream {
    let mut left = after;
    stream
        .map(move |chunk| {
            chunk.map(|c| {
                let take = (c.len() as u64).min(left);
                left -= take;
                c.slice(..take as usize)
            })
        })
        .take_while(|chunk| futures::future::ready(chunk.as_ref().map_or(true, |c| !c.is_empty())))
        .chain(futures::stream::once(async {
            Err(RegistryError::Unavailable {
                registry: HOST.into(),
                message: "connection reset".into(),
            })
        }))
        .boxed()
}

#[async_trait]
impl RegistryClient for TamperingClient {
    async fn ping(&self) -> Result<(), RegistryError> {
        self.inner.ping().await
    }
    async fn blob_exists(&self, r: &Repository, d: &Digest) -> Result<Option<u64>, RegistryError> {
        self.inner.blob_exists(r, d).await
    }
    async fn mount_blob(
        &self,
        r: &Repository,
        d: &Digest,
        f: &Repository,
    ) -> Result<bool, RegistryError> {
        self.inner.mount_blob(r, d, f).await
    }
    async fn upload_blob(
        &self,
        r: &Repository,
        d: &Digest,
        size: u64,
        data: ByteStream,
        progress: Option<UploadProgress>,
    ) -> Result<(), RegistryError> {
        self.inner.upload_blob(r, d, size, data, progress).await
    }
    async fn get_blob(
        &self,
        r: &Repository,
        d: &Digest,
        offset: u64,
    ) -> Result<BlobDownload, RegistryError> {
        self.offsets.lock().expect("offsets").push(offset);
        if matches!(self.tamper, Tamper::Budget)
            && self
                .budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                })
                .is_err()
        {
            return Err(RegistryError::Unavailable {
                registry: HOST.into(),
                message: "connection refused".into(),
            });
        }
        let mut download = self.inner.get_blob(r, d, offset).await?;
        let received = self.received.clone();
        let counted = |s: vmr_ports::RegistryByteStream| {
            s.inspect(move |c| {
                if let Ok(c) = c {
                    received.fetch_add(c.len() as u64, Ordering::SeqCst);
                }
            })
            .boxed()
        };
        download.stream = match self.tamper {
            Tamper::CorruptLargerThan(limit) if download.size <= limit => download.stream,
            Tamper::Corrupt | Tamper::CorruptLargerThan(_) => {
                let mut flipped = false;
                download
                    .stream
                    .map(move |chunk| {
                        chunk.map(|c| {
                            if flipped || c.is_empty() {
                                return c;
                            }
                            flipped = true;
                            let mut bytes = c.to_vec();
                            bytes[0] ^= 0xff;
                            Bytes::from(bytes)
                        })
                    })
                    .boxed()
            }
            Tamper::CutOnceAfter(after)
                if download.size - offset > after
                    && !self.cut_once.swap(true, Ordering::SeqCst) =>
            {
                cut(download.stream, after)
            }
            Tamper::CutAlwaysAfter(after) if download.size - offset > after => {
                cut(download.stream, after)
            }
            _ => download.stream,
        };
        download.stream = counted(download.stream);
        Ok(download)
    }
    async fn get_manifest(
        &self,
        r: &Repository,
        m: &ManifestReference,
    ) -> Result<RemoteManifest, RegistryError> {
        self.inner.get_manifest(r, m).await
    }
    async fn put_manifest(
        &self,
        r: &Repository,
        m: &ManifestReference,
        bytes: Bytes,
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        self.inner.put_manifest(r, m, bytes, media_type).await
    }
    async fn list_tags(&self, r: &Repository) -> Result<Vec<Tag>, RegistryError> {
        self.inner.list_tags(r).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// A registry holding `team/vm:1` with a disk of `len` bytes, and a host
/// that pulls from it through `tamper`.
async fn tampered(len: usize, tamper: Tamper) -> (Host, TamperingConnector, Digest) {
    let registry = FakeRegistry::new();
    let source = Host::new(Arc::new(registry.clone()));
    let digest = source.import("team/vm", "1", disk(len)).await;
    let (_, pushed) = follow(source.transfers.push(request("team/vm:1")).await).await;
    pushed.expect("push");
    let connector = TamperingConnector::new(registry, tamper);
    let host = Host::new(Arc::new(connector.clone()));
    (host, connector, digest)
}

impl TamperingConnector {
    fn new(inner: FakeRegistry, tamper: Tamper) -> Self {
        Self {
            inner,
            tamper,
            cut_once: Arc::default(),
            offsets: Arc::default(),
            received: Arc::default(),
            budget: Arc::default(),
        }
    }
}

/// Like [`tampered`], with a chunked image (1 MiB chunks) and a host that
/// pulls `parallel` chunks at once; also returns the disk's bytes.
async fn tampered_chunked(
    len: usize,
    parallel: usize,
    tamper: Tamper,
) -> (Host, TamperingConnector, Digest, Vec<u8>) {
    let registry = FakeRegistry::new();
    let source = Host::chunking(Arc::new(registry.clone()), 2);
    // Distinct chunks, half of them compressible: plain and zstd layers.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let bytes: Vec<u8> = (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if (i >> 20) % 2 == 0 {
                (i % 7) as u8 ^ (i >> 20) as u8
            } else {
                state as u8
            }
        })
        .collect();
    let digest = source.import("team/vm", "1", bytes.clone()).await;
    let (_, pushed) = follow(source.transfers.push(request("team/vm:1")).await).await;
    pushed.expect("push");
    let connector = TamperingConnector::new(registry, tamper);
    let host = Host::chunking(Arc::new(connector.clone()), parallel);
    (host, connector, digest, bytes)
}

async fn config_size(host: &Host) -> u64 {
    host.images
        .inspect(&"team/vm:1".parse::<Reference>().expect("reference"))
        .await
        .expect("image")
        .manifest
        .config
        .size
}

async fn disk_digest(host: &Host) -> Digest {
    host.images
        .inspect(&"team/vm:1".parse::<Reference>().expect("reference"))
        .await
        .expect("image")
        .manifest
        .layers[0]
        .digest
        .clone()
}

#[tokio::test]
async fn a_chunked_pull_writes_the_disk_in_place_and_cleans_up() {
    let len = (5 << 20) + 12_345;
    let (host, connector, digest, bytes) =
        tampered_chunked(len, 3, Tamper::CutOnceAfter(300_000)).await;
    let (events, result) = follow(host.transfers.pull(request("team/vm:1")).await).await;
    let done = result.expect("pulled, the cut chunk fetched again");
    assert_eq!(done.digest, digest, "the local single-layer digest");
    // Six chunks and the config, each finished once.
    assert_eq!(
        events
            .iter()
            .filter(|e| !e.skipped && e.done == e.total)
            .count(),
        7,
        "{events:?}"
    );
    let disk = disk_digest(&host).await;
    assert_eq!(
        host.images.store().read_blob(&disk).await.expect("disk"),
        bytes
    );
    assert_eq!(
        connector.received.load(Ordering::SeqCst),
        done.bytes_transferred + 300_000
    );
    // Neither journal nor placed file is left.
    let store = host._dir.path().join("store");
    assert!(!store.join("chunks").join(disk.hex()).exists());
    assert_eq!(
        std::fs::read_dir(store.join("tmp")).expect("tmp").count(),
        0
    );
}

#[tokio::test]
async fn a_corrupt_chunk_is_data_loss_and_no_disk_becomes_visible() {
    let (host, _, _, _) =
        tampered_chunked((3 << 20) + 7, 2, Tamper::CorruptLargerThan(64 << 10)).await;
    let (_, result) = follow(host.transfers.pull(request("team/vm:1")).await).await;
    let err = result.expect_err("corrupt");
    assert_eq!(err.kind, ErrorKind::DataLoss, "{err}");
    assert!(err.message.contains("nothing was stored"), "{err}");
    assert!(err.message.contains("at offset"), "{err}");
    assert!(host.images.list(None).await.expect("list").is_empty());
    // Only the config is a blob: no disk, no manifest.
    assert_eq!(
        host.images.store().list_blobs().await.expect("blobs").len(),
        1
    );
}

#[tokio::test]
async fn an_interrupted_chunked_pull_resumes_without_fetching_a_chunk_twice() {
    let len = (6 << 20) + 99;
    // A clean pull elsewhere tells what a whole pull downloads.
    let (clean, _, _, _) = tampered_chunked(len, 1, Tamper::None).await;
    let (_, whole) = follow(clean.transfers.pull(request("team/vm:1")).await).await;
    let chunk_bytes = whole.expect("clean pull").bytes_transferred - config_size(&clean).await;

    let (host, connector, digest, bytes) = tampered_chunked(len, 1, Tamper::Budget).await;
    // The config and three chunks come; then the registry goes away.
    connector.budget.store(4, Ordering::SeqCst);
    let (_, result) = follow(host.transfers.pull(request("team/vm:1")).await).await;
    let err = result.expect_err("registry gone");
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
    assert!(host.images.list(None).await.expect("list").is_empty());

    connector.budget.store(u64::MAX, Ordering::SeqCst);
    let (events, result) = follow(host.transfers.pull(request("team/vm:1")).await).await;
    let done = result.expect("resumed");
    assert_eq!(done.digest, digest);
    // The config and the three chunks are skipped; the rest comes once.
    assert_eq!(events.iter().filter(|e| e.skipped).count(), 4, "{events:?}");
    assert_eq!(
        connector.received.load(Ordering::SeqCst),
        chunk_bytes + config_size(&host).await,
        "every byte travelled once"
    );
    let disk = disk_digest(&host).await;
    assert_eq!(
        host.images.store().read_blob(&disk).await.expect("disk"),
        bytes
    );
}

#[tokio::test]
async fn a_corrupt_blob_is_data_loss_and_nothing_becomes_visible() {
    let (host, _, _) = tampered(1 << 20, Tamper::Corrupt).await;
    let (_, result) = follow(host.transfers.pull(request("team/vm:1")).await).await;
    let err = result.expect_err("corrupt");
    assert_eq!(err.kind, ErrorKind::DataLoss, "{err}");
    assert!(err.message.contains("nothing was stored"), "{err}");
    assert!(host.images.list(None).await.expect("list").is_empty());
    assert!(
        host.images
            .store()
            .list_blobs()
            .await
            .expect("blobs")
            .is_empty()
    );
}

#[tokio::test]
async fn a_cut_download_resumes_from_where_it_broke() {
    let len = 5 << 20;
    let (host, connector, digest) = tampered(len, Tamper::CutOnceAfter(1 << 20)).await;
    let (_, result) = follow(host.transfers.pull(request("team/vm:1")).await).await;
    let done = result.expect("resumed within the pull");
    assert_eq!(done.digest, digest);
    // The disk came in two parts, the second asked for from where the
    // first stopped; the config was one more download.
    let offsets = connector.offsets.lock().expect("offsets").clone();
    assert!(offsets.contains(&(1 << 20)), "{offsets:?}");
    assert_eq!(
        done.bytes_transferred,
        connector.received.load(Ordering::SeqCst)
    );
    assert!(done.bytes_transferred < len as u64 + 4096);
}

#[tokio::test]
async fn a_pull_that_keeps_breaking_fails_and_the_next_pull_resumes() {
    let len = 6 << 20;
    let step = 1 << 20;
    let (host, connector, digest) = tampered(len, Tamper::CutAlwaysAfter(step)).await;
    let (_, result) = follow(host.transfers.pull(request("team/vm:1")).await).await;
    let err = result.expect_err("gave up");
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
    assert!(host.images.list(None).await.expect("list").is_empty());

    // Each pull moves a few MiB further; no byte is fetched twice.
    let mut pulls = 1;
    let done = loop {
        pulls += 1;
        let (_, result) = follow(host.transfers.pull(request("team/vm:1")).await).await;
        match result {
            Ok(done) => break done,
            Err(e) => assert_eq!(e.kind, ErrorKind::Unavailable, "{e}"),
        }
        assert!(pulls < 5, "no progress");
    };
    assert_eq!(done.digest, digest);
    let config_len = host
        .images
        .inspect(&"team/vm:1".parse::<Reference>().expect("reference"))
        .await
        .expect("image")
        .manifest
        .config
        .size;
    assert_eq!(
        connector.received.load(Ordering::SeqCst),
        len as u64 + config_len,
        "every byte travelled exactly once"
    );
}
