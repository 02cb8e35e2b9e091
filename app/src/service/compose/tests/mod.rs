//! The compose use cases against the fake hypervisor, a real filesystem
//! store and the real VM and network services: what `up` creates and in
//! which order, that a second `up` changes nothing (read from the fake's
//! call log), what a changed or stopped service gets, concurrency within a
//! level, failure and cleanup, the readiness gate, and the project lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use vmr_ports::{NetworkDriver, VmDriver};

use bytes::Bytes;
use futures::StreamExt;
use vmr_adapters::fake::hypervisor::{CallRecord, FakeCall, FakeHypervisor};
use vmr_domain::vm::{VmName, VmState};
use vmr_ports::driving::{
    ComposeEvent, ComposeEventKind, ComposeSource, ComposeUseCases, ErrorKind, ImageUseCases,
    ImportRequest, UseCaseError,
};
use vmr_ports::{HypervisorError, NetworkDefinition};

use super::*;
use crate::service::events::{EventBus, LifecycleRelay};
use crate::service::vms::over_fake::{FakeVms, over_fake};
use crate::service::{ImageService, NetworkService};

const ZITI: &str = include_str!("../../../../../domain/tests/fixtures/compose-full.yaml");
const ZITI_USER_DATA: &[u8] =
    include_bytes!("../../../../../domain/tests/fixtures/cloud-init/server-a-2.yaml");
const FINISHED: &str = "Cloud-init v. 24.1 finished at Mon, 01 Jan 2024 00:00:00 +0000. Datasource DataSourceNoCloud.  Up 3.00 seconds\n";

struct World {
    fake: Arc<FakeHypervisor>,
    /// What the compose and network use cases publish, and the fake's VM
    /// lifecycle (relayed while the world lives).
    bus: Arc<EventBus>,
    _relay: LifecycleRelay,
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
        let FakeVms { fake, images, vms } = over_fake(tmp.path());
        let vms = Arc::new(vms);
        let bus = EventBus::new();
        let relay = LifecycleRelay::spawn(fake.as_ref(), bus.clone());
        let networks =
            Arc::new(NetworkService::new(fake.clone(), fake.clone()).with_events(bus.clone()));
        let settings = ComposeSettings {
            ready: ReadySettings {
                timeout,
                poll: Duration::from_millis(20),
            },
        };
        let world = Self {
            fake,
            bus: bus.clone(),
            _relay: relay,
            images,
            compose: ComposeService::new(vms, networks, settings).with_events(bus.clone(), bus),
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
        self.images.import(request, stream.into()).await.unwrap();
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
    source(ZITI, &[("./cloud-init/server-a-2.yaml", ZITI_USER_DATA)])
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
        ssh_authorized_keys: Vec::new(),
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

/// Two independent services per level, each start taking 300 ms.
pub(super) const DIAMOND: &str = "name: dia
services:
  a: {image: tests/tiny:1}
  b: {image: tests/tiny:1}
  c: {image: tests/tiny:1, dependsOn: [a, b]}
  d: {image: tests/tiny:1, dependsOn: [a]}
";

pub(super) const READY: &str = "name: rdy
services:
  db: {image: tests/tiny:1}
  app:
    image: tests/tiny:1
    dependsOn:
      db: {condition: ready}
";

mod events;
mod failure;
mod ready;
mod up;
