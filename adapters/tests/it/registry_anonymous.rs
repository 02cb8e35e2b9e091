//! The OCI registry client against a real docker-registry without auth
//! (`VMR_TEST_REGISTRY`): uploads (monolithic and chunked), HEAD, mount,
//! manifests by tag and digest, tag lists, ranged downloads, the errors for
//! missing things and a dead registry, and skopeo agreeing on digests.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::registry_support::*;
use bytes::Bytes;
use vmr_adapters::registry::RegistryOptions;
use vmr_domain::image::{Digest, MANIFEST_MEDIA_TYPE, Tag};
use vmr_ports::{
    ManifestReference, RegistryConnector, RegistryError, RegistryTarget, StoreError, UploadProgress,
};

#[tokio::test]
async fn ping_and_monolithic_upload_with_head_before_and_after() {
    let Some(registry) = service_env("VMR_TEST_REGISTRY") else {
        return;
    };
    let client = connect(&registry, None);
    client.ping().await.expect("ping");
    assert_eq!(client.describe(), registry);

    let repo = unique_repo("mono");
    let blob = noise(1024 * 1024 + 7, 1);
    let digest = Digest::of(&blob);
    assert_eq!(client.blob_exists(&repo, &digest).await.unwrap(), None);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let progress: UploadProgress = Arc::new(move |n| sink.lock().unwrap().push(n));
    client
        .upload_blob(
            &repo,
            &digest,
            blob.len() as u64,
            as_stream(&blob),
            Some(progress),
        )
        .await
        .expect("monolithic upload");
    assert_eq!(
        seen.lock().unwrap().last().copied(),
        Some(blob.len() as u64)
    );
    assert_eq!(
        client.blob_exists(&repo, &digest).await.unwrap(),
        Some(blob.len() as u64)
    );

    let download = client.get_blob(&repo, &digest, 0).await.expect("download");
    assert_eq!(download.size, blob.len() as u64);
    assert_eq!(collect(download.stream).await, blob);
}

#[tokio::test]
async fn chunked_upload_reports_progress_per_chunk() {
    let Some(registry) = service_env("VMR_TEST_REGISTRY") else {
        return;
    };
    let options = RegistryOptions {
        monolithic_limit: 512 * 1024,
        chunk_size: 1024 * 1024,
        ..RegistryOptions::default()
    };
    let client = connect_with(options, &registry, None);
    let repo = unique_repo("chunked");
    let blob = noise(3 * 1024 * 1024 + 512 * 1024 + 3, 2);
    let digest = Digest::of(&blob);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let progress: UploadProgress = Arc::new(move |n| sink.lock().unwrap().push(n));
    client
        .upload_blob(
            &repo,
            &digest,
            blob.len() as u64,
            as_stream(&blob),
            Some(progress),
        )
        .await
        .expect("chunked upload");
    let seen = seen.lock().unwrap().clone();
    // Four PATCHes of at most 1 MiB, then the completion.
    let mib = 1024 * 1024;
    assert_eq!(seen[..4], [mib, 2 * mib, 3 * mib, blob.len() as u64]);
    assert_eq!(seen.last().copied(), Some(blob.len() as u64));
    assert_eq!(
        client.blob_exists(&repo, &digest).await.unwrap(),
        Some(blob.len() as u64)
    );
    assert_eq!(
        collect(client.get_blob(&repo, &digest, 0).await.unwrap().stream).await,
        blob
    );
}

#[tokio::test]
async fn an_upload_whose_bytes_do_not_match_the_digest_is_refused() {
    let Some(registry) = service_env("VMR_TEST_REGISTRY") else {
        return;
    };
    let client = connect(&registry, None);
    let repo = unique_repo("baddigest");
    let blob = noise(1000, 3);
    let claimed = Digest::of(b"something else");
    let err = client
        .upload_blob(&repo, &claimed, blob.len() as u64, as_stream(&blob), None)
        .await
        .expect_err("wrong digest");
    assert!(
        matches!(&err, RegistryError::Rejected { message, .. } if message.contains("DIGEST_INVALID")),
        "{err}"
    );
    assert_eq!(client.blob_exists(&repo, &claimed).await.unwrap(), None);

    let err = client
        .upload_blob(
            &repo,
            &Digest::of(&blob),
            blob.len() as u64 + 1,
            as_stream(&blob),
            None,
        )
        .await
        .expect_err("short stream");
    assert!(matches!(err, RegistryError::Source { .. }), "{err}");
}

