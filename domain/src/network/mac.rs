//! MAC addresses of VM network interfaces, given or derived deterministically
//! in the QEMU/KVM range `52:54:00:xx:xx:xx`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::validation::ValidationError;

/// A unicast MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A stable address in the QEMU range, derived from `seed` (for compose:
    /// project, service and network), so a recreated VM keeps its MAC and
    /// therefore its DHCP lease.
    pub fn derive(seed: &str) -> Self {
        let hash = Sha256::digest(seed.as_bytes());
        Self([0x52, 0x54, 0x00, hash[0], hash[1], hash[2]])
    }

    pub fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddr {
    type Err = ValidationError;

    /// Six two-digit hex groups separated by `:`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ValidationError::new(
                "mac",
                format!(
                    "`{}` is not a MAC address like 52:54:00:12:34:56",
                    s.escape_debug()
                ),
            )
        };
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if octets[0] & 1 == 1 {
            return Err(ValidationError::new(
                "mac",
                format!("`{s}` is a multicast address; a NIC needs a unicast one"),
            ));
        }
        Ok(Self(octets))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse()
            .map_err(|e: ValidationError| serde::de::Error::custom(e.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let mac: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(mac.octets(), [0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f]);
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52-54-00-12-34-56",
            "52:54:00:12:34:5g",
            "5:54:00:12:34:567",
            "01:00:5e:00:00:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn derive_is_stable_and_in_qemu_range() {
        let a = MacAddr::derive("ziti/server/private");
        assert_eq!(a, MacAddr::derive("ziti/server/private"));
        assert_ne!(a, MacAddr::derive("ziti/server/public"));
        assert_eq!(&a.octets()[..3], &[0x52, 0x54, 0x00]);
        assert_eq!(a.to_string().parse::<MacAddr>().unwrap(), a);
    }
}
