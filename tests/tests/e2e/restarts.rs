//! Restarts: `vmrd` killed or stopped under running VMs and a compose
//! project (real libvirt, `qemu:///system`), and a private `libvirtd`
//! restarted under a running `vmrd` (the test driver over its socket).
//!
//! The real-libvirt test needs `VMR_TEST_LIBVIRT_URI` (from
//! `scripts/test-services.sh env`); it fails without it unless
//! `VMR_TEST_SKIP_LIBVIRT=1`. The libvirtd test starts its own libvirtd as
//! `nobody` in session mode, in a directory of its own: the shared one is
//! never touched.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tonic::Code;
use vmr_proto::v1 as pb;
use vmr_tests::Daemon;
use vmr_tests::fixtures::qcow2;
use vmr_tests::libvirt::{Cleanup, domstate, unique_suffix, uri, virsh, wait_for};

// ------------------------------------------------------------ vmrd restarts

/// Imports an empty 64 MiB disk as `repo:1`, asking for one vCPU and 64 MiB.
fn import_tiny(daemon: &Daemon, work: &Path, repo: &str) {
    let disk = qcow2(work, "tiny.qcow2", "64M");
    let file = work.join("vmfile.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nmetadata:\n  name: {repo}\nspec:\n  diskImage: {}\n  diskFormat: qcow2\n  resources:\n    cpu: 1\n    memory: 64MiB\n",
            disk.display()
        ),
    )
    .unwrap();
    daemon
        .vmr(&["import", "-f", file.to_str().unwrap(), "-t", "1"])
        .ok();
}

/// `vmr ps -a` restricted to `names`, sorted by name (the compose service,
/// `rs…-web`, first).
fn ps_of(daemon: &Daemon, names: &[&str]) -> Vec<Value> {
    let all = daemon.vmr(&["ps", "-a", "-o", "json"]).json();
    let mut vms: Vec<Value> = all["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|vm| names.contains(&vm["name"].as_str().unwrap()))
        .cloned()
        .collect();
    vms.sort_by_key(|vm| vm["name"].as_str().unwrap().to_owned());
    vms
}

fn compose_ps(daemon: &Daemon, file: &Path) -> Value {
    daemon
        .vmr(&["-o", "json", "compose", "-f", file.to_str().unwrap(), "ps"])
        .json()
}

/// Destroys `domain` behind vmr's back and waits for the daemon to start it
/// again (a new QEMU, so a new domain id).
fn assert_brought_back(daemon: &Daemon, uri: &str, domain: &str) {
    let id_before = virsh_out(uri, &["domid", domain]);
    assert!(virsh(uri, &["destroy", domain]).status.success());
    assert!(
        wait_for(Duration::from_secs(40), || {
            domstate(uri, domain).as_deref() == Some("running")
                && virsh_out(uri, &["domid", domain]) != id_before
        }),
        "{domain} (restart: always) was not brought back:\n{}",
        daemon.log_text()
    );
}

fn virsh_out(uri: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&virsh(uri, args).stdout)
        .trim()
        .to_owned()
}

