//! The daemon's API for a client no one here wrote: Python's grpcio with its
//! default channel, driving a real vmrd through reflection alone
//! (tests/python/vmr_client.py, in the venv scripts/test-services.sh makes,
//! named by VMR_TEST_PYTHON), and the metrics endpoint parsed by
//! prometheus_client's own text parser.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;
use serde_json::Value;
use vmr_tests::Daemon;
use vmr_tests::fixtures::{raw, vmfile};

fn python() -> PathBuf {
    let python = std::env::var_os("VMR_TEST_PYTHON").unwrap_or_else(|| {
        panic!(
            "VMR_TEST_PYTHON is not set: run scripts/test-services.sh start (it installs grpcio, grpcio-reflection, grpcio-health-checking and prometheus_client) and load its env"
        )
    });
    PathBuf::from(python)
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/vmr_client.py")
}

/// Runs one command of the client; its JSON output.
fn client(args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(script())
        .args(args)
        .output()
        .expect("running the Python client");
    assert!(
        out.status.success(),
        "vmr_client.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("vmr_client.py {args:?}: not JSON ({e}): {stdout}"))
}

fn socket(daemon: &Daemon) -> &str {
    daemon.socket.to_str().unwrap()
}

/// VMService's methods as this repository's descriptor set has them.
fn our_methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(vmr_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut methods: Vec<String> = set
        .file
        .iter()
        .filter(|f| f.package() == "vmregistry.v1")
        .flat_map(|f| &f.service)
        .filter(|s| s.name() == "VMService")
        .flat_map(|s| &s.method)
        .map(|m| m.name().to_string())
        .collect();
    methods.sort();
    methods
}

#[test]
fn grpcio_with_its_default_channel_checks_health_reflects_everything_and_imports() {
    let daemon = Daemon::start();
    let probe = client(&["probe", socket(&daemon)]);
    assert_eq!(probe["health"], "SERVING", "{probe}");
    assert_eq!(probe["health_vmservice"], "SERVING", "{probe}");
    for version in ["services_v1alpha", "services_v1"] {
        let listed: Vec<&str> = probe[version]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        for service in [
            "vmregistry.v1.VMService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
            "grpc.reflection.v1.ServerReflection",
        ] {
            assert!(
                listed.contains(&service),
                "{version} lacks {service}: {listed:?}"
            );
        }
    }
    assert_eq!(probe["unresolved"], serde_json::json!([]), "{probe}");
    let mut resolved: Vec<String> = probe["methods"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    resolved.sort();
    assert_eq!(resolved, our_methods());
    let v1: Vec<String> = serde_json::from_value(probe["methods_v1"].clone()).unwrap();
    assert_eq!(v1, our_methods());
    assert_eq!(
        probe["methods"]["WatchEvents"],
        serde_json::json!(["vmregistry.v1.WatchEventsRequest", "vmregistry.v1.Event"])
    );
    assert_eq!(probe["list_images"], serde_json::json!({}));

    let imported = client(&["import", socket(&daemon), "py/disk", "1", "300001"]);
    assert_eq!(imported["references"], serde_json::json!(["py/disk:1"]));
    let listed = client(&["call", socket(&daemon), "ListImages", "{}"]);
    assert_eq!(listed["code"], "OK");
    let images = listed["reply"]["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{listed}");
    assert_eq!(images[0]["repository"], "py/disk");
    assert_eq!(images[0]["digest"], imported["image"]["digest"]);
    // And vmr sees the same image.
    let table = daemon.vmr(&["images"]).ok();
    assert!(table.contains("py/disk"), "{table}");
}

/// A child printing one JSON event a line, read on a thread.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<Value>,
}

impl Watcher {
    /// The Python client watching `daemon` with `filters` from now. From a
    /// time, not from its subscription: whenever the watch is subscribed,
    /// the daemon replays what it missed, then streams the rest.
    fn grpcio(daemon: &Daemon, filters: &[&str]) -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            .to_string();
        let mut command = Command::new(python());
        command
            .arg(script())
            .args(["watch", socket(daemon), &since])
            .args(filters);
        Self::spawn(command)
    }

    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning a watcher");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// `type action name` of the events seen until `want` of them match
    /// `keep`, within a minute.
    fn until(&mut self, want: usize, keep: impl Fn(&Value) -> bool) -> Vec<String> {
        self.until_within(Duration::from_secs(60), want, keep)
    }

    fn until_within(
        &mut self,
        within: Duration,
        want: usize,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let kept: Vec<String> = self
                .seen
                .iter()
                .filter(|e| keep(e))
                .map(|e| {
                    format!(
                        "{} {} {}",
                        e["type"].as_str().unwrap_or(""),
                        e["action"].as_str().unwrap_or(""),
                        e["name"].as_str().unwrap_or("")
                    )
                })
                .collect();
            if kept.len() >= want {
                return kept;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(
                    serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("not a JSON event ({e}): {line}")),
                ),
                Err(_) => panic!(
                    "{} of {want} events within {within:?}: {kept:#?}\nall seen: {:#?}",
                    kept.len(),
                    self.seen
                ),
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PROJECT: &str = "apiVersion: vmregistry.io/v1alpha1
kind: VMCompose
name: evp
networks:
  lan:
    mode: isolated
    subnet: 192.168.77.0/24
    gateway: 192.168.77.1
services:
  web:
    image: ev/app:1
    networks:
      - name: lan
";

#[test]
fn grpcio_and_vmr_events_see_a_scripted_sequence_in_order() {
    let daemon = Daemon::start();
    let mut grpcio = Watcher::grpcio(&daemon, &[]);
    let mut vmr_events = {
        let mut command = Command::new(vmr_tests::bin("vmr"));
        command
            .arg("--socket")
            .arg(&daemon.socket)
            // The daemon is younger than this: everything it saw.
            .args(["-o", "json", "events", "--since", "1h"]);
        Watcher::spawn(command)
    };

    let work = tempfile::tempdir().unwrap();
    raw(work.path(), "disk.raw", 64 * 1024, 7);
    let file = vmfile(work.path(), "ev/app", "disk.raw", "raw");
    daemon
        .vmr(&["import", "-f", file.to_str().unwrap(), "-t", "1"])
        .ok();
    daemon.vmr(&["tag", "ev/app:1", "ev/app:2"]).ok();
    daemon.vmr(&["rmi", "ev/app:2"]).ok();
    daemon
        .vmr(&[
            "network",
            "create",
            "evnet",
            "--mode",
            "isolated",
            "--subnet",
            "192.168.78.0/24",
        ])
        .ok();
    daemon.vmr(&["network", "rm", "evnet"]).ok();
    let project = work.path().join("vmcompose.yaml");
    std::fs::write(&project, PROJECT).unwrap();
    let project = project.to_str().unwrap();
    daemon.vmr(&["compose", "-f", project, "up"]).ok();
    daemon.vmr(&["compose", "-f", project, "down"]).ok();

    let expected = [
        "image import ev/app:1",
        "image tag ev/app:2",
        "image remove ev/app:2",
        "network create evnet",
        "network remove evnet",
        "network create evp-lan",
        "vm create evp-web",
        "vm start evp-web",
        "compose up evp",
        "network remove evp-lan",
        "compose down evp",
    ];
    // The default network, VM stops and removals come from the fake's
    // lifecycle as it sees fit; the steps above are the script's own.
    let scripted = |e: &Value| {
        let line = format!(
            "{} {} {}",
            e["type"].as_str().unwrap_or(""),
            e["action"].as_str().unwrap_or(""),
            e["name"].as_str().unwrap_or("")
        );
        expected.contains(&line.as_str())
    };
    assert_eq!(grpcio.until(expected.len(), scripted), expected);
    assert_eq!(vmr_events.until(expected.len(), scripted), expected);
    // Sequence numbers rise without gaps and are the same for both watchers.
    let sequences = |w: &Watcher| -> Vec<u64> {
        w.seen
            .iter()
            .map(|e| {
                e["sequence"]
                    .as_u64()
                    .or_else(|| e["sequence"].as_str().and_then(|s| s.parse().ok()))
                    .unwrap()
            })
            .collect()
    };
    let grpcio_seq = sequences(&grpcio);
    assert!(
        grpcio_seq.windows(2).all(|w| w[1] == w[0] + 1),
        "{grpcio_seq:?}"
    );
    let common = grpcio_seq.len().min(vmr_events.seen.len());
    assert_eq!(grpcio_seq[..common], sequences(&vmr_events)[..common]);
}

#[test]
fn a_watcher_that_does_not_read_loses_the_oldest_events_with_a_dropped_marker() {
    let daemon = Daemon::start();
    client(&["import", socket(&daemon), "slow/app", "1", "4096"]);
    const TAGS: u64 = 2500;
    let out = client(&["slow-watch", socket(&daemon), "slow/app", &TAGS.to_string()]);
    assert_eq!(out["first"], "slow/app:t0");
    // Everything after the first tag is either seen or counted as dropped,
    // and the newest is never lost.
    let (seen, dropped) = (
        out["seen"].as_u64().unwrap(),
        out["dropped"].as_u64().unwrap(),
    );
    assert!(dropped > 0, "nothing dropped: {out}");
    assert_eq!(seen + dropped, TAGS - 1, "{out}");
    assert_eq!(out["last"], format!("slow/app:t{}", TAGS - 1));
}

#[test]
fn malformed_or_oversized_reflection_and_events_requests_get_clear_statuses() {
    let daemon = Daemon::start();
    let out = client(&["bad", socket(&daemon)]);
    let want = serde_json::json!({
        "reflection_v1_malformed": "INVALID_ARGUMENT",
        "reflection_v1_oversized": "RESOURCE_EXHAUSTED",
        "reflection_v1alpha_malformed": "INVALID_ARGUMENT",
        "reflection_v1alpha_oversized": "RESOURCE_EXHAUSTED",
        "events_malformed": "INVALID_ARGUMENT",
        "events_oversized": "RESOURCE_EXHAUSTED",
        "events_too_many_filters": "RESOURCE_EXHAUSTED",
        "events_unknown_filter": "INVALID_ARGUMENT",
        "health_after": "SERVING",
    });
    assert_eq!(out, want);
}

/// The metrics endpoint of a daemon started with `--metrics-listen
/// 127.0.0.1:0`, from its log.
fn metrics_url(daemon: &Daemon) -> String {
    daemon.wait_for_log("metrics served at http://");
    let log = daemon.log_text();
    let start = log.find("metrics served at ").unwrap() + "metrics served at ".len();
    log[start..].split_whitespace().next().unwrap().to_string()
}

fn samples(url: &str) -> BTreeMap<String, f64> {
    let out = client(&["metrics", url]);
    assert_eq!(
        out["content_type"], "text/plain; version=0.0.4; charset=utf-8",
        "{out}"
    );
    for (family, kind) in [
        ("vmr_image_bytes", "counter"),
        ("vmr_vms", "gauge"),
        ("vmr_images", "gauge"),
        ("vmr_store_bytes", "gauge"),
        ("vmr_component_up", "gauge"),
    ] {
        assert_eq!(out["types"][family], kind, "{out}");
    }
    serde_json::from_value(out["samples"].clone()).unwrap()
}

fn calls(method: &str, code: &str) -> String {
    format!(
        "vmr_grpc_requests_total{{code={code},method={method},service=vmregistry.v1.VMService}}"
    )
}

#[test]
fn metrics_count_a_scripted_sequence_exactly() {
    let daemon = Daemon::start_with(&["--hypervisor", "fake", "--metrics-listen", "127.0.0.1:0"]);
    let url = metrics_url(&daemon);
    let before = samples(&url);
    let delta = |after: &BTreeMap<String, f64>, key: &str| {
        after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
    };
    assert_eq!(before["vmr_images"], 0.0);
    assert_eq!(before["vmr_image_bytes_total{flow=imported}"], 0.0);
    assert_eq!(before["vmr_vms{state=running}"], 0.0);
    assert_eq!(before["vmr_component_up{component=hypervisor}"], 1.0);
    assert_eq!(before["vmr_component_up{component=store}"], 1.0);

    client(&["import", socket(&daemon), "m/one", "1", "100000"]);
    client(&["import", socket(&daemon), "m/two", "1", "23456"]);
    for _ in 0..3 {
        assert_eq!(
            client(&["call", socket(&daemon), "ListImages", "{}"])["code"],
            "OK"
        );
    }
    let missing = client(&[
        "call",
        socket(&daemon),
        "InspectImage",
        r#"{"reference":"m/none:1"}"#,
    ]);
    assert_eq!(missing["code"], "NOT_FOUND");
    daemon
        .vmr(&["create", "m/one:1", "--name", "mvm", "--network", "none"])
        .ok();
    daemon.vmr(&["start", "mvm"]).ok();

    let after = samples(&url);
    let types = client(&["metrics", &url])["types"].clone();
    assert_eq!(types["vmr_grpc_requests"], "counter");
    assert_eq!(types["vmr_grpc_request_duration_seconds"], "histogram");
    assert_eq!(delta(&after, &calls("ImportImage", "OK")), 2.0);
    assert_eq!(delta(&after, &calls("ListImages", "OK")), 3.0);
    assert_eq!(delta(&after, &calls("InspectImage", "NOT_FOUND")), 1.0);
    assert_eq!(
        delta(
            &after,
            "vmr_grpc_request_duration_seconds_count{method=ListImages,service=vmregistry.v1.VMService}"
        ),
        3.0
    );
    assert_eq!(
        delta(&after, "vmr_image_bytes_total{flow=imported}"),
        123456.0
    );
    assert_eq!(delta(&after, "vmr_image_bytes_total{flow=pushed}"), 0.0);
    assert_eq!(after["vmr_images"], 2.0);
    assert!(after["vmr_store_bytes"] >= 123456.0, "{after:?}");
    assert_eq!(after["vmr_vms{state=running}"], 1.0);
    assert_eq!(after["vmr_vms{state=stopped}"], 0.0);
}

/// The TCP ports process `pid` listens on (its socket fds matched with the
/// kernel's tables).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, state (0A: LISTEN), inode
            if fields.len() > 9 && fields[3] == "0A" && inodes.iter().any(|i| i == fields[9]) {
                let port = fields[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

#[test]
fn metrics_are_served_only_when_asked_and_beyond_loopback_only_with_the_flag() {
    let quiet = Daemon::start();
    assert_eq!(listening_ports(quiet.pid().unwrap()), Vec::<u16>::new());
    assert!(!quiet.log_text().contains("metrics served"));

    let served = Daemon::start_with(&["--hypervisor", "fake", "--metrics-listen", "127.0.0.1:0"]);
    let url = metrics_url(&served);
    let port: u16 = url
        .trim_end_matches("/metrics")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(listening_ports(served.pid().unwrap()), [port]);

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(vmr_tests::bin("vmrd"))
        .args([
            "--hypervisor",
            "fake",
            "--metrics-listen",
            "0.0.0.0:0",
            "--socket",
        ])
        .arg(dir.path().join("vmr.sock"))
        .arg("--fs-path")
        .arg(dir.path().join("store"))
        .env_remove("VM_REGISTRY_METRICS_LISTEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--metrics-listen: 0.0.0.0:0 is not a loopback address")
            && stderr.contains("--metrics-allow-remote"),
        "{stderr}"
    );
    assert!(!dir.path().join("vmr.sock").exists());
}

#[test]
fn metrics_count_pushed_and_pulled_bytes_as_the_transfers_report_them() {
    let Some(anon) = vmr_tests::registry::service_env("VMR_TEST_REGISTRY") else {
        return;
    };
    let url = format!("http://{anon}");
    let flags = [
        "--hypervisor",
        "fake",
        "--registry-url",
        &url,
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let (pusher, puller) = (Daemon::start_with(&flags), Daemon::start_with(&flags));
    let (push_url, pull_url) = (metrics_url(&pusher), metrics_url(&puller));
    let repo = vmr_tests::registry::unique_repo("metrics");
    client(&["import", socket(&pusher), &repo, "1", "200000"]);
    let before = samples(&push_url);
    assert_eq!(before["vmr_component_up{component=registry}"], 1.0);
    let pushed = pusher
        .vmr(&["push", "-o", "json", &format!("{repo}:1")])
        .json();
    let sent = pushed["bytesTransferred"].as_f64().unwrap();
    assert!(sent >= 200000.0, "{pushed}");
    let after = samples(&push_url);
    assert_eq!(
        after["vmr_image_bytes_total{flow=pushed}"] - before["vmr_image_bytes_total{flow=pushed}"],
        sent
    );
    assert_eq!(after["vmr_image_bytes_total{flow=pulled}"], 0.0);

    let pulled = puller
        .vmr(&["pull", "-o", "json", &format!("{repo}:1")])
        .json();
    let received = pulled["bytesTransferred"].as_f64().unwrap();
    assert_eq!(received, sent, "{pulled}");
    let after = samples(&pull_url);
    assert_eq!(after["vmr_image_bytes_total{flow=pulled}"], received);
    assert_eq!(after["vmr_image_bytes_total{flow=imported}"], 0.0);
    assert_eq!(after["vmr_images"], 1.0);
}

/// Whether `wanted` occurs in `seen` in this order (other events between).
fn in_order(seen: &[String], wanted: &[&str]) -> bool {
    let mut rest = seen.iter();
    wanted.iter().all(|w| rest.any(|s| s == w))
}

#[test]
fn grpcio_sees_a_restart_by_policy_after_qemu_is_killed_on_real_libvirt() {
    let Some(uri) = vmr_tests::libvirt::uri() else {
        return;
    };
    let mut cleanup = vmr_tests::libvirt::Cleanup::new(&uri);
    let vm = cleanup.domain(&format!(
        "vmr-e2e-evrestart-{}",
        vmr_tests::libvirt::unique_suffix()
    ));
    let daemon = Daemon::on_libvirt(&uri);
    let mut grpcio = Watcher::grpcio(&daemon, &[&format!("name={vm}")]);
    let work = tempfile::tempdir().unwrap();
    vmr_tests::fixtures::qcow2(work.path(), "boot.qcow2", "64M");
    let file = vmfile(work.path(), "tests/evboot", "boot.qcow2", "qcow2");
    daemon
        .vmr(&["import", "-f", file.to_str().unwrap(), "-t", "1"])
        .ok();
    daemon
        .vmr(&[
            "run",
            "tests/evboot:1",
            "--name",
            &vm,
            "--cpu",
            "1",
            "--memory",
            "64MiB",
            "--network",
            "none",
            "--restart",
            "on-failure",
        ])
        .ok();
    let line = |e: &Value| {
        let mut line = format!(
            "{} {}",
            e["action"].as_str().unwrap_or(""),
            e["name"].as_str().unwrap_or("")
        );
        for key in ["cause", "policy"] {
            if let Some(value) = e["attributes"][key].as_str() {
                line.push_str(&format!(" {key}={value}"));
            }
        }
        line
    };
    // libvirt's lifecycle events were seen to lag by half a minute on a
    // loaded host (see vms.rs): each step gets two minutes.
    let within = Duration::from_secs(120);
    // The daemon saw it start before it is killed.
    grpcio.until_within(within, 1, |e| e["action"] == "start");
    let pid = vmr_tests::libvirt::qemu_pid(&vm).expect("QEMU's pid");
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    grpcio.until_within(within, 1, |e| e["action"] == "restart");
    daemon.vmr(&["rm", "-f", &vm]).ok();
    grpcio.until_within(within, 1, |e| e["action"] == "destroy");
    let seen: Vec<String> = grpcio.seen.iter().map(line).collect();
    let start = format!("start {vm}");
    let die = format!("die {vm} cause=crashed");
    let restart = format!("restart {vm} cause=crashed policy=on-failure");
    let destroy = format!("destroy {vm}");
    assert!(
        in_order(&seen, &[&start, &die, &restart, &destroy]),
        "{seen:#?}"
    );
    assert_eq!(seen.last(), Some(&destroy), "{seen:#?}");
}
