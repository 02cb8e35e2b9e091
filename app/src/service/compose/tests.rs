//! The compose use cases against the fake hypervisor, a real filesystem
//! store and the real VM and network services: what `up` creates and in
//! which order, that a second `up` changes nothing (read from the fake's
//! call log), what a changed or stopped service gets, concurrency within a
//! level, failure and cleanup, the readiness gate, and the project lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use vmr_adapters::blobstore::OpendalStore;
use vmr_adapters::fake::hypervisor::{CallRecord, FakeCall, FakeHypervisor};
use vmr_domain::vm::{VmName, VmState};
use vmr_ports::driving::{
    ComposeEvent, ComposeEventKind, ComposeSource, ComposeUseCases, ErrorKind, ImageUseCases,
    ImportRequest, UseCaseError,
};
use vmr_ports::{Hypervisor, HypervisorError, NetworkDefinition};

use super::*;
use crate::service::{ImageService, NetworkService, RuntimeDirs, VmImages, VmService};

const ZITI: &str = include_str!("../../../../domain/tests/fixtures/compose-full.yaml");
const ZITI_USER_DATA: &[u8] =
    include_bytes!("../../../../domain/tests/fixtures/cloud-init/server-a-2.yaml");
const FINISHED: &str = "Cloud-init v. 24.1 finished at Mon, 01 Jan 2024 00:00:00 +0000. Datasource DataSourceNoCloud.  Up 3.00 seconds\n";

struct World {
    fake: Arc<FakeHypervisor>,
    images: Arc<ImageService>,
    compose: ComposeService,
    tmp: tempfile::TempDir,
}

impl World {
    async fn new() -> Self {
        Self::with_ready(Duration::from_secs(5)).await
    }

    async fn with_ready(timeout: Duration) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let store: Arc<dyn vmr_ports::BlobStore> =
            Arc::new(OpendalStore::filesystem(tmp.path().join("store")).unwrap());
        let fake = Arc::new(FakeHypervisor::new());
        let hypervisor: Arc<dyn Hypervisor> = fake.clone();
        let usage = Arc::new(VmImages::new(hypervisor.clone()));
        let images = Arc::new(ImageService::new(store, usage.clone()));
        let runtime = RuntimeDirs::new(tmp.path().join("runtime"));
        let vms = Arc::new(VmService::new(
            hypervisor.clone(),
            images.clone(),
            runtime,
            usage,
        ));
        let networks = Arc::new(NetworkService::new(hypervisor.clone()));
        let runtime = Arc::new(ServiceRuntime::new(
            hypervisor,
            images.clone(),
            vms,
            networks,
        ));
        let settings = ComposeSettings {
            ready: ReadySettings {
                timeout,
                poll: Duration::from_millis(20),
            },
        };
        let world = Self {
            fake,
            images,
            compose: ComposeService::new(runtime, settings),
            tmp,
        };
        world.import("nixos-server/nixos-k3s-vm", "ziti").await;
        world.import("tests/tiny", "1").await;
        world
    }

    async fn import(&self, name: &str, tag: &str) {
        let vmfile = format!(
            "apiVersion: v1\nmetadata:\n  name: {name}\nspec:\n  diskImage: disk\n  diskFormat: raw\n  resources:\n    cpu: 1\n    memory: 128MiB\n"
        );
        let disk = vec![9u8; 4096];
        let request = ImportRequest {
            vmfile,
            tags: vec![tag.into()],
            disk_size: disk.len() as u64,
            disk_digest: None,
            disk_file_name: None,
        };
        let stream = futures::stream::iter([Ok(Bytes::from(disk))]).boxed();
        self.images.import(request, stream).await.unwrap();
    }

    fn runtime_entries(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.tmp.path().join("runtime")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn console_log(&self, vm: &str) -> std::path::PathBuf {
        self.tmp.path().join("runtime").join(vm).join("console.log")
    }

    async fn vm_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .fake
            .list_vms()
            .await
            .unwrap()
            .into_iter()
            .map(|vm| vm.spec.name.to_string())
            .collect();
        names.sort();
        names
    }

    async fn network_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .fake
            .list_networks()
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.spec.name.to_string())
            .collect();
        names.sort();
        names
    }

    async fn state(&self, vm: &str) -> VmState {
        self.fake
            .inspect_vm(&vm.parse().unwrap())
            .await
            .unwrap()
            .record
            .state
    }

    /// The calls that change something, after the `skip` first calls.
    fn changes_since(&self, skip: usize) -> Vec<(FakeCall, String)> {
        self.fake
            .calls()
            .into_iter()
            .skip(skip)
            .filter(|c| {
                !matches!(
                    c.call,
                    FakeCall::ListVms
                        | FakeCall::ListNetworks
                        | FakeCall::InspectVm
                        | FakeCall::InspectNetwork
                        | FakeCall::Ping
                )
            })
            .map(|c| (c.call, c.target))
            .collect()
    }

    async fn up(&self, source: ComposeSource) -> (Vec<ComposeEvent>, Result<(), UseCaseError>) {
        let mut stream = self.compose.up(source).await.unwrap();
        let mut events = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => events.push(event),
                Err(e) => return (events, Err(e)),
            }
        }
        (events, Ok(()))
    }

    async fn up_ok(&self, source: ComposeSource) -> Vec<ComposeEvent> {
        let (events, result) = self.up(source).await;
        if let Err(e) = result {
            panic!("up failed: {e}; events: {events:#?}");
        }
        events
    }
}

