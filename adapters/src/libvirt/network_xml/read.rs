//! Reading a network's XML back into a [`NetworkSpec`], for vmr's networks
//! and for the other libvirt networks vmr can describe (`external: true`
//! networks of compose files).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Deserialize;
use vmr_domain::network::{DhcpRange, Ipv4Config, NetworkMode, NetworkName, NetworkSpec};
use vmr_ports::HypervisorError;

use super::NETWORK_NS;

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
pub struct ParsedNetwork {
    pub spec: NetworkSpec,
    pub project: Option<String>,
    pub managed: bool,
    pub bridge: Option<String>,
}

/// Reads a network's XML. `Ok(None)` for a network vmr cannot describe
/// (a name vmr would not accept, a forward mode outside the six, IPv6 only).
pub fn parse(xml: &str) -> Result<Option<ParsedNetwork>, HypervisorError> {
    let doc: NetworkDoc = quick_xml::de::from_str(xml).map_err(|e| {
        HypervisorError::backend(format!("unreadable network XML from libvirt: {e}"), e)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirts_default_network_reads_as_an_unmanaged_nat_network() {
        let xml = r#"<network>
  <name>default</name>
  <forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward>
  <bridge name='virbr0' stp='on' delay='0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp>
  </ip>
</network>"#;
        let parsed = parse(xml).unwrap().unwrap();
        assert_eq!(parsed.spec.mode, NetworkMode::Nat);
        let ipv4 = parsed.spec.ipv4.unwrap();
        assert_eq!(ipv4.subnet.to_string(), "192.168.122.0/24");
        assert_eq!(ipv4.gateway, Ipv4Addr::new(192, 168, 122, 1));
        assert_eq!(ipv4.dhcp.unwrap().end, Ipv4Addr::new(192, 168, 122, 254));
        assert_eq!(parsed.bridge.as_deref(), Some("virbr0"));
        assert!(!parsed.managed);
    }

    #[test]
    fn forms_outside_the_six_modes_are_not_described() {
        let hostdev = "<network><name>sriov</name><forward mode='hostdev'/></network>";
        assert_eq!(parse(hostdev).unwrap(), None);
        let v6 =
            "<network><name>v6</name><ip family='ipv6' address='fd00::1' prefix='64'/></network>";
        assert_eq!(parse(v6).unwrap(), None);
    }
}
