//! The hypervisor port's contract: one suite of scenarios, each an async fn
//! taking `Arc<dyn Hypervisor>`, run against the fake, libvirt's test
//! driver and a real `qemu:///system`. Every backend must give the same
//! states and the same errors for the same calls. The disks port's rules
//! ([`overlay_rules`]) are a scenario of their own, run against the disk
//! adapter and the fake's scripted disks; the VMs of every scenario boot
//! from disks the real adapter made.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use vmr_adapters::disks::QemuDisks;
use vmr_domain::image::{Digest, DiskFormat};
use vmr_domain::network::NetworkMode;
use vmr_domain::network::{MacAddr, NetworkName, NetworkParams, NetworkSpec};
use vmr_domain::units::ByteSize;
use vmr_domain::vm::{
    Bootloader, NetworkAttachment, RestartPolicy, VmLabels, VmName, VmSpec, VmState,
};
use vmr_ports::{
    DiskAttachment, Hypervisor, HypervisorError, LifecycleEvent, LifecycleKind, NetworkDefinition,
    OverlayDisks, StopMode, StopReason, VmDefinition,
};

/// Where a scenario keeps its files and how it names its objects, so that
/// scenarios can share one real libvirt host.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    /// Prefix of every VM and network name of this scenario.
    pub prefix: String,
    /// Second octet of this scenario's subnets: 10.<octet>.x.0/24.
    pub octet: u8,
    /// A host bridge and a host interface that exist for this backend.
    pub host_bridge: String,
    pub host_interface: String,
    /// Host devices made for this scenario, removed with the fixture.
    pub host_devices: Option<HostDevices>,
}

/// A bridge and a veth interface on the real host (this kernel may lack
/// the dummy driver), deleted on drop.
pub struct HostDevices {
    names: Vec<String>,
}

impl HostDevices {
    pub fn create(bridge: &str, interface: &str) -> Self {
        let peer = format!("{interface}p");
        let mut devices = Self { names: Vec::new() };
        for args in [
            vec!["link", "add", bridge, "type", "bridge"],
            vec![
                "link",
                "add",
                interface,
                "type",
                "veth",
                "peer",
                "name",
                peer.as_str(),
            ],
        ] {
            let name = args[2];
            let _ = Command::new("ip").args(["link", "del", name]).output();
            let status = Command::new("ip").args(&args).status().expect("ip runs");
            assert!(status.success(), "ip {} failed", args.join(" "));
            devices.names.push(name.to_owned());
        }
        devices
    }
}

impl Drop for HostDevices {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
    }
}

impl Fixture {
    pub fn new(prefix: &str, octet: u8, host_bridge: &str, host_interface: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vmr-hv-")
            .tempdir()
            .expect("temp dir");
        // QEMU under qemu:///system runs as another user: it must reach the disks.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Self {
            dir,
            prefix: prefix.to_owned(),
            octet,
            host_bridge: host_bridge.to_owned(),
            host_interface: host_interface.to_owned(),
            host_devices: None,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn vm_name(&self, name: &str) -> VmName {
        format!("{}-{name}", self.prefix).parse().unwrap()
    }

    pub fn net_name(&self, name: &str) -> NetworkName {
        format!("{}-{name}", self.prefix).parse().unwrap()
    }

    /// `10.<octet>.<third>.0/24` with DHCP on the second half.
    pub fn nat_network(&self, name: &str, third: u8) -> NetworkSpec {
        self.network(name, NetworkMode::Nat, third)
    }

    pub fn network(&self, name: &str, mode: NetworkMode, third: u8) -> NetworkSpec {
        let params = match mode {
            NetworkMode::Bridged => NetworkParams {
                bridge: Some(self.host_bridge.clone()),
                ..NetworkParams::default()
            },
            NetworkMode::Macvtap => NetworkParams {
                interface: Some(self.host_interface.clone()),
                ..NetworkParams::default()
            },
            _ => NetworkParams {
                subnet: Some(format!("10.{}.{third}.0/24", self.octet).parse().unwrap()),
                ..NetworkParams::default()
            },
        };
        NetworkSpec::new(self.net_name(name), mode, params).unwrap()
    }

    /// A blank 64 MiB qcow2 made with qemu-img, to serve as an image's disk.
    pub fn base_disk(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&path)
            .arg("64M")
            .status()
            .expect("qemu-img runs");
        assert!(status.success(), "qemu-img create failed");
        path
    }

