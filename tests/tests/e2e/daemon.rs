//! vmrd as a process: settings, the socket, signals, the call log,
//! reflection and grpc.health.v1.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use vmr_proto::v1 as pb;
use vmr_tests::{Daemon, bin};

fn vmrd(args: &[&str]) -> std::process::Output {
    Command::new(bin("vmrd"))
        .args(args)
        .env_remove("VM_REGISTRY_SOCKET_PATH")
        .output()
        .unwrap()
}

#[test]
fn bad_settings_are_refused_with_one_line_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let sock = sock.to_str().unwrap();
    for (args, expected) in [
        (
            vec!["--storage", "tape"],
            "vmrd: --storage: 'tape' is not a storage backend",
        ),
        (
            vec!["-log-level", "loud"],
            "vmrd: --log-level: 'loud' is not a level",
        ),
        (
            vec!["--storage", "s3"],
            "vmrd: --s3-bucket: is required with --storage s3",
        ),
        (
            vec!["--socket-mode", "8888"],
            "vmrd: --socket-mode: '8888' is not an octal mode",
        ),
    ] {
        let mut all = vec!["--socket", sock];
        all.extend(args.iter());
        let out = vmrd(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
    // The environment is read too, and a flag beats it.
    let out = Command::new(bin("vmrd"))
        .args(["--socket", sock])
        .env("VM_REGISTRY_STORAGE", "floppy")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--storage: 'floppy'"));
    assert!(!std::path::Path::new(sock).exists());
}

#[test]
fn the_socket_is_0660_never_stolen_replaced_when_stale_and_removed_on_sigterm() {
    let mut daemon = Daemon::start();
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);

    // A second daemon on the same socket refuses and leaves it alone.
    let store2 = daemon.dir.path().join("store2");
    let out = vmrd(&[
        "--socket",
        daemon.socket.to_str().unwrap(),
        "--fs-path",
        store2.to_str().unwrap(),
        "--hypervisor",
        "fake",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another vmrd is serving on this socket"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.vmr(&["health"]).ok();

    // Killed hard: the socket file stays behind, stale; a new daemon takes it.
    daemon.kill();
    assert!(daemon.socket.exists());
    daemon.restart();
    daemon.vmr(&["health"]).ok();
    assert!(daemon.log_text().contains("replacing a stale socket"));

    // SIGTERM: a graceful stop removes the socket.
    daemon.stop();
    assert!(!daemon.socket.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_is_logged_with_the_callers_uid_and_pid() {
    let daemon = Daemon::start();
    daemon.vmr(&["images"]).ok();
    let _ = daemon.vmr(&["inspect", "--type", "image", "no/such:image"]);
    let log = daemon.log_text();
    let uid = nix_uid();
    let list = log
        .lines()
        .find(|l| l.contains("/vmregistry.v1.VMService/ListImages"))
        .unwrap_or_else(|| panic!("no ListImages line in:\n{log}"));
    assert!(list.contains(&format!("uid={uid}")), "{list}");
    assert!(list.contains("pid="), "{list}");
    assert!(
        list.contains("status=\"0\"") || list.contains("status=0"),
        "{list}"
    );
    let failed = log
        .lines()
        .find(|l| l.contains("/vmregistry.v1.VMService/InspectImage"))
        .unwrap_or_else(|| panic!("no InspectImage line in:\n{log}"));
    assert!(
        failed.contains("status=\"5\"") || failed.contains("status=5"),
        "{failed}"
    );
}

fn nix_uid() -> String {
    String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_and_grpc_health_are_served() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let daemon = Daemon::start();
    let channel = vmr_tests::daemon::channel(&daemon.socket).await;

    let mut health = HealthClient::new(channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "vmregistry.v1.VMService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tonic::codegen::tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"vmregistry.v1.VMService"), "{names:?}");

    // The daemon's own HealthCheck RPC.
    let mut client = daemon.client().await;
    let report = client
        .health_check(pb::HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.components[0].name, "daemon");
    assert_eq!(
        report.components[0].status,
        pb::ServingStatus::Serving as i32
    );
}

/// The file names of the shared libraries process `pid` has mapped.
fn mapped_libraries(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut names: Vec<String> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter_map(|path| path.rsplit('/').next())
        .filter(|name| name.contains(".so"))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_fake_hypervisor_runs_without_libvirt_in_memory() {
    let daemon = Daemon::start();
    let libraries = mapped_libraries(daemon.pid().unwrap());
    assert!(
        libraries.iter().any(|l| l.starts_with("libc.so")),
        "{libraries:?}"
    );
    assert!(
        !libraries.iter().any(|l| l.contains("libvirt")),
        "{libraries:?}"
    );
    assert!(daemon.log_text().contains("hypervisor=fake"));
}

#[test]
fn libvirt_is_served_by_vmrd_libvirt_in_the_process_vmrd_started() {
    let daemon = Daemon::start_with(&[
        "--hypervisor",
        "libvirt",
        "--libvirt-uri",
        "test:///default",
    ]);
    let pid = daemon.pid().unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        exe.file_name().unwrap(),
        "vmrd-libvirt",
        "{}",
        exe.display()
    );
    let libraries = mapped_libraries(pid);
    assert!(
        libraries.iter().any(|l| l.starts_with("libvirt.so")),
        "{libraries:?}"
    );
    let health = daemon.vmr(&["health"]).ok();
    assert!(health.contains("test:///default"), "{health}");
}

#[test]
fn without_vmrd_libvirt_beside_it_vmrd_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("vmrd");
    std::fs::copy(bin("vmrd"), &alone).unwrap();
    let sock = dir.path().join("s.sock");
    let out = Command::new(&alone)
        .args(["--hypervisor", "libvirt", "--socket"])
        .arg(&sock)
        .arg("--fs-path")
        .arg(dir.path().join("store"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("vmrd: --hypervisor libvirt: cannot run "),
        "{stderr}"
    );
    assert!(stderr.contains("vmrd-libvirt"), "{stderr}");
    assert!(stderr.contains("--hypervisor fake"), "{stderr}");
    assert!(!sock.exists());
    // The fake hypervisor needs nothing beside it.
    let mut fake = Command::new(&alone)
        .args(["--hypervisor", "fake", "--socket"])
        .arg(&sock)
        .arg("--fs-path")
        .arg(dir.path().join("store"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !sock.exists() && std::time::Instant::now() < deadline {
        assert!(fake.try_wait().unwrap().is_none(), "vmrd exited");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(sock.exists());
    fake.kill().unwrap();
    fake.wait().unwrap();
}

/// The libraries the dynamic loader loads to start `program` (its
/// `LD_DEBUG=libs` trace), by name.
fn loaded_libraries(program: &str) -> Vec<String> {
    let out = Command::new(bin(program))
        .arg("--version")
        .env("LD_DEBUG", "libs")
        .output()
        .unwrap();
    assert!(out.status.success(), "{program} --version");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|line| line.split("find library=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|name| name.trim_end_matches(';').to_owned())
        .collect()
}

#[test]
fn only_vmrd_libvirt_loads_libvirt() {
    let linked = loaded_libraries("vmrd-libvirt");
    assert!(
        linked.iter().any(|l| l.starts_with("libvirt.so")),
        "{linked:?}"
    );
    for program in ["vmrd", "vmr"] {
        let loaded = loaded_libraries(program);
        assert!(
            loaded.iter().any(|l| l.starts_with("libc.so")),
            "{loaded:?}"
        );
        assert!(
            !loaded.iter().any(|l| l.contains("libvirt")),
            "{program}: {loaded:?}"
        );
    }
}
