//! The blob store suite against a real S3 server on loopback (SeaweedFS in
//! CI, started by scripts/test-services.sh), plus what only S3 shows: bucket
//! creation, credentials, and a second host sharing the bucket.
//!
//! The server comes from `VMR_TEST_S3_ENDPOINT`, `VMR_TEST_S3_ACCESS_KEY`,
//! `VMR_TEST_S3_SECRET_KEY` and `VMR_TEST_S3_REGION` (default us-east-1).
//! Without an endpoint these tests fail, unless `VMR_TEST_SKIP_S3=1`.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::blobstore_suite::{self, Harness, data, put, temporaries};
use bytes::Bytes;
use tempfile::TempDir;
use vmr_adapters::blobstore::{OpendalStore, S3Settings, delete_bucket};
use vmr_domain::image::Digest;
use vmr_ports::blobstore::{BlobStore, StoreError};

/// The S3 server's settings for a fresh bucket, or `None` when S3 tests are
/// explicitly skipped.
fn settings() -> Option<S3Settings> {
    let endpoint = match std::env::var("VMR_TEST_S3_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => endpoint,
        _ if std::env::var("VMR_TEST_SKIP_S3").as_deref() == Ok("1") => {
            eprintln!("S3 blob store test skipped: VMR_TEST_SKIP_S3=1");
            return None;
        }
        _ => panic!(
            "VMR_TEST_S3_ENDPOINT is not set: start the test S3 server (scripts/test-services.sh) \
             and export VMR_TEST_S3_ENDPOINT/ACCESS_KEY/SECRET_KEY, or set VMR_TEST_SKIP_S3=1 to skip"
        ),
    };
    let var = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} must be set with VMR_TEST_S3_ENDPOINT"))
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    Some(S3Settings {
        bucket: fresh_bucket(),
        region: std::env::var("VMR_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".to_owned()),
        endpoint: Some(endpoint),
        access_key: Some(var("VMR_TEST_S3_ACCESS_KEY")),
        secret_key: Some(var("VMR_TEST_S3_SECRET_KEY")),
        skip_bucket_creation: false,
        upload_expiry: None,
    })
}

/// Deletes the bucket (with everything in it) when dropped: the test server
/// holds only a few dozen buckets, so every test removes the one it made.
struct BucketGuard(S3Settings);

impl Drop for BucketGuard {
    fn drop(&mut self) {
        let settings = self.0.clone();
        // Drop may run inside the test's runtime: delete from a thread of
        // its own with a runtime of its own.
        let deleted = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(delete_bucket(&settings))
                .map_err(|e| e.to_string())
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not delete test bucket {}: {e}", self.0.bucket),
            Err(_) => eprintln!("deleting test bucket {} panicked", self.0.bucket),
        }
    }
}

/// A bucket name no other test (or earlier run) uses.
fn fresh_bucket() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "vmr-test-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

struct S3 {
    settings: S3Settings,
    _local: TempDir,
    store: OpendalStore,
    _bucket: BucketGuard,
}

impl Harness for S3 {
    fn store(&self) -> &OpendalStore {
        &self.store
    }
}

async fn open(settings: &S3Settings, local: &Path) -> Result<OpendalStore, StoreError> {
    OpendalStore::s3(settings.clone(), local.to_owned()).await
}

async fn s3() -> Option<S3> {
    let settings = settings()?;
    let local = tempfile::tempdir().unwrap();
    let bucket = BucketGuard(settings.clone());
    let store = open(&settings, local.path())
        .await
        .expect("S3 store on a fresh bucket");
    Some(S3 {
        settings,
        _local: local,
        store,
        _bucket: bucket,
    })
}

