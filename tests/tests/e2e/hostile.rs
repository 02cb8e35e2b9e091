//! Hostile input through the real socket: names that try to leave the store
//! or break XML and shells, YAML bombs, oversized documents, lying import
//! headers and endless streams, huge label maps and oversized user-data.
//! Each must end quickly in INVALID_ARGUMENT or RESOURCE_EXHAUSTED (or, for
//! a stream cut short, CANCELLED), write nothing outside the store and leave
//! the daemon healthy.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tonic::Code;
use tonic::codegen::tokio_stream;
use vmr_proto::v1 as pb;
use vmr_proto::v1::import_image_request::Part;
use vmr_tests::Daemon;
use vmr_tests::fixtures::{raw, vmfile};

/// Every hostile call must answer within this; a hang is a failure.
const BOUND: Duration = Duration::from_secs(10);

async fn bounded<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, call)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {BOUND:?}"))
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, tonic::Status>,
    allowed: &[Code],
) {
    match result {
        Ok(value) => panic!("{what}: accepted: {value:?}"),
        Err(status) => assert!(
            allowed.contains(&status.code()),
            "{what}: {:?} {}",
            status.code(),
            status.message()
        ),
    }
}

const INVALID: &[Code] = &[Code::InvalidArgument];
const TOO_BIG: &[Code] = &[Code::InvalidArgument, Code::ResourceExhausted];

fn base_vmfile(name: &str) -> String {
    format!(
        "apiVersion: vmregistry.io/v1alpha1\nmetadata:\n  name: {}\nspec:\n  diskImage: disk.raw\n  diskFormat: raw\n  resources:\n    cpu: 1\n    memory: 256MiB\n",
        serde_json::to_string(name).unwrap()
    )
}

fn import_messages(vmfile: String, tags: Vec<String>, disk: &[u8]) -> Vec<pb::ImportImageRequest> {
    vec![
        pb::ImportImageRequest {
            part: Some(Part::Header(pb::ImportHeader {
                vmfile,
                tags,
                disk_size: disk.len() as u64,
                ..Default::default()
            })),
        },
        pb::ImportImageRequest {
            part: Some(Part::Chunk(disk.to_vec().into())),
        },
    ]
}

