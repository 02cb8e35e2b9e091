//! The image slice end to end: the real `vmr` talks to a real `vmrd` over its
//! socket; the store is checked on disk.

use vmr_proto::v1 as pb;
use vmr_tests::Daemon;
use vmr_tests::fixtures::{iso, qcow2, raw, sha256_bytes, sha256_file, vmfile};
use vmr_tests::s3::S3Bucket;

/// Every image the daemon lists.
async fn listed(
    client: &mut vmr_proto::v1::vm_service_client::VmServiceClient<tonic::transport::Channel>,
) -> Vec<pb::ImageSummary> {
    client
        .list_images(pb::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
}

fn blob_files(daemon: &Daemon) -> Vec<String> {
    daemon
        .store_files()
        .into_iter()
        .filter(|f| f.starts_with("blobs/"))
        .collect()
}

fn temp_files(daemon: &Daemon) -> Vec<String> {
    daemon
        .store_files()
        .into_iter()
        .filter(|f| f.starts_with("tmp/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn import_qcow2_raw_and_iso_then_list_inspect_tag_rmi_prune() {
    let daemon = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let q = qcow2(work.path(), "disk.qcow2", "64M");
    let r = raw(work.path(), "disk.raw", 3 * 1024 * 1024 + 17, 1);
    let i = iso(work.path(), "cd.iso");
    let qf = vmfile(work.path(), "tests/qcow", "disk.qcow2", "qcow2");
    let rf = vmfile(work.path(), "tests/raw", &r.display().to_string(), "raw");
    let if_ = vmfile(work.path(), "iso", "cd.iso", "iso");

    // The VMFile's relative diskImage is resolved against the VMFile's
    // directory, not the working directory.
    let elsewhere = tempfile::tempdir().unwrap();
    daemon
        .vmr_in(
            &["import", "-f", qf.to_str().unwrap(), "-t", "v1", "-t", "v2"],
            Some(elsewhere.path()),
        )
        .ok();
    daemon.vmr(&["import", "-f", rf.to_str().unwrap()]).ok();
    daemon
        .vmr(&["import", "-f", if_.to_str().unwrap(), "-t", "1.0"])
        .ok();

    // Layout on disk: exactly manifests/<repo>/<tag>/manifest.json and
    // blobs/sha256/<hex>; nothing else but an empty tmp/.
    let files = daemon.store_files();
    let manifests: Vec<_> = files
        .iter()
        .filter(|f| f.starts_with("manifests/"))
        .cloned()
        .collect();
    assert_eq!(
        manifests,
        [
            "manifests/iso/1.0/manifest.json",
            "manifests/tests/qcow/v1/manifest.json",
            "manifests/tests/qcow/v2/manifest.json",
            "manifests/tests/raw/latest/manifest.json",
        ]
    );
    for f in &files {
        assert!(
            f.starts_with("manifests/") || f.starts_with("blobs/sha256/"),
            "unexpected file in the store: {f}"
        );
    }
    // The disk blobs are the disks' exact bytes.
    for disk in [&q, &r, &i] {
        let digest = sha256_file(disk);
        let blob = daemon
            .store
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        assert!(blob.exists(), "disk blob {digest} missing");
        assert_eq!(sha256_file(&blob), digest);
    }

    let mut client = daemon.client().await;
    let list = client
        .list_images(pb::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.images.len(), 3, "{list:?}");
    let qimage = list
        .images
        .iter()
        .find(|i| i.repository == "tests/qcow")
        .unwrap();
    assert_eq!(qimage.tags, ["v1", "v2"]);
    assert_eq!(qimage.disk_format, "qcow2");
    assert_eq!(qimage.cpu, 2);
    assert_eq!(qimage.memory_bytes, 512 * 1024 * 1024);
    // The manifest digest is the sha256 of manifest.json's bytes.
    let manifest_json =
        std::fs::read(daemon.store.join("manifests/tests/qcow/v1/manifest.json")).unwrap();
    assert_eq!(qimage.digest, sha256_bytes(&manifest_json));
    // ... and the manifest is also stored as a blob under that digest.
    assert!(
        daemon
            .store
            .join("blobs/sha256")
            .join(qimage.digest.trim_start_matches("sha256:"))
            .exists()
    );

    // Inspect returns the exact manifest bytes, an OCI artifact manifest with
    // the qcow2's virtual size in its config.
    let inspected = client
        .inspect_image(pb::InspectImageRequest {
            reference: "tests/qcow:v2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inspected.manifest, manifest_json);
    let manifest: serde_json::Value = serde_json::from_slice(&inspected.manifest).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(manifest["artifactType"], "application/vnd.vmregistry.vm.v1");
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.vmregistry.disk.v1.qcow2"
    );
    assert_eq!(
        manifest["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "disk.qcow2"
    );
    assert_eq!(manifest["layers"][0]["digest"], sha256_file(&q));
    let config: serde_json::Value = serde_json::from_slice(&inspected.config).unwrap();
    assert_eq!(config["disk"]["virtualSize"], 64 * 1024 * 1024);
    assert!(!String::from_utf8_lossy(&inspected.config).contains("diskImage"));

    // vmr inspect prints JSON holding the same manifest digest.
    let out = daemon
        .vmr(&["inspect", "--type", "image", "tests/qcow:v1"])
        .ok();
    assert!(out.contains(&qimage.digest), "{out}");

    // tag: a new repository pointing at the same manifest.
    daemon
        .vmr(&["tag", "tests/qcow:v1", "copies/qcow:keep"])
        .ok();
    assert!(
        daemon
            .store
            .join("manifests/copies/qcow/keep/manifest.json")
            .exists()
    );
    assert_eq!(
        std::fs::read(
            daemon
                .store
                .join("manifests/copies/qcow/keep/manifest.json")
        )
        .unwrap(),
        manifest_json
    );

    // rmi of one tag keeps the blobs (other tags use them).
    let blobs_before = blob_files(&daemon);
    daemon.vmr(&["rmi", "tests/qcow:v1", "tests/qcow:v2"]).ok();
    assert!(
        !daemon
            .store
            .join("manifests/tests/qcow")
            .join("v1")
            .exists()
    );
    assert_eq!(
        blob_files(&daemon),
        blobs_before,
        "blobs still referenced by copies/qcow:keep"
    );
    // rmi of the last tag removes the image's blobs.
    daemon.vmr(&["rmi", "copies/qcow:keep"]).ok();
    let qdisk = format!(
        "blobs/sha256/{}",
        sha256_file(&q).trim_start_matches("sha256:")
    );
    assert!(!blob_files(&daemon).contains(&qdisk));

    // rmi of something that does not exist: NOT_FOUND, named.
    let err = daemon.vmr(&["rmi", "tests/qcow:v1"]).err();
    assert!(
        err.contains("tests/qcow:v1") && err.contains("not found"),
        "{err}"
    );

    // prune removes only unreferenced blobs; prune --all removes the rest.
    let orphan = daemon.store.join("blobs/sha256").join("0".repeat(64));
    std::fs::write(&orphan, b"").unwrap(); // not the sha of "", but unreferenced
    daemon.vmr(&["image", "prune"]).ok();
    assert!(!orphan.exists());
    assert_eq!(listed(&mut client).await.len(), 2);
    daemon.vmr(&["image", "prune", "--all"]).ok();
    assert!(blob_files(&daemon).is_empty(), "{:?}", blob_files(&daemon));
    assert!(listed(&mut client).await.is_empty());
}

/// Streams a header and then `chunks`, returning the call's result.
async fn import_raw(
    daemon: &Daemon,
    header: pb::ImportHeader,
    chunks: Vec<Vec<u8>>,
) -> Result<pb::ImportImageResponse, tonic::Status> {
    use pb::import_image_request::Part;
    let mut messages = vec![pb::ImportImageRequest {
        part: Some(Part::Header(header)),
    }];
    messages.extend(chunks.into_iter().map(|c| pb::ImportImageRequest {
        part: Some(Part::Chunk(c.into())),
    }));
    let mut client = daemon.client().await;
    client
        .import_image(tokio_stream_iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

fn tokio_stream_iter<T: Send + 'static>(
    items: Vec<T>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = T> + Send {
    tonic::codegen::tokio_stream::iter(items)
}

fn raw_vmfile(name: &str, format: &str) -> String {
    format!(
        "apiVersion: v1\nmetadata:\n  name: {name}\nspec:\n  diskImage: d.raw\n  diskFormat: {format}\n  resources: {{cpu: 1, memory: 64MiB}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_imports_leave_nothing_visible_even_after_restart() {
    let mut daemon = Daemon::start();
    let disk: Vec<u8> = (0..(2 * 1024 * 1024)).map(|i| (i % 251) as u8).collect();
    let header = |size: u64, digest: &str, format: &str| pb::ImportHeader {
        vmfile: raw_vmfile("bad/one", format),
        tags: vec![],
        disk_size: size,
        disk_digest: digest.into(),
        disk_file_name: "d.raw".into(),
        ..Default::default()
    };

    // Digest mismatch: DATA_LOSS.
    let wrong = sha256_bytes(b"something else");
    let status = import_raw(
        &daemon,
        header(disk.len() as u64, &wrong, "raw"),
        vec![disk.clone()],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::DataLoss, "{status:?}");

    // Wrong format: a raw disk declared qcow2.
    let status = import_raw(
        &daemon,
        header(disk.len() as u64, "", "qcow2"),
        vec![disk.clone()],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("spec.diskFormat"), "{status:?}");

    // A stream that ends early (fewer bytes than announced).
    let status = import_raw(
        &daemon,
        header(disk.len() as u64 * 2, "", "raw"),
        vec![disk.clone()],
    )
    .await
    .unwrap_err();
    assert_ne!(status.code(), tonic::Code::Ok);

    // A stream cut mid-transfer: the client goes away.
    {
        use pb::import_image_request::Part;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut client = daemon.client().await;
        tx.send(pb::ImportImageRequest {
            part: Some(Part::Header(header(64 * 1024 * 1024, "", "raw"))),
        })
        .await
        .unwrap();
        tx.send(pb::ImportImageRequest {
            part: Some(Part::Chunk(disk.clone().into())),
        })
        .await
        .unwrap();
        let call = tokio::spawn(async move {
            client
                .import_image(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(
                    rx,
                ))
                .await
        });
        // The daemon is writing the disk (its temporary file is there)...
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while temp_files(&daemon).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "no temporary file appeared"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        call.abort();
        drop(tx);
        // ...and sees the client go: it removes what it wrote (a call cut
        // this early is not always logged, so the store is what tells).
        // Polled without blocking: this runtime carries the client.
        while !temp_files(&daemon).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the cut import left {:?}:\n{}",
                temp_files(&daemon),
                daemon.log_text()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    assert!(blob_files(&daemon).is_empty(), "{:?}", blob_files(&daemon));
    assert!(!daemon.store.join("manifests").join("bad").exists());
    let mut client = daemon.client().await;
    assert!(listed(&mut client).await.is_empty());

    // After a hard kill and a restart: no temporaries either.
    daemon.kill();
    daemon.restart();
    assert!(temp_files(&daemon).is_empty(), "{:?}", temp_files(&daemon));
    assert!(blob_files(&daemon).is_empty());

    // A good import still works afterwards.
    let ok = import_raw(
        &daemon,
        header(disk.len() as u64, &sha256_bytes(&disk), "raw"),
        vec![disk.clone()],
    )
    .await
    .unwrap();
    assert_eq!(ok.references, ["bad/one:latest"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_imports_of_one_image_store_one_blob() {
    let daemon = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let disk = raw(work.path(), "same.raw", 8 * 1024 * 1024, 7);
    let file = vmfile(work.path(), "same/image", "same.raw", "raw");
    let file = file.to_str().unwrap().to_string();
    let runs: Vec<_> = (0..4)
        .map(|i| {
            let socket = daemon.socket.clone();
            let file = file.clone();
            std::thread::spawn(move || {
                std::process::Command::new(vmr_tests::bin("vmr"))
                    .arg("--socket")
                    .arg(socket)
                    .args(["import", "-f", &file, "-t", &format!("t{i}")])
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for run in runs {
        let out = run.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let disk_blob = format!(
        "blobs/sha256/{}",
        sha256_file(&disk).trim_start_matches("sha256:")
    );
    let blobs = blob_files(&daemon);
    assert_eq!(blobs.iter().filter(|b| **b == disk_blob).count(), 1);
    // One disk, one config, one manifest: the four imports are the same image
    // except for the created timestamp, so up to four configs/manifests.
    let mut client = daemon.client().await;
    let images = listed(&mut client).await;
    let tags: usize = images.iter().map(|i| i.tags.len()).sum();
    assert_eq!(tags, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_errors_and_the_right_codes() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;

    let status = client
        .inspect_image(pb::InspectImageRequest {
            reference: "nope/missing:v9".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "image nope/missing:v9 not found");

    let status = client
        .inspect_image(pb::InspectImageRequest {
            reference: "Bad Name!".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("reference:"), "{status:?}");

    let status = client
        .tag_image(pb::TagImageRequest {
            source: "a/b:c".into(),
            target: "x/y:bad tag".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // A VMFile with a typo'd key: the field is named, with its line.
    let work = tempfile::tempdir().unwrap();
    raw(work.path(), "d.raw", 4096, 3);
    let path = work.path().join("typo.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nmetadata:\n  name: x/y\nspec:\n  diskImage: d.raw\n  diskFormat: raw\n  resources:\n    cpus: 2\n",
    )
    .unwrap();
    let err = daemon.vmr(&["import", "-f", path.to_str().unwrap()]).err();
    assert!(
        err.contains("spec.resources") && err.contains("cpus"),
        "{err}"
    );
    assert!(err.lines().count() <= 2, "one clear sentence: {err}");

    // A header that is not first.
    use pb::import_image_request::Part;
    let status = client
        .import_image(tokio_stream_iter(vec![pb::ImportImageRequest {
            part: Some(Part::Chunk(vec![1, 2, 3].into())),
        }]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("header:"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_daemon_and_store() {
    let daemon = Daemon::start();
    let report = daemon.vmr(&["health", "-o", "json"]).json();
    let text = report.to_string();
    assert!(text.contains("daemon") && text.contains("store"), "{text}");
    let mut client = daemon.client().await;
    let health = client
        .health_check(pb::HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    let store = health
        .components
        .iter()
        .find(|c| c.name == "store")
        .unwrap();
    assert_eq!(store.status, pb::ServingStatus::Serving as i32);
    assert!(
        store.message.contains(&daemon.store.display().to_string()),
        "{store:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_s3_store_serves_two_hosts_sharing_one_bucket() {
    let Some(bucket) = S3Bucket::fresh("vmr-e2e") else {
        return;
    };
    let flags = bucket.daemon_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let host_a = Daemon::start_with(&flags);
    let host_b = Daemon::start_with(&flags);

    let work = tempfile::tempdir().unwrap();
    let disk = qcow2(work.path(), "s3.qcow2", "32M");
    let file = vmfile(work.path(), "shared/img", "s3.qcow2", "qcow2");
    host_a
        .vmr(&["import", "-f", file.to_str().unwrap(), "-t", "v1"])
        .ok();

    // Nothing of the image lives in host A's local store but its cache.
    assert!(!host_a.store.join("manifests").exists());
    // Host B sees the image through the bucket, with the same digest.
    let mut a = host_a.client().await;
    let mut b = host_b.client().await;
    let list_a = listed(&mut a).await;
    let list_b = listed(&mut b).await;
    assert_eq!(list_a.len(), 1);
    assert_eq!(list_a, list_b);
    let inspected = b
        .inspect_image(pb::InspectImageRequest {
            reference: "shared/img:v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let manifest: serde_json::Value = serde_json::from_slice(&inspected.manifest).unwrap();
    assert_eq!(manifest["layers"][0]["digest"], sha256_file(&disk));
    assert_eq!(sha256_bytes(&inspected.manifest), list_a[0].digest);

    // Tag on B, remove on A: both see the result.
    host_b.vmr(&["tag", "shared/img:v1", "shared/img:v2"]).ok();
    host_a.vmr(&["rmi", "shared/img:v1"]).ok();
    let tags = listed(&mut b).await[0].tags.clone();
    assert_eq!(tags, ["v2"]);
    host_a.vmr(&["image", "prune", "--all"]).ok();
    assert!(listed(&mut b).await.is_empty());
}

#[test]
fn a_wrong_s3_secret_is_refused_at_start_with_a_clear_message() {
    let Some(bucket) = S3Bucket::fresh("vmr-e2e-bad") else {
        return;
    };
    let mut flags = bucket.daemon_flags();
    let n = flags.len();
    flags[n - 1] = "not-the-secret".into();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(vmr_tests::bin("vmrd"))
        .args([
            "--socket",
            dir.path().join("s").to_str().unwrap(),
            "--fs-path",
            dir.path().to_str().unwrap(),
        ])
        .args(&flags)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("s3"), "{stderr}");
    assert!(!dir.path().join("s").exists());
}
