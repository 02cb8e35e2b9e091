//! libvirt domain XML for a vmr VM, both ways. Writing: the hardware from
//! the [`VmDefinition`] and vmr's own facts (image, compose project and
//! service, restart policy, disk size, static addresses, spec hash) in
//! `<metadata>` under the [`VM_NS`] namespace. Reading: the same facts back,
//! with the hardware as libvirt now reports it, so a restarted daemon
//! recovers every VM from libvirt alone. Every value goes through
//! quick-xml's escaping; nothing is spliced into XML text by hand.

mod read;

use quick_xml::Writer;
use quick_xml::events::BytesText;
use vmr_domain::vm::Bootloader;
use vmr_ports::{HypervisorError, VmDefinition};

pub use read::{ParsedDomain, attached_networks, parse};

use super::xml::{XmlResult, finish, new_writer, xml_error};

/// The virtio-serial port name QEMU's guest agent listens on.
pub const GUEST_AGENT_CHANNEL: &str = "org.qemu.guest_agent.0";

/// Namespace of vmr's element in a domain's `<metadata>`.
pub const VM_NS: &str = "https://vmregistry.io/xmlns/libvirt/vm/1";
const VM_PREFIX: &str = "vmr";

/// Renders the domain XML for `def`, with `<domain type=virt_type>`.
pub fn render(def: &VmDefinition, virt_type: &str) -> Result<String, HypervisorError> {
    let mut w = new_writer();
    write_domain(&mut w, def, virt_type).map_err(xml_error)?;
    finish(w)
}

fn write_domain(w: &mut Writer<Vec<u8>>, def: &VmDefinition, virt_type: &str) -> XmlResult {
    let spec = &def.spec;
    w.create_element("domain")
        .with_attribute(("type", virt_type))
        .write_inner_content(|w| {
            text(w, "name", spec.name.as_str())?;
            w.create_element("metadata")
                .write_inner_content(|w| write_metadata(w, def))?;
            let kib = spec.memory.bytes().div_ceil(1024).to_string();
            w.create_element("memory")
                .with_attribute(("unit", "KiB"))
                .write_text_content(BytesText::new(&kib))?;
            text(w, "vcpu", &spec.cpu.to_string())?;
            write_os(w, def)?;
            w.create_element("features").write_inner_content(|w| {
                w.create_element("acpi").write_empty()?;
                w.create_element("apic").write_empty()?;
                Ok(())
            })?;
            match virt_type {
                "kvm" => {
                    w.create_element("cpu")
                        .with_attribute(("mode", "host-passthrough"))
                        .write_empty()?;
                }
                // TCG: every feature QEMU can emulate, so images built for
                // x86-64-v2 and later still boot.
                "qemu" => {
                    w.create_element("cpu")
                        .with_attribute(("mode", "maximum"))
                        .write_empty()?;
                }
                _ => {}
            }
            w.create_element("clock")
                .with_attribute(("offset", "utc"))
                .write_empty()?;
            text(w, "on_poweroff", "destroy")?;
            text(w, "on_reboot", "restart")?;
            text(w, "on_crash", "destroy")?;
            w.create_element("devices")
                .write_inner_content(|w| write_devices(w, def))?;
            Ok(())
        })?;
    Ok(())
}

fn write_os(w: &mut Writer<Vec<u8>>, def: &VmDefinition) -> XmlResult {
    let mut os = w.create_element("os");
    if def.spec.bootloader == Bootloader::Uefi {
        os = os.with_attribute(("firmware", "efi"));
    }
    os.write_inner_content(|w| {
        w.create_element("type")
            .with_attributes([("arch", "x86_64"), ("machine", "q35")])
            .write_text_content(BytesText::new("hvm"))?;
        if def.spec.bootloader == Bootloader::Uefi {
            // Plain OVMF: the secure-boot builds need SMM and enrolled keys.
            w.create_element("firmware").write_inner_content(|w| {
                w.create_element("feature")
                    .with_attributes([("enabled", "no"), ("name", "secure-boot")])
                    .write_empty()?;
                Ok(())
            })?;
        }
        if def.boot_from_cdrom {
            w.create_element("boot")
                .with_attribute(("dev", "cdrom"))
                .write_empty()?;
        }
        w.create_element("boot")
            .with_attribute(("dev", "hd"))
            .write_empty()?;
        // SeaBIOS prints to the serial console only when asked, and its
        // banner is the first sign of life in the console log.
        w.create_element("bios")
            .with_attribute(("useserial", "yes"))
            .write_empty()?;
        Ok(())
    })?;
    Ok(())
}

