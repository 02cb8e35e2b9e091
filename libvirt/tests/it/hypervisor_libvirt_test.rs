//! The hypervisor contract against libvirt's test driver: in-process, no
//! daemon, nothing touches the host. Each scenario gets a private, empty
//! host (`test:///<dir>/host.xml`); disks are still real files, made by
//! the disk adapter. Also checks the XML vmr writes and reads directly.

use std::sync::Arc;
use std::time::Duration;

use vmr_libvirt::{LibvirtConfig, LibvirtHypervisor, VM_NS};
use vmr_ports::{Hypervisor, NetworkDriver, VmDriver};
use vmr_tests::hypervisor_contract::Fixture;

async fn test_driver(prefix: &str, octet: u8) -> Option<(Arc<dyn Hypervisor>, Fixture)> {
    let fx = Fixture::new(&format!("ct-{prefix}"), octet, "br0", "eth0");
    let host = fx.path("host.xml");
    std::fs::write(&host, "<node>\n</node>\n").unwrap();
    let mut config = LibvirtConfig::new(format!("test://{}", host.display()));
    config.event_poll_interval = Duration::from_millis(50);
    let hv = LibvirtHypervisor::connect(config)
        .await
        .expect("test driver connects");
    Some((Arc::new(hv), fx))
}

vmr_tests::hypervisor_contract_tests!(test_driver);

#[tokio::test]
async fn default_test_host_is_reachable_and_its_foreign_objects_ignored() {
    let mut config = LibvirtConfig::new("test:///default");
    config.event_poll_interval = Duration::from_millis(50);
    let hv = LibvirtHypervisor::connect(config).await.unwrap();
    let info = hv.ping().await.unwrap();
    assert_eq!(info.backend, "libvirt");
    assert_eq!(info.uri, "test:///default");
    assert_eq!(info.virt_type, "qemu");
    // The test host's own domain `test` has no vmr metadata: not a vmr VM.
    assert!(
        hv.list_vms()
            .await
            .unwrap()
            .iter()
            .all(|v| v.spec.name.as_str() != "test")
    );
    // Its `default` network is a plain NAT network vmr can describe.
    let nets = hv.list_networks().await.unwrap();
    let default = nets
        .iter()
        .find(|n| n.spec.name.as_str() == "default")
        .expect("default network");
    assert!(!default.managed);
}

#[tokio::test]
async fn domain_xml_carries_the_vmr_namespace_and_hardware() {
    let (hv, fx) = test_driver("xml", 220).await.unwrap();
    let mut def = fx.definition("xml", Vec::new()).await;
    def.cdroms = vec![fx.path("seed.iso")];
    std::fs::write(&def.cdroms[0], b"iso").unwrap();
    def.boot_from_cdrom = true;
    hv.define_vm(&def).await.unwrap();
    let xml = hv.inspect_vm(&def.spec.name).await.unwrap().definition;
    assert!(xml.contains(VM_NS), "{xml}");
    assert!(xml.contains("<vcpu"), "{xml}");
    assert!(xml.contains("<memory unit='KiB'>131072</memory>"), "{xml}");
    assert!(xml.contains("bus='virtio'"), "{xml}");
    assert!(xml.contains("device='cdrom'"), "{xml}");
    assert!(xml.contains("useserial='yes'"), "{xml}");
    // The guest agent's channel, as libvirt kept it, is read back.
    assert!(xml.contains("org.qemu.guest_agent.0"), "{xml}");
    let parsed = vmr_adapters::libvirt::domain_xml::parse(&xml)
        .unwrap()
        .unwrap();
    assert!(parsed.guest_agent);
    assert!(
        xml.contains(&def.console_log.display().to_string()),
        "{xml}"
    );
    let record = hv.inspect_vm(&def.spec.name).await.unwrap().record;
    assert_eq!(record.cdroms, def.cdroms);
}
