//! The hypervisor contract and end-to-end checks against a real libvirt
//! (`VMR_TEST_LIBVIRT_URI`, normally `qemu:///system` with libvirtd and
//! virtlogd running). Without that variable these tests fail, unless
//! `VMR_TEST_SKIP_LIBVIRT=1` says to skip them. Guests run under TCG
//! (`type='qemu'`): they must boot on hosts without hardware virtualisation.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use vmr_adapters::cloudinit::build_cidata_iso;
use vmr_domain::cloudinit::{CloudInitSeed, MetaData, NetworkConfigV2};
use vmr_domain::vm::VmState;
use vmr_libvirt::{LibvirtConfig, LibvirtHypervisor, VirtType};
use vmr_ports::{Hypervisor, LifecycleKind, NetworkDefinition, StopMode, StopReason, VmDriver};
use vmr_tests::hypervisor_contract::{Fixture, HostDevices, clean, expect_event, nic, sha256_file};

async fn connect(uri: String) -> Arc<dyn Hypervisor> {
    let mut config = LibvirtConfig::new(uri.clone());
    config.virt_type = Some(VirtType::Qemu);
    config.event_poll_interval = Duration::from_millis(100);
    let hv = LibvirtHypervisor::connect(config)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {uri}: {e}"));
    Arc::new(hv)
}

async fn system(prefix: &str, octet: u8) -> Option<(Arc<dyn Hypervisor>, Fixture)> {
    let uri = vmr_tests::libvirt::uri()?;
    let hv = connect(uri).await;
    let prefix = format!("vmrt-{prefix}");
    // The event poller reports the clean-up (each leftover VM undefined)
    // before a test subscribes, so that no test sees those events.
    let mut events = hv.events();
    let mut leftovers: std::collections::HashSet<String> = hv
        .list_vms()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|vm| vm.spec.name.as_str().to_owned())
        .filter(|name| name.starts_with(&prefix))
        .collect();
    clean(&hv, &prefix).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !leftovers.is_empty() {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) if event.kind == LifecycleKind::Undefined => {
                leftovers.remove(event.vm.as_str());
            }
            Ok(Some(_)) => {}
            _ => panic!("the event poller did not report {leftovers:?} undefined within 20 s"),
        }
    }
    let bridge = format!("vmrtbr{octet}");
    let veth = format!("vmrtveth{octet}");
    let mut fx = Fixture::new(&prefix, octet, &bridge, &veth);
    fx.host_devices = Some(HostDevices::create(&bridge, &veth));
    Some((hv, fx))
}

vmr_tests::hypervisor_contract_tests!(system);

