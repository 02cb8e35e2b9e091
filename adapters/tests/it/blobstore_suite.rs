//! The blob store behaviour every backend must show, written once and run
//! by `blobstore_fs`, `blobstore_memory` and `blobstore_s3` through the
//! `suite!` macro against their own [`Harness`].

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt as _;
use vmr_adapters::blobstore::OpendalStore;
use vmr_domain::image::{Digest, Repository, Tag};
use vmr_ports::blobstore::{BlobStore, ByteStream, StoreError};

/// One backend under test.
#[async_trait]
pub trait Harness: Send + Sync {
    fn store(&self) -> &OpendalStore;

    /// Replaces a committed blob's bytes behind the store's back.
    async fn corrupt(&self, digest: &Digest, bytes: &[u8]) {
        let key = format!("blobs/sha256/{}", digest.hex());
        self.store()
            .operator()
            .write(&key, bytes.to_vec())
            .await
            .expect("overwrite blob");
    }
}

/// Generates one `#[tokio::test]` per scenario for a harness constructor
/// (an async expression giving `Option<impl Harness>`; `None` skips).
macro_rules! suite {
    ($harness:expr) => {
        $crate::blobstore_suite::scenarios!($harness;
            write_commit_read,
            ranged_reads,
            empty_blob,
            manifests_with_nested_repositories,
            wrong_expected_digest_leaves_nothing,
            dropped_and_aborted_writers_leave_nothing,
            a_sealed_blob_is_invisible_until_published,
            same_content_twice_is_one_blob,
            corruption_is_reported,
            resume_continues_a_partial_blob,
            resume_with_wrong_content_is_a_mismatch,
            placed_blob_written_out_of_order_commits,
            placed_blob_resumes_and_refuses_wrong_content,
            clean_temporaries_removes_leftovers,
            concurrent_writers_of_the_same_content,
            local_path_holds_the_blob,
            write_file_between_chunks,
            write_file_on_a_resumed_writer,
            write_file_from_a_short_file_fails_and_leaves_nothing,
        );
    };
}

macro_rules! scenarios {
    ($harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(harness) = $harness.await else { return };
                $crate::blobstore_suite::$name(&harness).await;
            }
        )*
    };
}

pub(crate) use {scenarios, suite};

/// Deterministic pseudo-random bytes (xorshift), different per seed.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Writes `bytes` in uneven chunks and commits.
pub async fn put(
    store: &OpendalStore,
    bytes: &[u8],
    expected: Option<&Digest>,
) -> Result<(Digest, u64), StoreError> {
    let mut writer = store.begin_blob().await?;
    for chunk in bytes.chunks(700_001) {
        writer.write(Bytes::copy_from_slice(chunk)).await?;
    }
    assert_eq!(writer.written(), bytes.len() as u64);
    writer.commit(expected).await
}

pub async fn collect(stream: ByteStream) -> Result<Vec<u8>, StoreError> {
    let chunks: Vec<Bytes> = stream.try_collect().await?;
    Ok(chunks.concat())
}

