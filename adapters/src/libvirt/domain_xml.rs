//! libvirt domain XML for a vmr VM, both ways. Writing: the hardware from
//! the [`VmDefinition`] and vmr's own facts (image, compose project and
//! service, restart policy, disk size, static addresses, spec hash) in
//! `<metadata>` under the [`VM_NS`] namespace. Reading: the same facts back,
//! with the hardware as libvirt now reports it, so a restarted daemon
//! recovers every VM from libvirt alone. Every value goes through
//! quick-xml's escaping; nothing is spliced into XML text by hand.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use quick_xml::Writer;
use quick_xml::events::BytesText;
use serde::Deserialize;
use vmr_domain::image::{Digest, DiskFormat};
use vmr_domain::network::{MacAddr, NetworkName};
use vmr_domain::units::ByteSize;
use vmr_domain::vm::{Bootloader, NetworkAttachment, RestartPolicy, VmLabels, VmName, VmSpec};
use vmr_ports::{DiskAttachment, HypervisorError, VmDefinition};

use super::xml::{XmlResult, finish, memory_bytes, new_writer, xml_error};

/// Namespace of vmr's element in a domain's `<metadata>`.
pub const VM_NS: &str = "https://vmregistry.io/xmlns/libvirt/vm/1";
const VM_PREFIX: &str = "vmr";