    /// A VM definition with a fresh overlay over a fresh base disk.
    pub async fn definition(&self, name: &str, networks: Vec<NetworkAttachment>) -> VmDefinition {
        let base = self.base_disk(&format!("{name}-base.qcow2"));
        let overlay = self.path(&format!("{name}-overlay.qcow2"));
        QemuDisks
            .create_overlay(&base, DiskFormat::Qcow2, &overlay, Some(128 << 20))
            .await
            .expect("overlay");
        let spec = VmSpec {
            name: self.vm_name(name),
            cpu: 1,
            memory: ByteSize::mib(128),
            disk_size: Some(ByteSize::mib(128)),
            bootloader: Bootloader::Bios,
            networks,
            restart_policy: RestartPolicy::No,
            labels: VmLabels {
                image: "localhost:5000/test/tiny:v1".into(),
                image_digest: Some(Digest::of(b"manifest")),
                project: None,
                service: None,
            },
        };
        let spec_hash = spec.spec_hash();
        VmDefinition {
            spec,
            disk: Some(DiskAttachment {
                path: overlay,
                format: DiskFormat::Qcow2,
            }),
            cdroms: Vec::new(),
            boot_from_cdrom: false,
            console_log: self.path(&format!("{name}-console.log")),
            spec_hash,
        }
    }
}

pub fn nic(network: &NetworkName, mac: &str) -> NetworkAttachment {
    NetworkAttachment {
        network: network.clone(),
        mac: mac.parse::<MacAddr>().unwrap(),
        static_ip: None,
        gateway: None,
    }
}

async fn define_active_network(hv: &Arc<dyn Hypervisor>, spec: NetworkSpec) -> NetworkName {
    let name = spec.name.clone();
    hv.define_network(&NetworkDefinition {
        spec,
        project: None,
    })
    .await
    .expect("define network");
    hv.start_network(&name).await.expect("start network");
    name
}

async fn state_of(hv: &Arc<dyn Hypervisor>, name: &VmName) -> VmState {
    hv.inspect_vm(name).await.expect("inspect").record.state
}

fn force() -> StopMode {
    StopMode::Force
}

#[track_caller]
fn assert_invalid_state(result: Result<(), HypervisorError>, kind: &str) {
    match result {
        Err(HypervisorError::InvalidState { kind: k, .. }) if k == kind => {}
        other => panic!("expected InvalidState on a {kind}, got {other:?}"),
    }
}

/// Best effort: removes what an earlier, failed run may have left behind.
pub async fn clean(hv: &Arc<dyn Hypervisor>, prefix: &str) {
    let Ok(vms) = hv.list_vms().await else { return };
    for vm in vms
        .iter()
        .filter(|v| v.spec.name.as_str().starts_with(prefix))
    {
        let _ = hv.stop_vm(&vm.spec.name, StopMode::Force).await;
        let _ = hv.undefine_vm(&vm.spec.name).await;
    }
    let Ok(nets) = hv.list_networks().await else {
        return;
    };
    for net in nets
        .iter()
        .filter(|n| n.spec.name.as_str().starts_with(prefix))
    {
        let _ = hv.stop_network(&net.spec.name).await;
        let _ = hv.remove_network(&net.spec.name).await;
    }
}

// ---- the contract ------------------------------------------------------------

