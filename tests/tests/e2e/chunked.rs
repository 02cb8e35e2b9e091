//! Chunked pushes and pulls end to end (docs/chunked-images.md): a disk
//! larger than the chunk size (1 MiB here, `--push-chunk-mib 1`) travels as
//! chunk layers; a fresh daemon pulls it back to the same local digest and
//! bytes; skopeo copies it; an interrupted push sends only the chunks the
//! registry lacks; a second version with one changed chunk uploads and
//! downloads only that chunk. Needs `scripts/test-services.sh` (or
//! `VMR_TEST_SKIP_REGISTRY=1` to skip).

use std::path::{Path, PathBuf};

use vmr_proto::v1 as pb;
use vmr_proto::v1::transfer_progress::Event;
use vmr_tests::Daemon;
use vmr_tests::fixtures::{sha256_bytes, vmfile};
use vmr_tests::registry::{PrivateRegistry, service_env, skopeo, unique_repo};

const MIB: usize = 1 << 20;
const CHUNKS: usize = 24;
const CHUNK_MEDIA_TYPE: &str = "application/vnd.vmregistry.disk.chunk.v1.raw";

fn chunking_daemon(registry_url: &str, parallel: &str) -> Daemon {
    Daemon::start_with(&[
        "--hypervisor",
        "fake",
        "--registry-url",
        registry_url,
        "--push-chunk-mib",
        "1",
        "--transfer-parallel",
        parallel,
    ])
}

/// A disk of `CHUNKS` 1 MiB chunks, all different: the first half
/// pseudo-random (stored plain), the second mostly zeros (stored zstd).
fn disk_bytes(seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(CHUNKS * MIB);
    while bytes.len() < CHUNKS / 2 * MIB {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.resize(CHUNKS * MIB, 0);
    for chunk in CHUNKS / 2..CHUNKS {
        bytes[chunk * MIB..chunk * MIB + 8].copy_from_slice(&(chunk as u64 + seed).to_le_bytes());
    }
    bytes
}

fn import(daemon: &Daemon, work: &Path, repo: &str, tag: &str, bytes: &[u8]) -> PathBuf {
    let disk = work.join(format!("{tag}.raw"));
    std::fs::write(&disk, bytes).unwrap();
    let file = vmfile(work, repo, disk.to_str().unwrap(), "raw");
    daemon
        .vmr(&["import", "-f", file.to_str().unwrap(), "-t", tag])
        .ok();
    disk
}

fn local_digest(daemon: &Daemon, reference: &str) -> String {
    let inspected = daemon.vmr(&["inspect", "-o", "json", reference]).json();
    inspected["image"]["digest"].as_str().unwrap().to_owned()
}

fn blob_path(daemon: &Daemon, digest: &str) -> PathBuf {
    daemon
        .store
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn remote_manifest(host: &str, reference: &str) -> serde_json::Value {
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{host}/{reference}"),
    ])
    .stdout;
    serde_json::from_slice(&raw).unwrap()
}

/// Blob upload PUTs (one per blob stored) in a registry's access log.
fn uploads(registry: &PrivateRegistry) -> usize {
    registry.count("PUT", "/blobs/uploads/")
}

/// Blob GETs in a registry's access log, of any digest but `except`.
fn downloads(registry: &PrivateRegistry, except: &str) -> usize {
    registry
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/blobs/sha256:") && !r.contains(except))
        .count()
}

fn chunk_events(events: &[pb::TransferProgress], skipped: bool) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(&e.event, Some(Event::Blob(b))
                if b.media_type.starts_with(CHUNK_MEDIA_TYPE) && b.skipped == skipped && b.done == b.total)
        })
        .count()
}

/// The digests of the chunks a push uploaded (not skipped), per its events.
fn uploaded_chunks(events: &[pb::TransferProgress]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Blob(b))
                if b.media_type.starts_with(CHUNK_MEDIA_TYPE)
                    && !b.skipped
                    && b.done == b.total =>
            {
                Some(b.digest.clone())
            }
            _ => None,
        })
        .collect()
}

async fn push_events(daemon: &Daemon, reference: &str) -> Vec<pb::TransferProgress> {
    let mut client = daemon.client().await;
    let mut stream = client
        .push_image(pb::PushImageRequest {
            reference: reference.to_owned(),
            context: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event);
    }
    events
}