fn write_devices(w: &mut Writer<Vec<u8>>, def: &VmDefinition) -> XmlResult {
    if let Some(disk) = &def.disk {
        let path = disk.path.to_string_lossy();
        w.create_element("disk")
            .with_attributes([("type", "file"), ("device", "disk")])
            .write_inner_content(|w| {
                w.create_element("driver")
                    .with_attributes([("name", "qemu"), ("type", disk.format.as_str())])
                    .write_empty()?;
                w.create_element("source")
                    .with_attribute(("file", path.as_ref()))
                    .write_empty()?;
                w.create_element("target")
                    .with_attributes([("dev", "vda"), ("bus", "virtio")])
                    .write_empty()?;
                Ok(())
            })?;
    }
    // CD-ROMs (a boot ISO, the cloud-init seed) sit on a virtio-scsi
    // controller: cloud kernels (Debian's linux-image-cloud-amd64, Ubuntu's
    // -kvm) carry virtio-scsi but no AHCI, so on q35's SATA bus their
    // cloud-init never finds its NoCloud seed. SeaBIOS and OVMF both boot
    // from virtio-scsi, and the seed stays a CD-ROM as cloud images expect.
    if !def.cdroms.is_empty() {
        w.create_element("controller")
            .with_attributes([("type", "scsi"), ("index", "0"), ("model", "virtio-scsi")])
            .write_empty()?;
    }
    for (index, cdrom) in def.cdroms.iter().enumerate() {
        let path = cdrom.to_string_lossy();
        let dev = scsi_device_name(index);
        w.create_element("disk")
            .with_attributes([("type", "file"), ("device", "cdrom")])
            .write_inner_content(|w| {
                w.create_element("driver")
                    .with_attributes([("name", "qemu"), ("type", "raw")])
                    .write_empty()?;
                w.create_element("source")
                    .with_attribute(("file", path.as_ref()))
                    .write_empty()?;
                w.create_element("target")
                    .with_attributes([("dev", dev.as_str()), ("bus", "scsi")])
                    .write_empty()?;
                w.create_element("readonly").write_empty()?;
                Ok(())
            })?;
    }
    for nic in &def.spec.networks {
        let mac = nic.mac.to_string();
        w.create_element("interface")
            .with_attribute(("type", "network"))
            .write_inner_content(|w| {
                w.create_element("mac")
                    .with_attribute(("address", mac.as_str()))
                    .write_empty()?;
                w.create_element("source")
                    .with_attribute(("network", nic.network.as_str()))
                    .write_empty()?;
                w.create_element("model")
                    .with_attribute(("type", "virtio"))
                    .write_empty()?;
                Ok(())
            })?;
    }
    // A pty keeps `virsh console` working; virtlogd copies everything the
    // guest prints to the log file.
    let log = def.console_log.to_string_lossy();
    w.create_element("serial")
        .with_attribute(("type", "pty"))
        .write_inner_content(|w| {
            w.create_element("log")
                .with_attributes([("file", log.as_ref()), ("append", "on")])
                .write_empty()?;
            w.create_element("target")
                .with_attribute(("port", "0"))
                .write_empty()?;
            Ok(())
        })?;
    w.create_element("console")
        .with_attribute(("type", "pty"))
        .write_inner_content(|w| {
            w.create_element("target")
                .with_attributes([("type", "serial"), ("port", "0")])
                .write_empty()?;
            Ok(())
        })?;
    // The guest agent's virtio-serial port, for `vmr exec` (and, where the
    // guest runs qemu-guest-agent, addresses without a network lease);
    // libvirt picks the socket's path.
    w.create_element("channel")
        .with_attribute(("type", "unix"))
        .write_inner_content(|w| {
            w.create_element("target")
                .with_attributes([("type", "virtio"), ("name", GUEST_AGENT_CHANNEL)])
                .write_empty()?;
            Ok(())
        })?;
    w.create_element("rng")
        .with_attribute(("model", "virtio"))
        .write_inner_content(|w| {
            w.create_element("backend")
                .with_attribute(("model", "random"))
                .write_text_content(BytesText::new("/dev/urandom"))?;
            Ok(())
        })?;
    Ok(())
}