#[test]
fn libvirt_vmrd_killed_or_stopped_keeps_vms_projects_and_policies() {
    let Some(uri) = uri() else { return };
    let sfx = unique_suffix();
    let project = format!("rs{sfx}");
    let mut cleanup = Cleanup::new(&uri);
    let always = cleanup.domain(&format!("vmr-e2e-rsalw-{sfx}"));
    let plain = cleanup.domain(&format!("vmr-e2e-rsno-{sfx}"));
    let service = cleanup.domain(&format!("{project}-web"));
    let mut daemon = Daemon::on_libvirt(&uri);
    let work = tempfile::tempdir().unwrap();
    let repo = format!("tests/rs{sfx}");
    import_tiny(&daemon, work.path(), &repo);
    let image = format!("{repo}:1");

    for (name, policy) in [(&always, "always"), (&plain, "no")] {
        daemon
            .vmr(&["run", &image, "--name", name, "--restart", policy])
            .ok();
    }
    daemon.vmr(&["stop", "--force", &plain]).ok();
    let compose = work.path().join("vmcompose.yaml");
    std::fs::write(
        &compose,
        format!(
            "apiVersion: v1\nname: {project}\nservices:\n  web: {{image: \"{image}\", restartPolicy: always}}\n"
        ),
    )
    .unwrap();
    daemon
        .vmr(&["compose", "-f", compose.to_str().unwrap(), "up"])
        .ok();

    let names = [always.as_str(), plain.as_str(), service.as_str()];
    let before = ps_of(&daemon, &names);
    assert_eq!(before.len(), 3, "{before:#?}");
    let states: Vec<&str> = before
        .iter()
        .map(|vm| vm["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["running", "running", "stopped"], "{before:#?}");
    let web = before.iter().find(|vm| vm["name"] == *service).unwrap();
    assert_eq!(web["project"], project.as_str(), "{web:#}");
    let project_before = compose_ps(&daemon, &compose);

    for how in ["SIGKILL", "SIGTERM"] {
        if how == "SIGKILL" {
            daemon.crash_and_restart();
        } else {
            daemon.restart();
        }
        assert_eq!(
            ps_of(&daemon, &names),
            before,
            "ps changed across a {how} restart"
        );
        assert_eq!(compose_ps(&daemon, &compose), project_before, "{how}");
        // The stopped `no` VM stays stopped; the new daemon still enforces
        // `always`, for a plain VM and for a compose service.
        assert_eq!(domstate(&uri, &plain).as_deref(), Some("shut off"));
        assert_brought_back(&daemon, &uri, &always);
        assert_brought_back(&daemon, &uri, &service);
        assert_eq!(ps_of(&daemon, &names), before, "after the {how} restart");
    }

    daemon
        .vmr(&["compose", "-f", compose.to_str().unwrap(), "down"])
        .ok();
    daemon.vmr(&["rm", "-f", &always]).ok();
    daemon.vmr(&["rm", "-f", &plain]).ok();
    for name in names {
        assert!(domstate(&uri, name).is_none(), "{name} is left");
    }
}

// --------------------------------------------------------- libvirtd restart

/// A libvirtd of the test's own: run as `nobody` in session mode, with its
/// runtime, config and cache below a private directory. Killed when dropped.
struct PrivateLibvirtd {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateLibvirtd {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vmr-e2e-libvirtd-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut this = Self { dir, child: None };
        this.spawn();
        this
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/libvirt/libvirt-sock")
    }

    fn uri(&self) -> String {
        format!("test+unix:///default?socket={}", self.socket().display())
    }

    fn spawn(&mut self) {
        let home = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.join("libvirtd.log"))
            .unwrap();
        let child = Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "libvirtd",
            ])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", home)
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("setpriv (util-linux) and libvirtd are installed");
        self.child = Some(child);
        let uri = self.uri();
        assert!(
            wait_for(Duration::from_secs(30), || virsh(&uri, &["version"])
                .status
                .success()),
            "the private libvirtd did not come up:\n{}",
            std::fs::read_to_string(home.join("libvirtd.log")).unwrap_or_default()
        );
    }

    /// SIGKILL: libvirtd goes away without a word to its clients.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateLibvirtd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The hypervisor's entry of vmrd's HealthCheck. A hang fails the test.
async fn hypervisor_health(daemon: &Daemon) -> pb::ComponentHealth {
    let mut client = daemon.client().await;
    let report = tokio::time::timeout(
        Duration::from_secs(15),
        client.health_check(pb::HealthCheckRequest {}),
    )
    .await
    .expect("HealthCheck hung")
    .unwrap()
    .into_inner();
    report
        .components
        .into_iter()
        .find(|c| c.name == "hypervisor")
        .expect("a hypervisor component")
}

/// ListVMs, bounded: during an outage it must fail rather than hang.
async fn list_vms(daemon: &Daemon) -> Result<pb::ListVMsResponse, tonic::Status> {
    let mut client = daemon.client().await;
    tokio::time::timeout(
        Duration::from_secs(15),
        client.list_v_ms(pb::ListVMsRequest::default()),
    )
    .await
    .expect("ListVMs hung while libvirtd was down")
    .map(tonic::Response::into_inner)
}

async fn wait_healthy(daemon: &Daemon) -> bool {
    for _ in 0..100 {
        if hypervisor_health(daemon).await.status == pb::ServingStatus::Serving as i32 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn libvirtd_restart_shows_the_outage_and_vmrd_reconnects_by_itself() {
    let mut libvirtd = PrivateLibvirtd::start();
    let uri = libvirtd.uri();
    let flags = [
        "--hypervisor",
        "libvirt",
        "--libvirt-uri",
        uri.as_str(),
        "--virt-type",
        "qemu",
    ];
    let daemon = Daemon::start_with(&flags);
    let health = hypervisor_health(&daemon).await;
    assert_eq!(
        health.status,
        pb::ServingStatus::Serving as i32,
        "{health:?}"
    );
    list_vms(&daemon).await.unwrap();

    libvirtd.kill();
    // The outage shows in HealthCheck (with since when) and calls fail with
    // UNAVAILABLE instead of hanging.
    let mut down = None;
    for _ in 0..50 {
        let health = hypervisor_health(&daemon).await;
        if health.status == pb::ServingStatus::NotServing as i32 {
            down = Some(health);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let down = down.expect("HealthCheck never showed libvirtd down");
    assert!(
        down.message.contains("unavailable since"),
        "{}",
        down.message
    );
    for _ in 0..3 {
        let err = list_vms(&daemon).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
    let out = daemon.vmr(&["ps"]);
    assert!(out.err().contains("unavailable"), "{}", out.stderr());

    // A daemon started while libvirtd is down serves all the same.
    let late = Daemon::start_with(&flags);
    let health = hypervisor_health(&late).await;
    assert_eq!(
        health.status,
        pb::ServingStatus::NotServing as i32,
        "{health:?}"
    );
    assert_eq!(list_vms(&late).await.unwrap_err().code(), Code::Unavailable);

    libvirtd.spawn();
    // Both reconnect by themselves: no call is needed for it.
    for d in [&daemon, &late] {
        assert!(
            wait_for(Duration::from_secs(30), || d
                .log_text()
                .contains("reconnected to libvirt")),
            "vmrd did not reconnect by itself:\n{}",
            d.log_text()
        );
        assert!(wait_healthy(d).await, "{}", d.log_text());
        list_vms(d).await.unwrap();
        d.vmr(&["ps"]).ok();
    }
    drop(libvirtd);
    drop(late);
}
