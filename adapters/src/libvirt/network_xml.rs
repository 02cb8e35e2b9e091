//! libvirt network XML, both ways, for the six vmr modes:
//!
//! | mode     | libvirt form                                             |
//! |----------|----------------------------------------------------------|
//! | nat      | `<forward mode='nat'/>`, own bridge, IP, DHCP range      |
//! | isolated | no `<forward>`, own bridge, IP, DHCP range               |
//! | routed   | `<forward mode='route'/>`, own bridge, IP, DHCP range    |
//! | open     | `<forward mode='open'/>`, own bridge, IP, DHCP range     |
//! | bridged  | `<forward mode='bridge'/>` on an existing host bridge    |
//! | macvtap  | `<forward mode='bridge'><interface dev=.../></forward>`  |
//!
//! vmr's own bridges get [`bridge_device_name`]s (15 characters at most).
//! The compose project that created a network is kept in `<metadata>` under
//! [`NETWORK_NS`]; its presence also marks the network as vmr's.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use quick_xml::Writer;
use quick_xml::events::BytesText;
use serde::Deserialize;
use vmr_domain::network::{
    DhcpRange, Ipv4Config, NetworkMode, NetworkName, NetworkSpec, bridge_device_name,
};
use vmr_ports::{HypervisorError, NetworkDefinition};

use super::xml::{XmlResult, finish, new_writer, xml_error};

/// Namespace of vmr's element in a network's `<metadata>`.
pub const NETWORK_NS: &str = "https://vmregistry.io/xmlns/libvirt/network/1";
const PREFIX: &str = "vmr";

/// Renders the network XML for `def`.
pub(crate) fn render(def: &NetworkDefinition) -> Result<String, HypervisorError> {
    let mut w = new_writer();
    write_network(&mut w, def).map_err(|e| xml_error(&e))?;
    finish(w)
}

fn write_network(w: &mut Writer<Vec<u8>>, def: &NetworkDefinition) -> XmlResult {
    let spec = &def.spec;
    w.create_element("network").write_inner_content(|w| {
        w.create_element("name")
            .write_text_content(BytesText::new(spec.name.as_str()))?;
        w.create_element("metadata").write_inner_content(|w| {
            w.create_element(format!("{PREFIX}:network"))
                .with_attribute((format!("xmlns:{PREFIX}").as_str(), NETWORK_NS))
                .write_inner_content(|w| {
                    if let Some(project) = &def.project {
                        w.create_element(format!("{PREFIX}:project"))
                            .write_text_content(BytesText::new(project))?;
                    }
                    Ok(())
                })?;
            Ok(())
        })?;
        match spec.mode {
            NetworkMode::Nat | NetworkMode::Routed | NetworkMode::Open => {
                let mode = match spec.mode {
                    NetworkMode::Nat => "nat",
                    NetworkMode::Routed => "route",
                    _ => "open",
                };
                w.create_element("forward")
                    .with_attribute(("mode", mode))
                    .write_empty()?;
            }
            NetworkMode::Isolated => {}
            NetworkMode::Bridged => {
                w.create_element("forward")
                    .with_attribute(("mode", "bridge"))
                    .write_empty()?;
            }
            NetworkMode::Macvtap => {
                let dev = spec.interface.as_deref().unwrap_or_default();
                w.create_element("forward")
                    .with_attribute(("mode", "bridge"))
                    .write_inner_content(|w| {
                        w.create_element("interface")
                            .with_attribute(("dev", dev))
                            .write_empty()?;
                        Ok(())
                    })?;
            }
        }
        let bridge = match spec.mode {
            NetworkMode::Bridged => spec.bridge.clone(),
            NetworkMode::Macvtap => None,
            _ => Some(bridge_device_name(spec.name.as_str())),
        };
        if let Some(bridge) = &bridge {
            let mut el = w
                .create_element("bridge")
                .with_attribute(("name", bridge.as_str()));
            if spec.mode != NetworkMode::Bridged {
                el = el.with_attributes([("stp", "on"), ("delay", "0")]);
            }
            el.write_empty()?;
        }
        if let Some(ipv4) = &spec.ipv4 {
            let gateway = ipv4.gateway.to_string();
            let prefix = ipv4.subnet.prefix_len().to_string();
            w.create_element("ip")
                .with_attributes([("address", gateway.as_str()), ("prefix", prefix.as_str())])
                .write_inner_content(|w| {
                    if let Some(range) = ipv4.dhcp {
                        let (start, end) = (range.start.to_string(), range.end.to_string());
                        w.create_element("dhcp").write_inner_content(|w| {
                            w.create_element("range")
                                .with_attributes([("start", start.as_str()), ("end", end.as_str())])
                                .write_empty()?;
                            Ok(())
                        })?;
                    }
                    Ok(())
                })?;
        }
        Ok(())
    })?;
    Ok(())
}

// ---- reading ---------------------------------------------------------------

#[derive(Deserialize)]
struct NetworkDoc {
    name: String,
    #[serde(default)]
    metadata: Option<MetadataDoc>,
    #[serde(default)]
    forward: Option<ForwardDoc>,
    #[serde(default)]
    bridge: Option<BridgeDoc>,
    #[serde(default)]
    ip: Vec<IpDoc>,
}