fn write_metadata(w: &mut Writer<Vec<u8>>, def: &VmDefinition) -> XmlResult {
    let spec = &def.spec;
    let el = |name: &str| format!("{VM_PREFIX}:{name}");
    w.create_element(el("vm"))
        .with_attribute((format!("xmlns:{VM_PREFIX}").as_str(), VM_NS))
        .write_inner_content(|w| {
            let digest = spec.labels.image_digest.as_ref().map(ToString::to_string);
            let mut image = w
                .create_element(el("image"))
                .with_attribute(("reference", spec.labels.image.as_str()));
            if let Some(digest) = &digest {
                image = image.with_attribute(("digest", digest.as_str()));
            }
            image.write_empty()?;
            if spec.labels.project.is_some() || spec.labels.service.is_some() {
                let mut compose = w.create_element(el("compose"));
                if let Some(project) = &spec.labels.project {
                    compose = compose.with_attribute(("project", project.as_str()));
                }
                if let Some(service) = &spec.labels.service {
                    compose = compose.with_attribute(("service", service.as_str()));
                }
                compose.write_empty()?;
            }
            text(w, &el("restart-policy"), spec.restart_policy.as_str())?;
            // libvirt rounds memory to KiB; the exact request is kept here.
            text(w, &el("memory"), &spec.memory.bytes().to_string())?;
            if let Some(size) = spec.disk_size {
                text(w, &el("disk-size"), &size.bytes().to_string())?;
            }
            text(w, &el("spec-hash"), &def.spec_hash)?;
            for nic in &spec.networks {
                let mac = nic.mac.to_string();
                let ip = nic.static_ip.map(|ip| ip.to_string());
                let gateway = nic.gateway.map(|g| g.to_string());
                let mut e = w
                    .create_element(el("nic"))
                    .with_attributes([("mac", mac.as_str()), ("network", nic.network.as_str())]);
                if let Some(ip) = &ip {
                    e = e.with_attribute(("static-ip", ip.as_str()));
                }
                if let Some(gateway) = &gateway {
                    e = e.with_attribute(("gateway", gateway.as_str()));
                }
                e.write_empty()?;
            }
            Ok(())
        })?;
    Ok(())
}

fn text(w: &mut Writer<Vec<u8>>, name: &str, value: &str) -> XmlResult {
    w.create_element(name)
        .write_text_content(BytesText::new(value))?;
    Ok(())
}

/// `sda`, `sdb`, ... `sdz`, `sdaa`, ...
fn scsi_device_name(index: usize) -> String {
    let mut suffix = Vec::new();
    let mut n = index;
    loop {
        suffix.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    suffix.reverse();
    format!("sd{}", String::from_utf8_lossy(&suffix))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use vmr_domain::image::DiskFormat;
    use vmr_domain::units::ByteSize;
    use vmr_domain::vm::{RestartPolicy, VmLabels, VmSpec};
    use vmr_ports::DiskAttachment;

    use super::*;

    fn definition(cdroms: &[&str]) -> VmDefinition {
        let spec = VmSpec {
            name: "web".parse().unwrap(),
            cpu: 1,
            memory: ByteSize::mib(256),
            disk_size: None,
            bootloader: Bootloader::Bios,
            networks: Vec::new(),
            restart_policy: RestartPolicy::No,
            labels: VmLabels {
                image: "reg.example/a:b".into(),
                image_digest: None,
                project: None,
                service: None,
            },
        };
        let spec_hash = spec.spec_hash();
        VmDefinition {
            spec,
            disk: Some(DiskAttachment {
                path: "/r/disk.qcow2".into(),
                format: DiskFormat::Qcow2,
            }),
            cdroms: cdroms.iter().map(PathBuf::from).collect(),
            boot_from_cdrom: false,
            console_log: "/r/console.log".into(),
            spec_hash,
        }
    }

    #[test]
    fn cdroms_sit_on_a_virtio_scsi_controller_a_cloud_kernel_has() {
        let def = definition(&["/r/boot.iso", "/r/cidata.iso"]);
        let xml = render(&def, "qemu").unwrap();
        assert_eq!(
            xml.matches(r#"<controller type="scsi" index="0" model="virtio-scsi"/>"#)
                .count(),
            1,
            "{xml}"
        );
        assert!(xml.contains(r#"<target dev="sda" bus="scsi"/>"#), "{xml}");
        assert!(xml.contains(r#"<target dev="sdb" bus="scsi"/>"#), "{xml}");
        assert!(!xml.contains("sata"), "{xml}");
        // Read back as the same CD-ROMs, in order.
        let parsed = parse(&xml).unwrap().unwrap();
        assert_eq!(parsed.cdroms, def.cdroms);
    }

    #[test]
    fn no_cdrom_no_scsi_controller() {
        let xml = render(&definition(&[]), "qemu").unwrap();
        assert!(!xml.contains("scsi"), "{xml}");
    }

    #[test]
    fn scsi_names() {
        assert_eq!(scsi_device_name(0), "sda");
        assert_eq!(scsi_device_name(1), "sdb");
        assert_eq!(scsi_device_name(25), "sdz");
        assert_eq!(scsi_device_name(26), "sdaa");
    }
}
