//! What the compose tests share: a project directory, running `vmr compose`
//! and reading its JSON, images, and the store's runtime files.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use vmr_tests::fixtures::{qcow2, sha256_file, vmfile};
use vmr_tests::{Daemon, VmrOutput};

pub const ZITI: &str = include_str!("../../../../domain/tests/fixtures/compose-full.yaml");
pub const ZITI_USER_DATA: &str =
    include_str!("../../../../domain/tests/fixtures/cloud-init/server-a-2.yaml");
pub const ZITI_IMAGE: &str = "nixos-server/nixos-k3s-vm";
pub const FINISHED_LINE: &str = "Cloud-init v. 24.1 finished at Mon, 01 Jan 2024 00:00:00 +0000. Datasource DataSourceNoCloud [seed=/dev/sr0].  Up 4.20 seconds";

/// A compose file and the files it names, in a directory of their own.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(yaml: &str, files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let project = Self { dir };
        project.write(yaml);
        for (path, text) in files {
            let path = project.dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        project
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join("vmcompose.yaml")
    }

    pub fn write(&self, yaml: &str) {
        std::fs::write(self.file(), yaml).unwrap();
    }

    pub fn ziti() -> Self {
        Self::new(ZITI, &[("cloud-init/server-a-2.yaml", ZITI_USER_DATA)])
    }
}

pub fn compose(daemon: &Daemon, project: &Project, args: &[&str]) -> VmrOutput {
    let file = project.file();
    let mut all = vec!["compose", "-f", file.to_str().unwrap()];
    all.extend_from_slice(args);
    daemon.vmr(&all)
}

pub fn compose_json(daemon: &Daemon, project: &Project, args: &[&str]) -> Value {
    let file = project.file();
    let mut all = vec!["-o", "json", "compose", "-f", file.to_str().unwrap()];
    all.extend_from_slice(args);
    daemon.vmr(&all).json()
}

/// One event of `up -o json`.
#[derive(Debug, Clone)]
pub struct Event {
    pub service: String,
    pub network: String,
    pub kind: String,
    pub message: String,
    pub at: i64,
}

pub fn parse_events(stdout: &str) -> Vec<Event> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON event ({e}): {line}"));
            Event {
                service: v["service"].as_str().unwrap().to_owned(),
                network: v["network"].as_str().unwrap().to_owned(),
                kind: v["kind"].as_str().unwrap().to_owned(),
                message: v["message"].as_str().unwrap().to_owned(),
                at: v["timestampUnixNanos"].as_i64().unwrap(),
            }
        })
        .collect()
}

pub fn up_output(daemon: &Daemon, project: &Project) -> VmrOutput {
    let file = project.file();
    daemon.vmr(&["-o", "json", "compose", "-f", file.to_str().unwrap(), "up"])
}

pub fn up(daemon: &Daemon, project: &Project) -> Vec<Event> {
    parse_events(&up_output(daemon, project).ok())
}

pub fn kinds(events: &[Event], service: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.service == service)
        .map(|e| e.kind.clone())
        .collect()
}

pub fn at(events: &[Event], service: &str, kind: &str) -> i64 {
    events
        .iter()
        .find(|e| e.service == service && e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} event for {service}: {events:#?}"))
        .at
}

pub fn now_nanos() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

/// Imports a small qcow2 image as `name:tag`; returns the disk's digest.
pub fn import(daemon: &Daemon, name: &str, tag: &str, virtual_size: &str) -> String {
    let work = tempfile::tempdir().unwrap();
    let disk = qcow2(work.path(), "disk.qcow2", virtual_size);
    let file = vmfile(work.path(), name, "disk.qcow2", "qcow2");
    daemon
        .vmr(&["import", "-f", file.to_str().unwrap(), "-t", tag])
        .ok();
    sha256_file(&disk)
}

/// `service -> (state, [ips])` from `compose ps -o json`.
pub fn ps(daemon: &Daemon, project: &Project) -> Vec<(String, String, Vec<String>)> {
    let out = compose_json(daemon, project, &["ps"]);
    out["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let vm = &s["vm"];
            let state = vm["state"].as_str().unwrap_or("absent").to_owned();
            let ips = vm["interfaces"]
                .as_array()
                .map(|i| {
                    i.iter()
                        .map(|i| i["ip"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            (s["service"].as_str().unwrap().to_owned(), state, ips)
        })
        .collect()
}

pub fn runtime_entries(daemon: &Daemon) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(daemon.store.join("runtime")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// (inode, mtime in ns) of a file: a recreated file differs.
pub fn identity(path: &Path) -> (u64, i64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec())
}

pub fn vm_files(daemon: &Daemon, vm: &str) -> Vec<(u64, i64)> {
    let dir = daemon.store.join("runtime").join(vm);
    vec![
        identity(&dir.join("disk.qcow2")),
        identity(&dir.join("cidata.iso")),
    ]
}

pub fn assert_down_removes_everything(
    daemon: &Daemon,
    project: &Project,
    vms: &[&str],
    nets: &[&str],
) {
    let down = compose_json(daemon, project, &["down"]);
    let removed = |key: &str| -> Vec<String> {
        down[key]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    assert_eq!(removed("removedVms"), vms);
    assert_eq!(removed("removedNetworks"), nets);
    assert!(
        runtime_entries(daemon).is_empty(),
        "runtime files left: {:?}",
        runtime_entries(daemon)
    );
    for (service, state, _) in ps(daemon, project) {
        assert_eq!(state, "absent", "{service} still exists");
    }
    let project_name = compose_json(daemon, project, &["ps"])["project"]
        .as_str()
        .unwrap()
        .to_owned();
    let left_vms: Vec<String> = names(&daemon.vmr(&["-o", "json", "ps", "-a"]).json()["vms"])
        .into_iter()
        .filter(|(_, p)| *p == project_name)
        .map(|(n, _)| n)
        .collect();
    assert!(left_vms.is_empty(), "VMs of the project left: {left_vms:?}");
    let left_nets: Vec<String> =
        names(&daemon.vmr(&["-o", "json", "network", "ls"]).json()["networks"])
            .into_iter()
            .filter(|(n, p)| *p == project_name || nets.contains(&n.as_str()))
            .map(|(n, _)| n)
            .collect();
    assert!(
        left_nets.is_empty(),
        "networks of the project left: {left_nets:?}"
    );
    // Safe to run twice: nothing is left to remove.
    let again = compose_json(daemon, project, &["down"]);
    assert!(
        again
            .get("removedVms")
            .is_none_or(|v| v.as_array().unwrap().is_empty()),
        "{again}"
    );
    assert!(
        again
            .get("removedNetworks")
            .is_none_or(|v| v.as_array().unwrap().is_empty()),
        "{again}"
    );
}

/// (name, project) of each VM or network of a listing.
pub fn names(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    (
                        i["name"].as_str().unwrap().to_owned(),
                        i["project"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
