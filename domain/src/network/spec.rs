//! A network's specification and its addressing rules: the subnet, the
//! gateway (default: the first host), the DHCP range (default: the second
//! half of the subnet), which fields each mode needs, and where a static
//! address may lie.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{NetworkMode, NetworkName, check_ifname};
use crate::validation::ValidationError;

/// Shortest prefix accepted: a /8 is already 16 million addresses.
const MIN_PREFIX: u8 = 8;
/// Longest prefix accepted: a /30 still has a gateway and one VM.
const MAX_PREFIX: u8 = 30;

/// An inclusive range of addresses handed out by DHCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DhcpRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl DhcpRange {
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.start <= addr && addr <= self.end
    }
}

/// The IPv4 addressing of a network that vmr manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Config {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// `None` when DHCP is off.
    pub dhcp: Option<DhcpRange>,
}

impl Ipv4Config {
    /// Checks that `addr` may be given to a VM statically: inside the
    /// subnet, not its network, broadcast or gateway address, not inside the
    /// DHCP range. Returns the reason on failure.
    pub fn check_static_ip(&self, addr: Ipv4Addr) -> Result<(), String> {
        let subnet = self.subnet;
        if !subnet.contains(&addr) {
            return Err(format!("{addr} is outside the subnet {subnet}"));
        }
        if addr == subnet.network() {
            return Err(format!("{addr} is the network address of {subnet}"));
        }
        if addr == subnet.broadcast() {
            return Err(format!("{addr} is the broadcast address of {subnet}"));
        }
        if addr == self.gateway {
            return Err(format!("{addr} is the gateway address"));
        }
        if let Some(range) = self.dhcp
            && range.contains(addr)
        {
            return Err(format!(
                "{addr} lies inside the DHCP range {}-{}",
                range.start, range.end
            ));
        }
        Ok(())
    }

    /// `addr` with the subnet's prefix length, as a NIC is configured.
    pub fn with_prefix(&self, addr: Ipv4Addr) -> Ipv4Net {
        Ipv4Net::new(addr, self.subnet.prefix_len()).unwrap_or(self.subnet)
    }
}

/// A virtual network to create.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetworkSpec {
    pub name: NetworkName,
    pub mode: NetworkMode,
    /// Set exactly for nat, isolated, routed and open.
    pub ipv4: Option<Ipv4Config>,
    /// The existing host bridge of a bridged network.
    pub bridge: Option<String>,
    /// The host interface of a macvtap network.
    pub interface: Option<String>,
}

/// The optional settings of a network, already parsed, before defaults and
/// validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkParams {
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub dhcp_start: Option<Ipv4Addr>,
    pub dhcp_end: Option<Ipv4Addr>,
    /// `dhcp: false` / `--no-dhcp`.
    pub no_dhcp: bool,
    pub bridge: Option<String>,
    pub interface: Option<String>,
}

fn parse_addr(field: &str, value: Option<&str>) -> Result<Option<Ipv4Addr>, ValidationError> {
    value
        .map(|v| {
            v.trim().parse::<Ipv4Addr>().map_err(|_| {
                ValidationError::new(field, format!("`{}` is not an IPv4 address", v.escape_debug()))
            })
        })
        .transpose()
}

/// Parses a subnet in CIDR form (`192.168.70.0/24`).
pub(crate) fn parse_subnet(field: &str, value: &str) -> Result<Ipv4Net, ValidationError> {
    value.trim().parse::<Ipv4Net>().map_err(|_| {
        ValidationError::new(
            field,
            format!(
                "`{}` is not an IPv4 subnet like 192.168.70.0/24",
                value.escape_debug()
            ),
        )
    })
}