/// define -> Created -> start -> Running -> stop -> Stopped -> undefine.
pub async fn vm_lifecycle(hv: Arc<dyn Hypervisor>, fx: &Fixture) {
    let net = define_active_network(&hv, fx.nat_network("life", 1)).await;
    let def = fx
        .definition("life", vec![nic(&net, "52:54:00:10:00:01")])
        .await;
    let name = def.spec.name.clone();

    let record = hv.define_vm(&def).await.expect("define");
    assert_eq!(record.state, VmState::Created);
    assert_eq!(record.spec, def.spec);
    assert!(
        hv.list_vms()
            .await
            .unwrap()
            .iter()
            .any(|v| v.spec.name == name)
    );

    hv.start_vm(&name).await.expect("start");
    assert_eq!(state_of(&hv, &name).await, VmState::Running);
    assert_invalid_state(hv.start_vm(&name).await, "VM");
    assert_invalid_state(hv.undefine_vm(&name).await, "VM");

    hv.stop_vm(&name, force()).await.expect("stop");
    assert_eq!(state_of(&hv, &name).await, VmState::Stopped);
    // A stopped VM cannot be stopped again, gracefully or not.
    assert_invalid_state(hv.stop_vm(&name, force()).await, "VM");
    assert_invalid_state(
        hv.stop_vm(
            &name,
            StopMode::Graceful {
                timeout: Duration::from_secs(1),
            },
        )
        .await,
        "VM",
    );

    // Restart of a stopped VM starts it; of a running one, stops and starts it.
    hv.restart_vm(&name, force())
        .await
        .expect("restart stopped");
    assert_eq!(state_of(&hv, &name).await, VmState::Running);
    hv.restart_vm(
        &name,
        StopMode::GracefulThenForce {
            timeout: Duration::from_secs(2),
        },
    )
    .await
    .expect("restart running");
    assert_eq!(state_of(&hv, &name).await, VmState::Running);

    // Without an OS the guest may ignore ACPI: then the timeout forces it off.
    hv.stop_vm(
        &name,
        StopMode::GracefulThenForce {
            timeout: Duration::from_secs(2),
        },
    )
    .await
    .expect("graceful stop");
    assert_eq!(state_of(&hv, &name).await, VmState::Stopped);

    hv.undefine_vm(&name).await.expect("undefine");
    assert!(matches!(
        hv.inspect_vm(&name).await,
        Err(HypervisorError::NotFound { kind: "VM", .. })
    ));
    assert!(
        !hv.list_vms()
            .await
            .unwrap()
            .iter()
            .any(|v| v.spec.name == name)
    );
    assert!(matches!(
        hv.start_vm(&name).await,
        Err(HypervisorError::NotFound { kind: "VM", .. })
    ));
    assert!(matches!(
        hv.undefine_vm(&name).await,
        Err(HypervisorError::NotFound { kind: "VM", .. })
    ));

    hv.stop_network(&net).await.unwrap();
    hv.remove_network(&net).await.unwrap();
}