async fn import(
    daemon: &Daemon,
    messages: Vec<pb::ImportImageRequest>,
) -> Result<pb::ImportImageResponse, tonic::Status> {
    let mut client = daemon.client().await;
    client
        .import_image(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

async fn assert_healthy(daemon: &Daemon) {
    let mut client = daemon.client().await;
    let report = bounded("health", client.health_check(pb::HealthCheckRequest {}))
        .await
        .expect("the daemon still answers")
        .into_inner();
    assert_eq!(
        report.components[0].status,
        pb::ServingStatus::Serving as i32
    );
}

/// Everything below `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn image_daemon() -> (Daemon, tempfile::TempDir) {
    let daemon = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let disk = raw(work.path(), "base.raw", 4096, 7);
    let file = vmfile(
        work.path(),
        "hostile/base",
        &disk.display().to_string(),
        "raw",
    );
    daemon.vmr(&["import", "-f", file.to_str().unwrap()]).ok();
    (daemon, work)
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_names_are_invalid_and_nothing_is_written_outside_the_store() {
    let (daemon, _work) = image_daemon();
    let marker = format!("vmr-escape-{}", std::process::id());
    let names = [
        format!("../{marker}"),
        format!("../../../../../../tmp/{marker}"),
        format!("a/../../{marker}"),
        format!("/tmp/{marker}"),
        "..".to_owned(),
        ".".to_owned(),
        format!("{marker}\0x"),
        format!("<{marker}>"),
        format!("{marker}&amp;"),
        format!("{marker}'\"<x/>"),
        format!("{marker};touch /tmp/{marker}"),
        format!("$(touch /tmp/{marker})"),
        format!("`touch /tmp/{marker}`"),
        format!("{marker}|cat"),
        format!("{marker} x"),
        format!("{marker}\n"),
        format!("{marker}*"),
    ];
    let before: Vec<String> = tree(daemon.dir.path())
        .into_iter()
        .filter(|f| !f.starts_with("store"))
        .collect();
    let mut client = daemon.client().await;
    for name in &names {
        let vm = client.create_vm(pb::CreateVmRequest {
            name: name.clone(),
            image: "hostile/base".into(),
            start: true,
            ..Default::default()
        });
        assert_refused(
            &format!("vm {name:?}"),
            bounded("create_vm", vm).await,
            INVALID,
        );

        let vm_image = client.create_vm(pb::CreateVmRequest {
            name: "fine".into(),
            image: name.clone(),
            ..Default::default()
        });
        assert_refused(
            &format!("vm image {name:?}"),
            bounded("create_vm", vm_image).await,
            INVALID,
        );

        let network = client.create_network(pb::CreateNetworkRequest {
            name: name.clone(),
            mode: "nat".into(),
            subnet: "10.251.7.0/24".into(),
            ..Default::default()
        });
        assert_refused(
            &format!("network {name:?}"),
            bounded("create_network", network).await,
            INVALID,
        );

        let context = client.create_context(pb::CreateContextRequest {
            name: name.clone(),
            registry_url: "http://127.0.0.1:9".into(),
            ..Default::default()
        });
        assert_refused(
            &format!("context {name:?}"),
            bounded("create_context", context).await,
            INVALID,
        );

        let inspect = client.inspect_image(pb::InspectImageRequest {
            reference: name.clone(),
        });
        assert_refused(
            &format!("inspect {name:?}"),
            bounded("inspect_image", inspect).await,
            INVALID,
        );

        let tag = client.tag_image(pb::TagImageRequest {
            source: "hostile/base".into(),
            target: name.clone(),
        });
        assert_refused(
            &format!("tag {name:?}"),
            bounded("tag_image", tag).await,
            INVALID,
        );

        let named = import(&daemon, import_messages(base_vmfile(name), vec![], b"disk"));
        assert_refused(
            &format!("import as {name:?}"),
            bounded("import", named).await,
            INVALID,
        );
        let tagged = import(
            &daemon,
            import_messages(base_vmfile("hostile/ok"), vec![name.clone()], b"disk"),
        );
        assert_refused(
            &format!("import tag {name:?}"),
            bounded("import", tagged).await,
            INVALID,
        );

        let compose = client.compose_config(pb::ComposeConfigRequest {
            source: Some(pb::ComposeSource {
                yaml: "services:\n  web:\n    image: hostile/base\n".into(),
                project: name.clone(),
                ..Default::default()
            }),
        });
        assert_refused(
            &format!("compose project {name:?}"),
            bounded("compose_config", compose).await,
            INVALID,
        );
    }

    // Nothing new beside the store, nothing named after the marker anywhere
    // near it, no image, VM, network or context made.
    let after: Vec<String> = tree(daemon.dir.path())
        .into_iter()
        .filter(|f| !f.starts_with("store"))
        .collect();
    assert_eq!(before, after);
    let parent = daemon.dir.path().parent().unwrap();
    for place in [parent.to_path_buf(), "/tmp".into(), "/".into()] {
        let leaked: Vec<String> = std::fs::read_dir(&place)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(&marker))
            .collect();
        assert_eq!(leaked, Vec::<String>::new(), "in {}", place.display());
    }
    let store = tree(&daemon.store);
    assert!(store.iter().all(|f| !f.contains(&marker)), "{store:#?}");
    let images = client
        .list_images(pb::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(images.images.len(), 1, "{images:?}");
    let vms = client
        .list_v_ms(pb::ListVMsRequest {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vms.vms.len(), 0, "{vms:?}");
    let networks = client
        .list_networks(pb::ListNetworksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        networks.networks.iter().all(|n| !n.name.contains(&marker)),
        "{networks:?}"
    );
    let contexts = client
        .list_contexts(pb::ListContextsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        contexts.contexts.iter().all(|c| !c.name.contains(&marker)),
        "{contexts:?}"
    );
    assert_healthy(&daemon).await;
}

/// A VMFile and a VMCompose document with `body` spliced in where a value
/// is expected.
fn bombs() -> Vec<(&'static str, String)> {
    let mut laughs = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (i, prev) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
        let name = (b'b' + i as u8) as char;
        laughs.push_str(&format!(
            "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    laughs.push_str("metadata: *i\n");
    let deep_seq = format!("metadata: {}{}\n", "[".repeat(50_000), "]".repeat(50_000));
    let deep_map = format!(
        "metadata: {}1{}\n",
        "{a: ".repeat(50_000),
        "}".repeat(50_000)
    );
    let mut deep_block = String::from("metadata:\n");
    for depth in 0..2_000 {
        deep_block.push_str(&" ".repeat(depth + 1));
        deep_block.push_str("- \n");
    }
    let mut huge = base_vmfile("hostile/huge");
    while huge.len() < 10 * 1024 * 1024 {
        huge.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    vec![
        ("alias bomb", laughs),
        ("50k-deep flow sequence", deep_seq),
        ("50k-deep flow mapping", deep_map),
        ("2k-deep block sequence", deep_block),
        ("10 MB document", huge),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn yaml_bombs_deep_nesting_and_10_mb_documents_are_refused_quickly() {
    let (daemon, _work) = image_daemon();
    let mut client = daemon.client().await;
    for (what, yaml) in bombs() {
        let imported = import(&daemon, import_messages(yaml.clone(), vec![], b"disk"));
        assert_refused(
            &format!("VMFile: {what}"),
            bounded(what, imported).await,
            TOO_BIG,
        );

        let compose_yaml = yaml.replace("metadata:", "services:");
        let config = client.compose_config(pb::ComposeConfigRequest {
            source: Some(pb::ComposeSource {
                yaml: compose_yaml.clone(),
                project: "bomb".into(),
                ..Default::default()
            }),
        });
        assert_refused(
            &format!("compose config: {what}"),
            bounded(what, config).await,
            TOO_BIG,
        );
        let up = client.compose_up(pb::ComposeUpRequest {
            source: Some(pb::ComposeSource {
                yaml: compose_yaml,
                project: "bomb".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let up = bounded(what, async {
            let mut stream = up.await?.into_inner();
            while stream.message().await?.is_some() {}
            Ok::<_, tonic::Status>(())
        })
        .await;
        assert_refused(&format!("compose up: {what}"), up, TOO_BIG);
        assert_healthy(&daemon).await;
    }
    let vms = client
        .list_v_ms(pb::ListVMsRequest {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vms.vms.len(), 0);
}

fn blobs_and_temporaries(daemon: &Daemon) -> Vec<String> {
    daemon
        .store_files()
        .into_iter()
        .filter(|f| f.starts_with("blobs/") || f.starts_with("tmp/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn lying_import_headers_and_endless_streams_leave_nothing_visible() {
    let (daemon, _work) = image_daemon();
    let before = blobs_and_temporaries(&daemon);
    let vmfile = base_vmfile("hostile/stream");

    // A 5 GiB header, then one byte and the end of the stream.
    let mut messages = import_messages(vmfile.clone(), vec![], b"x");
    if let Some(Part::Header(header)) = &mut messages[0].part {
        header.disk_size = 5 << 30;
    }
    let short = bounded("5 GiB header", import(&daemon, messages)).await;
    assert_refused(
        "5 GiB header with 1 byte",
        short,
        &[
            Code::InvalidArgument,
            Code::Cancelled,
            Code::ResourceExhausted,
        ],
    );

    // A 1 MiB header, then chunks that never end.
    let header = pb::ImportImageRequest {
        part: Some(Part::Header(pb::ImportHeader {
            vmfile: vmfile.clone(),
            disk_size: 1 << 20,
            ..Default::default()
        })),
    };
    let chunk = pb::ImportImageRequest {
        part: Some(Part::Chunk(vec![0u8; 64 * 1024].into())),
    };
    let endless = std::iter::once(header).chain(std::iter::repeat(chunk));
    let mut client = daemon.client().await;
    let endless = bounded(
        "endless stream",
        client.import_image(tokio_stream::iter(endless)),
    )
    .await;
    assert_refused("endless stream", endless, INVALID);

    // Nothing visible: no image, no new blob, no temporary left.
    assert_healthy(&daemon).await;
    let images = client
        .list_images(pb::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(images.images.len(), 1, "{images:?}");
    assert_eq!(blobs_and_temporaries(&daemon), before);
    daemon.vmr(&["system", "check"]).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_labels_are_refused_with_a_clear_error() {
    let (daemon, _work) = image_daemon();
    for (what, labels) in [
        (
            "block",
            (0..10_000)
                .map(|i| format!("    key{i}: value{i}\n"))
                .collect::<String>(),
        ),
        (
            "flow",
            format!(
                "    {{{}}}\n",
                (0..10_000)
                    .map(|i| format!("k{i}: v"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    ] {
        let yaml = base_vmfile("hostile/labels")
            .replace("metadata:\n", &format!("metadata:\n  labels:\n{labels}"));
        let result = bounded(
            what,
            import(&daemon, import_messages(yaml, vec![], b"disk")),
        )
        .await;
        match result {
            Ok(answer) => panic!("{what}: 10k labels accepted: {:?}", answer.references),
            Err(status) => {
                assert!(TOO_BIG.contains(&status.code()), "{what}: {status:?}");
                assert!(
                    status.message().contains("labels"),
                    "{what}: {}",
                    status.message()
                );
            }
        }
    }

    // Under the YAML limit, but twice as long once escaped in the config's
    // JSON: refused before anything is written, so listing still works.
    let quotes = "\"".repeat(900_000);
    let yaml = base_vmfile("hostile/quotes").replace(
        "metadata:\n",
        &format!("metadata:\n  description: '{quotes}'\n"),
    );
    let status = bounded(
        "quotes",
        import(&daemon, import_messages(yaml, vec![], b"disk")),
    )
    .await
    .expect_err("a config over the limit is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("image config"),
        "{}",
        status.message()
    );

    assert_healthy(&daemon).await;
    let out = daemon.vmr(&["images", "-o", "json"]).json();
    assert_eq!(out["images"].as_array().unwrap().len(), 1, "{out}");
    daemon.vmr(&["system", "check"]).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn user_data_over_the_limit_is_invalid() {
    let (daemon, work) = image_daemon();
    let big = vec![b'#'; 2 << 20];
    let mut client = daemon.client().await;
    let created = client.create_vm(pb::CreateVmRequest {
        name: "big-user-data".into(),
        image: "hostile/base".into(),
        user_data: big.clone(),
        start: true,
        ..Default::default()
    });
    assert_refused(
        "2 MiB user-data",
        bounded("create_vm", created).await,
        INVALID,
    );

    let file = work.path().join("user-data");
    let mut text = b"#cloud-config\n".to_vec();
    text.extend_from_slice(&big);
    std::fs::write(&file, text).unwrap();
    let err = daemon
        .vmr(&[
            "run",
            "--name",
            "big-user-data",
            "--user-data",
            file.to_str().unwrap(),
            "hostile/base",
        ])
        .err();
    assert!(err.contains("user"), "{err}");
    let vms = daemon.vmr(&["ps", "-a", "-o", "json"]).json();
    assert_eq!(vms["vms"].as_array().unwrap().len(), 0, "{vms}");

    // A #cloud-config nesting 500k levels deep is refused at once too.
    let mut bomb = b"#cloud-config\na: ".to_vec();
    bomb.extend(std::iter::repeat_n(b'[', 500_000));
    let created = client.create_vm(pb::CreateVmRequest {
        name: "deep-user-data".into(),
        image: "hostile/base".into(),
        user_data: bomb,
        ..Default::default()
    });
    assert_refused(
        "deep user-data",
        bounded("create_vm", created).await,
        INVALID,
    );
    assert_healthy(&daemon).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_pointing_outside_the_store_is_refused_and_reported() {
    let (daemon, _work) = image_daemon();
    let evil = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.vmregistry.vm.v1",
        "config": {
            "mediaType": "application/vnd.vmregistry.vm.config.v1+json",
            "digest": "sha256:../../../../../../etc/passwd",
            "size": 10,
        },
        "layers": [{
            "mediaType": "application/vnd.vmregistry.disk.v1.raw",
            "digest": "sha256:../../../../../../etc/shadow",
            "size": 10,
        }],
    });
    let dir = daemon.store.join("manifests/hostile/evil/latest");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest.json"), evil.to_string()).unwrap();

    let mut client = daemon.client().await;
    let inspect = client.inspect_image(pb::InspectImageRequest {
        reference: "hostile/evil".into(),
    });
    let refused = &[
        Code::InvalidArgument,
        Code::DataLoss,
        Code::FailedPrecondition,
    ];
    assert_refused("inspect", bounded("inspect", inspect).await, refused);
    let vm = client.create_vm(pb::CreateVmRequest {
        name: "evil".into(),
        image: "hostile/evil".into(),
        start: true,
        ..Default::default()
    });
    assert_refused("run", bounded("create_vm", vm).await, refused);

    let out = daemon.vmr(&["system", "check", "-o", "json"]);
    assert_eq!(out.0.status.code(), Some(1), "{}", out.stderr());
    let json: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(json["problems"][0]["kind"], "unparsable-manifest", "{json}");
    assert_eq!(
        json["problems"][0]["subject"], "hostile/evil:latest",
        "{json}"
    );
    // One bad tag does not hide the good images.
    let images = client
        .list_images(pb::ListImagesRequest::default())
        .await
        .expect("listing survives a bad tag")
        .into_inner();
    let names: Vec<&str> = images
        .images
        .iter()
        .map(|i| i.repository.as_str())
        .collect();
    assert_eq!(names, ["hostile/base"]);
    assert_healthy(&daemon).await;
}