impl NetworkSpec {
    /// Builds a spec from the raw strings of a command line or request,
    /// applying the defaults of FORMATS.md.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        name: &str,
        mode: &str,
        subnet: Option<&str>,
        gateway: Option<&str>,
        dhcp_start: Option<&str>,
        dhcp_end: Option<&str>,
        no_dhcp: bool,
        bridge: Option<&str>,
        interface: Option<&str>,
    ) -> Result<Self, ValidationError> {
        let name = name.parse::<NetworkName>()?;
        let mode = mode.parse::<NetworkMode>()?;
        let params = NetworkParams {
            subnet: subnet.map(|s| parse_subnet("subnet", s)).transpose()?,
            gateway: parse_addr("gateway", gateway)?,
            dhcp_start: parse_addr("dhcp.start", dhcp_start)?,
            dhcp_end: parse_addr("dhcp.end", dhcp_end)?,
            no_dhcp,
            bridge: bridge.map(str::to_owned),
            interface: interface.map(str::to_owned),
        };
        Self::new(name, mode, params)
    }

    /// Builds a spec from parsed settings, applying defaults and checking
    /// which fields the mode needs. Error fields are relative (`subnet`,
    /// `dhcp.start`); compose prefixes them with `networks.<key>`.
    pub fn new(
        name: NetworkName,
        mode: NetworkMode,
        params: NetworkParams,
    ) -> Result<Self, ValidationError> {
        let not_for = |field: &str| {
            Err(ValidationError::new(
                field,
                format!("is not used by {mode} networks"),
            ))
        };
        let ipv4 = if mode.has_subnet() {
            let subnet = params.subnet.ok_or_else(|| {
                ValidationError::new("subnet", format!("is required for {mode} networks"))
            })?;
            Some(ipv4_config(subnet, &params)?)
        } else {
            if params.subnet.is_some() {
                return not_for("subnet");
            }
            if params.gateway.is_some() {
                return not_for("gateway");
            }
            if params.dhcp_start.is_some() || params.dhcp_end.is_some() || params.no_dhcp {
                return not_for("dhcp");
            }
            None
        };
        let bridge = match (mode, params.bridge) {
            (NetworkMode::Bridged, Some(bridge)) => {
                check_ifname("bridge", &bridge)?;
                Some(bridge)
            }
            (NetworkMode::Bridged, None) => {
                return Err(ValidationError::new(
                    "bridge",
                    "is required for bridged networks (an existing host bridge)",
                ));
            }
            (_, Some(_)) => return not_for("bridge"),
            (_, None) => None,
        };
        let interface = match (mode, params.interface) {
            (NetworkMode::Macvtap, Some(interface)) => {
                check_ifname("interface", &interface)?;
                Some(interface)
            }
            (NetworkMode::Macvtap, None) => {
                return Err(ValidationError::new(
                    "interface",
                    "is required for macvtap networks (a host interface)",
                ));
            }
            (_, Some(_)) => return not_for("interface"),
            (_, None) => None,
        };
        Ok(Self {
            name,
            mode,
            ipv4,
            bridge,
            interface,
        })
    }
}

fn ipv4_config(subnet: Ipv4Net, params: &NetworkParams) -> Result<Ipv4Config, ValidationError> {
    if subnet.addr() != subnet.network() {
        return Err(ValidationError::new(
            "subnet",
            format!(
                "{subnet} has host bits set; the network is {}/{}",
                subnet.network(),
                subnet.prefix_len()
            ),
        ));
    }
    if !(MIN_PREFIX..=MAX_PREFIX).contains(&subnet.prefix_len()) {
        return Err(ValidationError::new(
            "subnet",
            format!("{subnet}: the prefix length must be between /{MIN_PREFIX} and /{MAX_PREFIX}"),
        ));
    }
    let network = u32::from(subnet.network());
    let broadcast = u32::from(subnet.broadcast());
    let usable = |field: &str, addr: Ipv4Addr| {
        let n = u32::from(addr);
        if !subnet.contains(&addr) {
            Err(ValidationError::new(field, format!("{addr} is outside the subnet {subnet}")))
        } else if n == network || n == broadcast {
            Err(ValidationError::new(
                field,
                format!("{addr} is the network or broadcast address of {subnet}"),
            ))
        } else {
            Ok(addr)
        }
    };
    let gateway = match params.gateway {
        Some(gateway) => usable("gateway", gateway)?,
        None => Ipv4Addr::from(network + 1),
    };
    let dhcp = match (params.no_dhcp, params.dhcp_start, params.dhcp_end) {
        (true, None, None) => None,
        (true, _, _) => {
            return Err(ValidationError::new(
                "dhcp",
                "a DHCP range cannot be given when DHCP is turned off",
            ));
        }
        (false, None, None) => {
            let half = (broadcast - network + 1) / 2;
            Some(DhcpRange {
                start: Ipv4Addr::from(network + half),
                end: Ipv4Addr::from(broadcast - 1),
            })
        }
        (false, Some(start), Some(end)) => {
            let range = DhcpRange {
                start: usable("dhcp.start", start)?,
                end: usable("dhcp.end", end)?,
            };
            if start > end {
                return Err(ValidationError::new(
                    "dhcp.end",
                    format!("{end} comes before the start {start}"),
                ));
            }
            Some(range)
        }
        (false, None, Some(_)) => {
            return Err(ValidationError::new("dhcp.start", "is required with dhcp.end"));
        }
        (false, Some(_), None) => {
            return Err(ValidationError::new("dhcp.end", "is required with dhcp.start"));
        }
    };
    if let Some(range) = dhcp
        && range.contains(gateway)
    {
        return Err(ValidationError::new(
            "gateway",
            format!(
                "{gateway} lies inside the DHCP range {}-{}",
                range.start, range.end
            ),
        ));
    }
    Ok(Ipv4Config {
        subnet,
        gateway,
        dhcp,
    })
}

