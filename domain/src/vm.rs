//! Virtual machines as vmr sees them: validated names, the spec a VM is
//! created from (resources, disk, bootloader, network attachments, restart
//! policy, the labels vmr keeps about it), its states, and a stable hash of
//! the spec that compose uses to tell a changed service from an unchanged one.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use crate::cloudinit::CloudInitSeed;
use crate::image::Digest;
use crate::network::{MacAddr, NetworkName};
use crate::units::ByteSize;
use crate::validation::{ValidationError, check_simple_name};

/// A VM (libvirt domain) name: `[A-Za-z0-9][A-Za-z0-9._-]{0,62}`, safe in
/// paths, URLs and XML.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmName(String);

impl VmName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a `String`, without copying it.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for VmName {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_simple_name("name", s)?;
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Firmware a VM boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Bootloader {
    #[default]
    Bios,
    /// OVMF.
    Uefi,
}

impl Bootloader {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bios => "BIOS",
            Self::Uefi => "UEFI",
        }
    }
}

impl FromStr for Bootloader {
    type Err = ValidationError;

    /// `BIOS` or `UEFI`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "BIOS" => Ok(Self::Bios),
            "UEFI" => Ok(Self::Uefi),
            _ => Err(ValidationError::new(
                "bootloader",
                format!(
                    "`{}` is not a bootloader; use BIOS or UEFI",
                    s.escape_debug()
                ),
            )),
        }
    }
}

impl fmt::Display for Bootloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the daemon does when a VM stops without being asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RestartPolicy {
    #[default]
    No,
    /// Restart when the domain crashed.
    OnFailure,
    /// Restart after any stop not requested through vmr.
    Always,
    /// Like `Always`, but a VM stopped through vmr stays stopped across
    /// daemon restarts.
    UnlessStopped,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::OnFailure => "on-failure",
            Self::Always => "always",
            Self::UnlessStopped => "unless-stopped",
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "no" => Ok(Self::No),
            "on-failure" => Ok(Self::OnFailure),
            "always" => Ok(Self::Always),
            "unless-stopped" => Ok(Self::UnlessStopped),
            _ => Err(ValidationError::new(
                "restartPolicy",
                format!(
                    "`{}` is not a restart policy; use no, on-failure, always or unless-stopped",
                    s.escape_debug()
                ),
            )),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The observed state of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Created,
    Running,
    Paused,
    Stopping,
    Stopped,
    Crashed,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Crashed => "crashed",
        }
    }

    /// Whether the VM occupies the hypervisor (started and not yet down).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Paused | Self::Stopping)
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One NIC of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetworkAttachment {
    pub network: NetworkName,
    pub mac: MacAddr,
    /// A static address with its prefix length; `None` means DHCP.
    pub static_ip: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
}

/// What vmr records about a VM besides its hardware.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct VmLabels {
    /// The image reference the VM was created from, as the user wrote it.
    pub image: String,
    /// The manifest digest the reference resolved to.
    pub image_digest: Option<Digest>,
    /// Compose project and service, for VMs created by compose.
    pub project: Option<String>,
    pub service: Option<String>,
}

/// Everything a VM is created from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmSpec {
    pub name: VmName,
    pub cpu: u32,
    pub memory: ByteSize,
    /// Grow the overlay disk to this size (or the blank disk of an iso image).
    pub disk_size: Option<ByteSize>,
    pub bootloader: Bootloader,
    pub networks: Vec<NetworkAttachment>,
    pub restart_policy: RestartPolicy,
    pub labels: VmLabels,
}

impl VmSpec {
    /// A stable hash of the spec (hex sha256 of a canonical JSON form), kept
    /// in the VM's metadata so that compose can tell whether a running VM
    /// still matches its service.
    pub fn spec_hash(&self) -> String {
        self.spec_hash_with_seed(None)
    }

