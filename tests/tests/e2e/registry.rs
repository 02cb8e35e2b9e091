//! Push, pull, login, logout and register end to end: the real `vmr` and
//! `vmrd` against real `docker-registry` instances (anonymous, htpasswd
//! Basic, token auth trusting the test auth server) with `skopeo` as the
//! independent client. Needs `scripts/test-services.sh start` and its `env`
//! (or `VMR_TEST_SKIP_REGISTRY=1` to skip). The resume test pulls a 1 GiB
//! image from a registry of its own; `VMR_TEST_RESUME_MIB` makes it smaller.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tonic::Code;
use vmr_proto::v1 as pb;
use vmr_proto::v1::transfer_progress::Event;
use vmr_tests::Daemon;
use vmr_tests::authserver::AuthServer;
use vmr_tests::fixtures::{raw, sha256_bytes, sha256_file, vmfile};
use vmr_tests::registry::{
    PrivateRegistry, any_file_contains, credentials_file, free_port, import_qcow2, service_env,
    skopeo, unique_repo, vmr_with_stdin, write_oci_layout,
};

fn daemon_for(registry_url: &str, auth_url: Option<&str>) -> Daemon {
    let mut args = vec!["--hypervisor", "fake", "--registry-url", registry_url];
    if let Some(auth_url) = auth_url {
        args.extend(["--auth-url", auth_url]);
    }
    Daemon::start_with(&args)
}

/// A push or pull through the gRPC API with an optional
/// `x-vmr-registry-auth` value; every event, or the status it ended with.
async fn transfer(
    daemon: &Daemon,
    push: bool,
    reference: &str,
    context: &str,
    auth: Option<&str>,
) -> Result<Vec<pb::TransferProgress>, tonic::Status> {
    let mut client = daemon.client().await;
    let metadata = |request: &mut tonic::metadata::MetadataMap| {
        if let Some(auth) = auth {
            request.insert("x-vmr-registry-auth", auth.parse().unwrap());
        }
    };
    let mut stream = if push {
        let mut request = tonic::Request::new(pb::PushImageRequest {
            reference: reference.to_owned(),
            context: context.to_owned(),
        });
        metadata(request.metadata_mut());
        client.push_image(request).await?.into_inner()
    } else {
        let mut request = tonic::Request::new(pb::PullImageRequest {
            reference: reference.to_owned(),
            context: context.to_owned(),
        });
        metadata(request.metadata_mut());
        client.pull_image(request).await?.into_inner()
    };
    let mut events = Vec::new();
    while let Some(event) = stream.message().await? {
        events.push(event);
    }
    Ok(events)
}

fn done_of(events: &[pb::TransferProgress]) -> pb::TransferDone {
    match events.last().and_then(|e| e.event.clone()) {
        Some(Event::Done(done)) => done,
        other => panic!("the transfer did not end with its digest: {other:?}"),
    }
}

fn blobs_of(events: &[pb::TransferProgress]) -> Vec<pb::BlobProgress> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Blob(blob)) => Some(blob.clone()),
            _ => None,
        })
        .collect()
}