/// Renders the domain XML for `def`, with `<domain type=virt_type>`.
pub(crate) fn render(def: &VmDefinition, virt_type: &str) -> Result<String, HypervisorError> {
    let mut w = new_writer();
    write_domain(&mut w, def, virt_type).map_err(|e| xml_error(&e))?;
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
    for (index, cdrom) in def.cdroms.iter().enumerate() {
        let path = cdrom.to_string_lossy();
        let dev = sata_device_name(index);
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
                    .with_attributes([("dev", dev.as_str()), ("bus", "sata")])
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
fn sata_device_name(index: usize) -> String {
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

// ---- reading ---------------------------------------------------------------

#[derive(Deserialize)]
struct DomainDoc {
    name: String,
    #[serde(default)]
    metadata: Option<MetadataDoc>,
    memory: ValueDoc,
    vcpu: ValueDoc,
    os: OsDoc,
    #[serde(default)]
    devices: DevicesDoc,
}

#[derive(Deserialize)]
struct ValueDoc {
    #[serde(rename = "@unit", default)]
    unit: Option<String>,
    #[serde(rename = "$text")]
    value: String,
}

#[derive(Deserialize, Default)]
struct MetadataDoc {
    // quick-xml matches local names: every `*:vm` element lands here, and
    // the namespace declaration tells vmr's apart.
    #[serde(default)]
    vm: Vec<VmMetaDoc>,
}

#[derive(Deserialize)]
struct VmMetaDoc {
    #[serde(rename = "@xmlns:vmr", default)]
    ns: Option<String>,
    #[serde(default)]
    image: Option<ImageDoc>,
    #[serde(default)]
    compose: Option<ComposeDoc>,
    #[serde(rename = "restart-policy", default)]
    restart_policy: Option<String>,
    #[serde(default)]
    memory: Option<String>,
    #[serde(rename = "disk-size", default)]
    disk_size: Option<String>,
    #[serde(rename = "spec-hash", default)]
    spec_hash: Option<String>,
    #[serde(default)]
    nic: Vec<NicDoc>,
}

#[derive(Deserialize)]
struct ImageDoc {
    #[serde(rename = "@reference", default)]
    reference: String,
    #[serde(rename = "@digest", default)]
    digest: Option<String>,
}

#[derive(Deserialize)]
struct ComposeDoc {
    #[serde(rename = "@project", default)]
    project: Option<String>,
    #[serde(rename = "@service", default)]
    service: Option<String>,
}

#[derive(Deserialize)]
struct NicDoc {
    #[serde(rename = "@mac")]
    mac: String,
    #[serde(rename = "@static-ip", default)]
    static_ip: Option<String>,
    #[serde(rename = "@gateway", default)]
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct OsDoc {
    #[serde(rename = "@firmware", default)]
    firmware: Option<String>,
    #[serde(default)]
    loader: Option<LoaderDoc>,
    #[serde(default)]
    boot: Vec<BootDoc>,
}

#[derive(Deserialize)]
struct LoaderDoc {
    #[serde(rename = "@type", default)]
    kind: Option<String>,
    #[serde(rename = "$text", default)]
    path: Option<String>,
}

#[derive(Deserialize)]
struct BootDoc {
    #[serde(rename = "@dev")]
    dev: String,
}

#[derive(Deserialize, Default)]
struct DevicesDoc {
    #[serde(default)]
    disk: Vec<DiskDoc>,
    #[serde(default)]
    interface: Vec<InterfaceDoc>,
    #[serde(default)]
    serial: Vec<SerialDoc>,
}

#[derive(Deserialize)]
struct DiskDoc {
    #[serde(rename = "@device", default)]
    device: Option<String>,
    #[serde(default)]
    driver: Option<DriverDoc>,
    #[serde(default)]
    source: Option<SourceDoc>,
}

#[derive(Deserialize)]
struct DriverDoc {
    #[serde(rename = "@type", default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct SourceDoc {
    #[serde(rename = "@file", default)]
    file: Option<String>,
    #[serde(rename = "@network", default)]
    network: Option<String>,
    #[serde(rename = "@path", default)]
    path: Option<String>,
}

#[derive(Deserialize)]
struct InterfaceDoc {
    #[serde(rename = "@type", default)]
    kind: Option<String>,
    #[serde(default)]
    mac: Option<MacDoc>,
    #[serde(default)]
    source: Option<SourceDoc>,
}

#[derive(Deserialize)]
struct MacDoc {
    #[serde(rename = "@address")]
    address: String,
}

#[derive(Deserialize)]
struct SerialDoc {
    #[serde(default)]
    source: Option<SourceDoc>,
    #[serde(default)]
    log: Option<LogDoc>,
}

#[derive(Deserialize)]
struct LogDoc {
    #[serde(rename = "@file")]
    file: String,
}

/// A vmr VM read back from its domain XML.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParsedDomain {
    pub spec: VmSpec,
    pub disk: Option<DiskAttachment>,
    pub cdroms: Vec<PathBuf>,
    pub boot_from_cdrom: bool,
    pub console_log: Option<PathBuf>,
    pub spec_hash: Option<String>,
}

/// Reads a domain's XML. `Ok(None)` for a domain vmr did not define (no
/// vmr metadata, or a name vmr would not accept).
pub(crate) fn parse(xml: &str) -> Result<Option<ParsedDomain>, HypervisorError> {
    let doc: DomainDoc = quick_xml::de::from_str(xml).map_err(|e| {
        HypervisorError::Backend(format!("unreadable domain XML from libvirt: {e}"))
    })?;
    let Some(meta) = doc
        .metadata
        .unwrap_or_default()
        .vm
        .into_iter()
        .find(|m| m.ns.as_deref() == Some(VM_NS))
    else {
        return Ok(None);
    };
    let Ok(name) = doc.name.parse::<VmName>() else {
        return Ok(None);
    };
    let bad = |what: &str, detail: String| {
        HypervisorError::Backend(format!(
            "domain {name}: unreadable {what} in its XML: {detail}"
        ))
    };

    let libvirt_memory = memory_bytes(doc.memory.unit.as_deref(), &doc.memory.value)
        .map_err(|e| bad("memory", e))?;
    // Keep the exact request unless the domain was resized behind vmr's back.
    let memory = match meta.memory.as_deref().and_then(|m| m.parse::<u64>().ok()) {
        Some(requested) if requested.div_ceil(1024) * 1024 == libvirt_memory => requested,
        _ => libvirt_memory,
    };
    let cpu = doc
        .vcpu
        .value
        .trim()
        .parse::<u32>()
        .map_err(|e| bad("vcpu", e.to_string()))?;
    let bootloader = if doc.os.firmware.as_deref() == Some("efi")
        || doc
            .os
            .loader
            .as_ref()
            .is_some_and(|l| l.kind.as_deref() == Some("pflash") || l.path.is_some())
    {
        Bootloader::Uefi
    } else {
        Bootloader::Bios
    };
    let boot_from_cdrom = doc.os.boot.first().is_some_and(|b| b.dev == "cdrom");

    let mut networks = Vec::new();
    for iface in &doc.devices.interface {
        if iface.kind.as_deref() != Some("network") {
            continue;
        }
        let (Some(mac), Some(network)) = (
            iface.mac.as_ref(),
            iface.source.as_ref().and_then(|s| s.network.as_deref()),
        ) else {
            continue;
        };
        let mac: MacAddr = mac
            .address
            .parse()
            .map_err(|e| bad("MAC address", format!("{e}")))?;
        let network: NetworkName = network
            .parse()
            .map_err(|e| bad("network name", format!("{e}")))?;
        let facts = meta
            .nic
            .iter()
            .find(|n| n.mac.parse::<MacAddr>().ok() == Some(mac));
        let static_ip = facts
            .and_then(|n| n.static_ip.as_deref())
            .map(|ip| {
                ip.parse::<Ipv4Net>()
                    .map_err(|e| bad("static address", e.to_string()))
            })
            .transpose()?;
        let gateway = facts
            .and_then(|n| n.gateway.as_deref())
            .map(|g| {
                g.parse::<Ipv4Addr>()
                    .map_err(|e| bad("gateway", e.to_string()))
            })
            .transpose()?;
        networks.push(NetworkAttachment {
            network,
            mac,
            static_ip,
            gateway,
        });
    }

    let mut disk = None;
    let mut cdroms = Vec::new();
    for d in &doc.devices.disk {
        let Some(file) = d.source.as_ref().and_then(|s| s.file.as_deref()) else {
            continue;
        };
        match d.device.as_deref().unwrap_or("disk") {
            "cdrom" => cdroms.push(PathBuf::from(file)),
            "disk" if disk.is_none() => {
                let format = d
                    .driver
                    .as_ref()
                    .and_then(|dr| dr.kind.as_deref())
                    .unwrap_or("raw")
                    .parse::<DiskFormat>()
                    .map_err(|e| bad("disk format", format!("{e}")))?;
                disk = Some(DiskAttachment {
                    path: PathBuf::from(file),
                    format,
                });
            }
            _ => {}
        }
    }
    let console_log = doc.devices.serial.iter().find_map(|s| {
        s.log.as_ref().map(|l| PathBuf::from(&l.file)).or_else(|| {
            s.source
                .as_ref()
                .and_then(|src| src.path.as_deref())
                .map(PathBuf::from)
        })
    });

    let image = meta.image.unwrap_or(ImageDoc {
        reference: String::new(),
        digest: None,
    });
    let image_digest = image
        .digest
        .as_deref()
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| bad("image digest", format!("{e}")))
        })
        .transpose()?;
    let restart_policy = meta
        .restart_policy
        .as_deref()
        .map(|p| {
            p.trim()
                .parse::<RestartPolicy>()
                .map_err(|e| bad("restart policy", format!("{e}")))
        })
        .transpose()?
        .unwrap_or_default();
    let disk_size = meta
        .disk_size
        .as_deref()
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .map(ByteSize)
                .map_err(|e| bad("disk size", e.to_string()))
        })
        .transpose()?;
    let (project, service) = meta
        .compose
        .map_or((None, None), |c| (c.project, c.service));

    Ok(Some(ParsedDomain {
        spec: VmSpec {
            name,
            cpu,
            memory: ByteSize(memory),
            disk_size,
            bootloader,
            networks,
            restart_policy,
            labels: VmLabels {
                image: image.reference,
                image_digest,
                project,
                service,
            },
        },
        disk,
        cdroms,
        boot_from_cdrom,
        console_log,
        spec_hash: meta.spec_hash.map(|h| h.trim().to_owned()),
    }))
}

/// The names of the networks a domain's interfaces attach to.
pub(crate) fn attached_networks(xml: &str) -> Result<Vec<String>, HypervisorError> {
    let doc: DomainDoc = quick_xml::de::from_str(xml).map_err(|e| {
        HypervisorError::Backend(format!("unreadable domain XML from libvirt: {e}"))
    })?;
    Ok(doc
        .devices
        .interface
        .into_iter()
        .filter(|i| i.kind.as_deref() == Some("network"))
        .filter_map(|i| i.source.and_then(|s| s.network))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sata_names() {
        assert_eq!(sata_device_name(0), "sda");
        assert_eq!(sata_device_name(1), "sdb");
        assert_eq!(sata_device_name(25), "sdz");
        assert_eq!(sata_device_name(26), "sdaa");
    }
}
