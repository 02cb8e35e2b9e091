//! The VM use cases against the fake hypervisor and a real filesystem store:
//! what is created, what is refused before anything is created, rollback,
//! the lifecycle rules and image usage.

use std::net::Ipv4Addr;

use bytes::Bytes;
use futures::StreamExt;
use vmr_adapters::fake::hypervisor::{FakeCall, FakeHypervisor};
use vmr_domain::network::{MacAddr, NetworkSpec};
use vmr_domain::units::ByteSize;
use vmr_domain::vm::{Bootloader, RestartPolicy, VmState};
use vmr_ports::driving::{ImageUseCases, ImportRequest, NicRequest, StaticAddress};
use vmr_ports::{NetworkDefinition, NetworkDriver, VmRecord};

use super::*;

struct World {
    fake: Arc<FakeHypervisor>,
    images: Arc<ImageService>,
    vms: VmService,
    tmp: tempfile::TempDir,
}

fn vmfile(name: &str, format: &str) -> String {
    format!(
        "apiVersion: v1\nmetadata:\n  name: {name}\nspec:\n  diskImage: disk\n  diskFormat: {format}\n  resources:\n    cpu: 2\n    memory: 256MiB\n    bootloader:\n      type: UEFI\n"
    )
}

/// An ISO9660 signature where readers look for it, and nothing else.
fn iso_bytes() -> Vec<u8> {
    let mut bytes = vec![0u8; 40 * 1024];
    bytes[16 * 2048] = 1;
    bytes[16 * 2048 + 1..16 * 2048 + 6].copy_from_slice(b"CD001");
    bytes
}

impl World {
    async fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let over_fake::FakeVms { fake, images, vms } = over_fake::over_fake(tmp.path());
        let world = Self {
            fake,
            images,
            vms,
            tmp,
        };
        world.import("tests/raw", "raw", vec![7u8; 8192]).await;
        world.import("tests/cd", "iso", iso_bytes()).await;
        world.network("lan", "nat", "10.10.0.0/24", true).await;
        world.network("lab", "isolated", "10.20.0.0/24", true).await;
        world
    }

    async fn import(&self, name: &str, format: &str, disk: Vec<u8>) {
        let request = ImportRequest {
            vmfile: vmfile(name, format),
            tags: vec!["1".into()],
            disk_size: disk.len() as u64,
            disk_digest: None,
            disk_file_name: None,
        };
        let stream = futures::stream::iter([Ok(Bytes::from(disk))]).boxed();
        self.images.import(request, stream.into()).await.unwrap();
    }

    async fn network(&self, name: &str, mode: &str, subnet: &str, active: bool) {
        let spec = NetworkSpec::from_parts(
            name,
            mode,
            Some(subnet),
            None,
            None,
            None,
            false,
            None,
            None,
        )
        .unwrap();
        self.fake
            .define_network(&NetworkDefinition {
                spec,
                project: None,
            })
            .await
            .unwrap();
        if active {
            self.fake
                .start_network(&name.parse().unwrap())
                .await
                .unwrap();
        }
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

    async fn names(&self) -> Vec<String> {
        self.vms
            .list(VmFilter {
                all: true,
                project: None,
            })
            .await
            .unwrap()
            .into_iter()
            .map(|vm| vm.spec.name.to_string())
            .collect()
    }
}

fn request(name: &str, image: &str) -> CreateVm {
    CreateVm {
        name: name.parse().unwrap(),
        image: image.parse().unwrap(),
        cpu: None,
        memory: None,
        disk_size: None,
        networks: Vec::new(),
        user_data: None,
        restart_policy: RestartPolicy::No,
        project: None,
        service: None,
        start: true,
        ssh_authorized_keys: Vec::new(),
        no_network: false,
    }
}

fn nic(network: &str, ip: Option<&str>) -> NicRequest {
    NicRequest {
        network: network.parse().unwrap(),
        static_ip: ip.map(|ip| StaticAddress {
            addr: ip.parse().unwrap(),
            prefix_len: None,
        }),
        gateway: None,
        mac: None,
    }
}

fn name(s: &str) -> VmName {
    s.parse().unwrap()
}

