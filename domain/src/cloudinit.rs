//! The documents of a cloud-init NoCloud seed: `meta-data` (instance-id,
//! local-hostname and extra keys), `network-config` (version 2, NICs matched
//! by MAC, static addresses or DHCP) and `user-data` (given, bounded, or a
//! minimal `#cloud-config`). The ISO itself is built by an adapter.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;
use serde_yaml::{Mapping, Value};

use crate::network::MacAddr;
use crate::validation::ValidationError;
use crate::vm::NetworkAttachment;

#[path = "cloudinit_ssh.rs"]
mod ssh;
pub use ssh::{MAX_SSH_KEYS, SshPublicKey, merge_ssh_keys, parse_ssh_keys};

/// Largest user-data accepted.
pub const MAX_USER_DATA_BYTES: usize = 1024 * 1024;
/// Largest meta-data or network-config document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// User-data of a VM that is given none.
pub const DEFAULT_USER_DATA: &str = "#cloud-config\n";

/// The `meta-data` document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetaData {
    pub instance_id: String,
    pub local_hostname: String,
    /// Further keys (compose `metaData`); they may override the two above.
    pub extra: BTreeMap<String, Value>,
}

impl MetaData {
    pub fn new(instance_id: impl Into<String>, local_hostname: impl Into<String>) -> Self {
        Self {
            instance_id: instance_id.into(),
            local_hostname: local_hostname.into(),
            extra: BTreeMap::new(),
        }
    }

    /// The YAML text: `instance-id`, `local-hostname`, then the extra keys.
    pub fn to_yaml(&self) -> String {
        let mut map = Mapping::new();
        map.insert("instance-id".into(), self.instance_id.clone().into());
        map.insert("local-hostname".into(), self.local_hostname.clone().into());
        for (key, value) in &self.extra {
            map.insert(key.clone().into(), value.clone());
        }
        serde_yaml::to_string(&map).expect("a YAML mapping always serialises")
    }
}

/// One NIC of the generated network-config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicConfig {
    pub mac: MacAddr,
    /// Static address and prefix; `None` means DHCP.
    pub address: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub nameservers: Vec<Ipv4Addr>,
}

impl NicConfig {
    pub fn from_attachment(nic: &NetworkAttachment, nameservers: &[Ipv4Addr]) -> Self {
        Self {
            mac: nic.mac,
            address: nic.static_ip,
            gateway: nic.gateway,
            nameservers: nameservers.to_vec(),
        }
    }
}

/// A network-config version 2 document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkConfigV2 {
    pub nics: Vec<NicConfig>,
}

#[derive(Serialize)]
struct V2Doc {
    version: u8,
    ethernets: BTreeMap<String, V2Ethernet>,
}

#[derive(Serialize)]
struct V2Ethernet {
    #[serde(rename = "match")]
    matcher: V2Match,
    #[serde(rename = "set-name")]
    set_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    dhcp4: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    addresses: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<V2Route>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nameservers: Option<V2Nameservers>,
}

#[derive(Serialize)]
struct V2Match {
    macaddress: String,
}

#[derive(Serialize)]
struct V2Route {
    to: &'static str,
    via: String,
    metric: u32,
}

#[derive(Serialize)]
struct V2Nameservers {
    addresses: Vec<String>,
}

impl NetworkConfigV2 {
    /// The config of a VM's attachments, in order (`eth0`, `eth1`, ...).
    pub fn from_attachments(nics: &[NetworkAttachment], nameservers: &[Ipv4Addr]) -> Self {
        Self {
            nics: nics
                .iter()
                .map(|n| NicConfig::from_attachment(n, nameservers))
                .collect(),
        }
    }

