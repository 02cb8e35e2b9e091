//! Reading a domain's XML back into a [`VmSpec`]: the hardware as libvirt
//! reports it now, vmr's facts from its `<metadata>` element. A domain
//! without that element is not vmr's and reads as `None`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::Deserialize;
use vmr_domain::image::{Digest, DiskFormat};
use vmr_domain::network::{MacAddr, NetworkName};
use vmr_domain::units::ByteSize;
use vmr_domain::vm::{Bootloader, NetworkAttachment, RestartPolicy, VmLabels, VmName, VmSpec};
use vmr_ports::{DiskAttachment, HypervisorError};

use super::VM_NS;
use crate::libvirt::xml::memory_bytes;

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
    #[serde(default)]
    channel: Vec<ChannelDoc>,
}

#[derive(Deserialize)]
struct ChannelDoc {
    #[serde(default)]
    target: Option<ChannelTargetDoc>,
}

#[derive(Deserialize)]
struct ChannelTargetDoc {
    #[serde(rename = "@name", default)]
    name: Option<String>,
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
pub struct ParsedDomain {
    pub spec: VmSpec,
    pub disk: Option<DiskAttachment>,
    pub cdroms: Vec<PathBuf>,
    pub boot_from_cdrom: bool,
    pub console_log: Option<PathBuf>,
    pub spec_hash: Option<String>,
    /// The domain has the guest agent's channel (VMs defined before vmr
    /// added it have none).
    pub guest_agent: bool,
}

/// Reads a domain's XML. `Ok(None)` for a domain vmr did not define (no
/// vmr metadata, or a name vmr would not accept).
pub fn parse(xml: &str) -> Result<Option<ParsedDomain>, HypervisorError> {
    let doc: DomainDoc = quick_xml::de::from_str(xml).map_err(|e| {
        HypervisorError::backend(format!("unreadable domain XML from libvirt: {e}"), e)
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
        HypervisorError::Backend(
            format!("domain {name}: unreadable {what} in its XML: {detail}").into(),
        )
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
        guest_agent: doc.devices.channel.iter().any(|c| {
            c.target.as_ref().and_then(|t| t.name.as_deref()) == Some(super::GUEST_AGENT_CHANNEL)
        }),
    }))
}

/// The names of the networks a domain's interfaces attach to.
pub fn attached_networks(xml: &str) -> Result<Vec<String>, HypervisorError> {
    let doc: DomainDoc = quick_xml::de::from_str(xml).map_err(|e| {
        HypervisorError::backend(format!("unreadable domain XML from libvirt: {e}"), e)
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

    const FOREIGN: &str = r#"<domain type='kvm'>
  <name>web</name>
  <metadata>
    <other:vm xmlns:other="https://example.org/other"><other:image reference="x"/></other:vm>
  </metadata>
  <memory unit='GiB'>1</memory>
  <vcpu>1</vcpu>
  <os><type>hvm</type></os>
</domain>"#;

    #[test]
    fn a_same_named_element_of_another_namespace_is_not_vmr_metadata() {
        assert_eq!(parse(FOREIGN).unwrap(), None);
    }

    #[test]
    fn libvirt_rewritten_hardware_is_read_as_it_now_is() {
        let xml = format!(
            r#"<domain type='kvm'>
  <name>web</name>
  <metadata>
    <vmr:vm xmlns:vmr="{VM_NS}">
      <vmr:image reference="reg.example/a:b"/>
      <vmr:memory>1073741824</vmr:memory>
      <vmr:restart-policy>always</vmr:restart-policy>
    </vmr:vm>
  </metadata>
  <memory unit='KiB'>2097152</memory>
  <vcpu placement='static'>4</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-10.0'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <boot dev='cdrom'/>
  </os>
  <devices>
    <disk type='file' device='cdrom'><source file='/r/boot.iso'/><target dev='sda'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/r/disk.raw'/></disk>
    <interface type='bridge'><mac address='52:54:00:00:00:09'/><source bridge='br0'/></interface>
    <interface type='network'><mac address='52:54:00:00:00:0a'/><source network='lan'/></interface>
    <serial type='file'><source path='/r/console.log'/></serial>
  </devices>
</domain>"#
        );
        let parsed = parse(&xml).unwrap().unwrap();
        // Resized behind vmr's back: libvirt's value wins over the metadata.
        assert_eq!(parsed.spec.memory, ByteSize::gib(2));
        assert_eq!(parsed.spec.cpu, 4);
        assert_eq!(parsed.spec.bootloader, Bootloader::Uefi);
        assert_eq!(parsed.spec.restart_policy, RestartPolicy::Always);
        assert!(parsed.boot_from_cdrom);
        assert_eq!(parsed.cdroms, vec![PathBuf::from("/r/boot.iso")]);
        let disk = parsed.disk.unwrap();
        assert_eq!(
            (disk.path, disk.format),
            (PathBuf::from("/r/disk.raw"), DiskFormat::Raw)
        );
        // Only NICs on libvirt networks are vmr attachments.
        assert_eq!(parsed.spec.networks.len(), 1);
        assert_eq!(parsed.spec.networks[0].network.as_str(), "lan");
        assert_eq!(parsed.console_log, Some(PathBuf::from("/r/console.log")));
        assert_eq!(parsed.spec_hash, None);
        // Defined before vmr added the guest agent's channel.
        assert!(!parsed.guest_agent);
    }

    #[test]
    fn corrupt_metadata_is_an_error_not_a_guess() {
        let xml = format!(
            r#"<domain><name>web</name><metadata><vmr:vm xmlns:vmr="{VM_NS}">
<vmr:restart-policy>sometimes</vmr:restart-policy></vmr:vm></metadata>
<memory>1024</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>"#
        );
        let err = parse(&xml).unwrap_err();
        assert!(err.to_string().contains("restart policy"), "{err}");
    }
}