/// The credential the CLI stored for a context: `<scheme> <credential>`.
fn stored_credential(daemon: &Daemon, context: &str) -> String {
    let text = std::fs::read_to_string(credentials_file(daemon)).expect("credentials file");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entry = &json["contexts"][context];
    format!(
        "{} {}",
        entry["scheme"].as_str().unwrap(),
        entry["credential"].as_str().unwrap()
    )
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Neither the daemon's log nor its store holds `secret`.
#[track_caller]
fn secret_stays_out(daemon: &Daemon, secret: &str) {
    assert!(
        !daemon.log_text().contains(secret),
        "the daemon log holds a secret"
    );
    if let Some(file) = any_file_contains(&daemon.store, secret.as_bytes()) {
        panic!("the store holds a secret in {}", file.display());
    }
}

#[test]
fn vmr_push_is_what_skopeo_sees_and_what_skopeo_pushes_vmr_pulls() {
    let Some(anon) = service_env("VMR_TEST_REGISTRY") else {
        return;
    };
    let daemon = daemon_for(&format!("http://{anon}"), None);
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("skopeo");
    let disk = import_qcow2(&daemon, work.path(), &repo, "v1");

    let pushed = daemon
        .vmr(&["push", "-o", "json", &format!("{repo}:v1")])
        .json();
    let digest = pushed["digest"].as_str().unwrap().to_owned();
    assert!(pushed["bytesTransferred"].as_u64().unwrap() > 0, "{pushed}");

    // The registry serves the exact local manifest bytes.
    let raw_manifest = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{anon}/{repo}:v1"),
    ])
    .stdout;
    assert_eq!(sha256_bytes(&raw_manifest), digest);
    let local = std::fs::read(
        daemon
            .store
            .join(format!("manifests/{repo}/v1/manifest.json")),
    )
    .unwrap();
    assert_eq!(raw_manifest, local);

    // skopeo copies the disk blob byte for byte.
    let copied = work.path().join("copied");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{anon}/{repo}:v1"),
        &format!("oci:{}:v1", copied.display()),
    ]);
    let disk_hex = sha256_file(&disk).trim_start_matches("sha256:").to_owned();
    assert_eq!(
        std::fs::read(copied.join("blobs/sha256").join(&disk_hex)).unwrap(),
        std::fs::read(&disk).unwrap()
    );

    // An OCI layout made by hand and pushed by skopeo is pulled by vmr.
    let foreign = unique_repo("from-skopeo");
    let layout = work.path().join("layout");
    let foreign_disk = std::fs::read(raw(work.path(), "foreign.raw", (1 << 20) + 5, 7)).unwrap();
    let foreign_digest = write_oci_layout(&layout, "t1", &foreign, &foreign_disk, "raw");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:t1", layout.display()),
        &format!("docker://{anon}/{foreign}:t1"),
    ]);
    // The host in the reference names the registry; locally it is dropped.
    let pulled = daemon
        .vmr(&["pull", "-o", "json", &format!("{anon}/{foreign}:t1")])
        .json();
    assert_eq!(pulled["digest"], foreign_digest.as_str());
    let inspected = daemon
        .vmr(&["inspect", "-o", "json", &format!("{foreign}:t1")])
        .json();
    assert_eq!(inspected["image"]["digest"], foreign_digest.as_str());
    assert_eq!(inspected["image"]["cpu"], 2);
    assert_eq!(
        inspected["config"]["spec"]["resources"]["bootloader"],
        "UEFI"
    );
    let blob = daemon
        .store
        .join("blobs/sha256")
        .join(sha256_bytes(&foreign_disk).trim_start_matches("sha256:"));
    assert_eq!(std::fs::read(blob).unwrap(), foreign_disk);
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_login_push_pull_and_refusals() {
    let (Some(anon), Some(basic), Some(user), Some(pass)) = (
        service_env("VMR_TEST_REGISTRY"),
        service_env("VMR_TEST_REGISTRY_BASIC"),
        service_env("VMR_TEST_REGISTRY_BASIC_USER"),
        service_env("VMR_TEST_REGISTRY_BASIC_PASS"),
    ) else {
        return;
    };
    let daemon = daemon_for(&format!("http://{anon}"), None);
    let work = tempfile::tempdir().unwrap();
    daemon
        .vmr(&[
            "context",
            "create",
            "basic",
            "--registry-url",
            &format!("http://{basic}"),
        ])
        .ok();
    let repo = unique_repo("basic");
    let reference = format!("{repo}:v1");
    import_qcow2(&daemon, work.path(), &repo, "v1");

    // Anonymous: refused, with the way out.
    let err = daemon
        .vmr(&["--context", "basic", "push", &reference])
        .err();
    assert!(err.contains("log in"), "{err}");
    let status = transfer(&daemon, true, &reference, "basic", None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // A wrong password is refused at login, in words.
    let err = vmr_with_stdin(
        &daemon,
        &[
            "--context",
            "basic",
            "login",
            "--username",
            &user,
            "--password-stdin",
        ],
        "not-the-password\n",
    )
    .err();
    assert!(err.contains("wrong username or password"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    let wrong = base64::engine::general_purpose::STANDARD.encode(format!("{user}:nope"));
    let status = transfer(
        &daemon,
        true,
        &reference,
        "basic",
        Some(&format!("basic {wrong}")),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    vmr_with_stdin(
        &daemon,
        &[
            "--context",
            "basic",
            "login",
            "--username",
            &user,
            "--password-stdin",
        ],
        &format!("{pass}\n"),
    )
    .ok();
    assert_eq!(mode(&credentials_file(&daemon)), 0o600);
    assert!(stored_credential(&daemon, "basic").starts_with("basic "));

    let pushed = daemon
        .vmr(&["--context", "basic", "push", "-o", "json", &reference])
        .json();
    let digest = pushed["digest"].as_str().unwrap().to_owned();
    let raw_manifest = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &format!("{user}:{pass}"),
        "--raw",
        &format!("docker://{basic}/{repo}:v1"),
    ])
    .stdout;
    assert_eq!(sha256_bytes(&raw_manifest), digest);

    // Gone locally, back from the registry.
    daemon.vmr(&["rmi", &reference]).ok();
    let pulled = daemon
        .vmr(&["--context", "basic", "pull", "-o", "json", &reference])
        .json();
    assert_eq!(pulled["digest"], digest.as_str());
    let inspected = daemon.vmr(&["inspect", "-o", "json", &reference]).json();
    assert_eq!(inspected["image"]["digest"], digest.as_str());

    // The password never lands in the daemon's log or store.
    secret_stays_out(&daemon, &pass);
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    secret_stays_out(&daemon, &encoded);

    // Logging out forgets it; the next push is anonymous again.
    daemon.vmr(&["--context", "basic", "logout"]).ok();
    let err = daemon
        .vmr(&["--context", "basic", "push", &reference])
        .err();
    assert!(err.contains("log in"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_auth_login_register_push_pull_denied_and_logout() {
    let Some(token_registry) = service_env("VMR_TEST_REGISTRY_TOKEN") else {
        return;
    };
    let realm = AuthServer::shared_on_realm_port().expect("test auth server on the realm port");
    let daemon = daemon_for(&format!("http://{token_registry}"), Some(&realm));
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("token");
    let reference = format!("{repo}:v1");
    import_qcow2(&daemon, work.path(), &repo, "v1");

    // Health probes the registry and the auth server of the default context.
    let health = daemon.vmr(&["health", "-o", "json"]).json();
    let status_of = |name: &str| {
        health["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        status_of("registry").as_deref(),
        Some("serving"),
        "{health}"
    );
    assert_eq!(status_of("auth").as_deref(), Some("serving"), "{health}");

    // Register a user; it can log in.
    let newcomer = format!("u{}", std::process::id());
    vmr_with_stdin(
        &daemon,
        &["register", "--username", &newcomer, "--password-stdin"],
        "newcomer-pass\n",
    )
    .ok();
    let err = vmr_with_stdin(
        &daemon,
        &["register", "--username", &newcomer, "--password-stdin"],
        "newcomer-pass\n",
    )
    .err();
    assert!(err.contains("already exists"), "{err}");

    // Anonymous: refused.
    let status = transfer(&daemon, true, &reference, "", None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // The writer pushes and pulls with the access token login stored.
    let login = vmr_with_stdin(
        &daemon,
        &[
            "login",
            "--username",
            "writer",
            "--password-stdin",
            "-o",
            "json",
        ],
        "writerpass\n",
    )
    .json();
    assert_eq!(login["scheme"], "bearer");
    assert_eq!(mode(&credentials_file(&daemon)), 0o600);
    let writer = stored_credential(&daemon, "default");
    assert!(writer.starts_with("bearer "));
    let pushed = daemon.vmr(&["push", "-o", "json", &reference]).json();
    let digest = pushed["digest"].as_str().unwrap().to_owned();
    daemon.vmr(&["rmi", &reference]).ok();
    let pulled = daemon.vmr(&["pull", "-o", "json", &reference]).json();
    assert_eq!(pulled["digest"], digest.as_str());
    let token = writer.trim_start_matches("bearer ").to_owned();
    secret_stays_out(&daemon, &token);
    secret_stays_out(&daemon, "writerpass");

    // The reader may pull but not push.
    let reader_login = vmr_with_stdin(
        &daemon,
        &["login", "--username", "reader", "--password-stdin"],
        "readerpass\n",
    );
    reader_login.ok();
    let reader = stored_credential(&daemon, "default");
    let err = daemon.vmr(&["push", &reference]).err();
    assert!(
        err.contains("denied") || err.contains("does not allow"),
        "{err}"
    );
    let status = transfer(&daemon, true, &reference, "", Some(&reader))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let events = transfer(&daemon, false, &reference, "", Some(&reader))
        .await
        .expect("the reader pulls");
    assert_eq!(done_of(&events).digest, digest);

    // A wrong password is refused by the auth server.
    let err = vmr_with_stdin(
        &daemon,
        &["login", "--username", "reader", "--password-stdin"],
        "wrong\n",
    )
    .err();
    assert!(err.contains("wrong username or password"), "{err}");

    // Logout revokes the token at the auth server: it no longer works.
    daemon.vmr(&["logout"]).ok();
    assert!(
        !std::fs::read_to_string(credentials_file(&daemon))
            .unwrap()
            .contains("\"default\"")
    );
    let status = transfer(&daemon, false, &reference, "", Some(&reader))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_images_and_stopped_registries_say_so() {
    let Some(anon) = service_env("VMR_TEST_REGISTRY") else {
        return;
    };
    let daemon = daemon_for(&format!("http://{anon}"), None);
    let repo = unique_repo("missing");

    let status = transfer(&daemon, false, &format!("{repo}:nope"), "", None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(
        status.message().contains("not found in registry"),
        "{status:?}"
    );
    let err = daemon.vmr(&["pull", &format!("{repo}:nope")]).err();
    assert!(err.contains(&format!("{repo}:nope not found")), "{err}");
    // Pushing what is not here is NOT_FOUND too, before any traffic.
    let status = transfer(&daemon, true, &format!("{repo}:nope"), "", None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let dead = format!("http://127.0.0.1:{}", free_port());
    daemon
        .vmr(&["context", "create", "dead", "--registry-url", &dead])
        .ok();
    let status = transfer(&daemon, false, &format!("{repo}:v1"), "dead", None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("unavailable"), "{status:?}");
    let err = daemon
        .vmr(&["--context", "dead", "pull", &format!("{repo}:v1")])
        .err();
    assert!(err.contains("is unavailable"), "{err}");

    // Health says so too.
    let down = daemon_for(&dead, None);
    let health = down.vmr(&["health", "-o", "json"]).json();
    let registry = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "registry")
        .unwrap()
        .clone();
    assert_eq!(registry["status"], "not-serving", "{health}");
    let auth = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "auth")
        .unwrap()
        .clone();
    assert_eq!(auth["status"], "not-configured", "{health}");
}

/// Size of the image the resume test pulls: `VMR_TEST_RESUME_MIB`, default
/// 1024 (the acceptance's 1 GiB).
fn resume_size() -> usize {
    std::env::var("VMR_TEST_RESUME_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024)
        << 20
}

/// The partial download of a blob in a store, once its size is steady.
fn partial_len(daemon: &Daemon, hex: &str) -> u64 {
    let name = format!("partial-{hex}");
    let find = || {
        daemon
            .store_files()
            .into_iter()
            .find(|f| f.ends_with(&name))
            .map(|f| std::fs::metadata(daemon.store.join(f)).unwrap().len())
    };
    let mut last = find();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = find();
        if now == last {
            return now
                .unwrap_or_else(|| panic!("no {name} in the store: {:?}", daemon.store_files()));
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_push_uploads_nothing_and_an_interrupted_pull_resumes() {
    if service_env("VMR_TEST_REGISTRY").is_none() {
        return;
    }
    let mut registry = PrivateRegistry::start();
    // One disk blob (no chunks): this is the single-layer path, resumed by
    // HTTP Range; chunked.rs covers chunked images.
    let daemon = Daemon::start_with(&[
        "--hypervisor",
        "fake",
        "--registry-url",
        &registry.url(),
        "--push-chunk-mib",
        "0",
    ]);
    let work = tempfile::tempdir().unwrap();
    let size = resume_size();
    let repo = unique_repo("resume");
    let reference = format!("{repo}:big");
    let disk = raw(work.path(), "big.raw", size, std::process::id().into());
    let disk_hex = sha256_file(&disk).trim_start_matches("sha256:").to_owned();
    let file = vmfile(work.path(), &repo, disk.to_str().unwrap(), "raw");
    daemon
        .vmr(&["import", "-f", file.to_str().unwrap(), "-t", "big"])
        .ok();
    // The store has its own copy now: the source would only hold a GiB more
    // of the shared machine's disk.
    std::fs::remove_file(&disk).unwrap();

    let upload_requests = |registry: &PrivateRegistry| {
        ["POST", "PATCH", "PUT"]
            .iter()
            .map(|method| registry.count(method, "/blobs/uploads/"))
            .sum::<usize>()
    };
    let first = transfer(&daemon, true, &reference, "", None).await.unwrap();
    let digest = done_of(&first).digest;
    assert_eq!(
        registry.count("POST", &format!("/v2/{repo}/blobs/uploads/")),
        2,
        "config and disk: {:?}",
        registry.requests()
    );
    let after_first = upload_requests(&registry);

    // Again: every blob is found by HEAD, none is sent.
    let second = transfer(&daemon, true, &reference, "", None).await.unwrap();
    assert_eq!(done_of(&second).bytes_transferred, 0);
    let skipped = blobs_of(&second);
    assert_eq!(skipped.len(), 2, "{second:?}");
    assert!(skipped.iter().all(|b| b.skipped), "{second:?}");
    assert_eq!(
        upload_requests(&registry),
        after_first,
        "{:?}",
        registry.requests()
    );
    assert_eq!(
        registry.count("HEAD", &format!("/v2/{repo}/blobs/sha256:")),
        4
    );
    // Stopped, its store removed: the pull below needs only the registry's copy.
    drop(daemon);

    // Another host pulls; the registry dies a quarter of the way in.
    let other = daemon_for(&registry.url(), None);
    let mut client = other.client().await;
    let mut stream = client
        .pull_image(pb::PullImageRequest {
            reference: reference.clone(),
            context: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let started = Instant::now();
    let cut = loop {
        let event = stream
            .message()
            .await
            .expect("progress")
            .expect("not done yet");
        if let Some(Event::Blob(blob)) = event.event
            && blob.digest.ends_with(&disk_hex)
            && blob.done >= blob.total / 4
        {
            registry.kill();
            break blob.done;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the pull never got going"
        );
    };
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the pull finished although its registry died"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let listed = other.vmr(&["images", "-o", "json"]).json();
    assert_eq!(
        listed["images"].as_array().map_or(0, Vec::len),
        0,
        "a failed pull shows no image: {listed}"
    );
    // What arrived is kept (the writer may have had the last chunks in
    // flight when the pull gave up, so it can be a little less than `cut`).
    let kept = partial_len(&other, &disk_hex);
    assert!(
        kept > 0 && kept < size as u64,
        "kept {kept} of {size}, cut at {cut}"
    );

    // Back up: the next pull fetches only the rest, and it verifies.
    registry.restart();
    let events = transfer(&other, false, &reference, "", None).await.unwrap();
    let done = done_of(&events);
    assert_eq!(done.digest, digest);
    assert_eq!(
        done.bytes_transferred,
        size as u64 - kept,
        "only the missing part travelled"
    );
    // The registry's own account: after its restart, the disk was served
    // once, as a 206 Partial Content of exactly the missing bytes.
    let served: Vec<_> = registry
        .answered()
        .into_iter()
        .filter(|a| {
            a.request
                .starts_with(&format!("GET /v2/{repo}/blobs/sha256:{disk_hex} "))
        })
        .collect();
    let resumed_get = served.last().expect("the registry logged the disk's GET");
    assert_eq!(
        (resumed_get.status, resumed_get.bytes),
        (206, size as u64 - kept),
        "the registry's log of the disk's GETs: {served:?}"
    );
    let resumed = blobs_of(&events)
        .into_iter()
        .find(|b| b.digest.ends_with(&disk_hex))
        .unwrap();
    assert_eq!(
        resumed.done, kept,
        "the disk's progress starts where it stopped"
    );
    let blob = other.store.join("blobs/sha256").join(&disk_hex);
    assert_eq!(sha256_file(&blob), format!("sha256:{disk_hex}"));
    let inspected = other.vmr(&["inspect", "-o", "json", &reference]).json();
    assert_eq!(inspected["image"]["digest"], digest.as_str());
    assert!(
        !other.store_files().iter().any(|f| f.contains("partial-")),
        "no partial is left: {:?}",
        other.store_files()
    );
}