    /// The YAML text. Each NIC is matched by MAC and named `eth<i>`; a NIC
    /// without a static address uses DHCP; a gateway becomes a default route
    /// whose metric grows with the NIC index, so the first NIC wins.
    pub fn to_yaml(&self) -> String {
        let ethernets = self
            .nics
            .iter()
            .enumerate()
            .map(|(i, nic)| {
                let name = format!("eth{i}");
                let metric = 100 + u32::try_from(i).unwrap_or(u32::MAX - 100);
                let ethernet = V2Ethernet {
                    matcher: V2Match {
                        macaddress: nic.mac.to_string(),
                    },
                    set_name: name.clone(),
                    dhcp4: nic.address.is_none().then_some(true),
                    addresses: nic.address.iter().map(ToString::to_string).collect(),
                    routes: nic
                        .gateway
                        .iter()
                        .map(|gw| V2Route {
                            to: "default",
                            via: gw.to_string(),
                            metric,
                        })
                        .collect(),
                    nameservers: (!nic.nameservers.is_empty()).then(|| V2Nameservers {
                        addresses: nic.nameservers.iter().map(ToString::to_string).collect(),
                    }),
                };
                (name, ethernet)
            })
            .collect();
        serde_yaml::to_string(&V2Doc {
            version: 2,
            ethernets,
        })
        .expect("a network-config always serialises")
    }
}

/// The three documents of a NoCloud seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudInitSeed {
    pub user_data: Vec<u8>,
    pub meta_data: String,
    pub network_config: String,
}

impl CloudInitSeed {
    /// Assembles a seed: `user_data` defaults to [`DEFAULT_USER_DATA`];
    /// `network_config` replaces the one generated from `nics` when given.
    pub fn build(
        user_data: Option<Vec<u8>>,
        meta: &MetaData,
        nics: &NetworkConfigV2,
        network_config: Option<String>,
    ) -> Result<Self, ValidationError> {
        let user_data = user_data.unwrap_or_else(|| DEFAULT_USER_DATA.as_bytes().to_vec());
        check_user_data("cloudInit.userData", &user_data)?;
        let meta_data = meta.to_yaml();
        check_document("cloudInit.metaData", &meta_data)?;
        let network_config = match network_config {
            Some(text) => {
                check_document("cloudInit.networkConfig", &text)?;
                text
            }
            None => nics.to_yaml(),
        };
        Ok(Self {
            user_data,
            meta_data,
            network_config,
        })
    }

    /// An unambiguous byte form of the three documents, for hashing.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for part in [
            self.user_data.as_slice(),
            self.meta_data.as_bytes(),
            self.network_config.as_bytes(),
        ] {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }
}

/// Checks user-data: at most [`MAX_USER_DATA_BYTES`], and a `#cloud-config`
/// document must be a YAML mapping (a typo there would otherwise surface
/// only inside the booted VM). Scripts and MIME archives pass as they are.
pub fn check_user_data(field: &str, user_data: &[u8]) -> Result<(), ValidationError> {
    if user_data.len() > MAX_USER_DATA_BYTES {
        return Err(ValidationError::new(
            field,
            format!(
                "is {} bytes, larger than the limit of {MAX_USER_DATA_BYTES} bytes",
                user_data.len()
            ),
        ));
    }
    if user_data.starts_with(b"#cloud-config") {
        let text = std::str::from_utf8(user_data)
            .map_err(|_| ValidationError::new(field, "a #cloud-config document must be UTF-8"))?;
        crate::validation::check_flow_depth(field, text)?;
        match serde_yaml::from_str::<Value>(text) {
            Ok(Value::Mapping(_) | Value::Null) => {}
            Ok(_) => {
                return Err(ValidationError::new(
                    field,
                    "a #cloud-config document must be a YAML mapping",
                ));
            }
            Err(e) => {
                let error = ValidationError::new(field, format!("is not valid YAML: {e}"));
                return Err(match e.location() {
                    Some(loc) => error.at(loc.line(), loc.column()),
                    None => error,
                });
            }
        }
    }
    Ok(())
}