blobstore_suite::suite!(s3());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_shares_the_bucket() {
    let Some(h) = s3().await else { return };
    assert!(
        h.store.describe().contains(&h.settings.bucket),
        "{}",
        h.store.describe()
    );
    let bytes = data(5 * 1024 * 1024 + 3, 1);
    let (digest, _) = put(&h.store, &bytes, None).await.unwrap();
    let repository = "team/vm".parse().unwrap();
    let tag = "v1".parse().unwrap();
    h.store
        .put_manifest(&repository, &tag, Bytes::from_static(b"{}"))
        .await
        .unwrap();

    // The bucket exists now; the second host does not try to create it.
    let other_local = tempfile::tempdir().unwrap();
    let other_settings = S3Settings {
        skip_bucket_creation: true,
        ..h.settings.clone()
    };
    let other = open(&other_settings, other_local.path()).await.unwrap();
    assert_eq!(
        other.list_blobs().await.unwrap(),
        vec![(digest.clone(), bytes.len() as u64)]
    );
    assert_eq!(
        other.list_manifests().await.unwrap(),
        vec![(repository, tag)]
    );

    // Its local copy is downloaded, verified and kept.
    let path = other.local_path(&digest).await.unwrap();
    assert!(
        path.starts_with(fs::canonicalize(other_local.path()).unwrap().join("cache")),
        "{}",
        path.display()
    );
    assert_eq!(fs::read(&path).unwrap(), bytes);
    assert!(temporaries(&other).is_empty());

    // A third host meets a damaged object: no local copy, Corrupt.
    let mut evil = bytes.clone();
    evil[0] ^= 1;
    h.corrupt(&digest, &evil).await;
    let third_local = tempfile::tempdir().unwrap();
    let third = open(&other_settings, third_local.path()).await.unwrap();
    match third.local_path(&digest).await {
        Err(StoreError::Corrupt { digest: d, actual }) => {
            assert_eq!(d, digest);
            assert_eq!(actual, Digest::of(&evil));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(temporaries(&third).is_empty());
    assert!(
        !third_local
            .path()
            .join("cache/sha256")
            .join(digest.hex())
            .exists()
    );
    // The verified copy the second host already has stays usable.
    assert_eq!(other.local_path(&digest).await.unwrap(), path);
}

#[tokio::test]
async fn creating_an_existing_bucket_is_fine() {
    let Some(h) = s3().await else { return };
    let local = tempfile::tempdir().unwrap();
    let again = open(&h.settings, local.path())
        .await
        .expect("second start on the same bucket");
    assert!(again.list_blobs().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_wrong_secret_key_is_a_clear_error() {
    let Some(settings) = settings() else { return };
    let local = tempfile::tempdir().unwrap();
    let wrong = S3Settings {
        secret_key: Some("not-the-secret".to_owned()),
        ..settings.clone()
    };
    for skip_bucket_creation in [false, true] {
        let wrong = S3Settings {
            skip_bucket_creation,
            ..wrong.clone()
        };
        match open(&wrong, local.path()).await {
            Err(e @ StoreError::Backend { .. }) => {
                let message = e.to_string();
                assert!(message.contains(&settings.bucket), "{message}");
                assert!(
                    message.contains("check s3-access-key and s3-secret-key"),
                    "{message}"
                );
            }
            Err(other) => panic!("expected a backend error, got {other:?}"),
            Ok(store) => panic!("a wrong secret key was accepted: {}", store.describe()),
        }
    }
}

#[tokio::test]
async fn a_missing_bucket_is_a_clear_error_when_creation_is_skipped() {
    let Some(settings) = settings() else { return };
    let local = tempfile::tempdir().unwrap();
    let settings = S3Settings {
        skip_bucket_creation: true,
        ..settings
    };
    match open(&settings, local.path()).await {
        Err(e @ StoreError::Backend { .. }) => {
            let message = e.to_string();
            assert!(message.contains(&settings.bucket), "{message}");
            assert!(message.contains("the bucket does not exist"), "{message}");
        }
        Err(other) => panic!("expected a backend error, got {other:?}"),
        Ok(store) => panic!("a missing bucket was accepted: {}", store.describe()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_multipart_uploads_are_listed_and_aborted_at_start() {
    let Some(h) = s3().await else { return };
    // What a daemon killed mid-upload leaves: a multipart upload with a part
    // sent and neither completed nor aborted.
    let mut writer = h
        .store
        .operator()
        .writer_with("blobs/sha256/killed")
        .chunk(5 * 1024 * 1024)
        .await
        .unwrap();
    writer
        .write(Bytes::from(data(12 * 1024 * 1024, 7)))
        .await
        .unwrap();
    drop(writer);

    // Young uploads may be another host's: not a leftover yet.
    assert_eq!(
        h.store.list_temporaries().await.unwrap(),
        Vec::<String>::new()
    );
    let local = tempfile::tempdir().unwrap();
    let restarted = open(
        &S3Settings {
            upload_expiry: Some(std::time::Duration::ZERO),
            ..h.settings.clone()
        },
        local.path(),
    )
    .await
    .unwrap();
    let listed = restarted.list_temporaries().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        listed[0].starts_with("s3-upload:blobs/sha256/killed "),
        "{listed:?}"
    );
    assert_eq!(restarted.clean_temporaries().await.unwrap(), 1);
    assert_eq!(
        restarted.list_temporaries().await.unwrap(),
        Vec::<String>::new()
    );
    assert!(restarted.list_blobs().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_dropped_guard_deletes_its_bucket_and_everything_in_it() {
    let Some(h) = s3().await else { return };
    let (digest, _) = put(&h.store, &data(1000, 3), None).await.unwrap();
    assert!(h.store.blob_exists(&digest).await.unwrap());
    let settings = h.settings.clone();
    drop(h);
    let local = tempfile::tempdir().unwrap();
    let gone = S3Settings {
        skip_bucket_creation: true,
        ..settings
    };
    match open(&gone, local.path()).await {
        Err(e @ StoreError::Backend { .. }) => {
            let message = e.to_string();
            assert!(message.contains("the bucket does not exist"), "{message}");
        }
        Err(other) => panic!("expected a backend error, got {other:?}"),
        Ok(store) => panic!("the bucket is still there: {}", store.describe()),
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_backend_error_keeping_the_http_cause() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Port 1 on loopback: nothing listens there, the connection is refused.
    let settings = S3Settings {
        bucket: fresh_bucket(),
        endpoint: Some("http://127.0.0.1:1".to_owned()),
        access_key: Some("key".to_owned()),
        secret_key: Some("secret".to_owned()),
        ..S3Settings::default()
    };
    let local = tempfile::tempdir().unwrap();
    match open(&settings, local.path()).await {
        Err(e @ StoreError::Backend { .. }) => {
            let message = e.to_string();
            assert!(message.contains(&settings.bucket), "{message}");
            assert!(message.contains("cannot reach the endpoint"), "{message}");
            let cause = std::error::Error::source(&e).expect("the cause is kept");
            assert!(cause.is::<reqwest::Error>(), "{cause:?}");
        }
        Err(other) => panic!("expected a backend error, got {other:?}"),
        Ok(store) => panic!("an unreachable endpoint was accepted: {}", store.describe()),
    }
}
