//! The blob store suite against the filesystem backend, plus what only a
//! local directory shows: the exact on-disk layout and a restart.

use std::fs;
use std::path::{Path, PathBuf};

use crate::blobstore_suite::{self, Harness, data, put, temporaries};
use async_trait::async_trait;
use bytes::Bytes;
use tempfile::TempDir;
use vmr_adapters::blobstore::OpendalStore;
use vmr_domain::image::Digest;
use vmr_ports::blobstore::{Blobs as _, Manifests as _, StoreError, StoreUpkeep as _};

struct Filesystem {
    _dir: TempDir,
    root: PathBuf,
    store: OpendalStore,
}

#[async_trait]
impl Harness for Filesystem {
    fn store(&self) -> &OpendalStore {
        &self.store
    }

    async fn corrupt(&self, digest: &Digest, bytes: &[u8]) {
        fs::write(self.root.join("blobs/sha256").join(digest.hex()), bytes).unwrap();
    }
}

fn filesystem_at(root: PathBuf) -> OpendalStore {
    OpendalStore::filesystem(root).expect("filesystem store")
}

async fn filesystem() -> Option<Filesystem> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = filesystem_at(root.clone());
    Some(Filesystem {
        _dir: dir,
        root,
        store,
    })
}

blobstore_suite::suite!(filesystem());

/// Every file under `root`, relative, with `/` separators.
fn files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_on_disk() {
    let h = filesystem().await.unwrap();
    let store = &h.store;
    let bytes = data(10_000, 1);
    let (digest, _) = put(store, &bytes, None).await.unwrap();
    let repository = "a/b/c".parse().unwrap();
    let tag = "v1".parse().unwrap();
    store
        .put_manifest(&repository, &tag, Bytes::from_static(b"{}"))
        .await
        .unwrap();

    assert_eq!(
        files(&h.root),
        vec![
            format!("blobs/sha256/{}", digest.hex()),
            "manifests/a/b/c/v1/manifest.json".to_owned()
        ]
    );
    assert_eq!(
        fs::read(h.root.join("blobs/sha256").join(digest.hex())).unwrap(),
        bytes
    );
    assert_eq!(
        fs::read(h.root.join("manifests/a/b/c/v1/manifest.json")).unwrap(),
        b"{}"
    );
    assert_eq!(
        store.temporaries_dir(),
        fs::canonicalize(h.root.join("tmp")).unwrap()
    );
    assert_eq!(
        store.local_path(&digest).await.unwrap(),
        fs::canonicalize(&h.root)
            .unwrap()
            .join("blobs/sha256")
            .join(digest.hex())
    );

    // Deleting the last tag of a repository leaves no empty directories.
    store.delete_manifest(&repository, &tag).await.unwrap();
    assert!(h.root.join("manifests").is_dir());
    assert_eq!(fs::read_dir(h.root.join("manifests")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_store_sees_everything_and_resumes() {
    let h = filesystem().await.unwrap();
    let bytes = data(2 * 1024 * 1024, 2);
    let digest = Digest::of(&bytes);
    let (small, _) = put(&h.store, b"small", None).await.unwrap();
    let mut writer = h.store.resume_blob(&digest).await.unwrap();
    writer
        .write(Bytes::copy_from_slice(&bytes[..1_000_000]))
        .await
        .unwrap();
    drop(writer);
    // The "crash" happens once the dropped writer has flushed what it got.
    let partial = h
        .store
        .temporaries_dir()
        .join(format!("partial-{}", digest.hex()));
    for _ in 0..100 {
        if fs::metadata(&partial).unwrap().len() == 1_000_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    fs::write(h.store.temporaries_dir().join("tmp-from-a-crash"), b"junk").unwrap();

    let restarted = filesystem_at(h.root.clone());
    let mut writer = restarted.resume_blob(&digest).await.unwrap();
    assert_eq!(writer.written(), 1_000_000);
    writer
        .write(Bytes::copy_from_slice(&bytes[1_000_000..]))
        .await
        .unwrap();
    writer.commit(Some(&digest)).await.unwrap();
    assert_eq!(restarted.clean_temporaries().await.unwrap(), 1);
    assert!(temporaries(&restarted).is_empty());
    assert_eq!(restarted.read_blob(&small).await.unwrap(), "small");
    assert_eq!(restarted.list_blobs().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_root_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    match OpendalStore::filesystem(file) {
        Err(StoreError::Io(e)) => {
            assert!(e.to_string().contains("preparing store directory"), "{e}")
        }
        other => panic!(
            "expected an I/O error, got {:?}",
            other.map(|s| s.describe())
        ),
    }
}

/// Import speed against the durable-copy limit (the same bytes written and
/// fsynced with no hashing), interleaved over a few rounds; medians are
/// printed. The first big write of a run pays for fresh memory pages (on
/// this VM up to 3 CPU-s per GiB), whichever of the two it is, so round 1
/// is a warm-up. Run in release:
/// `cargo test --release -p vmr-adapters --test it blobstore_fs:: -- --ignored --nocapture`
/// (`VMR_BENCH_MIB` sets the size, 1024 by default; `VMR_BENCH_ROUNDS`, 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn import_throughput() {
    use std::io::Write as _;
    use std::time::{Duration, Instant};

    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (mib, rounds) = (env("VMR_BENCH_MIB", 1024), env("VMR_BENCH_ROUNDS", 4));
    let source = Bytes::from(data(mib << 20, 42));
    let h = filesystem().await.unwrap();
    let chunks = || (0..mib).map(|i| source.slice(i << 20..(i + 1) << 20));
    let rate = |d: Duration| (mib as f64 * 1.048_576) / d.as_secs_f64();

    let started = Instant::now();
    let digest = Digest::of(&source);
    eprintln!("sha256 alone: {:.0} MB/s", rate(started.elapsed()));

    let (mut imports, mut copies) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let started = Instant::now();
        let mut writer = h.store.begin_blob().await.unwrap();
        for chunk in chunks() {
            writer.write(chunk).await.unwrap();
        }
        assert_eq!(writer.commit(None).await.unwrap().0, digest);
        let import = started.elapsed();
        h.store.delete_blob(&digest).await.unwrap();

        let copy_path = h.root.join("plain-copy");
        let started = Instant::now();
        let mut file = fs::File::create(&copy_path).unwrap();
        for chunk in chunks() {
            file.write_all(&chunk).unwrap();
        }
        file.sync_all().unwrap();
        let copy = started.elapsed();
        fs::remove_file(&copy_path).unwrap();

        eprintln!(
            "round {round}: import {:.0} MB/s, durable copy {:.0} MB/s",
            rate(import),
            rate(copy)
        );
        if round > 1 || rounds == 1 {
            imports.push(import);
            copies.push(copy);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (import, copy) = (median(&mut imports), median(&mut copies));
    eprintln!(
        "{mib} MiB median: import {:.0} MB/s, durable copy {:.0} MB/s, import/copy {:.2}",
        rate(import),
        rate(copy),
        copy.as_secs_f64() / import.as_secs_f64()
    );
}
