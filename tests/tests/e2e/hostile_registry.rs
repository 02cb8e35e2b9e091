//! Pulling from a hostile registry (tests/src/hostile_registry.rs): a blob
//! whose bytes do not match its digest, a 100 MB, chunked 100 MB or endless
//! manifest, a blob longer than its descriptor, absurd sizes and malformed
//! digests in the manifest. Each pull ends in INVALID_ARGUMENT,
//! FAILED_PRECONDITION, RESOURCE_EXHAUSTED or DATA_LOSS within a bound, with
//! bounded daemon memory, no image, no unverified blob or temporary left in the store,
//! nothing written beside it, and `vmr system check` clean.

use std::path::Path;
use std::time::Duration;

use tonic::Code;
use vmr_proto::v1 as pb;
use vmr_tests::Daemon;
use vmr_tests::hostile_registry::{HUGE_MANIFEST_BYTES, HostileRegistry, Hostility};

/// Every hostile pull must end within this; a hang is a failure.
const BOUND: Duration = Duration::from_secs(60);
/// The most the daemon's peak resident memory may be: far below the 100 MB
/// manifest, so a daemon that buffered it fails.
const MAX_DAEMON_RSS_KIB: u64 = 80 * 1024;

const DATA_LOSS: &[Code] = &[Code::DataLoss];
const TOO_LARGE: &[Code] = &[Code::ResourceExhausted];
const MALFORMED: &[Code] = &[Code::InvalidArgument, Code::FailedPrecondition];

async fn pull(
    daemon: &Daemon,
    reference: &str,
) -> Result<Vec<pb::TransferProgress>, tonic::Status> {
    let call = async {
        let mut client = daemon.client().await;
        let mut stream = client
            .pull_image(pb::PullImageRequest {
                reference: reference.to_owned(),
                context: String::new(),
            })
            .await?
            .into_inner();
        let mut events = Vec::new();
        while let Some(event) = stream.message().await? {
            events.push(event);
        }
        Ok(events)
    };
    tokio::time::timeout(BOUND, call)
        .await
        .unwrap_or_else(|_| panic!("pull of {reference}: no answer within {BOUND:?}"))
}

/// Everything below `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            }
            out.push(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The daemon's files outside its store (socket, log, ...).
fn beside_the_store(daemon: &Daemon) -> Vec<String> {
    let store = daemon
        .store
        .strip_prefix(daemon.dir.path())
        .unwrap()
        .display()
        .to_string();
    tree(daemon.dir.path())
        .into_iter()
        .filter(|f| *f != store && !f.starts_with(&format!("{store}/")))
        .collect()
}

fn blobs_and_temporaries(daemon: &Daemon) -> Vec<String> {
    daemon
        .store_files()
        .into_iter()
        .filter(|f| f.starts_with("blobs/") || f.starts_with("tmp/"))
        .collect()
}

fn peak_rss_kib(daemon: &Daemon) -> u64 {
    let pid = daemon.pid().expect("the daemon runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Pulls from a registry lying about `hostility`; the pull must be refused
/// with one of `allowed` and leave nothing behind.
async fn refused(hostility: Hostility, allowed: &[Code]) -> tonic::Status {
    let daemon = Daemon::start();
    let registry = HostileRegistry::start(hostility);
    let before = beside_the_store(&daemon);
    let status = match pull(&daemon, &registry.reference()).await {
        Ok(events) => panic!("{hostility:?}: the pull succeeded: {events:?}"),
        Err(status) => status,
    };
    assert!(
        allowed.contains(&status.code()),
        "{hostility:?}: {:?} {}",
        status.code(),
        status.message()
    );
    assert!(
        !status.message().is_empty() && status.message().contains(&registry.host()),
        "{hostility:?}: the error names the registry: {}",
        status.message()
    );

    // No image, no blob, no temporary; nothing beside the store.
    let mut client = daemon.client().await;
    let images = client
        .list_images(pb::ListImagesRequest::default())
        .await
        .expect("the daemon still answers")
        .into_inner();
    assert!(images.images.is_empty(), "{hostility:?}: {images:?}");
    // A blob that was fetched and verified before the lie was found (the
    // config) may stay, unreferenced, for the next pull or `vmr system gc`;
    // nothing unverified and no temporary may.
    let verified = format!("blobs/sha256/{}", registry.config_digest().hex());
    let left: Vec<String> = blobs_and_temporaries(&daemon)
        .into_iter()
        .filter(|f| *f != verified)
        .collect();
    assert_eq!(left, Vec::<String>::new(), "{hostility:?}");
    assert_eq!(beside_the_store(&daemon), before, "{hostility:?}");
    daemon.vmr(&["system", "check"]).ok();
    let rss = peak_rss_kib(&daemon);
    assert!(
        rss < MAX_DAEMON_RSS_KIB,
        "{hostility:?}: the daemon peaked at {rss} KiB"
    );
    status
}

#[tokio::test(flavor = "multi_thread")]
async fn the_well_behaved_registry_serves_a_pullable_image() {
    // The control: the same server, lying about nothing, is pulled from.
    let daemon = Daemon::start();
    let registry = HostileRegistry::start(Hostility::None);
    pull(&daemon, &registry.reference()).await.expect("pull");
    let listed = daemon.vmr(&["images", "-o", "json"]).ok();
    assert!(listed.contains("vm/hostile"), "{listed}");
    let files = daemon.store_files();
    assert!(
        files
            .iter()
            .any(|f| f.contains(registry.disk_digest().hex())),
        "{files:?}"
    );
    daemon.vmr(&["system", "check"]).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_that_does_not_match_its_digest_is_data_loss() {
    let status = refused(Hostility::BlobDigestMismatch, DATA_LOSS).await;
    assert!(
        status.message().contains("hashes to"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_longer_than_its_descriptor_is_data_loss() {
    refused(Hostility::BlobLongerThanDescriptor, DATA_LOSS).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mb_manifest_is_resource_exhausted() {
    let status = refused(Hostility::HugeManifest, TOO_LARGE).await;
    assert!(
        status.message().contains("larger than"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mb_chunked_manifest_is_resource_exhausted() {
    const { assert!(HUGE_MANIFEST_BYTES > (MAX_DAEMON_RSS_KIB << 10)) };
    refused(Hostility::HugeChunkedManifest, TOO_LARGE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_manifest_is_resource_exhausted() {
    refused(Hostility::EndlessManifest, TOO_LARGE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn absurd_sizes_in_the_manifest_are_refused() {
    for (hostility, allowed) in [
        (
            Hostility::AbsurdLayerSize,
            &[
                Code::InvalidArgument,
                Code::FailedPrecondition,
                Code::ResourceExhausted,
                Code::DataLoss,
            ][..],
        ),
        (Hostility::LayerSizeBeyondInt64, MALFORMED),
        (Hostility::AbsurdConfigSize, MALFORMED),
    ] {
        refused(hostility, allowed).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_digests_are_refused() {
    for hostility in [
        Hostility::MalformedLayerDigest,
        Hostility::UnknownDigestAlgorithm,
    ] {
        let status = refused(hostility, MALFORMED).await;
        assert!(
            status.message().contains("digest"),
            "{hostility:?}: {}",
            status.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_content_digest_header_is_not_trusted() {
    // The header is the registry's claim, not vmr's check: a malformed one
    // is ignored and the manifest's own bytes decide (the pull works).
    let daemon = Daemon::start();
    let registry = HostileRegistry::start(Hostility::MalformedManifestDigestHeader);
    pull(&daemon, &registry.reference()).await.expect("pull");
    daemon.vmr(&["system", "check"]).ok();
}
