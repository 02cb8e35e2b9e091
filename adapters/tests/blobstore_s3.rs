//! The blob store suite against a real S3 server on loopback (SeaweedFS in
//! CI, started by scripts/test-services.sh), plus what only S3 shows: bucket
//! creation, credentials, and a second host sharing the bucket.
//!
//! The server comes from `VMR_TEST_S3_ENDPOINT`, `VMR_TEST_S3_ACCESS_KEY`,
//! `VMR_TEST_S3_SECRET_KEY` and `VMR_TEST_S3_REGION` (default us-east-1).
//! Without an endpoint these tests fail, unless `VMR_TEST_SKIP_S3=1`.

// Integration tests: a failed unwrap is the test failing (clippy.toml allows
// it in #[test] functions, not in the helpers they share).
#![allow(clippy::unwrap_used)]

mod blobstore_suite;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use blobstore_suite::{Harness, data, put, temporaries};
use bytes::Bytes;
use tempfile::TempDir;
use vmr_adapters::blobstore::{OpendalStore, S3Settings};
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
    })
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
    let store = open(&settings, local.path())
        .await
        .expect("S3 store on a fresh bucket");
    Some(S3 {
        settings,
        _local: local,
        store,
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
            Err(StoreError::Backend(message)) => {
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
        Err(StoreError::Backend(message)) => {
            assert!(message.contains(&settings.bucket), "{message}");
            assert!(message.contains("the bucket does not exist"), "{message}");
        }
        Err(other) => panic!("expected a backend error, got {other:?}"),
        Ok(store) => panic!("a missing bucket was accepted: {}", store.describe()),
    }
}
