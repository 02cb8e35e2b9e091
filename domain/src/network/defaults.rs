//! The networks vmr makes by itself: `vmr-default`, which a VM created
//! without `--network` joins, and a compose project's `<project>-default`,
//! which its services that name no network join. Both are NAT networks with
//! DHCP, like docker's `bridge`, on a /24 chosen to overlap no other
//! network; and where each address a VM reports came from.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::spec::subnets_overlap;
use super::{NetworkMode, NetworkName, NetworkParams, NetworkSpec};
use crate::validation::ValidationError;

/// The network of VMs created without `--network`. Not `default`: libvirt
/// installs its own `default` (virbr0, 192.168.122.0/24) on most hosts,
/// which vmr does not manage and must not take over.
pub const DEFAULT_NETWORK: &str = "vmr-default";

/// Suffix of a compose project's own default network.
pub const PROJECT_DEFAULT_NETWORK: &str = "default";

/// Where default subnets are taken from: `10.89.0.0/24`, `10.89.1.0/24`,
/// ... (podman takes 10.88.0.0/16 and docker 172.17.0.0/16; libvirt's own
/// default is 192.168.122.0/24).
const FIRST_DEFAULT_SUBNET: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 0);
const DEFAULT_SUBNETS: u32 = 256 * 16;

/// The first /24 of vmr's range that overlaps none of `taken`.
pub fn free_default_subnet(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    (0..DEFAULT_SUBNETS)
        .map(|i| u32::from(FIRST_DEFAULT_SUBNET) + (i << 8))
        .filter_map(|base| Ipv4Net::new(Ipv4Addr::from(base), 24).ok())
        .find(|candidate| !taken.iter().any(|t| subnets_overlap(*candidate, *t)))
}

/// The spec of a default network named `name` on `subnet`: NAT, gateway
/// the first host, DHCP over the second half.
pub fn default_network_spec(name: &str, subnet: Ipv4Net) -> Result<NetworkSpec, ValidationError> {
    let name: NetworkName = name
        .parse()
        .map_err(|e: ValidationError| ValidationError::new("network", e.reason))?;
    NetworkSpec::new(
        name,
        NetworkMode::Nat,
        NetworkParams {
            subnet: Some(subnet),
            ..NetworkParams::default()
        },
    )
}

/// Where a VM's reported address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressSource {
    /// The static address the VM was created with.
    Static,
    /// The lease of the network's DHCP server.
    Dhcp,
    /// The QEMU guest agent, asked inside the guest.
    Agent,
}

impl AddressSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Dhcp => "dhcp",
            Self::Agent => "agent",
        }
    }
}

impl fmt::Display for AddressSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_free_subnet_is_taken() {
        assert_eq!(free_default_subnet(&[]), Some(net("10.89.0.0/24")));
        assert_eq!(
            free_default_subnet(&[net("10.89.0.0/24"), net("10.89.1.0/25")]),
            Some(net("10.89.2.0/24"))
        );
        // A wide network elsewhere in 10/8 covers many candidates at once.
        assert_eq!(
            free_default_subnet(&[net("10.89.0.0/20")]),
            Some(net("10.89.16.0/24"))
        );
        assert_eq!(free_default_subnet(&[net("10.0.0.0/8")]), None);
    }

    #[test]
    fn a_default_network_is_nat_with_dhcp() {
        let spec = default_network_spec(DEFAULT_NETWORK, net("10.89.3.0/24")).unwrap();
        assert_eq!(spec.mode, NetworkMode::Nat);
        let ipv4 = spec.ipv4.unwrap();
        assert_eq!(ipv4.gateway, Ipv4Addr::new(10, 89, 3, 1));
        assert!(ipv4.dhcp.is_some());
        assert!(default_network_spec("bad/name", net("10.89.3.0/24")).is_err());
    }

    #[test]
    fn sources_have_words() {
        assert_eq!(AddressSource::Dhcp.to_string(), "dhcp");
        assert_eq!(AddressSource::Agent.as_str(), "agent");
        assert_eq!(AddressSource::Static.as_str(), "static");
    }
}
