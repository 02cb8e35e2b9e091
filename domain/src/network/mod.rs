//! Virtual networks: validated names, the six modes, IPv4 subnets with their
//! gateway and DHCP range, static addresses, MAC addresses, host interface
//! names and the generated bridge device names that fit the kernel's
//! 15-character limit.

mod defaults;
mod mac;
mod spec;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

pub use defaults::{
    AddressSource, DEFAULT_NETWORK, PROJECT_DEFAULT_NETWORK, default_network_spec,
    free_default_subnet,
};
pub use mac::MacAddr;
pub use spec::{
    DhcpRange, Ipv4Config, NetworkParams, NetworkSpec, SubnetOverlap, check_no_overlap,
};
pub(crate) use spec::{parse_subnet, subnets_overlap};

use crate::validation::{ValidationError, check_simple_name};

/// Longest Linux network interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// A network name: `[A-Za-z0-9][A-Za-z0-9._-]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkName(String);

impl NetworkName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a `String`, without copying it.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for NetworkName {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_simple_name("name", s)?;
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for NetworkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for NetworkName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NetworkName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse()
            .map_err(|e: ValidationError| serde::de::Error::custom(e.reason))
    }
}

/// How a network reaches the outside (see PRODUCT.md §6 for the libvirt form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetworkMode {
    /// libvirt forward nat, with DHCP.
    Nat,
    /// No forward: VMs see each other and the host only.
    Isolated,
    /// libvirt forward route.
    Routed,
    /// libvirt forward open.
    Open,
    /// An existing host bridge.
    Bridged,
    /// Direct attachment to a host interface.
    Macvtap,
}

impl NetworkMode {
    pub const ALL: [Self; 6] = [
        Self::Nat,
        Self::Isolated,
        Self::Routed,
        Self::Open,
        Self::Bridged,
        Self::Macvtap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nat => "nat",
            Self::Isolated => "isolated",
            Self::Routed => "routed",
            Self::Open => "open",
            Self::Bridged => "bridged",
            Self::Macvtap => "macvtap",
        }
    }

    /// Whether vmr manages the addressing (subnet, gateway, DHCP) itself.
    pub fn has_subnet(self) -> bool {
        matches!(self, Self::Nat | Self::Isolated | Self::Routed | Self::Open)
    }

    /// The route a NIC with a static address gets when it names none: on a
    /// network that forwards through the host (nat, routed, open), the
    /// network's gateway, as DHCP would have told the guest; elsewhere none.
    /// `vmr create` and compose both take it from here.
    pub fn static_route(self, ipv4: Option<&Ipv4Config>) -> Option<std::net::Ipv4Addr> {
        match (self, ipv4) {
            (Self::Nat | Self::Routed | Self::Open, Some(cfg)) => Some(cfg.gateway),
            _ => None,
        }
    }
}

impl FromStr for NetworkMode {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "mode",
                    format!(
                        "`{}` is not a network mode; use nat, isolated, routed, open, bridged or macvtap",
                        s.escape_debug()
                    ),
                )
            })
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for NetworkMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NetworkMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse()
            .map_err(|e: ValidationError| serde::de::Error::custom(e.reason))
    }
}

/// Checks a host network interface or bridge name as Linux accepts it (and
/// as is safe in XML and command lines): 1 to 15 letters, digits, `.`, `_`,
/// `-`, not starting with `-`, not `.` or `..`.
pub fn check_ifname(field: &str, name: &str) -> Result<(), ValidationError> {
    let bad = |reason: String| Err(ValidationError::new(field, reason));
    if name.is_empty() {
        return bad("must not be empty".to_owned());
    }
    if name.len() > MAX_IFNAME_LEN {
        return bad(format!(
            "`{name}` is {} characters long; interface names have at most {MAX_IFNAME_LEN}",
            name.len()
        ));
    }
    if name == "." || name == ".." || name.starts_with('-') {
        return bad(format!("`{name}` is not a valid interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(format!(
            "`{}` contains {c:?}; interface names use letters, digits, `.`, `_` and `-`",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// The bridge device vmr creates for `network_name`: `vmr-` and ten hex
/// digits of its hash, 14 characters, so any network name fits the kernel's
/// limit and the same network always gets the same device.
pub fn bridge_device_name(network_name: &str) -> String {
    let hash = Sha256::digest(network_name.as_bytes());
    format!("vmr-{}", &hex::encode(hash)[..10])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            "ziti-private-a".parse::<NetworkName>().unwrap().as_str(),
            "ziti-private-a"
        );
        for bad in ["", "a/b", "..", "-x", "a b", "a<b"] {
            assert!(bad.parse::<NetworkName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_static_card_is_routed_through_the_gateway_of_a_forwarding_network_only() {
        let cfg = Ipv4Config {
            subnet: "10.9.8.0/24".parse().unwrap(),
            gateway: "10.9.8.1".parse().unwrap(),
            dhcp: None,
        };
        for mode in NetworkMode::ALL {
            let route = mode.static_route(Some(&cfg));
            match mode {
                NetworkMode::Nat | NetworkMode::Routed | NetworkMode::Open => {
                    assert_eq!(route, Some(cfg.gateway), "{mode:?}")
                }
                _ => assert_eq!(route, None, "{mode:?}"),
            }
            assert_eq!(mode.static_route(None), None, "{mode:?} without a subnet");
        }
    }

    #[test]
    fn modes() {
        for mode in NetworkMode::ALL {
            assert_eq!(mode.as_str().parse::<NetworkMode>().unwrap(), mode);
        }
        let err = "bridge".parse::<NetworkMode>().unwrap_err();
        assert_eq!(err.field, "mode");
        assert!(err.reason.contains("macvtap"));
        assert!(NetworkMode::Nat.has_subnet());
        assert!(!NetworkMode::Bridged.has_subnet());
    }

    #[test]
    fn ifnames() {
        for ok in [
            "br0",
            "eth0",
            "enp3s0f1",
            "virbr0",
            "a.b_c-d",
            "123456789012345",
        ] {
            assert!(check_ifname("bridge", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1234567890123456",
            "a/b",
            "a b",
            "a:b",
            ".",
            "..",
            "-x",
            "a\0",
        ] {
            assert_eq!(
                check_ifname("bridge", bad).unwrap_err().field,
                "bridge",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bridge_names_fit_and_are_stable() {
        let long = "a".repeat(63);
        for name in ["x", "ziti-ziti-private-a", long.as_str()] {
            let dev = bridge_device_name(name);
            assert!(dev.len() <= MAX_IFNAME_LEN, "{dev}");
            assert!(check_ifname("bridge", &dev).is_ok());
            assert_eq!(dev, bridge_device_name(name));
            assert!(dev.starts_with("vmr-"));
        }
        assert_ne!(bridge_device_name("a"), bridge_device_name("b"));
    }
}
