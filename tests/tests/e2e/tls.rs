//! Registries over HTTPS: the real `vmrd` against `docker-registry` serving
//! TLS with a certificate from the test CA of `scripts/test-services.sh`
//! (`VMR_TEST_REGISTRY_TLS`, and `VMR_TEST_REGISTRY_TLS_WRONG_HOST` whose
//! certificate names another host). The CA is trusted through the daemon's
//! `--registry-ca-file` or through the system store the daemon reads
//! (`SSL_CERT_FILE`, honoured by rustls-platform-verifier on Linux), or not
//! at all; `skopeo` checks what went over the wire.

use std::path::Path;

use vmr_tests::Daemon;
use vmr_tests::fixtures::{raw, sha256_bytes};
use vmr_tests::registry::{import_qcow2, service_env, skopeo, unique_repo, write_oci_layout};

/// The test CA's certificate file, and a cert dir holding it for skopeo.
fn test_ca(work: &Path) -> (String, String) {
    let ca = service_env("VMR_TEST_TLS_CA").expect("VMR_TEST_TLS_CA");
    let dir = work.join("certs.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&ca, dir.join("ca.crt")).unwrap();
    (ca, dir.to_str().unwrap().to_owned())
}

/// A fake-hypervisor daemon whose default registry is `https://host`,
/// trusting `ca` (`--registry-ca-file`) when given.
fn daemon_for(host: &str, ca: Option<&str>, env: &[(&str, &str)]) -> Daemon {
    let url = format!("https://{host}");
    let mut args = vec!["--hypervisor", "fake", "--registry-url", &url];
    if let Some(ca) = ca {
        args.extend(["--registry-ca-file", ca]);
    }
    Daemon::start_with_env(&args, env)
}

/// The digest of the manifest skopeo reads at `host/reference` over https,
/// trusting the CA in `cert_dir` only.
fn skopeo_manifest_digest(host: &str, cert_dir: &str, reference: &str) -> String {
    let manifest = skopeo(&[
        "inspect",
        "--cert-dir",
        cert_dir,
        "--raw",
        &format!("docker://{host}/{reference}"),
    ])
    .stdout;
    sha256_bytes(&manifest)
}

/// Pushes `repo:v1`, removes it locally, pulls it back: the same digest,
/// which is the manifest skopeo reads over https trusting only the test CA.
fn push_rmi_pull(daemon: &Daemon, work: &Path, host: &str, cert_dir: &str, repo: &str) {
    import_qcow2(daemon, work, repo, "v1");
    let pushed = daemon
        .vmr(&["push", "-o", "json", &format!("{repo}:v1")])
        .json();
    let digest = pushed["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        skopeo_manifest_digest(host, cert_dir, &format!("{repo}:v1")),
        digest
    );

    daemon.vmr(&["rmi", &format!("{repo}:v1")]).ok();
    let pulled = daemon
        .vmr(&["pull", "-o", "json", &format!("{repo}:v1")])
        .json();
    assert_eq!(pulled["digest"], digest.as_str(), "{pulled}");
}

#[test]
fn https_push_and_pull_trusting_the_ca_file_and_skopeo_agrees() {
    let Some(host) = service_env("VMR_TEST_REGISTRY_TLS") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (ca, cert_dir) = test_ca(work.path());
    let daemon = daemon_for(&host, Some(&ca), &[]);
    push_rmi_pull(
        &daemon,
        work.path(),
        &host,
        &cert_dir,
        &unique_repo("tls-ca-file"),
    );

    // An image skopeo pushed over https (verifying with the test CA) is
    // pulled by vmr, byte for byte what the layout held.
    let foreign = unique_repo("tls-from-skopeo");
    let layout = work.path().join("layout");
    let disk = std::fs::read(raw(work.path(), "foreign.raw", (1 << 20) + 3, 11)).unwrap();
    let digest = write_oci_layout(&layout, "t1", &foreign, &disk, "raw");
    skopeo(&[
        "copy",
        "--dest-cert-dir",
        &cert_dir,
        &format!("oci:{}:t1", layout.display()),
        &format!("docker://{host}/{foreign}:t1"),
    ]);
    let pulled = daemon
        .vmr(&["pull", "-o", "json", &format!("{foreign}:t1")])
        .json();
    assert_eq!(pulled["digest"], digest.as_str(), "{pulled}");
}

#[test]
fn https_push_and_pull_trusting_the_ca_through_the_system_store() {
    let Some(host) = service_env("VMR_TEST_REGISTRY_TLS") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (ca, cert_dir) = test_ca(work.path());
    // The daemon's system trust store is the CA file alone: no flag names it.
    let daemon = daemon_for(
        &host,
        None,
        &[("SSL_CERT_FILE", &ca), ("SSL_CERT_DIR", "/nonexistent")],
    );
    push_rmi_pull(
        &daemon,
        work.path(),
        &host,
        &cert_dir,
        &unique_repo("tls-system"),
    );
}

#[test]
fn untrusted_and_wrong_host_certificates_are_refused_and_insecure_accepts_them() {
    let Some(host) = service_env("VMR_TEST_REGISTRY_TLS") else {
        return;
    };
    let Some(wrong) = service_env("VMR_TEST_REGISTRY_TLS_WRONG_HOST") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (ca, cert_dir) = test_ca(work.path());

    // No trust in the test CA: the push is refused, saying where and why.
    let daemon = daemon_for(&host, None, &[]);
    let repo = unique_repo("tls-untrusted");
    import_qcow2(&daemon, work.path(), &repo, "v1");
    let err = daemon.vmr(&["push", &format!("{repo}:v1")]).err();
    assert!(err.contains(&host), "the registry is not named: {err}");
    assert!(
        err.contains("TLS certificate is refused") && err.contains("UnknownIssuer"),
        "the cause is not named: {err}"
    );
    let listed = std::process::Command::new("skopeo")
        .args(["list-tags", "--cert-dir", &cert_dir])
        .arg(format!("docker://{host}/{repo}"))
        .output()
        .unwrap();
    assert!(
        !listed.status.success(),
        "the refused push left the repository on the registry: {}",
        String::from_utf8_lossy(&listed.stdout)
    );

    // An insecure context skips the verification and the push goes through.
    daemon
        .vmr(&[
            "context",
            "create",
            "lax",
            "--registry-url",
            &format!("https://{host}"),
            "--insecure",
        ])
        .ok();
    let pushed = daemon
        .vmr(&[
            "--context",
            "lax",
            "push",
            "-o",
            "json",
            &format!("{repo}:v1"),
        ])
        .json();
    let manifest = skopeo(&[
        "inspect",
        "--cert-dir",
        &cert_dir,
        "--raw",
        &format!("docker://{host}/{repo}:v1"),
    ])
    .stdout;
    assert_eq!(sha256_bytes(&manifest), pushed["digest"].as_str().unwrap());

    // Trusting the CA does not make a certificate for another host good.
    let trusting = daemon_for(&wrong, Some(&ca), &[]);
    let repo = unique_repo("tls-wrong-host");
    import_qcow2(&trusting, work.path(), &repo, "v1");
    let err = trusting.vmr(&["push", &format!("{repo}:v1")]).err();
    assert!(err.contains(&wrong), "the registry is not named: {err}");
    assert!(
        err.contains("TLS certificate is refused") && err.contains("not valid for name"),
        "the cause is not named: {err}"
    );
}