/// Names in the store's temporaries directory.
pub fn temporaries(store: &OpendalStore) -> BTreeSet<String> {
    fs::read_dir(store.temporaries_dir())
        .expect("read temporaries dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits for writer threads that were let go to remove their temporaries.
pub async fn temporaries_settle(store: &OpendalStore) -> BTreeSet<String> {
    for _ in 0..100 {
        let names = temporaries(store);
        if names.is_empty() {
            return names;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    temporaries(store)
}

fn repo(s: &str) -> Repository {
    s.parse().expect("repository")
}

fn tag(s: &str) -> Tag {
    s.parse().expect("tag")
}

pub async fn write_commit_read(h: &impl Harness) {
    let store = h.store();
    assert!(!store.describe().is_empty());
    let bytes = data(3 * 1024 * 1024 + 12_345, 1);
    let (digest, size) = put(store, &bytes, None).await.unwrap();
    assert_eq!(digest, Digest::of(&bytes));
    assert_eq!(size, bytes.len() as u64);

    assert!(store.blob_exists(&digest).await.unwrap());
    assert_eq!(store.blob_size(&digest).await.unwrap(), size);
    assert_eq!(store.read_blob(&digest).await.unwrap(), bytes);
    assert_eq!(
        collect(store.open_blob(&digest, None).await.unwrap())
            .await
            .unwrap(),
        bytes
    );
    store.verify_blob(&digest).await.unwrap();
    assert_eq!(
        store.list_blobs().await.unwrap(),
        vec![(digest.clone(), size)]
    );
    assert!(temporaries(store).is_empty(), "{:?}", temporaries(store));

    store.delete_blob(&digest).await.unwrap();
    assert!(!store.blob_exists(&digest).await.unwrap());
    assert!(store.list_blobs().await.unwrap().is_empty());
    assert!(
        matches!(store.read_blob(&digest).await, Err(StoreError::BlobNotFound(d)) if d == digest)
    );
    assert!(matches!(
        store.blob_size(&digest).await,
        Err(StoreError::BlobNotFound(_))
    ));
    assert!(matches!(
        store.open_blob(&digest, None).await,
        Err(StoreError::BlobNotFound(_))
    ));
    assert!(matches!(
        store.verify_blob(&digest).await,
        Err(StoreError::BlobNotFound(_))
    ));
    // Deleting what is not there is fine.
    store.delete_blob(&digest).await.unwrap();
}

pub async fn ranged_reads(h: &impl Harness) {
    let store = h.store();
    let bytes = data(2 * 1024 * 1024 + 77, 2);
    let (digest, size) = put(store, &bytes, None).await.unwrap();
    for range in [
        0..1,
        10..1000,
        1_048_570..1_048_590,
        0..size,
        size - 5..size,
    ] {
        let got = collect(store.open_blob(&digest, Some(range.clone())).await.unwrap())
            .await
            .unwrap();
        let (start, end) = (range.start as usize, range.end as usize);
        assert_eq!(got, &bytes[start..end], "range {range:?}");
    }
    // A range past the end is cut at the end, as HTTP Range is.
    let got = collect(
        store
            .open_blob(&digest, Some(size - 3..size + 100))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(got, &bytes[bytes.len() - 3..]);
    let got = collect(store.open_blob(&digest, Some(size..size)).await.unwrap())
        .await
        .unwrap();
    assert!(got.is_empty());
    assert!(
        store
            .open_blob(&digest, Some(size + 1..size + 2))
            .await
            .is_err()
    );
}

pub async fn empty_blob(h: &impl Harness) {
    let store = h.store();
    let (digest, size) = put(store, b"", None).await.unwrap();
    assert_eq!((digest.clone(), size), (Digest::of(b""), 0));
    assert!(store.read_blob(&digest).await.unwrap().is_empty());
    assert!(
        collect(store.open_blob(&digest, None).await.unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    store.verify_blob(&digest).await.unwrap();
}

pub async fn manifests_with_nested_repositories(h: &impl Harness) {
    let store = h.store();
    let names = [
        ("a/b/c", "tag"),
        ("a/b", "c"),
        ("a", "v1.0"),
        ("x", "latest"),
    ];
    for (r, t) in names {
        let body = Bytes::from(format!("{{\"manifest\":\"{r}:{t}\"}}"));
        store.put_manifest(&repo(r), &tag(t), body).await.unwrap();
    }
    for (r, t) in names {
        let got = store.get_manifest(&repo(r), &tag(t)).await.unwrap();
        assert_eq!(got, format!("{{\"manifest\":\"{r}:{t}\"}}"));
    }
    let mut expected: Vec<_> = names.iter().map(|(r, t)| (repo(r), tag(t))).collect();
    expected.sort();
    assert_eq!(store.list_manifests().await.unwrap(), expected);

    // Overwriting replaces.
    store
        .put_manifest(&repo("a/b/c"), &tag("tag"), Bytes::from_static(b"new"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_manifest(&repo("a/b/c"), &tag("tag"))
            .await
            .unwrap(),
        "new"
    );

    store
        .delete_manifest(&repo("a/b/c"), &tag("tag"))
        .await
        .unwrap();
    match store.get_manifest(&repo("a/b/c"), &tag("tag")).await {
        Err(StoreError::ManifestNotFound { repository, tag }) => {
            assert_eq!((repository.as_str(), tag.as_str()), ("a/b/c", "tag"));
        }
        other => panic!("expected ManifestNotFound, got {other:?}"),
    }
    // The sibling under the same path prefix survives.
    assert_eq!(
        store.get_manifest(&repo("a/b"), &tag("c")).await.unwrap(),
        "{\"manifest\":\"a/b:c\"}"
    );
    store
        .delete_manifest(&repo("a/b/c"), &tag("tag"))
        .await
        .unwrap();
    expected.retain(|(r, _)| r.as_str() != "a/b/c");
    assert_eq!(store.list_manifests().await.unwrap(), expected);
    assert!(matches!(
        store.get_manifest(&repo("nope"), &tag("latest")).await,
        Err(StoreError::ManifestNotFound { .. })
    ));
}

pub async fn wrong_expected_digest_leaves_nothing(h: &impl Harness) {
    let store = h.store();
    let bytes = data(1024 * 1024 + 3, 3);
    let wrong = Digest::of(b"something else");
    match put(store, &bytes, Some(&wrong)).await {
        Err(StoreError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, Digest::of(&bytes));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(!store.blob_exists(&Digest::of(&bytes)).await.unwrap());
    assert!(!store.blob_exists(&wrong).await.unwrap());
    assert!(store.list_blobs().await.unwrap().is_empty());
    assert!(temporaries(store).is_empty(), "{:?}", temporaries(store));

    // The right expectation commits.
    let digest = Digest::of(&bytes);
    assert_eq!(put(store, &bytes, Some(&digest)).await.unwrap().0, digest);
}

pub async fn a_sealed_blob_is_invisible_until_published(h: &impl Harness) {
    let store = h.store();
    let bytes = data(3 * 1024 * 1024 + 5, 14);
    let digest = Digest::of(&bytes);

    let mut writer = store.begin_blob().await.unwrap();
    writer.write(Bytes::copy_from_slice(&bytes)).await.unwrap();
    let sealed = writer.seal(None).await.unwrap();
    assert_eq!(sealed.digest(), &digest);
    assert_eq!(sealed.size(), bytes.len() as u64);
    assert!(!store.blob_exists(&digest).await.unwrap());
    assert!(store.list_blobs().await.unwrap().is_empty());
    // Dropped unpublished: nothing visible, no temporary left.
    drop(sealed);
    assert!(!store.blob_exists(&digest).await.unwrap());
    assert!(temporaries(store).is_empty(), "{:?}", temporaries(store));

    let mut writer = store.begin_blob().await.unwrap();
    writer.write(Bytes::copy_from_slice(&bytes)).await.unwrap();
    let sealed = writer.seal(Some(&digest)).await.unwrap();
    assert_eq!(
        sealed.publish().await.unwrap(),
        (digest.clone(), bytes.len() as u64)
    );
    assert_eq!(store.read_blob(&digest).await.unwrap(), bytes);

    let mut writer = store.begin_blob().await.unwrap();
    writer.write(Bytes::from_static(b"other")).await.unwrap();
    assert!(matches!(
        writer.seal(Some(&digest)).await,
        Err(StoreError::DigestMismatch { .. })
    ));
    assert!(temporaries(store).is_empty(), "{:?}", temporaries(store));
}

pub async fn dropped_and_aborted_writers_leave_nothing(h: &impl Harness) {
    let store = h.store();
    let bytes = data(2 * 1024 * 1024, 4);

    let mut writer = store.begin_blob().await.unwrap();
    writer.write(Bytes::copy_from_slice(&bytes)).await.unwrap();
    assert_eq!(
        temporaries(store).len(),
        1,
        "a writer spools to one temporary"
    );
    drop(writer);
    assert!(temporaries_settle(store).await.is_empty());

    let mut writer = store.begin_blob().await.unwrap();
    writer.write(Bytes::copy_from_slice(&bytes)).await.unwrap();
    writer.abort().await.unwrap();
    assert!(
        temporaries(store).is_empty(),
        "abort removes the temporary at once"
    );

    // A resumable writer that is aborted removes its partial file too.
    let mut writer = store.resume_blob(&Digest::of(&bytes)).await.unwrap();
    writer
        .write(Bytes::copy_from_slice(&bytes[..1000]))
        .await
        .unwrap();
    writer.abort().await.unwrap();
    assert!(temporaries(store).is_empty(), "{:?}", temporaries(store));

    assert!(!store.blob_exists(&Digest::of(&bytes)).await.unwrap());
    assert!(store.list_blobs().await.unwrap().is_empty());
}

pub async fn same_content_twice_is_one_blob(h: &impl Harness) {
    let store = h.store();
    let bytes = data(100_000, 5);
    let first = put(store, &bytes, None).await.unwrap();
    let second = put(store, &bytes, Some(&first.0)).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(store.list_blobs().await.unwrap(), vec![first]);
    assert!(temporaries(store).is_empty());
}

pub async fn corruption_is_reported(h: &impl Harness) {
    let store = h.store();
    let bytes = data(1024 * 1024 + 5, 6);
    let (digest, _) = put(store, &bytes, None).await.unwrap();
    let mut evil = bytes.clone();
    evil[4242] ^= 0xff;
    h.corrupt(&digest, &evil).await;
    let actual_digest = Digest::of(&evil);

    let is_corrupt = |r: &StoreError| matches!(r, StoreError::Corrupt { digest: d, actual } if *d == digest && *actual == actual_digest);
    let err = store.read_blob(&digest).await.unwrap_err();
    assert!(is_corrupt(&err), "read_blob: {err:?}");
    let err = store.verify_blob(&digest).await.unwrap_err();
    assert!(is_corrupt(&err), "verify_blob: {err:?}");
    // A full stream serves the bytes, then fails instead of ending cleanly.
    let stream = store.open_blob(&digest, None).await.unwrap();
    let items: Vec<Result<Bytes, StoreError>> = futures::StreamExt::collect(stream).await;
    let (last, chunks) = items.split_last().expect("stream items");
    assert!(
        matches!(last, Err(e) if is_corrupt(e)),
        "open_blob ended with {last:?}"
    );
    let served: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.as_ref().expect("chunk").to_vec())
        .collect();
    assert_eq!(served, evil);

    // Writing the right content again repairs it.
    put(store, &bytes, Some(&digest)).await.unwrap();
    store.verify_blob(&digest).await.unwrap();
}

pub async fn resume_continues_a_partial_blob(h: &impl Harness) {
    let store = h.store();
    let bytes = data(3 * 1024 * 1024 + 999, 7);
    let digest = Digest::of(&bytes);
    let cut = 1024 * 1024 + 17;

    let mut writer = store.resume_blob(&digest).await.unwrap();
    assert_eq!(writer.written(), 0);
    writer
        .write(Bytes::copy_from_slice(&bytes[..cut]))
        .await
        .unwrap();
    drop(writer); // the connection was cut
    assert!(!store.blob_exists(&digest).await.unwrap());

    let mut writer = store.resume_blob(&digest).await.unwrap();
    assert_eq!(
        writer.written(),
        cut as u64,
        "resume where the partial file ends"
    );
    writer
        .write(Bytes::copy_from_slice(&bytes[cut..]))
        .await
        .unwrap();
    assert_eq!(writer.written(), bytes.len() as u64);
    assert_eq!(
        writer.commit(None).await.unwrap(),
        (digest.clone(), bytes.len() as u64)
    );
    assert_eq!(store.read_blob(&digest).await.unwrap(), bytes);
    assert!(temporaries(store).is_empty(), "{:?}", temporaries(store));

    // A fresh resume after the commit starts from zero.
    let writer = store.resume_blob(&digest).await.unwrap();
    assert_eq!(writer.written(), 0);
    writer.abort().await.unwrap();
}

/// Writes `bytes[range]` into a placed writer in 64 KiB pieces.
async fn place_range(
    writer: &dyn vmr_ports::blobstore::PlacedWriter,
    bytes: &[u8],
    range: std::ops::Range<usize>,
) {
    for start in range.clone().step_by(64 * 1024) {
        let end = (start + 64 * 1024).min(range.end);
        writer
            .write_at(start as u64, Bytes::copy_from_slice(&bytes[start..end]))
            .await
            .unwrap();
    }
}

pub async fn placed_blob_written_out_of_order_commits(h: &impl Harness) {
    let store = h.store();
    let bytes = data(3 * 1024 * 1024 + 123, 11);
    let digest = Digest::of(&bytes);
    let size = bytes.len() as u64;
    let writer = store.place_blob(&digest, size).await.unwrap();
    assert!(!writer.resumed());
    assert_eq!(writer.size(), size);
    // Chunks land in any order; settled out of order too.
    let chunks = [
        (2_000_000, bytes.len()),
        (0, 1_000_000),
        (1_000_000, 2_000_000),
    ];
    for (start, end) in chunks {
        place_range(&*writer, &bytes, start..end).await;
        writer.settle(start as u64..end as u64).await.unwrap();
    }
    // Past the end is refused, naming the size.
    let past = writer
        .write_at(size - 1, Bytes::from_static(b"xy"))
        .await
        .unwrap_err();
    assert!(past.to_string().contains(&size.to_string()), "{past}");
    assert!(
        !store.blob_exists(&digest).await.unwrap(),
        "not visible before commit"
    );
    assert_eq!(writer.commit().await.unwrap(), (digest.clone(), size));
    assert_eq!(store.read_blob(&digest).await.unwrap(), bytes);
    store.verify_blob(&digest).await.unwrap();
    assert!(temporaries(store).is_empty(), "{:?}", temporaries(store));
}

pub async fn placed_blob_resumes_and_refuses_wrong_content(h: &impl Harness) {
    let store = h.store();
    let bytes = data(2 * 1024 * 1024 + 5, 12);
    let digest = Digest::of(&bytes);
    let size = bytes.len() as u64;
    let half = bytes.len() / 2;

    // A first writer places the second half, settled, then goes away.
    let writer = store.place_blob(&digest, size).await.unwrap();
    place_range(&*writer, &bytes, half..bytes.len()).await;
    writer.settle(half as u64..size).await.unwrap();
    drop(writer);
    assert!(!store.blob_exists(&digest).await.unwrap());

    // The next one finds the file and only writes the first half.
    let writer = store.place_blob(&digest, size).await.unwrap();
    assert!(writer.resumed(), "the placed file is kept");
    place_range(&*writer, &bytes, 0..half).await;
    assert_eq!(writer.commit().await.unwrap(), (digest.clone(), size));
    assert_eq!(store.read_blob(&digest).await.unwrap(), bytes);

    // Another size of the same digest starts from a clean file.
    let other = Digest::of(b"other");
    let writer = store.place_blob(&other, 10).await.unwrap();
    drop(writer);
    let writer = store.place_blob(&other, 11).await.unwrap();
    assert!(!writer.resumed());
    writer.abort().await.unwrap();

    // Wrong content: DigestMismatch, nothing visible, the file is gone.
    let wrong = data(1000, 13);
    let writer = store.place_blob(&digest, 1000).await.unwrap();
    store.delete_blob(&digest).await.unwrap();
    place_range(&*writer, &wrong, 0..1000).await;
    writer.settle(0..1000).await.unwrap();
    match writer.commit().await {
        Err(StoreError::DigestMismatch { expected, .. }) => assert_eq!(expected, digest),
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(!store.blob_exists(&digest).await.unwrap());
    assert!(store.list_blobs().await.unwrap().is_empty());
    let writer = store.place_blob(&digest, 1000).await.unwrap();
    assert!(!writer.resumed(), "a refused file is not kept");
    writer.abort().await.unwrap();
    assert!(temporaries(store).is_empty(), "{:?}", temporaries(store));
}

pub async fn resume_with_wrong_content_is_a_mismatch(h: &impl Harness) {
    let store = h.store();
    let bytes = data(500_000, 8);
    let digest = Digest::of(&bytes);
    let mut writer = store.resume_blob(&digest).await.unwrap();
    writer
        .write(Bytes::copy_from_slice(&bytes[..1000]))
        .await
        .unwrap();
    writer
        .write(Bytes::from_static(b"not the rest"))
        .await
        .unwrap();
    match writer.commit(None).await {
        Err(StoreError::DigestMismatch { expected, .. }) => assert_eq!(expected, digest),
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(!store.blob_exists(&digest).await.unwrap());
    assert!(store.list_blobs().await.unwrap().is_empty());
    assert!(
        temporaries(store).is_empty(),
        "a bad partial is not kept: {:?}",
        temporaries(store)
    );
}

pub async fn clean_temporaries_removes_leftovers(h: &impl Harness) {
    let store = h.store();
    let dir = store.temporaries_dir().to_owned();
    let young = Digest::of(b"young");
    let old = Digest::of(b"old");
    fs::write(dir.join("tmp-crashed"), b"half a blob").unwrap();
    fs::create_dir(dir.join("tmp-odd-dir")).unwrap();
    fs::write(dir.join("tmp-odd-dir").join("x"), b"x").unwrap();
    fs::write(
        dir.join(format!("partial-{}", young.hex())),
        b"recent partial",
    )
    .unwrap();
    let old_path = dir.join(format!("partial-{}", old.hex()));
    fs::write(&old_path, b"stale partial").unwrap();
    fs::File::options()
        .write(true)
        .open(&old_path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(25 * 3600))
        .unwrap();

    // A live writer's temporary must survive the cleaning.
    let bytes = data(300_000, 9);
    let mut live = store.begin_blob().await.unwrap();
    live.write(Bytes::copy_from_slice(&bytes)).await.unwrap();

    assert_eq!(store.clean_temporaries().await.unwrap(), 3);
    let left = temporaries(store);
    assert!(
        left.contains(&format!("partial-{}", young.hex())),
        "{left:?}"
    );
    assert_eq!(
        left.len(),
        2,
        "the young partial and the live writer's temporary: {left:?}"
    );
    assert_eq!(live.commit(None).await.unwrap().0, Digest::of(&bytes));
    assert_eq!(store.clean_temporaries().await.unwrap(), 0);
    assert_eq!(temporaries(store).len(), 1);
}

pub async fn concurrent_writers_of_the_same_content(h: &impl Harness) {
    let store = h.store();
    let bytes = data(2 * 1024 * 1024 + 1, 10);
    let (a, b) = tokio::join!(put(store, &bytes, None), put(store, &bytes, None));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert_eq!(store.list_blobs().await.unwrap(), vec![a.clone()]);
    assert_eq!(store.read_blob(&a.0).await.unwrap(), bytes);
    assert!(temporaries(store).is_empty());
}

pub async fn local_path_holds_the_blob(h: &impl Harness) {
    let store = h.store();
    let bytes = data(1024 * 1024 + 11, 11);
    let (digest, _) = put(store, &bytes, None).await.unwrap();
    let path = store.local_path(&digest).await.unwrap();
    assert!(path.is_absolute(), "{}", path.display());
    assert_eq!(fs::read(&path).unwrap(), bytes);
    assert_eq!(store.local_path(&digest).await.unwrap(), path);
    assert!(matches!(
        store.local_path(&Digest::of(b"absent")).await,
        Err(StoreError::BlobNotFound(_))
    ));
    store.delete_blob(&digest).await.unwrap();
    assert!(!path.exists(), "deleting a blob removes its local copy");
}

/// A file with `bytes`, opened for reading, its offset moved (a passed
/// descriptor's offset is the caller's: it must not matter).
fn passed_file(bytes: &[u8]) -> (tempfile::NamedTempFile, std::fs::File) {
    use std::io::{Read as _, Write as _};
    let mut temp = tempfile::NamedTempFile::new().expect("temp file");
    temp.write_all(bytes).expect("write");
    let mut file = std::fs::File::open(temp.path()).expect("open");
    let mut skip = [0u8; 3];
    let _ = file.read(&mut skip).expect("move the offset");
    (temp, file)
}

pub async fn write_file_between_chunks(h: &impl Harness) {
    let store = h.store();
    // Larger than the copy window, not a multiple of it.
    let bytes = data(9 * 1024 * 1024 + 4321, 21);
    let (head, rest) = bytes.split_at(1000);
    let (middle, tail) = rest.split_at(rest.len() - 777);
    let (_keep, file) = passed_file(middle);

    let mut writer = store.begin_blob().await.unwrap();
    writer.write(Bytes::copy_from_slice(head)).await.unwrap();
    writer.write_file(file, middle.len() as u64).await.unwrap();
    writer.write(Bytes::copy_from_slice(tail)).await.unwrap();
    assert_eq!(writer.written(), bytes.len() as u64);
    let digest = Digest::of(&bytes);
    assert_eq!(
        writer.commit(Some(&digest)).await.unwrap(),
        (digest.clone(), bytes.len() as u64),
        "hashed in order: chunk, copied file, chunk"
    );
    assert_eq!(store.read_blob(&digest).await.unwrap(), bytes);
    assert!(temporaries(store).is_empty(), "{:?}", temporaries(store));

    // Only the first `len` bytes of a longer file are taken.
    let (_keep, file) = passed_file(&bytes);
    let mut writer = store.begin_blob().await.unwrap();
    writer.write_file(file, 5000).await.unwrap();
    let (prefix, size) = writer.commit(None).await.unwrap();
    assert_eq!((prefix, size), (Digest::of(&bytes[..5000]), 5000));
}

pub async fn write_file_on_a_resumed_writer(h: &impl Harness) {
    let store = h.store();
    let bytes = data(5 * 1024 * 1024 + 3, 22);
    let digest = Digest::of(&bytes);
    let cut = 2 * 1024 * 1024 + 5;
    let mut writer = store.resume_blob(&digest).await.unwrap();
    writer
        .write(Bytes::copy_from_slice(&bytes[..cut]))
        .await
        .unwrap();
    drop(writer);
    // The partial temporary is append-only: the copy must still land at its end.
    let mut writer = store.resume_blob(&digest).await.unwrap();
    assert_eq!(writer.written(), cut as u64);
    let (_keep, file) = passed_file(&bytes[cut..]);
    writer
        .write_file(file, (bytes.len() - cut) as u64)
        .await
        .unwrap();
    assert_eq!(
        writer.commit(None).await.unwrap(),
        (digest.clone(), bytes.len() as u64)
    );
    assert_eq!(store.read_blob(&digest).await.unwrap(), bytes);
}

pub async fn write_file_from_a_short_file_fails_and_leaves_nothing(h: &impl Harness) {
    let store = h.store();
    let bytes = data(6 * 1024 * 1024 + 11, 23);
    let (_keep, file) = passed_file(&bytes);
    let mut writer = store.begin_blob().await.unwrap();
    let err = writer
        .write_file(file, bytes.len() as u64 + 100)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SizeMismatch { expected, actual }
            if expected == bytes.len() as u64 + 100 && actual == bytes.len() as u64),
        "{err:?}"
    );
    // The writer is failed: more data is refused, and aborting leaves nothing.
    assert!(writer.write(Bytes::from_static(b"x")).await.is_err());
    writer.abort().await.unwrap();
    assert!(!store.blob_exists(&Digest::of(&bytes)).await.unwrap());
    assert!(
        temporaries_settle(store).await.is_empty(),
        "{:?}",
        temporaries(store)
    );
}