fn check_document(field: &str, text: &str) -> Result<(), ValidationError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(ValidationError::new(
            field,
            format!(
                "is {} bytes, larger than the limit of {MAX_DOCUMENT_BYTES} bytes",
                text.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(mac: &str, ip: Option<&str>, gw: Option<&str>) -> NetworkAttachment {
        NetworkAttachment {
            network: "n".parse().unwrap(),
            mac: mac.parse().unwrap(),
            static_ip: ip.map(|s| s.parse().unwrap()),
            gateway: gw.map(|s| s.parse().unwrap()),
        }
    }

    #[test]
    fn meta_data_yaml() {
        let mut meta = MetaData::new("vm-1234", "web");
        assert_eq!(
            meta.to_yaml(),
            "instance-id: vm-1234\nlocal-hostname: web\n"
        );
        meta.extra.insert("zone".into(), "eu".into());
        meta.extra.insert("local-hostname".into(), "custom".into());
        let parsed: BTreeMap<String, String> = serde_yaml::from_str(&meta.to_yaml()).unwrap();
        assert_eq!(parsed["zone"], "eu");
        assert_eq!(parsed["local-hostname"], "custom");
        assert_eq!(parsed["instance-id"], "vm-1234");
    }

    #[test]
    fn network_config_static_and_dhcp() {
        let dns: Ipv4Addr = "1.1.1.1".parse().unwrap();
        let cfg = NetworkConfigV2::from_attachments(
            &[
                nic(
                    "52:54:00:00:00:01",
                    Some("192.168.70.10/24"),
                    Some("192.168.70.1"),
                ),
                nic("52:54:00:00:00:02", None, None),
            ],
            &[dns],
        );
        let yaml = cfg.to_yaml();
        let doc: Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(doc["version"], Value::from(2));
        let eth0 = &doc["ethernets"]["eth0"];
        assert_eq!(
            eth0["match"]["macaddress"],
            Value::from("52:54:00:00:00:01")
        );
        assert_eq!(eth0["set-name"], Value::from("eth0"));
        assert_eq!(eth0["addresses"][0], Value::from("192.168.70.10/24"));
        assert_eq!(eth0["routes"][0]["to"], Value::from("default"));
        assert_eq!(eth0["routes"][0]["via"], Value::from("192.168.70.1"));
        assert_eq!(eth0["nameservers"]["addresses"][0], Value::from("1.1.1.1"));
        assert!(eth0.get("dhcp4").is_none());
        let eth1 = &doc["ethernets"]["eth1"];
        assert_eq!(eth1["dhcp4"], Value::from(true));
        assert!(eth1.get("addresses").is_none());
        assert!(eth1.get("routes").is_none());
    }

    #[test]
    fn seed_defaults_and_override() {
        let meta = MetaData::new("i", "h");
        let nics = NetworkConfigV2::from_attachments(&[nic("52:54:00:00:00:01", None, None)], &[]);
        let seed = CloudInitSeed::build(None, &meta, &nics, None).unwrap();
        assert_eq!(seed.user_data, b"#cloud-config\n");
        assert!(seed.network_config.contains("dhcp4: true"));
        let custom = "version: 2\nethernets: {}\n".to_owned();
        let seed2 = CloudInitSeed::build(
            Some(b"#!/bin/sh\necho hi\n".to_vec()),
            &meta,
            &nics,
            Some(custom.clone()),
        )
        .unwrap();
        assert_eq!(seed2.network_config, custom);
        assert_ne!(seed.canonical_bytes(), seed2.canonical_bytes());
    }

    #[test]
    fn user_data_limits_and_syntax() {
        let meta = MetaData::new("i", "h");
        let nics = NetworkConfigV2::default();
        let big = vec![b'a'; MAX_USER_DATA_BYTES + 1];
        let e = CloudInitSeed::build(Some(big), &meta, &nics, None).unwrap_err();
        assert_eq!(e.field, "cloudInit.userData");
        let e = check_user_data("f", b"#cloud-config\nhostname: [x\n").unwrap_err();
        assert!(e.reason.contains("not valid YAML"), "{e}");
        assert!(e.line.is_some());
        assert!(check_user_data("f", b"#cloud-config\n- a\n").is_err());
        assert!(check_user_data("f", b"#cloud-config\nhostname: x\n").is_ok());
        assert!(check_user_data("f", b"#!/bin/sh\n: [\n").is_ok());
        let huge = "x".repeat(MAX_DOCUMENT_BYTES + 1);
        let e = CloudInitSeed::build(None, &meta, &nics, Some(huge)).unwrap_err();
        assert_eq!(e.field, "cloudInit.networkConfig");
    }
}