#[tokio::test]
async fn mount_from_another_repository() {
    let Some(registry) = service_env("VMR_TEST_REGISTRY") else {
        return;
    };
    let client = connect(&registry, None);
    let (source, target) = (unique_repo("mount-src"), unique_repo("mount-dst"));
    let blob = noise(4096, 4);
    let digest = push_blob(client.as_ref(), &source, &blob).await;
    assert_eq!(client.blob_exists(&target, &digest).await.unwrap(), None);
    assert!(
        client
            .mount_blob(&target, &digest, &source)
            .await
            .expect("mount")
    );
    assert_eq!(
        client.blob_exists(&target, &digest).await.unwrap(),
        Some(4096)
    );

    let unknown = Digest::of(b"never uploaded");
    assert!(
        !client
            .mount_blob(&target, &unknown, &source)
            .await
            .expect("declined mount")
    );
}

#[tokio::test]
async fn manifests_by_tag_and_digest_and_tag_lists() {
    let Some(registry) = service_env("VMR_TEST_REGISTRY") else {
        return;
    };
    let client = connect(&registry, None);
    let repo = unique_repo("manifest");
    let config = Bytes::from_static(br#"{"name":"vm"}"#);
    let disk = noise(10_000, 5);
    let manifest = manifest(
        (&Digest::of(&config), config.len()),
        (&Digest::of(&disk), disk.len()),
    );
    let v1: Tag = "v1".parse().unwrap();

    // The blobs must be there first.
    let err = client
        .put_manifest(
            &repo,
            &ManifestReference::Tag(v1.clone()),
            manifest.clone(),
            MANIFEST_MEDIA_TYPE,
        )
        .await
        .expect_err("blobs missing");
    assert!(
        matches!(&err, RegistryError::Rejected { message, .. } if message.contains("MANIFEST_BLOB_UNKNOWN")),
        "{err}"
    );

    push_blob(client.as_ref(), &repo, &config).await;
    push_blob(client.as_ref(), &repo, &disk).await;
    let digest = client
        .put_manifest(
            &repo,
            &ManifestReference::Tag(v1.clone()),
            manifest.clone(),
            MANIFEST_MEDIA_TYPE,
        )
        .await
        .expect("put by tag");
    assert_eq!(digest, Digest::of(&manifest));
    let by_digest = client
        .put_manifest(
            &repo,
            &ManifestReference::Digest(digest.clone()),
            manifest.clone(),
            MANIFEST_MEDIA_TYPE,
        )
        .await
        .expect("put by digest");
    assert_eq!(by_digest, digest);
    for tag in ["v2", "latest"] {
        let tag = ManifestReference::Tag(tag.parse().unwrap());
        client
            .put_manifest(&repo, &tag, manifest.clone(), MANIFEST_MEDIA_TYPE)
            .await
            .unwrap();
    }

    let got = client
        .get_manifest(&repo, &ManifestReference::Tag(v1.clone()))
        .await
        .expect("get by tag");
    assert_eq!(
        (&got.bytes, &got.digest, got.media_type.as_str()),
        (&manifest, &digest, MANIFEST_MEDIA_TYPE)
    );
    let got = client
        .get_manifest(&repo, &ManifestReference::Digest(digest.clone()))
        .await
        .expect("get by digest");
    assert_eq!(got.bytes, manifest);

    let tags: Vec<String> = client
        .list_tags(&repo)
        .await
        .unwrap()
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    assert_eq!(tags, ["latest", "v1", "v2"]);

    // skopeo, an independent client, sees the same bytes under the same digest.
    let output = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{registry}/{}:v1", repo.as_str()))
        .output()
        .expect("run skopeo");
    assert!(
        output.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(Digest::of(&output.stdout), digest);
}

#[tokio::test]
async fn ranged_downloads_resume_where_asked() {
    let Some(registry) = service_env("VMR_TEST_REGISTRY") else {
        return;
    };
    let client = connect(&registry, None);
    let repo = unique_repo("range");
    let blob = noise(300_000, 6);
    let digest = push_blob(client.as_ref(), &repo, &blob).await;

    let tail = client
        .get_blob(&repo, &digest, 123_456)
        .await
        .expect("ranged");
    assert_eq!(tail.size, 300_000);
    assert_eq!(collect(tail.stream).await, blob.slice(123_456..));

    let nothing_left = client
        .get_blob(&repo, &digest, 300_000)
        .await
        .expect("at the end");
    assert_eq!(nothing_left.size, 300_000);
    assert!(collect(nothing_left.stream).await.is_empty());

    let beyond = client.get_blob(&repo, &digest, 300_001).await;
    assert!(
        matches!(beyond, Err(RegistryError::Rejected { .. })),
        "{beyond:?}"
    );
}

#[tokio::test]
async fn missing_things_are_not_found() {
    let Some(registry) = service_env("VMR_TEST_REGISTRY") else {
        return;
    };
    let client = connect(&registry, None);
    let repo = unique_repo("missing");
    let err = client
        .get_manifest(&repo, &ManifestReference::Tag("nope".parse().unwrap()))
        .await
        .expect_err("no manifest");
    assert!(
        matches!(&err, RegistryError::NotFound { message, .. } if message.contains("UNKNOWN")),
        "{err}"
    );
    let err = client
        .get_blob(&repo, &Digest::of(b"x"), 0)
        .await
        .expect_err("no blob");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    let err = client.list_tags(&repo).await.expect_err("no repository");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn a_dead_registry_is_unavailable_after_bounded_retries() {
    // Port 9 (discard) on loopback: nothing listens there in the test setup.
    let options = RegistryOptions {
        retry: quick_retry(),
        ..RegistryOptions::default()
    };
    let client = connect_with(options, "127.0.0.1:9", None);
    let started = Instant::now();
    let err = client.ping().await.expect_err("nothing listens");
    let elapsed = started.elapsed();
    assert!(
        matches!(&err, RegistryError::Unavailable { message, .. } if message.contains("connect")),
        "{err}"
    );
    // Three tries: two waits of 50 and 100 ms in between, and not much more.
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn plain_http_is_refused_off_loopback() {
    let connector = connector(RegistryOptions::default());
    let target = |base_url: &str, insecure| RegistryTarget {
        base_url: base_url.to_owned(),
        insecure,
        credential: None,
    };
    let err = connector
        .connect(&target("http://registry.example.com", false))
        .err()
        .expect("refused");
    assert!(
        matches!(err, RegistryError::InsecureRefused { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("insecure"), "{err}");
    assert!(
        connector
            .connect(&target("http://registry.example.com", true))
            .is_ok()
    );
    let err = connector
        .connect(&target("ftp://x", false))
        .err()
        .expect("bad scheme");
    assert!(matches!(err, RegistryError::InvalidTarget { .. }), "{err}");
}

/// Options under which a 3 MiB blob goes up in one streamed PUT and a
/// larger one in a streamed PATCH.
fn streamed_options() -> RegistryOptions {
    RegistryOptions {
        monolithic_limit: 512 * 1024,
        streamed_put_limit: 3 * 1024 * 1024,
        ..RegistryOptions::default()
    }
}

#[tokio::test]
async fn uploads_from_a_source_stream_it_in_one_put_or_one_patch() {
    let Some(registry) = service_env("VMR_TEST_REGISTRY") else {
        return;
    };
    let client = connect_with(streamed_options(), &registry, None);
    let repo = unique_repo("streamed");
    for (len, seed) in [(3 * 1024 * 1024, 21), (5 * 1024 * 1024 + 3, 22)] {
        let blob = noise(len, seed);
        let digest = Digest::of(&blob);
        let source = MemorySource::new(&blob);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        let progress: UploadProgress = Arc::new(move |done| recorder.lock().unwrap().push(done));
        client
            .upload_blob_from(&repo, &digest, len as u64, source.clone(), Some(progress))
            .await
            .expect("streamed upload");
        assert_eq!(source.opened(), vec![0], "opened once, from the start");
        assert_eq!(
            client.blob_exists(&repo, &digest).await.unwrap(),
            Some(len as u64)
        );
        let back = collect(client.get_blob(&repo, &digest, 0).await.unwrap().stream).await;
        assert_eq!(back, blob);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.last(), Some(&(len as u64)));
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    }
}

#[tokio::test]
async fn a_source_that_fails_or_lies_about_its_size_uploads_nothing() {
    let Some(registry) = service_env("VMR_TEST_REGISTRY") else {
        return;
    };
    let client = connect_with(streamed_options(), &registry, None);
    let repo = unique_repo("badsource");
    for len in [2 * 1024 * 1024, 4 * 1024 * 1024] {
        let blob = noise(len, 23);
        let digest = Digest::of(&blob);
        // Fails after its last byte: the request fails before that byte.
        let corrupt = Arc::new(MemorySource {
            bytes: blob.clone(),
            fail_at_end: true,
            opened: Default::default(),
        });
        let err = client
            .upload_blob_from(&repo, &digest, len as u64, corrupt, None)
            .await
            .expect_err("the source failed");
        assert!(
            matches!(
                &err,
                RegistryError::Source {
                    source: StoreError::Corrupt { .. },
                    ..
                }
            ),
            "{err}"
        );
        // Shorter and longer than announced.
        for announced in [len as u64 + 1, len as u64 - 1] {
            let err = client
                .upload_blob_from(&repo, &digest, announced, MemorySource::new(&blob), None)
                .await
                .expect_err("wrong size");
            assert!(
                matches!(
                    &err,
                    RegistryError::Source {
                        source: StoreError::SizeMismatch { .. },
                        ..
                    }
                ),
                "{err}"
            );
        }
        assert_eq!(client.blob_exists(&repo, &digest).await.unwrap(), None);
    }
}