#[test]
fn a_chunked_image_pulls_back_identical_and_skopeo_copies_it() {
    let Some(anon) = service_env("VMR_TEST_REGISTRY") else {
        return;
    };
    let pusher = chunking_daemon(&format!("http://{anon}"), "3");
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("chunked");
    let mut bytes = disk_bytes(u64::from(std::process::id()));
    // The last two chunks are the same (all zeros): one blob, two layers.
    bytes[(CHUNKS - 2) * MIB..].fill(0);
    import(&pusher, work.path(), &repo, "v1", &bytes);
    let reference = format!("{repo}:v1");
    let local = local_digest(&pusher, &reference);

    let pushed = pusher.vmr(&["push", "-o", "json", &reference]).json();
    let remote = pushed["digest"].as_str().unwrap().to_owned();
    let manifest = remote_manifest(&anon, &reference);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), CHUNKS, "{manifest}");
    assert_eq!(layers[0]["mediaType"], CHUNK_MEDIA_TYPE);
    assert_eq!(
        layers[CHUNKS - 1]["mediaType"],
        format!("{CHUNK_MEDIA_TYPE}+zstd")
    );
    assert!(layers[CHUNKS - 1]["size"].as_u64().unwrap() < MIB as u64 / 10);
    assert_eq!(layers[CHUNKS - 1]["digest"], layers[CHUNKS - 2]["digest"]);
    assert_eq!(
        layers[5]["annotations"]["vnd.vmregistry.chunk.offset"],
        (5 * MIB).to_string()
    );
    assert_eq!(
        manifest["annotations"]["vnd.vmregistry.disk.digest"],
        sha256_bytes(&bytes)
    );
    assert_ne!(remote, local, "the registry holds the chunked form");

    // A fresh daemon pulls it back: the same local image, the same disk.
    let puller = chunking_daemon(&format!("http://{anon}"), "3");
    let pulled = puller.vmr(&["pull", "-o", "json", &reference]).json();
    assert_eq!(pulled["digest"], local.as_str());
    assert_eq!(local_digest(&puller, &reference), local);
    assert_eq!(
        std::fs::read(blob_path(&puller, &sha256_bytes(&bytes))).unwrap(),
        bytes
    );
    // The chunk staging is cleaned up after the disk is committed.
    let staging = puller.store.join("chunks");
    let left = std::fs::read_dir(&staging).map_or(0, Iterator::count);
    assert_eq!(left, 0, "staging files left in {}", staging.display());

    // skopeo sees plain blobs: it copies every chunk, digests checked.
    let copied = work.path().join("copied");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{anon}/{reference}"),
        &format!("oci:{}:v1", copied.display()),
    ]);
    for layer in layers {
        let digest = layer["digest"].as_str().unwrap();
        let blob = std::fs::read(
            copied
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap();
        assert_eq!(sha256_bytes(&blob), digest);
        assert_eq!(blob.len() as u64, layer["size"].as_u64().unwrap());
    }
    // The plain chunks are the disk's bytes at their offsets.
    let third = layers[3]["digest"].as_str().unwrap();
    assert_eq!(
        std::fs::read(
            copied
                .join("blobs/sha256")
                .join(third.trim_start_matches("sha256:"))
        )
        .unwrap(),
        &bytes[3 * MIB..4 * MIB]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupted_pushes_resume_and_new_versions_move_only_changed_chunks() {
    if service_env("VMR_TEST_REGISTRY").is_none() {
        return;
    }
    let registry = PrivateRegistry::start();
    let pusher = chunking_daemon(&registry.url(), "1");
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("chunk-resume");
    let bytes = disk_bytes(7);
    import(&pusher, work.path(), &repo, "v1", &bytes);
    let v1 = format!("{repo}:v1");

    // The client leaves after three chunks: the push is cancelled.
    {
        let mut client = pusher.client().await;
        let mut stream = client
            .push_image(pb::PushImageRequest {
                reference: v1.clone(),
                context: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut seen = Vec::new();
        while chunk_events(&seen, false) < 3 {
            seen.push(stream.message().await.unwrap().expect("push still going"));
        }
    }
    // The daemon dropped the push (its own account of the client leaving);
    // an upload already answered by then is in the registry, which is fine.
    pusher.wait_for_log("the client left; transfer cancelled");
    let first: std::collections::HashSet<String> = registry.stored_blobs().into_iter().collect();
    assert!(
        (4..=CHUNKS).contains(&first.len()),
        "{} blobs uploaded before the interruption",
        first.len()
    );

    // The next push sends only what is missing: in the registry's own log,
    // every blob was stored exactly once over both pushes.
    let events = push_events(&pusher, &v1).await;
    let stored = registry.stored_blobs();
    let distinct: std::collections::HashSet<&String> = stored.iter().collect();
    assert_eq!(
        distinct.len(),
        stored.len(),
        "a blob stored twice: {stored:?}"
    );
    assert_eq!(stored.len(), CHUNKS + 1, "config and every chunk once");
    let resent: Vec<String> = uploaded_chunks(&events)
        .into_iter()
        .filter(|d| first.contains(d))
        .collect();
    assert!(resent.is_empty(), "uploaded again: {resent:?}");
    assert!(chunk_events(&events, true) >= 3);

    // A fresh daemon pulls v1.
    let puller = chunking_daemon(&registry.url(), "2");
    puller.vmr(&["pull", &v1]).ok();
    let manifest = serde_json::from_slice::<serde_json::Value>(
        &skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{}/{v1}", registry.host()),
        ])
        .stdout,
    )
    .unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_owned();

    // v2 differs from v1 in one byte of chunk 9.
    let mut changed = bytes.clone();
    changed[9 * MIB + 4321] ^= 0xff;
    import(&pusher, work.path(), &repo, "v2", &changed);
    let v2 = format!("{repo}:v2");
    let before = uploads(&registry);
    let events = push_events(&pusher, &v2).await;
    assert_eq!(chunk_events(&events, false), 1, "one chunk uploaded");
    assert_eq!(chunk_events(&events, true), CHUNKS - 1);
    let sent = uploads(&registry) - before;
    assert!(sent == 1 || sent == 2, "{sent} blobs uploaded for v2");

    let before = downloads(&registry, &config);
    let pulled = puller.vmr(&["pull", "-o", "json", &v2]).json();
    assert_eq!(
        downloads(&registry, &config) - before,
        1,
        "only the changed chunk is downloaded"
    );
    assert_eq!(pulled["digest"], local_digest(&pusher, &v2).as_str());
    assert_eq!(
        std::fs::read(blob_path(&puller, &sha256_bytes(&changed))).unwrap(),
        changed
    );
}