#[derive(Deserialize, Default)]
struct MetadataDoc {
    #[serde(default)]
    network: Vec<NetworkMetaDoc>,
}

#[derive(Deserialize)]
struct NetworkMetaDoc {
    #[serde(rename = "@xmlns:vmr", default)]
    ns: Option<String>,
    #[serde(default)]
    project: Option<String>,
}

#[derive(Deserialize)]
struct ForwardDoc {
    #[serde(rename = "@mode", default)]
    mode: Option<String>,
    #[serde(rename = "@dev", default)]
    dev: Option<String>,
    #[serde(default)]
    interface: Vec<DevDoc>,
}

#[derive(Deserialize)]
struct DevDoc {
    #[serde(rename = "@dev")]
    dev: String,
}

#[derive(Deserialize)]
struct BridgeDoc {
    #[serde(rename = "@name", default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct IpDoc {
    #[serde(rename = "@family", default)]
    family: Option<String>,
    #[serde(rename = "@address", default)]
    address: Option<String>,
    #[serde(rename = "@prefix", default)]
    prefix: Option<String>,
    #[serde(rename = "@netmask", default)]
    netmask: Option<String>,
    #[serde(default)]
    dhcp: Option<DhcpDoc>,
}

#[derive(Deserialize)]
struct DhcpDoc {
    #[serde(default)]
    range: Vec<RangeDoc>,
}

#[derive(Deserialize)]
struct RangeDoc {
    #[serde(rename = "@start")]
    start: String,
    #[serde(rename = "@end")]
    end: String,
}

/// A network read back from libvirt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedNetwork {
    pub spec: NetworkSpec,
    pub project: Option<String>,
    pub managed: bool,
    pub bridge: Option<String>,
}

/// Reads a network's XML. `Ok(None)` for a network vmr cannot describe
/// (a name vmr would not accept, a forward mode outside the six, IPv6 only).
pub(crate) fn parse(xml: &str) -> Result<Option<ParsedNetwork>, HypervisorError> {
    let doc: NetworkDoc = quick_xml::de::from_str(xml).map_err(|e| {
        HypervisorError::Backend(format!("unreadable network XML from libvirt: {e}"))
    })?;
    let Ok(name) = doc.name.parse::<NetworkName>() else {
        return Ok(None);
    };
    let meta = doc
        .metadata
        .unwrap_or_default()
        .network
        .into_iter()
        .find(|m| m.ns.as_deref() == Some(NETWORK_NS));
    let bridge = doc.bridge.and_then(|b| b.name);
    let forward_mode = doc
        .forward
        .as_ref()
        .map(|f| f.mode.as_deref().unwrap_or("nat"));
    let forward_dev = doc.forward.as_ref().and_then(|f| {
        f.interface
            .first()
            .map(|i| i.dev.clone())
            .or_else(|| f.dev.clone())
    });
    let mode = match forward_mode {
        None => NetworkMode::Isolated,
        Some("nat") => NetworkMode::Nat,
        Some("route") => NetworkMode::Routed,
        Some("open") => NetworkMode::Open,
        Some("bridge") if forward_dev.is_some() => NetworkMode::Macvtap,
        Some("bridge") => NetworkMode::Bridged,
        Some("private" | "vepa" | "passthrough") if forward_dev.is_some() => NetworkMode::Macvtap,
        Some(_) => return Ok(None),
    };
    let ipv4 = if mode.has_subnet() {
        let Some(ipv4) = doc.ip.iter().find_map(ipv4_config) else {
            return Ok(None);
        };
        Some(ipv4)
    } else {
        None
    };
    let spec = NetworkSpec {
        name,
        mode,
        ipv4,
        bridge: (mode == NetworkMode::Bridged)
            .then(|| bridge.clone())
            .flatten(),
        interface: (mode == NetworkMode::Macvtap)
            .then_some(forward_dev)
            .flatten(),
    };
    Ok(Some(ParsedNetwork {
        spec,
        project: meta.as_ref().and_then(|m| m.project.clone()),
        managed: meta.is_some(),
        bridge,
    }))
}

fn ipv4_config(ip: &IpDoc) -> Option<Ipv4Config> {
    if ip.family.as_deref().is_some_and(|f| f != "ipv4") {
        return None;
    }
    let gateway: Ipv4Addr = ip.address.as_deref()?.parse().ok()?;
    let prefix = match (&ip.prefix, &ip.netmask) {
        (Some(p), _) => p.trim().parse::<u8>().ok()?,
        (None, Some(mask)) => {
            let mask: Ipv4Addr = mask.parse().ok()?;
            ipnet::ipv4_mask_to_prefix(mask).ok()?
        }
        (None, None) => 24,
    };
    let subnet = Ipv4Net::new(gateway, prefix).ok()?.trunc();
    let dhcp = ip
        .dhcp
        .as_ref()
        .and_then(|d| d.range.first())
        .and_then(|r| {
            Some(DhcpRange {
                start: r.start.parse().ok()?,
                end: r.end.parse().ok()?,
            })
        });
    Some(Ipv4Config {
        subnet,
        gateway,
        dhcp,
    })
}
