//! Races against a real `vmrd`: many imports of one image at once,
//! concurrent `compose up` of one project, and tag/rmi/prune loops running
//! alongside imports on the filesystem and the S3 store. Nothing here
//! depends on timing: every task runs a fixed number of operations and the
//! assertions are about what the store holds afterwards.

use std::collections::BTreeSet;

use serde_json::Value;
use tonic::Code;
use vmr_proto::v1 as pb;
use vmr_tests::Daemon;
use vmr_tests::fixtures::{qcow2, sha256_bytes, vmfile};

type Client = pb::vm_service_client::VmServiceClient<tonic::transport::Channel>;

fn raw_vmfile(name: &str) -> String {
    format!(
        "apiVersion: v1\nmetadata:\n  name: {name}\nspec:\n  diskImage: d.raw\n  diskFormat: raw\n  resources: {{cpu: 1, memory: 64MiB}}\n"
    )
}

/// A raw disk of `len` bytes whose content depends on `seed`.
fn disk(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(37))
        .collect()
}

/// Imports `disk` as `name` with `tags` over gRPC, in 256 KiB chunks.
async fn import(
    client: &mut Client,
    name: &str,
    tags: &[String],
    disk: &[u8],
) -> Result<pb::ImportImageResponse, tonic::Status> {
    use pb::import_image_request::Part;
    let mut messages = vec![pb::ImportImageRequest {
        part: Some(Part::Header(pb::ImportHeader {
            vmfile: raw_vmfile(name),
            tags: tags.to_vec(),
            disk_size: disk.len() as u64,
            disk_digest: String::new(),
            disk_file_name: "d.raw".into(),
            ..Default::default()
        })),
    }];
    messages.extend(disk.chunks(256 << 10).map(|c| pb::ImportImageRequest {
        part: Some(Part::Chunk(c.to_vec().into())),
    }));
    client
        .import_image(tonic::codegen::tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

/// The blob digests in a filesystem store.
fn fs_blobs(daemon: &Daemon) -> Vec<String> {
    let mut blobs: Vec<String> = std::fs::read_dir(daemon.store.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    blobs.sort();
    blobs
}

/// Asserts `vmr system check` finds nothing wrong and every listed tag
/// resolves to a manifest whose blobs all exist; returns the references.
async fn assert_store_clean(daemon: &Daemon) -> Vec<String> {
    let check = daemon.vmr(&["system", "check", "-o", "json"]).json();
    assert_eq!(check["clean"], true, "{check}");
    let mut client = daemon.client().await;
    let images = client
        .list_images(pb::ListImagesRequest::default())
        .await
        .expect("list images")
        .into_inner()
        .images;
    let mut references = Vec::new();
    for image in images {
        for tag in &image.tags {
            let reference = format!("{}:{tag}", image.repository);
            let inspected = client
                .inspect_image(pb::InspectImageRequest {
                    reference: reference.clone(),
                })
                .await
                .unwrap_or_else(|e| panic!("{reference} does not resolve: {e:?}"))
                .into_inner();
            assert!(!inspected.manifest.is_empty(), "{reference}");
            references.push(reference);
        }
    }
    references
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_concurrent_imports_of_one_image_all_succeed_and_store_one_disk_blob() {
    let daemon = Daemon::start();
    let bytes = disk(3 << 20, 1);
    let disk_digest = sha256_bytes(&bytes);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut client = daemon.client().await;
        let bytes = bytes.clone();
        // Half share one tag, half have their own.
        let tags = if i % 2 == 0 {
            vec!["shared".to_owned()]
        } else {
            vec![format!("own-{i}")]
        };
        tasks.push(tokio::spawn(async move {
            import(&mut client, "race/same", &tags, &bytes).await
        }));
    }
    for task in tasks {
        let outcome = task.await.unwrap().expect("every import succeeds");
        assert_eq!(outcome.references.len(), 1);
    }

    let references = assert_store_clean(&daemon).await;
    let expected: BTreeSet<String> = std::iter::once("race/same:shared".to_owned())
        .chain((1..16).step_by(2).map(|i| format!("race/same:own-{i}")))
        .collect();
    assert_eq!(references.into_iter().collect::<BTreeSet<_>>(), expected);
    let blobs = fs_blobs(&daemon);
    assert_eq!(
        blobs.iter().filter(|b| **b == disk_digest).count(),
        1,
        "{blobs:?}"
    );
    // Besides the disk: one config (all imports made the same one) and the
    // manifests (each import is its own, by its creation time).
    let others = blobs.len() - 1;
    assert!((2..=17).contains(&others), "{blobs:?}");
    let after = daemon.vmr(&["image", "prune", "-o", "json"]);
    assert!(after.success(), "{}", after.stderr());
    // What the tags use survives the prune; the store stays clean.
    assert!(fs_blobs(&daemon).contains(&disk_digest));
    assert_store_clean(&daemon).await;
}

const PROJECT: &str = "apiVersion: v1
name: racing
services:
  a: {image: tests/tiny:1}
  b: {image: tests/tiny:1}
  c: {image: tests/tiny:1, dependsOn: [a, b]}
";

#[test]
fn concurrent_compose_up_of_one_project_leaves_exactly_one_set_of_vms() {
    let daemon = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    qcow2(work.path(), "disk.qcow2", "16M");
    let file = vmfile(work.path(), "tests/tiny", "disk.qcow2", "qcow2");
    daemon
        .vmr(&["import", "-f", file.to_str().unwrap(), "-t", "1"])
        .ok();
    let compose = work.path().join("vmcompose.yaml");
    std::fs::write(&compose, PROJECT).unwrap();
    let compose = compose.to_str().unwrap();

    for round in 0..2 {
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let runs: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| daemon.vmr(&["compose", "-f", compose, "up"])))
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let mut succeeded = 0;
        for out in &outcomes {
            if out.success() {
                succeeded += 1;
            } else {
                let err = out.stderr();
                assert!(
                    err.contains(
                        "another `compose up` or `compose down` of this project is running"
                    ),
                    "round {round}: an `up` failed otherwise than FAILED_PRECONDITION: {err}"
                );
            }
        }
        assert!(succeeded >= 1, "round {round}: no `up` succeeded");

        let ps = daemon.vmr(&["ps", "-a", "-o", "json"]).json();
        let mut names: Vec<String> = ps["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|vm| vm["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["racing-a", "racing-b", "racing-c"],
            "round {round}: {ps}"
        );
        let runtime: Vec<String> = std::fs::read_dir(daemon.store.join("runtime"))
            .map(|dirs| {
                dirs.map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            runtime.iter().all(|d| names.contains(d)),
            "round {round}: runtime directories of no VM: {runtime:?}"
        );
    }
    daemon.vmr(&["compose", "-f", compose, "down"]).ok();
    let ps = daemon.vmr(&["ps", "-a", "-o", "json"]).json();
    assert_eq!(ps["vms"].as_array().unwrap().len(), 0, "{ps}");
}

/// A status that a racing tag/rmi may get: its source was untagged by
/// someone else, or (rmi) its image is used.
#[track_caller]
fn expected(result: Result<(), tonic::Status>, what: &str) {
    if let Err(status) = result {
        assert!(
            matches!(status.code(), Code::NotFound | Code::FailedPrecondition),
            "{what}: unexpected {status:?}"
        );
    }
}

/// Imports, tags, removals and prunes at once: four importers, a tagger, a
/// remover and a pruner, each a fixed number of operations.
async fn churn(daemon: &Daemon, round: usize) {
    let disks: Vec<Vec<u8>> = (0..3).map(|seed| disk(1 << 20, seed)).collect();
    let tag = |i: usize| format!("t{}", i % 4);
    let mut tasks = Vec::new();
    for importer in 0..4 {
        let mut client = daemon.client().await;
        let disks = disks.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..6 {
                let tags = vec![tag(importer + i)];
                import(&mut client, "race/img", &tags, &disks[(importer + i) % 3])
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: import {importer}/{i}: {e:?}"));
            }
        }));
    }
    let mut client = daemon.client().await;
    tasks.push(tokio::spawn(async move {
        for i in 0..24 {
            let result = client
                .tag_image(pb::TagImageRequest {
                    source: format!("race/img:{}", tag(i)),
                    target: format!("race/copy:{}", tag(i + 1)),
                })
                .await;
            expected(result.map(drop), "tag");
        }
    }));
    let mut client = daemon.client().await;
    tasks.push(tokio::spawn(async move {
        for i in 0..24 {
            let repository = if i % 3 == 0 { "race/copy" } else { "race/img" };
            let result = client
                .remove_image(pb::RemoveImageRequest {
                    reference: format!("{repository}:{}", tag(i)),
                    force: false,
                })
                .await;
            expected(result.map(drop), "rmi");
        }
    }));
    let mut client = daemon.client().await;
    tasks.push(tokio::spawn(async move {
        for i in 0..12 {
            client
                .prune_images(pb::PruneImagesRequest { all: i % 4 == 3 })
                .await
                .unwrap_or_else(|e| panic!("round {round}: prune {i}: {e:?}"));
        }
    }));
    for task in tasks {
        task.await.unwrap();
    }
}