fn ziti() -> ComposeSource {
    source(
        ZITI,
        &[("./cloud-init/server-a-2.yaml", ZITI_USER_DATA)],
    )
}

/// A source with the files the client read; `apiVersion: v1` is added to
/// a file that lacks one.
fn source(yaml: &str, files: &[(&str, &[u8])]) -> ComposeSource {
    let yaml = if yaml.contains("apiVersion:") {
        yaml.to_owned()
    } else {
        format!("apiVersion: v1\n{yaml}")
    };
    ComposeSource {
        yaml,
        files: files
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect::<BTreeMap<_, _>>(),
        project: None,
        directory_name: "work".into(),
    }
}

fn kinds_of(events: &[ComposeEvent], service: &str) -> Vec<ComposeEventKind> {
    events
        .iter()
        .filter(|e| e.service.as_deref() == Some(service))
        .map(|e| e.kind)
        .collect()
}

fn calls_of(calls: &[CallRecord], call: FakeCall) -> Vec<CallRecord> {
    calls.iter().filter(|c| c.call == call).cloned().collect()
}

fn overlap(a: &CallRecord, b: &CallRecord) -> bool {
    a.started < b.finished && b.started < a.finished
}

#[tokio::test(flavor = "multi_thread")]
async fn ziti_goes_up_idempotently_and_down_completely() {
    let world = World::new().await;
    let events = world.up_ok(ziti()).await;
    use ComposeEventKind::*;
    assert_eq!(
        kinds_of(&events, "ziti-server-a-1"),
        [Creating, Starting, Started]
    );
    assert_eq!(
        kinds_of(&events, "ziti-server-a-2"),
        [Creating, Starting, Started]
    );
    let created: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == NetworkCreated)
        .filter_map(|e| e.network.as_deref())
        .collect();
    assert_eq!(created, ["ziti-ziti-private-a", "ziti-ziti-public"]);
    assert_eq!(events.last().unwrap().kind, Done);
    // a-2 depends on a-1: it is created only after a-1 started.
    let at = |service: &str, kind| {
        events
            .iter()
            .find(|e| e.service.as_deref() == Some(service) && e.kind == kind)
            .unwrap()
            .at
    };
    assert!(at("ziti-server-a-2", Creating) >= at("ziti-server-a-1", Started));

    assert_eq!(
        world.vm_names().await,
        ["ziti-ziti-server-a-1", "ziti-ziti-server-a-2"]
    );
    let a2 = world
        .fake
        .inspect_vm(&"ziti-ziti-server-a-2".parse().unwrap())
        .await
        .unwrap()
        .record;
    assert_eq!(a2.state, VmState::Running);
    assert_eq!(a2.spec.memory.bytes(), 8 << 30);
    assert_eq!(a2.spec.cpu, 2);
    assert_eq!(a2.spec.labels.project.as_deref(), Some("ziti"));
    assert_eq!(a2.spec.labels.service.as_deref(), Some("ziti-server-a-2"));
    assert_eq!(a2.spec.restart_policy.as_str(), "on-failure");
    assert_eq!(
        a2.interfaces[0].ip.map(|ip| ip.to_string()).as_deref(),
        Some("192.168.70.11")
    );
    assert!(world.tmp.path().join("runtime/ziti-ziti-server-a-2/cidata.iso").is_file());

    let status = world.compose.ps(ziti()).await.unwrap();
    assert_eq!(status.project, "ziti");
    let services: Vec<(&str, Option<VmState>)> = status
        .services
        .iter()
        .map(|s| (s.service.as_str(), s.vm.as_ref().map(|vm| vm.state)))
        .collect();
    assert_eq!(
        services,
        [
            ("ziti-server-a-1", Some(VmState::Running)),
            ("ziti-server-a-2", Some(VmState::Running))
        ]
    );

    // A second `up` changes nothing at all.
    let before = world.fake.calls().len();
    let events = world.up_ok(ziti()).await;
    assert_eq!(world.changes_since(before), []);
    assert_eq!(kinds_of(&events, "ziti-server-a-1"), [Unchanged]);
    assert_eq!(kinds_of(&events, "ziti-server-a-2"), [Unchanged]);
    assert!(
        events
            .iter()
            .filter(|e| e.network.is_some())
            .all(|e| e.kind == NetworkExists)
    );

    // down removes exactly the project, and a second down removes nothing.
    let outcome = world.compose.down(ziti()).await.unwrap();
    assert_eq!(
        outcome.removed_vms,
        ["ziti-ziti-server-a-1", "ziti-ziti-server-a-2"]
    );
    assert_eq!(
        outcome.removed_networks,
        ["ziti-ziti-private-a", "ziti-ziti-public"]
    );
    assert!(world.vm_names().await.is_empty());
    assert!(world.network_names().await.is_empty());
    assert!(world.runtime_entries().is_empty());
    let again = world.compose.down(ziti()).await.unwrap();
    assert!(again.removed_vms.is_empty() && again.removed_networks.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_service_is_recreated_and_a_stopped_one_started() {
    let world = World::new().await;
    world.up_ok(ziti()).await;
    let changed = ZITI.replacen("memory: \"8GiB\"", "memory: \"4GiB\"", 1);
    assert_ne!(changed, ZITI);
    let before = world.fake.calls().len();
    let events = world
        .up_ok(source(
            &changed,
            &[("./cloud-init/server-a-2.yaml", ZITI_USER_DATA)],
        ))
        .await;
    use ComposeEventKind::*;
    assert_eq!(
        kinds_of(&events, "ziti-server-a-1"),
        [Recreating, Starting, Started]
    );
    assert_eq!(kinds_of(&events, "ziti-server-a-2"), [Unchanged]);
    let touched: Vec<String> = world
        .changes_since(before)
        .into_iter()
        .filter(|(call, _)| matches!(call, FakeCall::DefineVm | FakeCall::UndefineVm | FakeCall::StartVm | FakeCall::StopVm))
        .map(|(call, target)| format!("{call:?} {target}"))
        .collect();
    assert_eq!(
        touched,
        [
            "StopVm ziti-ziti-server-a-1",
            "UndefineVm ziti-ziti-server-a-1",
            "DefineVm ziti-ziti-server-a-1",
            "StartVm ziti-ziti-server-a-1",
        ]
    );
    let a1 = world
        .fake
        .inspect_vm(&"ziti-ziti-server-a-1".parse().unwrap())
        .await
        .unwrap()
        .record;
    assert_eq!(a1.spec.memory.bytes(), 4 << 30);

    // A service whose guest powered off is started, not recreated; a
    // changed user-data file recreates its service.
    world
        .fake
        .simulate_guest_poweroff(&"ziti-ziti-server-a-1".parse().unwrap())
        .unwrap();
    let events = world
        .up_ok(source(
            &changed,
            &[(
                "./cloud-init/server-a-2.yaml",
                b"#cloud-config\nhostname: renamed\n".as_slice(),
            )],
        ))
        .await;
    assert_eq!(kinds_of(&events, "ziti-server-a-1"), [Starting, Started]);
    assert_eq!(
        kinds_of(&events, "ziti-server-a-2"),
        [Recreating, Starting, Started]
    );
    assert_eq!(world.state("ziti-ziti-server-a-1").await, VmState::Running);
}

/// Two independent services per level, each start taking 300 ms.
const DIAMOND: &str = "name: dia
services:
  a: {image: tests/tiny:1}
  b: {image: tests/tiny:1}
  c: {image: tests/tiny:1, dependsOn: [a, b]}
  d: {image: tests/tiny:1, dependsOn: [a]}
";

#[tokio::test(flavor = "multi_thread")]
async fn the_services_of_a_level_start_concurrently_and_levels_in_order() {
    let world = World::new().await;
    world
        .fake
        .set_delay(FakeCall::StartVm, Duration::from_millis(300));
    world.up_ok(source(DIAMOND, &[])).await;
    let starts = calls_of(&world.fake.calls(), FakeCall::StartVm);
    let start = |vm: &str| {
        starts
            .iter()
            .find(|c| c.target == format!("dia-{vm}"))
            .unwrap()
            .clone()
    };
    assert!(overlap(&start("a"), &start("b")), "{starts:#?}");
    assert!(overlap(&start("c"), &start("d")), "{starts:#?}");
    for later in ["c", "d"] {
        for earlier in ["a", "b"] {
            assert!(
                start(later).started >= start(earlier).finished,
                "{later} started before {earlier} was up: {starts:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_stops_later_levels_and_down_cleans_up() {
    let world = World::new().await;
    world.fake.fail_next(
        FakeCall::StartVm,
        Some("dia-b"),
        HypervisorError::Backend("qemu: could not open disk".into()),
    );
    let (events, result) = world.up(source(DIAMOND, &[])).await;
    let error = result.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Internal);
    assert!(
        error.message.contains("service b failed")
            && error.message.contains("could not open disk"),
        "{}",
        error.message
    );
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.kind == ComposeEventKind::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].service.as_deref(), Some("b"));
    assert!(failed[0].message.contains("could not open disk"));
    assert!(events.iter().all(|e| e.kind != ComposeEventKind::Done));
    // a (same level) finished; c and d (next level) were never begun.
    assert_eq!(world.vm_names().await, ["dia-a", "dia-b"]);
    assert!(kinds_of(&events, "c").is_empty() && kinds_of(&events, "d").is_empty());
    assert_eq!(world.state("dia-b").await, VmState::Created);

    // A second up picks up where the first stopped.
    let events = world.up_ok(source(DIAMOND, &[])).await;
    use ComposeEventKind::*;
    assert_eq!(kinds_of(&events, "a"), [Unchanged]);
    assert_eq!(kinds_of(&events, "b"), [Starting, Started]);
    assert_eq!(kinds_of(&events, "c"), [Creating, Starting, Started]);

    let outcome = world.compose.down(source(DIAMOND, &[])).await.unwrap();
    assert_eq!(outcome.removed_vms, ["dia-a", "dia-b", "dia-c", "dia-d"]);
    assert!(world.vm_names().await.is_empty());
    assert!(world.runtime_entries().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_creation_leaves_nothing_and_down_after_half_an_up_is_exact() {
    let world = World::new().await;
    world.fake.fail_next(
        FakeCall::DefineVm,
        Some("dia-a"),
        HypervisorError::Backend("no space".into()),
    );
    let (_, result) = world.up(source(DIAMOND, &[])).await;
    assert!(result.unwrap_err().message.contains("service a failed"));
    assert_eq!(world.vm_names().await, ["dia-b"]);
    assert_eq!(world.runtime_entries(), ["dia-b"]);
    // A leftover directory of a service (a crash mid-creation) goes too.
    std::fs::create_dir_all(world.tmp.path().join("runtime/dia-c")).unwrap();
    let outcome = world.compose.down(source(DIAMOND, &[])).await.unwrap();
    assert_eq!(outcome.removed_vms, ["dia-b"]);
    assert!(world.runtime_entries().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_created_for_an_invalid_project() {
    let world = World::new().await;
    let before = world.fake.calls().len();
    // A file error.
    let cycle = "services:\n  a: {image: tests/tiny:1, dependsOn: [b]}\n  b: {image: tests/tiny:1, dependsOn: [a]}\n";
    let e = world.compose.up(source(cycle, &[])).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("a -> b -> a"), "{}", e.message);
    // A missing image, after a network that would have been created.
    let missing = "name: p\nnetworks:\n  n: {mode: isolated, subnet: 10.9.0.0/24}\nservices:\n  a: {image: tests/tiny:1, networks: [n]}\n  b: {image: nope/nothing:1}\n";
    let e = world.compose.up(source(missing, &[])).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(e.field.as_deref(), Some("services.b.image"));
    assert!(e.message.contains("services.b.image") && e.message.contains("nope/nothing:1"), "{}", e.message);
    // A missing external network.
    let external = "name: p\nnetworks:\n  shared: {external: true}\nservices:\n  a: {image: tests/tiny:1, networks: [shared]}\n";
    let e = world.compose.up(source(external, &[])).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("networks.shared"), "{}", e.message);
    // A network of the same name that belongs to no project.
    world
        .fake
        .define_network(&NetworkDefinition {
            spec: vmr_domain::network::NetworkSpec::from_parts(
                "p-n", "isolated", Some("10.9.0.0/24"), None, None, None, false, None, None,
            )
            .unwrap(),
            project: None,
        })
        .await
        .unwrap();
    let calls_with_network = world.fake.calls().len();
    let e = world.compose.up(source(missing.replace("  b: {image: nope/nothing:1}\n", "").as_str(), &[])).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(e.message.contains("not part of project p"), "{}", e.message);
    assert_eq!(world.changes_since(calls_with_network), []);
    let changes: Vec<_> = world
        .changes_since(before)
        .into_iter()
        .filter(|(call, _)| *call != FakeCall::DefineNetwork)
        .collect();
    assert_eq!(changes, []);
    assert!(world.vm_names().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn external_networks_are_used_and_never_removed() {
    let world = World::new().await;
    world
        .fake
        .define_network(&NetworkDefinition {
            spec: vmr_domain::network::NetworkSpec::from_parts(
                "shared", "nat", Some("10.77.0.0/24"), None, None, None, false, None, None,
            )
            .unwrap(),
            project: None,
        })
        .await
        .unwrap();
    world
        .fake
        .start_network(&"shared".parse().unwrap())
        .await
        .unwrap();
    let yaml = "name: ext\nnetworks:\n  shared: {external: true}\nservices:\n  a: {image: tests/tiny:1, networks: [shared]}\n";
    let events = world.up_ok(source(yaml, &[])).await;
    assert!(events.iter().any(|e| e.network.as_deref() == Some("shared")
        && e.kind == ComposeEventKind::NetworkExists));
    let outcome = world.compose.down(source(yaml, &[])).await.unwrap();
    assert_eq!(outcome.removed_vms, ["ext-a"]);
    assert!(outcome.removed_networks.is_empty());
    assert_eq!(world.network_names().await, ["shared"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn down_and_ps_work_without_the_named_files() {
    let world = World::new().await;
    world.up_ok(ziti()).await;
    // The user-data file is gone: the client sends what it could read.
    let without = source(ZITI, &[]);
    assert!(world.compose.config(without.clone()).await.is_err());
    let status = world.compose.ps(without.clone()).await.unwrap();
    assert_eq!(status.project, "ziti");
    assert_eq!(status.services.len(), 2);
    let outcome = world.compose.down(without).await.unwrap();
    assert_eq!(outcome.removed_vms.len(), 2);
    assert!(world.vm_names().await.is_empty());
    assert!(world.network_names().await.is_empty());
    // A file that is not YAML names no project: nothing is guessed.
    let e = world.compose.down(source("name: [", &[])).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn ps_lists_absent_services_and_project_vms_the_file_dropped() {
    let world = World::new().await;
    world.up_ok(source(DIAMOND, &[])).await;
    let smaller = "name: dia\nservices:\n  a: {image: tests/tiny:1}\n  e: {image: tests/tiny:1}\n";
    let status = world.compose.ps(source(smaller, &[])).await.unwrap();
    let services: Vec<(&str, bool)> = status
        .services
        .iter()
        .map(|s| (s.service.as_str(), s.vm.is_some()))
        .collect();
    assert_eq!(
        services,
        [("a", true), ("e", false), ("b", true), ("c", true), ("d", true)]
    );
}

const READY: &str = "name: rdy
services:
  db: {image: tests/tiny:1}
  app:
    image: tests/tiny:1
    dependsOn:
      db: {condition: ready}
";

#[tokio::test(flavor = "multi_thread")]
async fn ready_waits_for_cloud_init_on_the_console() {
    let world = World::new().await;
    let log = world.console_log("rdy-db");
    let writer = tokio::spawn(async move {
        // Wait until the VM exists and runs, then "boot" it.
        for _ in 0..200 {
            if log.parent().unwrap().join("cidata.iso").exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let finished_at = std::time::SystemTime::now();
        tokio::fs::write(&log, format!("SeaBIOS\nLinux version 6.1\n{FINISHED}"))
            .await
            .unwrap();
        finished_at
    });
    let events = world.up_ok(source(READY, &[])).await;
    let finished_at = writer.await.unwrap();
    use ComposeEventKind::*;
    assert_eq!(kinds_of(&events, "db"), [Creating, Starting, Started, Ready]);
    let app_created = events
        .iter()
        .find(|e| e.service.as_deref() == Some("app") && e.kind == Creating)
        .unwrap()
        .at;
    assert!(app_created >= finished_at, "app was created before db was ready");

    // Unchanged and already booted: ready at once.
    let events = world.up_ok(source(READY, &[])).await;
    assert_eq!(kinds_of(&events, "db"), [Unchanged, Ready]);

    // Restarted: the earlier boot's line does not count.
    world
        .fake
        .simulate_guest_poweroff(&"rdy-db".parse().unwrap())
        .unwrap();
    let log = world.console_log("rdy-db");
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut text = tokio::fs::read(&log).await.unwrap();
        text.extend_from_slice(FINISHED.as_bytes());
        tokio::fs::write(&log, text).await.unwrap();
        std::time::SystemTime::now()
    });
    let events = world.up_ok(source(READY, &[])).await;
    let finished_at = writer.await.unwrap();
    let ready_at = events
        .iter()
        .find(|e| e.service.as_deref() == Some("db") && e.kind == Ready)
        .unwrap()
        .at;
    assert!(ready_at >= finished_at);
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_times_out_clearly_and_stops_the_dependents() {
    let world = World::with_ready(Duration::from_millis(300)).await;
    let (events, result) = world.up(source(READY, &[])).await;
    let error = result.unwrap_err();
    assert!(
        error.message.contains("service db failed")
            && error.message.contains("not ready after")
            && error.message.contains("Cloud-init v."),
        "{}",
        error.message
    );
    assert!(kinds_of(&events, "app").is_empty());
    assert_eq!(world.vm_names().await, ["rdy-db"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_stops_before_it_is_ready_fails_at_once() {
    let world = World::new().await;
    let fake = world.fake.clone();
    let stopper = tokio::spawn(async move {
        let vm: VmName = "rdy-db".parse().unwrap();
        for _ in 0..200 {
            if fake.simulate_crash(&vm).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let (_, result) = world.up(source(READY, &[])).await;
    stopper.await.unwrap();
    let error = result.unwrap_err();
    assert!(error.message.contains("crashed before cloud-init finished"), "{}", error.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_up_or_down_per_project_at_a_time() {
    let world = World::new().await;
    world
        .fake
        .set_delay(FakeCall::StartVm, Duration::from_millis(400));
    let first = world.compose.up(source(DIAMOND, &[])).await.unwrap();
    let second = world.compose.up(source(DIAMOND, &[])).await.err().unwrap();
    assert_eq!(second.kind, ErrorKind::FailedPrecondition);
    assert!(second.message.contains("project dia"), "{}", second.message);
    let down = world.compose.down(source(DIAMOND, &[])).await.unwrap_err();
    assert_eq!(down.kind, ErrorKind::FailedPrecondition);
    // Another project is not held up.
    world.up_ok(source(READY.replace("condition: ready", "condition: started").as_str(), &[])).await;
    // Once the first finishes, the lock is free again.
    let events: Vec<_> = first.collect().await;
    assert!(events.iter().all(Result::is_ok));
    world.compose.down(source(DIAMOND, &[])).await.unwrap();
}

#[tokio::test]
async fn config_returns_the_normalised_plan() {
    let world = World::new().await;
    let config = world.compose.config(ziti()).await.unwrap();
    assert_eq!(config.project, "ziti");
    assert!(config.normalized_yaml.contains("ziti-ziti-server-a-2"), "{}", config.normalized_yaml);
    let e = world
        .compose
        .config(source("services:\n  a: {image: x, memory: 1G}\n", &[]))
        .await
        .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("services.a.memory"));
}
