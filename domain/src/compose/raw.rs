//! The VMCompose YAML as written, before validation: every struct denies
//! unknown keys, and the values whose syntax can be checked alone (image
//! references, sizes, addresses, MACs, policies) are parsed while reading, so
//! their errors carry the YAML line.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_yaml::Value;

use super::DependencyCondition;
use crate::image::Reference;
use crate::network::{MacAddr, NetworkMode, parse_subnet};
use crate::units::ByteSize;
use crate::validation::UniqueMap;
use crate::vm::RestartPolicy;

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a VMCompose mapping"
)]
pub(super) struct RawCompose {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub networks: Option<UniqueMap<RawNetwork>>,
    pub services: Option<UniqueMap<RawService>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a network mapping"
)]
pub(super) struct RawNetwork {
    pub mode: Option<NetworkMode>,
    pub subnet: Option<Subnet>,
    pub gateway: Option<Ipv4Addr>,
    pub dhcp: Option<RawDhcp>,
    pub bridge: Option<String>,
    pub interface: Option<String>,
    pub external: Option<bool>,
    /// The libvirt name of an external network, when it differs from the key.
    pub name: Option<String>,
}

/// A subnet in CIDR form.
pub(super) struct Subnet(pub Ipv4Net);

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        parse_subnet("subnet", &s)
            .map(Subnet)
            .map_err(|e| de::Error::custom(e.reason))
    }
}

/// `dhcp: false`, `dhcp: true` or `dhcp: {start, end}`.
pub(super) enum RawDhcp {
    Enabled(bool),
    Range(RawDhcpRange),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with start and end")]
pub(super) struct RawDhcpRange {
    pub start: Option<Ipv4Addr>,
    pub end: Option<Ipv4Addr>,
}

impl<'de> Deserialize<'de> for RawDhcp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DhcpVisitor;

        impl<'de> Visitor<'de> for DhcpVisitor {
            type Value = RawDhcp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("false, true, or a mapping with start and end")
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawDhcp, E> {
                Ok(RawDhcp::Enabled(v))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawDhcp, A::Error> {
                RawDhcpRange::deserialize(MapAccessDeserializer::new(map)).map(RawDhcp::Range)
            }
        }

        deserializer.deserialize_any(DhcpVisitor)
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a service mapping"
)]
pub(super) struct RawService {
    pub image: Option<Reference>,
    pub disk_size: Option<ByteSize>,
    pub resources: Option<RawServiceResources>,
    pub networks: Option<Vec<RawAttachment>>,
    pub cloud_init: Option<RawCloudInit>,
    pub depends_on: Option<RawDependsOn>,
    pub restart_policy: Option<RestartPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with cpu and/or memory")]
pub(super) struct RawServiceResources {
    pub cpu: Option<u64>,
    pub memory: Option<ByteSize>,
}

/// A service's network: a name (DHCP) or the long form.
pub(super) enum RawAttachment {
    Short(String),
    Long(RawAttachmentLong),
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a network attachment mapping"
)]
pub(super) struct RawAttachmentLong {
    pub name: Option<String>,
    pub static_ip: Option<StaticIp>,
    pub gateway: Option<Ipv4Addr>,
    pub mac: Option<MacAddr>,
}

/// `192.168.70.10`, or `192.168.1.20/24` where vmr does not know the subnet.
#[derive(Clone, Copy)]
pub(super) struct StaticIp {
    pub addr: Ipv4Addr,
    pub prefix: Option<u8>,
}

impl<'de> Deserialize<'de> for StaticIp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        let bad = || {
            de::Error::custom(format!(
                "`{}` is not an IPv4 address (optionally with a prefix length)",
                s.escape_debug()
            ))
        };
        match s.split_once('/') {
            Some(_) => {
                let net: Ipv4Net = s.parse().map_err(|_| bad())?;
                Ok(Self {
                    addr: net.addr(),
                    prefix: Some(net.prefix_len()),
                })
            }
            None => Ok(Self {
                addr: s.parse().map_err(|_| bad())?,
                prefix: None,
            }),
        }
    }
}

impl<'de> Deserialize<'de> for RawAttachment {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AttachmentVisitor;

        impl<'de> Visitor<'de> for AttachmentVisitor {
            type Value = RawAttachment;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a network name or a mapping with name, staticIp, gateway, mac")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawAttachment, E> {
                Ok(RawAttachment::Short(v.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawAttachment, A::Error> {
                RawAttachmentLong::deserialize(MapAccessDeserializer::new(map))
                    .map(RawAttachment::Long)
            }
        }

        deserializer.deserialize_any(AttachmentVisitor)
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a cloudInit mapping"
)]
pub(super) struct RawCloudInit {
    pub user_data: Option<String>,
    pub user_data_file: Option<String>,
    pub meta_data: Option<Value>,
    pub meta_data_file: Option<String>,
    pub network_config: Option<Value>,
    pub network_config_file: Option<String>,
}

/// `dependsOn: [a, b]` or `dependsOn: {a: {condition: ready}}`.
pub(super) enum RawDependsOn {
    List(Vec<String>),
    Map(UniqueMap<Option<RawDependency>>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with condition")]
pub(super) struct RawDependency {
    pub condition: Option<DependencyCondition>,
}

impl<'de> Deserialize<'de> for RawDependsOn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DependsVisitor;

        impl<'de> Visitor<'de> for DependsVisitor {
            type Value = RawDependsOn;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of service names or a mapping of service to {condition}")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawDependsOn, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(RawDependsOn::List)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawDependsOn, A::Error> {
                UniqueMap::deserialize(MapAccessDeserializer::new(map)).map(RawDependsOn::Map)
            }
        }

        deserializer.deserialize_any(DependsVisitor)
    }
}