async fn churn_then_check(daemon: &Daemon, rounds: usize) {
    for round in 0..rounds {
        churn(daemon, round).await;
        assert_store_clean(daemon).await;
    }
    // Whatever survived, a last prune leaves exactly what the tags use.
    let mut client = daemon.client().await;
    client
        .prune_images(pb::PruneImagesRequest { all: false })
        .await
        .expect("prune");
    assert_store_clean(daemon).await;
    let log = daemon.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_rmi_and_prune_race_imports_on_the_filesystem_store() {
    let daemon = Daemon::start();
    churn_then_check(&daemon, 3).await;
    // Every blob left is used by a tag.
    let mut used = BTreeSet::new();
    let mut client = daemon.client().await;
    for reference in assert_store_clean(&daemon).await {
        let inspected = client
            .inspect_image(pb::InspectImageRequest { reference })
            .await
            .unwrap()
            .into_inner();
        used.insert(inspected.image.unwrap().digest);
        let manifest: Value = serde_json::from_slice(&inspected.manifest).unwrap();
        used.insert(manifest["config"]["digest"].as_str().unwrap().to_owned());
        for layer in manifest["layers"].as_array().unwrap() {
            used.insert(layer["digest"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(fs_blobs(&daemon).into_iter().collect::<BTreeSet<_>>(), used);
}

/// The S3 flags for a daemon on the test S3 server, with a fresh bucket.
fn s3_flags(bucket: &str) -> Option<Vec<String>> {
    let endpoint = match std::env::var("VMR_TEST_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => e,
        _ if std::env::var("VMR_TEST_SKIP_S3").as_deref() == Ok("1") => {
            eprintln!("skipped: VMR_TEST_SKIP_S3=1");
            return None;
        }
        _ => panic!(
            "VMR_TEST_S3_ENDPOINT is not set: run scripts/test-services.sh start and eval its env, \
             or set VMR_TEST_SKIP_S3=1"
        ),
    };
    let key = std::env::var("VMR_TEST_S3_ACCESS_KEY").expect("VMR_TEST_S3_ACCESS_KEY");
    let secret = std::env::var("VMR_TEST_S3_SECRET_KEY").expect("VMR_TEST_S3_SECRET_KEY");
    Some(
        [
            "--hypervisor",
            "fake",
            "--storage",
            "s3",
            "--s3-bucket",
            bucket,
            "--s3-endpoint",
            &endpoint,
            "--s3-access-key",
            &key,
            "--s3-secret-key",
            &secret,
        ]
        .map(String::from)
        .to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_rmi_and_prune_race_imports_on_the_s3_store() {
    let bucket = format!("vmr-races-{}", vmr_tests::libvirt::unique_suffix());
    let Some(flags) = s3_flags(&bucket) else {
        return;
    };
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let daemon = Daemon::start_with(&flags);
    churn_then_check(&daemon, 2).await;
}