/// Whether two networks' subnets overlap (networks without a subnet never do).
pub fn overlaps(a: &NetworkSpec, b: &NetworkSpec) -> bool {
    match (a.ipv4, b.ipv4) {
        (Some(a), Some(b)) => subnets_overlap(a.subnet, b.subnet),
        _ => false,
    }
}

pub(crate) fn subnets_overlap(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nat(subnet: &str) -> NetworkSpec {
        NetworkSpec::from_parts("n", "nat", Some(subnet), None, None, None, false, None, None)
            .unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[allow(clippy::too_many_arguments)]
    fn err(
        mode: &str,
        subnet: Option<&str>,
        gateway: Option<&str>,
        start: Option<&str>,
        end: Option<&str>,
        no_dhcp: bool,
        bridge: Option<&str>,
        interface: Option<&str>,
    ) -> ValidationError {
        NetworkSpec::from_parts("n", mode, subnet, gateway, start, end, no_dhcp, bridge, interface)
            .unwrap_err()
    }

    #[test]
    fn defaults_gateway_and_dhcp() {
        let spec = nat("192.168.70.0/24");
        let v4 = spec.ipv4.unwrap();
        assert_eq!(v4.gateway, ip("192.168.70.1"));
        let dhcp = v4.dhcp.unwrap();
        assert_eq!((dhcp.start, dhcp.end), (ip("192.168.70.128"), ip("192.168.70.254")));
        let small = nat("10.0.0.0/30").ipv4.unwrap();
        assert_eq!(small.gateway, ip("10.0.0.1"));
        assert_eq!(small.dhcp.unwrap().start, ip("10.0.0.2"));
        assert_eq!(small.dhcp.unwrap().end, ip("10.0.0.2"));
    }

    #[test]
    fn explicit_values_and_dhcp_off() {
        let spec = NetworkSpec::from_parts(
            "n", "isolated", Some("192.168.70.0/24"), Some("192.168.70.254"),
            Some("192.168.70.100"), Some("192.168.70.200"), false, None, None,
        )
        .unwrap();
        let v4 = spec.ipv4.unwrap();
        assert_eq!(v4.gateway, ip("192.168.70.254"));
        assert_eq!(v4.dhcp.unwrap().start, ip("192.168.70.100"));
        let off = NetworkSpec::from_parts("n", "routed", Some("10.1.0.0/16"), None, None, None, true, None, None)
            .unwrap();
        assert_eq!(off.ipv4.unwrap().dhcp, None);
    }

    #[test]
    fn subnet_rules() {
        assert_eq!(err("nat", None, None, None, None, false, None, None).field, "subnet");
        for mode in ["isolated", "routed", "open"] {
            assert_eq!(err(mode, None, None, None, None, false, None, None).field, "subnet");
        }
        let e = err("nat", Some("192.168.70.5/24"), None, None, None, false, None, None);
        assert!(e.reason.contains("192.168.70.0/24"), "{e}");
        assert_eq!(err("nat", Some("10.0.0.0/31"), None, None, None, false, None, None).field, "subnet");
        assert_eq!(err("nat", Some("10.0.0.0/4"), None, None, None, false, None, None).field, "subnet");
        assert_eq!(err("nat", Some("nope"), None, None, None, false, None, None).field, "subnet");
        assert_eq!(err("nat", Some("::1/64"), None, None, None, false, None, None).field, "subnet");
    }

    #[test]
    fn gateway_rules() {
        let s = Some("192.168.70.0/24");
        for bad in ["192.168.71.1", "192.168.70.0", "192.168.70.255", "192.168.70.200", "x"] {
            let e = err("nat", s, Some(bad), None, None, false, None, None);
            assert_eq!(e.field, "gateway", "{bad}: {e}");
        }
    }

    #[test]
    fn dhcp_rules() {
        let s = Some("192.168.70.0/24");
        let f = |start, end, off| err("nat", s, None, start, end, off, None, None).field;
        assert_eq!(f(Some("192.168.71.10"), Some("192.168.70.20"), false), "dhcp.start");
        assert_eq!(f(Some("192.168.70.10"), Some("192.168.70.255"), false), "dhcp.end");
        assert_eq!(f(Some("192.168.70.30"), Some("192.168.70.20"), false), "dhcp.end");
        assert_eq!(f(Some("192.168.70.10"), None, false), "dhcp.end");
        assert_eq!(f(None, Some("192.168.70.10"), false), "dhcp.start");
        assert_eq!(f(Some("192.168.70.10"), Some("192.168.70.20"), true), "dhcp");
        // gateway inside an explicit range
        assert_eq!(f(Some("192.168.70.1"), Some("192.168.70.20"), false), "gateway");
    }

    #[test]
    fn mode_specific_fields() {
        let br = NetworkSpec::from_parts("lan", "bridged", None, None, None, None, false, Some("br0"), None)
            .unwrap();
        assert_eq!(br.bridge.as_deref(), Some("br0"));
        assert_eq!(br.ipv4, None);
        let mv = NetworkSpec::from_parts("up", "macvtap", None, None, None, None, false, None, Some("eth0"))
            .unwrap();
        assert_eq!(mv.interface.as_deref(), Some("eth0"));
        assert_eq!(err("bridged", None, None, None, None, false, None, None).field, "bridge");
        assert_eq!(err("macvtap", None, None, None, None, false, None, None).field, "interface");
        assert_eq!(err("bridged", None, None, None, None, false, Some("br/0"), None).field, "bridge");
        assert_eq!(err("bridged", None, None, None, None, false, Some("averyveryverylongbridge"), None).field, "bridge");
        assert_eq!(err("macvtap", None, None, None, None, false, None, Some("eth 0")).field, "interface");
        assert_eq!(err("bridged", Some("10.0.0.0/24"), None, None, None, false, Some("br0"), None).field, "subnet");
        assert_eq!(err("macvtap", None, Some("10.0.0.1"), None, None, false, None, Some("eth0")).field, "gateway");
        assert_eq!(err("macvtap", None, None, None, None, true, None, Some("eth0")).field, "dhcp");
        assert_eq!(err("nat", Some("10.0.0.0/24"), None, None, None, false, Some("br0"), None).field, "bridge");
        assert_eq!(err("nat", Some("10.0.0.0/24"), None, None, None, false, None, Some("eth0")).field, "interface");
        assert_eq!(err("bridge", None, None, None, None, false, None, None).field, "mode");
        let e = NetworkSpec::from_parts("a/b", "nat", Some("10.0.0.0/24"), None, None, None, false, None, None)
            .unwrap_err();
        assert_eq!(e.field, "name");
    }

    #[test]
    fn static_ip_rules() {
        let v4 = NetworkSpec::from_parts(
            "n", "nat", Some("192.168.70.0/24"), None, Some("192.168.70.100"), Some("192.168.70.200"), false, None, None,
        )
        .unwrap()
        .ipv4
        .unwrap();
        assert!(v4.check_static_ip(ip("192.168.70.10")).is_ok());
        assert!(v4.check_static_ip(ip("192.168.70.201")).is_ok());
        for (bad, word) in [
            ("192.168.71.10", "outside"),
            ("192.168.70.0", "network address"),
            ("192.168.70.255", "broadcast"),
            ("192.168.70.1", "gateway"),
            ("192.168.70.150", "DHCP range"),
            ("192.168.70.100", "DHCP range"),
        ] {
            let reason = v4.check_static_ip(ip(bad)).unwrap_err();
            assert!(reason.contains(word), "{bad}: {reason}");
        }
        assert_eq!(v4.with_prefix(ip("192.168.70.10")).to_string(), "192.168.70.10/24");
    }

    #[test]
    fn overlap() {
        assert!(overlaps(&nat("10.0.0.0/16"), &nat("10.0.5.0/24")));
        assert!(overlaps(&nat("10.0.5.0/24"), &nat("10.0.0.0/16")));
        assert!(overlaps(&nat("10.0.5.0/24"), &nat("10.0.5.0/24")));
        assert!(!overlaps(&nat("10.0.5.0/24"), &nat("10.0.6.0/24")));
        let br = NetworkSpec::from_parts("lan", "bridged", None, None, None, None, false, Some("br0"), None)
            .unwrap();
        assert!(!overlaps(&br, &nat("10.0.0.0/8")));
    }
}
