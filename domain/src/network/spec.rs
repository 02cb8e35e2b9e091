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
                ValidationError::new(
                    field,
                    format!("`{}` is not an IPv4 address", v.escape_debug()),
                )
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
            Err(ValidationError::new(
                field,
                format!("{addr} is outside the subnet {subnet}"),
            ))
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
            let half = (broadcast - network).div_ceil(2);
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
            return Err(ValidationError::new(
                "dhcp.start",
                "is required with dhcp.end",
            ));
        }
        (false, Some(_), None) => {
            return Err(ValidationError::new(
                "dhcp.end",
                "is required with dhcp.start",
            ));
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

/// A network's subnet overlaps another network's: the one rule every
/// network creation (vmr's, compose's, each hypervisor backend's) applies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subnet} overlaps the subnet {other_subnet} of network {other}")]
pub struct SubnetOverlap {
    pub subnet: Ipv4Net,
    pub other: NetworkName,
    pub other_subnet: Ipv4Net,
}

impl SubnetOverlap {
    /// The request field the overlap is about.
    pub const FIELD: &'static str = "subnet";
}

impl From<SubnetOverlap> for ValidationError {
    fn from(e: SubnetOverlap) -> Self {
        ValidationError::new(SubnetOverlap::FIELD, e.to_string())
    }
}

/// Refuses `spec` when its subnet overlaps that of one of `others` (the
/// first such); networks without a subnet overlap nothing. A network of
/// the same name is not compared with itself.
pub fn check_no_overlap<'a>(
    spec: &NetworkSpec,
    others: impl IntoIterator<Item = &'a NetworkSpec>,
) -> Result<(), SubnetOverlap> {
    let Some(mine) = spec.ipv4 else {
        return Ok(());
    };
    for other in others {
        if other.name == spec.name {
            continue;
        }
        if let Some(theirs) = other.ipv4
            && subnets_overlap(mine.subnet, theirs.subnet)
        {
            return Err(SubnetOverlap {
                subnet: mine.subnet,
                other: other.name.clone(),
                other_subnet: theirs.subnet,
            });
        }
    }
    Ok(())
}

pub(crate) fn subnets_overlap(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