    /// Like [`VmSpec::spec_hash`], also covering the cloud-init documents,
    /// whose change must recreate the VM too.
    pub fn spec_hash_with_seed(&self, seed: Option<&CloudInitSeed>) -> String {
        let networks: Vec<_> = self
            .networks
            .iter()
            .map(|n| {
                json!({
                    "network": n.network.as_str(),
                    "mac": n.mac.to_string(),
                    "staticIp": n.static_ip.map(|ip| ip.to_string()),
                    "gateway": n.gateway.map(|g| g.to_string()),
                })
            })
            .collect();
        let canonical = json!({
            "v": 1,
            "name": self.name.as_str(),
            "cpu": self.cpu,
            "memory": self.memory.bytes(),
            "diskSize": self.disk_size.map(ByteSize::bytes),
            "bootloader": self.bootloader.as_str(),
            "networks": networks,
            "restartPolicy": self.restart_policy.as_str(),
            "image": self.labels.image,
            "imageDigest": self.labels.image_digest.as_ref().map(Digest::to_string),
            "project": self.labels.project,
            "service": self.labels.service,
            "cloudInit": seed.map(|s| Digest::of(&s.canonical_bytes()).to_string()),
        });
        // The key order is fixed (serde_json sorts keys, or keeps this
        // literal order with preserve_order), so the text is stable.
        Digest::of(canonical.to_string().as_bytes())
            .hex()
            .to_owned()
    }
}

macro_rules! serde_via_str {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse()
                    .map_err(|e: ValidationError| serde::de::Error::custom(e.reason))
            }
        }
    };
}

serde_via_str!(VmName);
serde_via_str!(Bootloader);
serde_via_str!(RestartPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            name: "ziti-server".parse().unwrap(),
            cpu: 2,
            memory: ByteSize::gib(4),
            disk_size: Some(ByteSize::gib(20)),
            bootloader: Bootloader::Bios,
            networks: vec![NetworkAttachment {
                network: "ziti-private".parse().unwrap(),
                mac: "52:54:00:12:34:56".parse().unwrap(),
                static_ip: Some("192.168.70.10/24".parse().unwrap()),
                gateway: Some("192.168.70.1".parse().unwrap()),
            }],
            restart_policy: RestartPolicy::OnFailure,
            labels: VmLabels {
                image: "ns/vm:1".into(),
                image_digest: Some(Digest::of(b"m")),
                project: Some("ziti".into()),
                service: Some("server".into()),
            },
        }
    }

    #[test]
    fn vm_names() {
        assert!("web-1".parse::<VmName>().is_ok());
        assert!("a".repeat(63).parse::<VmName>().is_ok());
        for bad in [
            "",
            "../x",
            "a/b",
            "a<b",
            "a\0b",
            "a b",
            "-a",
            ".a",
            &"a".repeat(64),
        ] {
            assert!(bad.parse::<VmName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bootloader_and_policy() {
        assert_eq!("uefi".parse::<Bootloader>().unwrap(), Bootloader::Uefi);
        assert_eq!("BiOs".parse::<Bootloader>().unwrap(), Bootloader::Bios);
        assert!("grub".parse::<Bootloader>().is_err());
        for p in ["no", "on-failure", "always", "unless-stopped"] {
            assert_eq!(p.parse::<RestartPolicy>().unwrap().to_string(), p);
        }
        let e = "sometimes".parse::<RestartPolicy>().unwrap_err();
        assert_eq!(e.field, "restartPolicy");
        assert!("On-Failure".parse::<RestartPolicy>().is_err());
        assert_eq!(RestartPolicy::default(), RestartPolicy::No);
        assert!(VmState::Running.is_active());
        assert!(!VmState::Crashed.is_active());
        assert_eq!(VmState::Stopped.to_string(), "stopped");
    }

    #[test]
    fn spec_hash_is_stable_and_sensitive() {
        let a = spec();
        assert_eq!(a.spec_hash(), spec().spec_hash());
        assert_eq!(a.spec_hash().len(), 64);
        let mut b = spec();
        b.cpu = 3;
        assert_ne!(a.spec_hash(), b.spec_hash());
        let mut c = spec();
        c.networks[0].static_ip = Some("192.168.70.11/24".parse().unwrap());
        assert_ne!(a.spec_hash(), c.spec_hash());
        let mut d = spec();
        d.labels.image_digest = Some(Digest::of(b"other"));
        assert_ne!(a.spec_hash(), d.spec_hash());
        let seed = CloudInitSeed {
            user_data: b"#cloud-config\n".to_vec(),
            meta_data: "instance-id: x\n".into(),
            network_config: String::new(),
        };
        let mut seed2 = seed.clone();
        seed2.user_data = b"#cloud-config\nhostname: y\n".to_vec();
        assert_ne!(a.spec_hash_with_seed(Some(&seed)), a.spec_hash());
        assert_ne!(
            a.spec_hash_with_seed(Some(&seed)),
            a.spec_hash_with_seed(Some(&seed2))
        );
    }
}