#[tokio::test]
async fn run_creates_overlay_seed_and_definition_from_the_image() {
    let world = World::new().await;
    let mut req = request("web", "tests/raw:1");
    req.memory = Some(ByteSize::mib(128));
    req.disk_size = Some(ByteSize::mib(64));
    req.networks = vec![nic("lan", Some("10.10.0.5")), nic("lab", None)];
    req.restart_policy = RestartPolicy::OnFailure;
    let vm = world.vms.create(req).await.unwrap();

    assert_eq!(vm.state, VmState::Running);
    // The image gives what the request does not.
    assert_eq!(vm.spec.cpu, 2);
    assert_eq!(vm.spec.memory, ByteSize::mib(128));
    assert_eq!(vm.spec.bootloader, Bootloader::Uefi);
    assert_eq!(vm.spec.disk_size, Some(ByteSize::mib(64)));
    assert_eq!(vm.spec.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(vm.spec.labels.image, "tests/raw:1");
    let digest = world
        .images
        .inspect(&"tests/raw:1".parse().unwrap())
        .await
        .unwrap()
        .info
        .digest;
    assert_eq!(vm.spec.labels.image_digest, Some(digest));

    let lan = &vm.spec.networks[0];
    assert_eq!(lan.static_ip, Some("10.10.0.5/24".parse().unwrap()));
    assert_eq!(lan.gateway, Some(Ipv4Addr::new(10, 10, 0, 1)));
    assert_eq!(lan.mac, MacAddr::derive("web/lan"));
    let lab = &vm.spec.networks[1];
    assert_eq!(lab.static_ip, None);
    assert_eq!(lab.gateway, None);
    assert_eq!(vm.interfaces[0].ip, Some(Ipv4Addr::new(10, 10, 0, 5)));
    assert!(vm.interfaces[1].ip.is_some(), "the fake leases an address");

    let dir = world.tmp.path().join("runtime/web");
    let disk = vm.disk.clone().unwrap();
    assert_eq!(disk.path, dir.join("disk.qcow2"));
    assert_eq!(vm.cdroms, [dir.join("cidata.iso")]);
    assert_eq!(vm.console_log, Some(dir.join("console.log")));
    assert!(disk.path.exists());
    let iso = std::fs::read(dir.join("cidata.iso")).unwrap();
    assert_eq!(&iso[16 * 2048 + 1..16 * 2048 + 6], b"CD001");
    assert!(vm.spec_hash.as_ref().is_some_and(|h| h.len() == 64));
}

#[tokio::test]
async fn prepare_builds_the_seed_documents() {
    let world = World::new().await;
    let mut req = request("web", "tests/raw:1");
    req.networks = vec![nic("lan", Some("10.10.0.5")), nic("lan", None)];
    req.user_data = Some(b"#cloud-config\nhostname: web\n".to_vec());
    let prepared = world.vms.prepare(&req.into()).await.unwrap();
    assert_eq!(prepared.seed.user_data, b"#cloud-config\nhostname: web\n");
    assert!(prepared.seed.meta_data.contains("local-hostname: web"));
    assert!(prepared.seed.meta_data.contains("instance-id: vmr-web-"));
    let net = &prepared.seed.network_config;
    assert!(net.contains("10.10.0.5/24"), "{net}");
    assert!(
        net.contains(&MacAddr::derive("web/lan").to_string()),
        "{net}"
    );
    // The second NIC on the same network gets its own MAC, and DHCP.
    assert!(
        net.contains(&MacAddr::derive("web/lan/1").to_string()),
        "{net}"
    );
    assert!(net.contains("dhcp4: true"), "{net}");
    assert_eq!(
        prepared.spec_hash,
        prepared.spec.spec_hash_with_seed(Some(&prepared.seed))
    );
    // Nothing was created.
    assert!(world.names().await.is_empty());
    assert!(world.runtime_entries().is_empty());
}

#[tokio::test]
async fn bad_requests_create_nothing() {
    let world = World::new().await;
    world
        .vms
        .create(request("taken", "tests/raw:1"))
        .await
        .unwrap();
    let mut clash = request("other", "tests/raw:1");
    clash.networks = vec![nic("lan", Some("10.10.0.9"))];
    world.vms.create(clash).await.unwrap();

    let cases: Vec<(CreateVm, ErrorKind, Option<&str>)> = vec![
        (
            request("taken", "tests/raw:1"),
            ErrorKind::AlreadyExists,
            None,
        ),
        (
            request("new", "tests/missing:1"),
            ErrorKind::NotFound,
            Some("image"),
        ),
        (
            CreateVm {
                networks: vec![nic("nowhere", None)],
                ..request("new", "tests/raw:1")
            },
            ErrorKind::NotFound,
            Some("networks[0].network"),
        ),
        (
            CreateVm {
                networks: vec![nic("lan", Some("10.99.0.5"))],
                ..request("new", "tests/raw:1")
            },
            ErrorKind::InvalidArgument,
            Some("networks[0].static_ip"),
        ),
        (
            CreateVm {
                networks: vec![nic("lan", Some("10.10.0.200"))],
                ..request("new", "tests/raw:1")
            },
            ErrorKind::InvalidArgument,
            Some("networks[0].static_ip"),
        ),
        (
            CreateVm {
                networks: vec![nic("lab", None), nic("lan", Some("10.10.0.9"))],
                ..request("new", "tests/raw:1")
            },
            ErrorKind::InvalidArgument,
            Some("networks[1].static_ip"),
        ),
        (
            CreateVm {
                networks: vec![NicRequest {
                    mac: Some(MacAddr::derive("other/lan")),
                    ..nic("lan", None)
                }],
                ..request("new", "tests/raw:1")
            },
            ErrorKind::InvalidArgument,
            None,
        ),
        (
            CreateVm {
                memory: Some(ByteSize::mib(1)),
                ..request("new", "tests/raw:1")
            },
            ErrorKind::InvalidArgument,
            Some("memory"),
        ),
        (
            CreateVm {
                cpu: Some(0),
                ..request("new", "tests/raw:1")
            },
            ErrorKind::InvalidArgument,
            Some("cpu"),
        ),
        (
            CreateVm {
                user_data: Some(b"#cloud-config\n- not a mapping\n".to_vec()),
                ..request("new", "tests/raw:1")
            },
            ErrorKind::InvalidArgument,
            Some("cloudInit.userData"),
        ),
    ];
    for (req, kind, field) in cases {
        let err = world.vms.create(req).await.unwrap_err();
        assert_eq!(err.kind, kind, "{err}");
        if let Some(field) = field {
            assert_eq!(err.field.as_deref(), Some(field), "{err}");
        }
    }
    // The clash check names the owner.
    let mut again = request("new", "tests/raw:1");
    again.networks = vec![nic("lan", Some("10.10.0.9"))];
    let err = world.vms.create(again).await.unwrap_err();
    assert!(err.message.contains("VM other"), "{err}");

    assert_eq!(world.names().await, ["other", "taken"]);
    assert_eq!(world.runtime_entries(), ["other", "taken"]);
}

#[tokio::test]
async fn run_on_an_inactive_network_is_refused_but_create_is_not() {
    let world = World::new().await;
    world
        .network("cold", "isolated", "10.30.0.0/24", false)
        .await;
    let mut run = request("web", "tests/raw:1");
    run.networks = vec![nic("cold", None)];
    let err = world.vms.create(run.clone()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(err.message.contains("vmr network start cold"), "{err}");
    assert!(world.names().await.is_empty());

    run.start = false;
    let vm = world.vms.create(run).await.unwrap();
    assert_eq!(vm.state, VmState::Created);
}

#[tokio::test]
async fn a_failing_step_is_rolled_back() {
    let world = World::new().await;
    for call in [
        FakeCall::CreateOverlay,
        FakeCall::DefineVm,
        FakeCall::StartVm,
    ] {
        world.fake.fail_next(
            call,
            None,
            vmr_ports::HypervisorError::Backend(format!("{call:?} broke").into()),
        );
        let err = world
            .vms
            .create(request("web", "tests/raw:1"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Internal, "{err}");
        assert!(err.message.contains("broke"), "{err}");
        assert!(world.names().await.is_empty(), "{call:?}");
        assert!(world.runtime_entries().is_empty(), "{call:?}");
    }
    // And the name is free again.
    world
        .vms
        .create(request("web", "tests/raw:1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn leftover_runtime_files_of_a_missing_vm_are_replaced() {
    let world = World::new().await;
    let stale = world.tmp.path().join("runtime/web");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("disk.qcow2"), b"stale").unwrap();
    world
        .vms
        .create(request("web", "tests/raw:1"))
        .await
        .unwrap();
    assert_ne!(std::fs::read(stale.join("disk.qcow2")).unwrap(), b"stale");
}

#[tokio::test]
async fn an_iso_image_boots_from_cdrom_with_an_optional_blank_disk() {
    let world = World::new().await;
    let cd = world.vms.create(request("cd", "tests/cd:1")).await.unwrap();
    assert!(cd.disk.is_none());
    assert_eq!(cd.cdroms.len(), 2);
    assert!(cd.cdroms[0].to_string_lossy().contains("blobs"));
    assert!(cd.cdroms[1].ends_with("cidata.iso"));
    assert_eq!(cd.spec.disk_size, None);

    let mut with_disk = request("cd2", "tests/cd:1");
    with_disk.disk_size = Some(ByteSize::gib(1));
    let cd2 = world.vms.create(with_disk).await.unwrap();
    let disk = cd2.disk.unwrap();
    assert!(disk.path.ends_with("cd2/disk.qcow2"));
    // A real qcow2 disk of that size, backed by nothing.
    let info = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(&disk.path)
        .output()
        .expect("qemu-img runs");
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 1u64 << 30);
    assert!(info.get("backing-filename").is_none(), "{info}");
}

#[tokio::test]
async fn lifecycle_rules() {
    let world = World::new().await;
    let web = name("web");
    let mut req = request("web", "tests/raw:1");
    req.start = false;
    assert_eq!(world.vms.create(req).await.unwrap().state, VmState::Created);
    let running = |vms: Vec<VmRecord>| -> Vec<String> {
        vms.into_iter().map(|v| v.spec.name.to_string()).collect()
    };
    assert!(
        running(world.vms.list(VmFilter::default()).await.unwrap()).is_empty(),
        "ps without -a shows running VMs only"
    );

    assert_eq!(world.vms.start(&web).await.unwrap().state, VmState::Running);
    let again = world.vms.start(&web).await.unwrap_err();
    assert_eq!(again.kind, ErrorKind::FailedPrecondition);
    assert_eq!(
        running(world.vms.list(VmFilter::default()).await.unwrap()),
        ["web"]
    );

    let refused = world.vms.remove(&web, false).await.unwrap_err();
    assert_eq!(refused.kind, ErrorKind::FailedPrecondition);

    let stopped = world.vms.stop(&web, StopVm::default()).await.unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    assert!(world.vms.runtime().stopped_by_vmr(&web).await);
    let again = world.vms.stop(&web, StopVm::default()).await.unwrap_err();
    assert_eq!(again.kind, ErrorKind::FailedPrecondition);

    let restarted = world.vms.restart(&web, None).await.unwrap();
    assert_eq!(restarted.state, VmState::Running);
    assert!(!world.vms.runtime().stopped_by_vmr(&web).await);

    world.vms.remove(&web, true).await.unwrap();
    assert!(world.names().await.is_empty());
    assert!(world.runtime_entries().is_empty());
    let gone = world.vms.inspect(&web).await.unwrap_err();
    assert_eq!(gone.kind, ErrorKind::NotFound);
    assert_eq!(
        world.vms.remove(&web, true).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[tokio::test(start_paused = true)]
async fn a_graceful_stop_the_guest_ignores_times_out_unless_forced() {
    let world = World::new().await;
    let web = name("web");
    world
        .vms
        .create(request("web", "tests/raw:1"))
        .await
        .unwrap();
    world.fake.ignore_acpi(&web, true);
    let how = StopVm {
        force: false,
        timeout: Some(Duration::from_secs(5)),
    };
    let err = world.vms.stop(&web, how).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::DeadlineExceeded);
    let forced = StopVm {
        force: true,
        timeout: Some(Duration::from_secs(5)),
    };
    assert_eq!(
        world.vms.stop(&web, forced).await.unwrap().state,
        VmState::Stopped
    );
}

#[test]
fn stop_modes() {
    let t = Duration::from_secs(7);
    assert_eq!(
        stop_mode(StopVm {
            force: true,
            timeout: None
        }),
        StopMode::Force
    );
    assert_eq!(
        stop_mode(StopVm {
            force: true,
            timeout: Some(t)
        }),
        StopMode::GracefulThenForce { timeout: t }
    );
    assert_eq!(
        stop_mode(StopVm {
            force: false,
            timeout: None
        }),
        StopMode::Graceful {
            timeout: DEFAULT_STOP_TIMEOUT
        }
    );
}

#[tokio::test]
async fn project_filter() {
    let world = World::new().await;
    let mut a = request("demo-web", "tests/raw:1");
    a.project = Some("demo".into());
    a.service = Some("web".into());
    world.vms.create(a).await.unwrap();
    world
        .vms
        .create(request("solo", "tests/raw:1"))
        .await
        .unwrap();
    let demo = world
        .vms
        .list(VmFilter {
            all: true,
            project: Some("demo".into()),
        })
        .await
        .unwrap();
    assert_eq!(demo.len(), 1);
    assert_eq!(demo[0].spec.labels.service.as_deref(), Some("web"));
}

#[tokio::test]
async fn images_used_by_vms_are_kept() {
    let world = World::new().await;
    let reference = "tests/raw:1".parse().unwrap();
    world
        .vms
        .create(request("web", "tests/raw:1"))
        .await
        .unwrap();

    let refused = world.images.remove(&reference, false).await.unwrap_err();
    assert_eq!(refused.kind, ErrorKind::FailedPrecondition);
    assert!(world.images.inspect(&reference).await.is_ok());

    // Forced, the tag goes but the blobs stay while the VM needs them.
    let outcome = world.images.remove(&reference, true).await.unwrap();
    assert_eq!(outcome.untagged, ["tests/raw:1"]);
    assert!(outcome.deleted.is_empty(), "{:?}", outcome.deleted);
    // Pruning everything takes the unused iso image, not the VM's.
    let pruned = world.images.prune(true).await.unwrap();
    assert_eq!(pruned.untagged, ["tests/cd:1"]);
    let vm = world.vms.inspect(&name("web")).await.unwrap().record;
    let manifest = vm.spec.labels.image_digest.clone().unwrap();
    assert!(!pruned.deleted.contains(&manifest));
    let store = world.images.store();
    let manifest =
        vmr_domain::image::Manifest::from_json(&store.read_blob(&manifest).await.unwrap()).unwrap();
    for blob in manifest.blobs() {
        assert!(
            store.blob_exists(&blob.digest).await.unwrap(),
            "{}",
            blob.digest
        );
    }

    world.vms.remove(&name("web"), true).await.unwrap();
    let pruned = world.images.prune(false).await.unwrap();
    assert_eq!(pruned.deleted.len(), 3, "manifest, config and disk");
}

/// Collects what a JSON tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// (message, vm, phase) of each phase event, in order.
    fn phases(&self) -> Vec<(String, String, String)> {
        let text = String::from_utf8(lock(&self.0).clone()).unwrap();
        text.lines()
            .filter_map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).unwrap();
                let f = &event["fields"];
                let message = f["message"].as_str()?;
                if !message.ends_with(" phase") {
                    return None;
                }
                assert!(f["duration_ms"].as_f64().unwrap() >= 0.0, "{line}");
                Some((
                    message.to_owned(),
                    f["vm"].as_str()?.to_owned(),
                    f["phase"].as_str()?.to_owned(),
                ))
            })
            .collect()
    }
}

/// scripts/bench/vm.sh tables these debug events: a create's phases, and a
/// later start's (compose creates stopped, then starts).
#[tokio::test(flavor = "current_thread")]
async fn creates_and_starts_log_their_phases() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let world = World::new().await;
    let mut req = request("web", "tests/raw:1");
    req.start = false;
    world.vms.create(req).await.unwrap();
    world.vms.start(&name("web")).await.unwrap();
    world
        .vms
        .create(request("db", "tests/raw:1"))
        .await
        .unwrap();
    let event = |message: &str, vm: &str, phase: &str| {
        (message.to_owned(), vm.to_owned(), phase.to_owned())
    };
    assert_eq!(
        captured.phases(),
        [
            event("create phase", "web", "prepare"),
            event("create phase", "web", "disk"),
            event("create phase", "web", "seed"),
            event("create phase", "web", "define"),
            event("start phase", "web", "start"),
            event("start phase", "web", "inspect"),
            event("create phase", "db", "prepare"),
            event("create phase", "db", "disk"),
            event("create phase", "db", "seed"),
            event("create phase", "db", "define"),
            event("create phase", "db", "start"),
            event("create phase", "db", "inspect"),
        ]
    );
}

#[path = "ways_in_tests.rs"]
mod ways_in;