/// Names are unique.
pub async fn duplicate_vm_name(hv: Arc<dyn Hypervisor>, fx: &Fixture) {
    let def = fx.definition("dup", Vec::new()).await;
    hv.define_vm(&def).await.expect("define");
    match hv.define_vm(&def).await {
        Err(HypervisorError::AlreadyExists { kind: "VM", name }) => {
            assert_eq!(name, def.spec.name.as_str());
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    hv.undefine_vm(&def.spec.name).await.unwrap();
}

/// A VM's networks must exist, and be active for it to start.
pub async fn networks_must_exist(hv: Arc<dyn Hypervisor>, fx: &Fixture) {
    let missing = fx.net_name("missing");
    let def = fx
        .definition("nonet", vec![nic(&missing, "52:54:00:10:00:02")])
        .await;
    match hv.define_vm(&def).await {
        Err(HypervisorError::NotFound {
            kind: "network",
            name,
        }) => assert_eq!(name, missing.as_str()),
        other => panic!("expected NotFound network, got {other:?}"),
    }
    assert!(
        hv.list_vms()
            .await
            .unwrap()
            .iter()
            .all(|v| v.spec.name != def.spec.name)
    );

    let spec = fx.nat_network("idle", 2);
    let idle = spec.name.clone();
    hv.define_network(&NetworkDefinition {
        spec,
        project: None,
    })
    .await
    .unwrap();
    let def = fx
        .definition("idlenet", vec![nic(&idle, "52:54:00:10:00:03")])
        .await;
    hv.define_vm(&def)
        .await
        .expect("define on an inactive network");
    assert_invalid_state(hv.start_vm(&def.spec.name).await, "network");
    assert_eq!(state_of(&hv, &def.spec.name).await, VmState::Created);
    // A network in use cannot go away.
    assert_invalid_state(hv.remove_network(&idle).await, "network");
    hv.undefine_vm(&def.spec.name).await.unwrap();
    hv.remove_network(&idle).await.unwrap();
}

/// Everything vmr put in the definition comes back from the backend alone,
/// hostile characters included.
pub async fn metadata_round_trip(hv: Arc<dyn Hypervisor>, fx: &Fixture) {
    let a = define_active_network(&hv, fx.nat_network("meta-a", 3)).await;
    let b = define_active_network(&hv, fx.network("meta-b", NetworkMode::Isolated, 4)).await;
    let mut def = fx.definition("meta", Vec::new()).await;
    def.spec.cpu = 2;
    def.spec.memory = ByteSize(256 * 1024 * 1024 + 512);
    def.spec.disk_size = Some(ByteSize::gib(3));
    def.spec.bootloader = Bootloader::Uefi;
    def.spec.restart_policy = RestartPolicy::OnFailure;
    def.spec.labels = VmLabels {
        image: r#"evil.example:5000/a<b>&"c'd]]>:tag"#.into(),
        image_digest: Some(Digest::of(b"another manifest")),
        project: Some(r#"proj<&>"'"#.into()),
        service: Some("web&api".into()),
    };
    def.spec.networks = vec![
        NetworkAttachment {
            network: a.clone(),
            mac: "52:54:00:10:00:04".parse().unwrap(),
            static_ip: Some(format!("10.{}.3.10/24", fx.octet).parse().unwrap()),
            gateway: Some(Ipv4Addr::new(10, fx.octet, 3, 1)),
        },
        nic(&b, "52:54:00:10:00:05"),
    ];
    let iso = fx.path("meta-cidata.iso");
    std::fs::write(&iso, b"not really an iso").unwrap();
    def.cdroms = vec![iso.clone()];
    def.spec_hash = "0123abcd".repeat(8);

    hv.define_vm(&def).await.expect("define");
    let listed = hv
        .list_vms()
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.spec.name == def.spec.name)
        .expect("listed");
    assert_eq!(listed.spec, def.spec);
    assert_eq!(listed.spec_hash.as_deref(), Some(def.spec_hash.as_str()));
    assert_eq!(listed.disk, def.disk);
    assert_eq!(listed.cdroms, vec![iso]);
    assert_eq!(
        listed.console_log.as_deref(),
        Some(def.console_log.as_path())
    );
    assert_eq!(listed.interfaces.len(), 2);
    assert_eq!(listed.interfaces[0].network, a);
    assert_eq!(
        listed.interfaces[0].ip,
        Some(Ipv4Addr::new(10, fx.octet, 3, 10))
    );
    assert_eq!(
        listed.interfaces[1].mac,
        "52:54:00:10:00:05".parse().unwrap()
    );

    let details = hv.inspect_vm(&def.spec.name).await.unwrap();
    assert_eq!(details.record.spec, def.spec);
    assert!(
        details.definition.contains("a&lt;b&gt;&amp;"),
        "{}",
        details.definition
    );
    assert!(!details.definition.contains("a<b>"), "raw value in XML");

    hv.undefine_vm(&def.spec.name).await.unwrap();
    for net in [a, b] {
        hv.stop_network(&net).await.unwrap();
        hv.remove_network(&net).await.unwrap();
    }
}

/// Every mode: define, start, list, inspect, stop, remove, with the
/// state machine's errors on the way.
pub async fn network_modes(hv: Arc<dyn Hypervisor>, fx: &Fixture) {
    for (third, mode) in NetworkMode::ALL.into_iter().enumerate() {
        let spec = fx.network(&format!("mode-{mode}"), mode, 10 + third as u8);
        let name = spec.name.clone();
        let record = hv
            .define_network(&NetworkDefinition {
                spec: spec.clone(),
                project: Some("proj<&>".into()),
            })
            .await
            .unwrap_or_else(|e| panic!("define {mode}: {e}"));
        assert_eq!(record.spec, spec, "{mode}");
        assert!(!record.active);
        assert!(record.managed);
        assert_eq!(record.project.as_deref(), Some("proj<&>"));
        match mode {
            NetworkMode::Bridged => {
                assert_eq!(record.bridge.as_deref(), Some(fx.host_bridge.as_str()))
            }
            NetworkMode::Macvtap => assert_eq!(record.bridge, None),
            _ => {
                let bridge = record.bridge.clone().expect("own bridge");
                assert!(bridge.len() <= 15, "{bridge}");
            }
        }
        assert!(matches!(
            hv.define_network(&NetworkDefinition {
                spec: spec.clone(),
                project: None
            })
            .await,
            Err(HypervisorError::AlreadyExists {
                kind: "network",
                ..
            })
        ));
        assert_invalid_state(hv.stop_network(&name).await, "network");

        hv.start_network(&name)
            .await
            .unwrap_or_else(|e| panic!("start {mode}: {e}"));
        assert_invalid_state(hv.start_network(&name).await, "network");
        assert_invalid_state(hv.remove_network(&name).await, "network");
        let listed = hv.list_networks().await.unwrap();
        let found = listed.iter().find(|n| n.spec.name == name).expect("listed");
        assert!(found.active);
        assert_eq!(found.spec, spec);
        let details = hv.inspect_network(&name).await.unwrap();
        assert_eq!(details.record.spec, spec);
        assert!(
            details.definition.contains("proj&lt;&amp;&gt;"),
            "{}",
            details.definition
        );

        hv.stop_network(&name).await.unwrap();
        hv.remove_network(&name).await.unwrap();
        assert!(matches!(
            hv.inspect_network(&name).await,
            Err(HypervisorError::NotFound {
                kind: "network",
                ..
            })
        ));
        assert!(matches!(
            hv.start_network(&name).await,
            Err(HypervisorError::NotFound {
                kind: "network",
                ..
            })
        ));
    }
}

/// Two vmr networks never share addresses.
pub async fn overlapping_subnets_refused(hv: Arc<dyn Hypervisor>, fx: &Fixture) {
    let first = fx.nat_network("ovl-a", 20);
    hv.define_network(&NetworkDefinition {
        spec: first.clone(),
        project: None,
    })
    .await
    .unwrap();
    let params = NetworkParams {
        subnet: Some(format!("10.{}.20.128/25", fx.octet).parse().unwrap()),
        ..NetworkParams::default()
    };
    let second = NetworkSpec::new(fx.net_name("ovl-b"), NetworkMode::Isolated, params).unwrap();
    match hv
        .define_network(&NetworkDefinition {
            spec: second.clone(),
            project: None,
        })
        .await
    {
        Err(HypervisorError::Invalid { field, reason }) => {
            assert_eq!(field, "subnet");
            assert!(reason.contains(first.name.as_str()), "{reason}");
        }
        other => panic!("expected Invalid subnet, got {other:?}"),
    }
    assert!(matches!(
        hv.inspect_network(&second.name).await,
        Err(HypervisorError::NotFound { .. })
    ));
    hv.remove_network(&first.name).await.unwrap();
}

/// Overlays: the base must exist, the overlay must not, iso cannot back one.
pub async fn overlay_rules(disks: Arc<dyn OverlayDisks>, fx: &Fixture) {
    let base = fx.base_disk("ov-base.qcow2");
    let overlay = fx.path("ov-overlay.qcow2");
    assert!(matches!(
        disks
            .create_overlay(&fx.path("absent.qcow2"), DiskFormat::Qcow2, &overlay, None)
            .await,
        Err(HypervisorError::NotFound { kind: "disk", .. })
    ));
    assert!(matches!(
        disks
            .create_overlay(&base, DiskFormat::Iso, &overlay, None)
            .await,
        Err(HypervisorError::Invalid { .. })
    ));
    disks
        .create_overlay(&base, DiskFormat::Qcow2, &overlay, Some(1 << 30))
        .await
        .unwrap();
    assert!(overlay.exists());
    assert!(matches!(
        disks
            .create_overlay(&base, DiskFormat::Qcow2, &overlay, None)
            .await,
        Err(HypervisorError::AlreadyExists { kind: "disk", .. })
    ));
    let blank = fx.path("blank.qcow2");
    disks.create_blank_disk(&blank, 1 << 30).await.unwrap();
    assert!(blank.exists());
    assert!(matches!(
        disks.create_blank_disk(&blank, 1 << 30).await,
        Err(HypervisorError::AlreadyExists { kind: "disk", .. })
    ));
}

/// A definition naming files that do not exist is refused.
pub async fn missing_files_refused(hv: Arc<dyn Hypervisor>, fx: &Fixture) {
    let mut def = fx.definition("nofile", Vec::new()).await;
    def.cdroms = vec![fx.path("no-such.iso")];
    assert!(matches!(
        hv.define_vm(&def).await,
        Err(HypervisorError::NotFound { kind: "file", .. })
    ));
}

/// The events a VM's life produces, in order.
pub async fn lifecycle_events(hv: Arc<dyn Hypervisor>, fx: &Fixture) {
    let mut events = hv.events();
    let def = fx.definition("events", Vec::new()).await;
    let name = def.spec.name.clone();
    hv.define_vm(&def).await.unwrap();
    expect_event(&mut events, &name, LifecycleKind::Defined).await;
    hv.start_vm(&name).await.unwrap();
    expect_event(&mut events, &name, LifecycleKind::Started).await;
    hv.stop_vm(&name, StopMode::Force).await.unwrap();
    expect_event(
        &mut events,
        &name,
        LifecycleKind::Stopped(StopReason::Requested),
    )
    .await;
    hv.undefine_vm(&name).await.unwrap();
    expect_event(&mut events, &name, LifecycleKind::Undefined).await;
}

/// Waits (up to 10 s) for `kind` about `vm`, skipping other VMs' events.
pub async fn expect_event(
    events: &mut BoxStream<'static, LifecycleEvent>,
    vm: &VmName,
    kind: LifecycleKind,
) {
    let wait = async {
        while let Some(event) = events.next().await {
            if &event.vm == vm {
                return Some(event);
            }
        }
        None
    };
    let event = tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no {kind:?} event for {vm} within 10 s"))
        .expect("event stream ended");
    assert_eq!(event.kind, kind, "event for {vm}");
}

/// Runs every scenario of the contract, each with its own fixture.
#[macro_export]
macro_rules! hypervisor_contract_tests {
    ($make:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn vm_lifecycle() {
            let Some((hv, fx)) = $make("life", 201).await else {
                return;
            };
            $crate::hypervisor_contract::vm_lifecycle(hv, &fx).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn duplicate_vm_name() {
            let Some((hv, fx)) = $make("dup", 202).await else {
                return;
            };
            $crate::hypervisor_contract::duplicate_vm_name(hv, &fx).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn networks_must_exist() {
            let Some((hv, fx)) = $make("nets", 203).await else {
                return;
            };
            $crate::hypervisor_contract::networks_must_exist(hv, &fx).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn metadata_round_trip() {
            let Some((hv, fx)) = $make("meta", 204).await else {
                return;
            };
            $crate::hypervisor_contract::metadata_round_trip(hv, &fx).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn network_modes() {
            let Some((hv, fx)) = $make("modes", 205).await else {
                return;
            };
            $crate::hypervisor_contract::network_modes(hv, &fx).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn overlapping_subnets_refused() {
            let Some((hv, fx)) = $make("ovl", 206).await else {
                return;
            };
            $crate::hypervisor_contract::overlapping_subnets_refused(hv, &fx).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn missing_files_refused() {
            let Some((hv, fx)) = $make("files", 208).await else {
                return;
            };
            $crate::hypervisor_contract::missing_files_refused(hv, &fx).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn lifecycle_events() {
            let Some((hv, fx)) = $make("events", 209).await else {
                return;
            };
            $crate::hypervisor_contract::lifecycle_events(hv, &fx).await;
        }
    };
}

/// The sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).unwrap();
    hex::encode(sha2::Sha256::digest(&bytes))
}