async fn wait_for_file_containing(path: &Path, needle: &str, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let text = std::fs::read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} does not contain {needle:?} after {within:?}; it holds: {text:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_boots_firmware_on_an_overlay_and_never_writes_the_base() {
    let Some((hv, fx)) = system("boot", 230).await else {
        return;
    };
    let net = fx.nat_network("boot", 1);
    hv.define_network(&NetworkDefinition {
        spec: net.clone(),
        project: None,
    })
    .await
    .unwrap();
    hv.start_network(&net.name).await.unwrap();

    let mut def = fx
        .definition("boot", vec![nic(&net.name, "52:54:00:23:00:01")])
        .await;
    let base = fx.path("boot-base.qcow2");
    let base_sha = sha256_file(&base);
    let info = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(&def.disk.as_ref().unwrap().path)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["backing-filename"], base.display().to_string());
    assert_eq!(info["virtual-size"], 128 << 20);

    let seed = CloudInitSeed::build(
        None,
        &MetaData::new("boot-1", "boot"),
        &NetworkConfigV2::from_attachments(&def.spec.networks, &[]),
        None,
    )
    .unwrap();
    let iso = fx.path("boot-cidata.iso");
    std::fs::write(&iso, build_cidata_iso(&seed).unwrap()).unwrap();
    def.cdroms = vec![iso];

    let mut events = hv.events();
    hv.define_vm(&def).await.unwrap();
    expect_event(&mut events, &def.spec.name, LifecycleKind::Defined).await;
    hv.start_vm(&def.spec.name).await.unwrap();
    expect_event(&mut events, &def.spec.name, LifecycleKind::Started).await;
    assert_eq!(
        hv.inspect_vm(&def.spec.name).await.unwrap().record.state,
        VmState::Running
    );

    // SeaBIOS prints its banner on the serial console, which virtlogd copies.
    wait_for_file_containing(&def.console_log, "SeaBIOS", Duration::from_secs(20)).await;

    hv.stop_vm(&def.spec.name, StopMode::Force).await.unwrap();
    expect_event(
        &mut events,
        &def.spec.name,
        LifecycleKind::Stopped(StopReason::Requested),
    )
    .await;
    assert_eq!(
        hv.inspect_vm(&def.spec.name).await.unwrap().record.state,
        VmState::Stopped
    );
    hv.undefine_vm(&def.spec.name).await.unwrap();
    expect_event(&mut events, &def.spec.name, LifecycleKind::Undefined).await;
    assert!(hv.inspect_vm(&def.spec.name).await.is_err());

    assert_eq!(sha256_file(&base), base_sha, "the base disk was written");
    hv.stop_network(&net.name).await.unwrap();
    hv.remove_network(&net.name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_outside_vmr_are_reported_with_their_reason() {
    let Some((hv, fx)) = system("outside", 231).await else {
        return;
    };
    let def = fx.definition("outside", Vec::new()).await;
    let name = def.spec.name.clone();
    let mut events = hv.events();
    hv.define_vm(&def).await.unwrap();
    expect_event(&mut events, &name, LifecycleKind::Defined).await;
    hv.start_vm(&name).await.unwrap();
    expect_event(&mut events, &name, LifecycleKind::Started).await;
    let uri = vmr_tests::libvirt::uri().unwrap();
    let status = Command::new("virsh")
        .args(["-c", &uri, "destroy", name.as_str()])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    expect_event(
        &mut events,
        &name,
        LifecycleKind::Stopped(StopReason::Destroyed),
    )
    .await;
    hv.undefine_vm(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_network_gets_its_bridge_and_dnsmasq() {
    let Some((hv, fx)) = system("natdev", 232).await else {
        return;
    };
    let spec = fx.nat_network("nat", 1);
    let record = hv
        .define_network(&NetworkDefinition {
            spec: spec.clone(),
            project: Some("p".into()),
        })
        .await
        .unwrap();
    let bridge = record.bridge.unwrap();
    assert!(bridge.len() <= 15);
    hv.start_network(&spec.name).await.unwrap();

    let link = Command::new("ip")
        .args(["link", "show", &bridge])
        .output()
        .unwrap();
    assert!(link.status.success(), "bridge {bridge} missing after start");
    let conf = format!("/var/lib/libvirt/dnsmasq/{}.conf", spec.name);
    let conf_text = std::fs::read_to_string(&conf).unwrap_or_else(|e| panic!("{conf}: {e}"));
    let range = spec.ipv4.unwrap().dhcp.unwrap();
    assert!(
        conf_text.contains(&format!("dhcp-range={},{}", range.start, range.end)),
        "{conf_text}"
    );
    assert!(
        dnsmasq_running_with(&conf),
        "no dnsmasq process uses {conf}"
    );

    hv.stop_network(&spec.name).await.unwrap();
    let link = Command::new("ip")
        .args(["link", "show", &bridge])
        .output()
        .unwrap();
    assert!(
        !link.status.success(),
        "bridge {bridge} still there after stop"
    );
    hv.remove_network(&spec.name).await.unwrap();
}

fn dnsmasq_running_with(conf: &str) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        std::fs::read(p.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(conf))
            .unwrap_or(false)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virt_type_defaults_to_kvm_only_with_hardware_virtualisation() {
    let Some(uri) = vmr_tests::libvirt::uri() else {
        return;
    };
    let hv = LibvirtHypervisor::connect(LibvirtConfig::new(uri))
        .await
        .unwrap();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let hardware = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let info = hv.ping().await.unwrap();
    assert!(info.version.starts_with("libvirt "), "{}", info.version);
    if hardware {
        assert!(["kvm", "qemu"].contains(&info.virt_type.as_str()));
    } else {
        // e.g. kvm-pvm: libvirt offers KVM, but guests would hang at boot.
        assert_eq!(info.virt_type, "qemu");
        assert_eq!(hv.virt_type(), VirtType::Qemu);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uefi_vm_starts_with_ovmf() {
    let Some((hv, fx)) = system("uefi", 233).await else {
        return;
    };
    let mut def = fx.definition("uefi", Vec::new()).await;
    def.spec.bootloader = vmr_domain::vm::Bootloader::Uefi;
    hv.define_vm(&def).await.unwrap();
    let details = hv.inspect_vm(&def.spec.name).await.unwrap();
    assert!(
        details.definition.contains("firmware='efi'"),
        "{}",
        details.definition
    );
    hv.start_vm(&def.spec.name).await.unwrap();
    assert_eq!(
        hv.inspect_vm(&def.spec.name).await.unwrap().record.state,
        VmState::Running
    );
    // OVMF reports on the serial console too (its boot manager's messages).
    wait_for_file_containing(&def.console_log, "BdsDxe", Duration::from_secs(60)).await;
    hv.stop_vm(&def.spec.name, StopMode::Force).await.unwrap();
    hv.undefine_vm(&def.spec.name).await.unwrap();
}
