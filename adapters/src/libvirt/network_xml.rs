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

mod read;

use quick_xml::Writer;
use quick_xml::events::BytesText;
use vmr_domain::network::{NetworkMode, bridge_device_name};
use vmr_ports::{HypervisorError, NetworkDefinition};

pub use read::{ParsedNetwork, parse};

use super::xml::{XmlResult, finish, new_writer, xml_error};

/// Namespace of vmr's element in a network's `<metadata>`.
pub const NETWORK_NS: &str = "https://vmregistry.io/xmlns/libvirt/network/1";
const PREFIX: &str = "vmr";

/// Renders the network XML for `def`.
pub fn render(def: &NetworkDefinition) -> Result<String, HypervisorError> {
    let mut w = new_writer();
    write_network(&mut w, def).map_err(xml_error)?;
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
