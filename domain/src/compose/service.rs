//! One service of a compose file turned into a planned VM: image and
//! resource overrides, network attachments (static addresses, gateways,
//! MACs, each unique in the file), cloud-init sources and dependencies.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::Ipv4Net;
use serde_yaml::Value;

use super::raw::{RawAttachment, RawCloudInit, RawDependsOn, RawService};
use super::validate::namespaced;
use super::{Dependency, PlannedNetwork, PlannedService};
use crate::cloudinit::{DEFAULT_USER_DATA, check_user_data};
use crate::network::{MacAddr, PROJECT_DEFAULT_NETWORK};
use crate::validation::{MAX_YAML_BYTES, ValidationError, check_simple_name, parse_yaml};
use crate::vm::{NetworkAttachment, VmName};
use crate::vmfile::{check_cpu, check_memory};

/// Addresses and MACs already given out in the file, to catch duplicates.
#[derive(Default)]
pub(super) struct AddressBook {
    /// (network key, address) -> field that took it.
    ips: BTreeMap<(String, std::net::Ipv4Addr), String>,
    macs: BTreeMap<MacAddr, String>,
}

/// A service's cloud-init sources, resolved.
struct ServiceCloudInit {
    user_data: Vec<u8>,
    meta: BTreeMap<String, Value>,
    network_config: Option<String>,
}

pub(super) struct ServiceContext<'a> {
    pub project: &'a str,
    pub key: &'a str,
    pub field: String,
    pub networks: &'a [PlannedNetwork],
    pub files: &'a BTreeMap<String, Vec<u8>>,
    pub services: &'a BTreeSet<String>,
}

impl ServiceContext<'_> {
    fn sub(&self, name: &str) -> String {
        format!("{}.{name}", self.field)
    }

    pub fn plan(
        &self,
        raw: RawService,
        book: &mut AddressBook,
    ) -> Result<PlannedService, ValidationError> {
        check_simple_name(&self.field, self.key)?;
        let vm_name: VmName = namespaced(&self.field, self.project, self.key)?;
        let image = raw
            .image
            .ok_or_else(|| ValidationError::new(self.sub("image"), "is required"))?;
        let (cpu, memory) = match raw.resources {
            Some(r) => (
                r.cpu
                    .map(|c| check_cpu(&self.sub("resources.cpu"), c))
                    .transpose()?,
                r.memory
                    .map(|m| check_memory(&self.sub("resources.memory"), m))
                    .transpose()?,
            ),
            None => (None, None),
        };
        if raw.disk_size.is_some_and(|d| d.bytes() == 0) {
            return Err(ValidationError::new(
                self.sub("diskSize"),
                "must be larger than 0",
            ));
        }
        // No `networks`: the project's default network; `networks: []`: no card.
        let attachments = raw
            .networks
            .unwrap_or_else(|| vec![RawAttachment::Short(PROJECT_DEFAULT_NETWORK.to_owned())]);
        let networks = self.attachments(attachments, book)?;
        let cloud_init = self.cloud_init(raw.cloud_init)?;
        let depends_on = self.depends_on(raw.depends_on)?;
        Ok(PlannedService {
            service: self.key.to_owned(),
            vm_name,
            image,
            cpu,
            memory,
            disk_size: raw.disk_size,
            networks,
            user_data: cloud_init.user_data,
            extra_meta_data: cloud_init.meta,
            network_config: cloud_init.network_config,
            depends_on,
            restart_policy: raw.restart_policy.unwrap_or_default(),
        })
    }

    fn attachments(
        &self,
        items: Vec<RawAttachment>,
        book: &mut AddressBook,
    ) -> Result<Vec<NetworkAttachment>, ValidationError> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, item) in items.into_iter().enumerate() {
            let item_field = format!("{}.networks[{i}]", self.field);
            let (name, name_field, long) = match item {
                RawAttachment::Short(name) => (name, item_field.clone(), None),
                RawAttachment::Long(long) => {
                    let name_field = format!("{item_field}.name");
                    let name = long
                        .name
                        .clone()
                        .ok_or_else(|| ValidationError::new(&name_field, "is required"))?;
                    (name, name_field, Some(long))
                }
            };
            let network = self
                .networks
                .iter()
                .find(|n| n.key == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = self.networks.iter().map(|n| n.key.as_str()).collect();
                    let known = if known.is_empty() {
                        "the file defines no networks".to_owned()
                    } else {
                        format!("the file defines {}", known.join(", "))
                    };
                    ValidationError::new(&name_field, format!("unknown network `{name}`; {known}"))
                })?;
            if !seen.insert(name.clone()) {
                return Err(ValidationError::new(
                    &name_field,
                    format!("network `{name}` is attached twice"),
                ));
            }
            let given_mac = long.as_ref().and_then(|l| l.mac);
            let mac = given_mac.unwrap_or_else(|| {
                MacAddr::derive(&format!("{}/{}/{}", self.project, self.key, network.key))
            });
            if let Some(owner) = book.macs.insert(mac, item_field.clone()) {
                return Err(ValidationError::new(
                    format!("{item_field}.mac"),
                    format!("{mac} is already used by {owner}; set distinct macs"),
                ));
            }
            let v4 = network.spec.as_ref().and_then(|s| s.ipv4);
            let mode = network.spec.as_ref().map(|s| s.mode);
            let ip_field = format!("{item_field}.staticIp");
            let static_ip = match (long.as_ref().and_then(|l| l.static_ip), v4) {
                (None, _) => None,
                (Some(ip), Some(v4)) => {
                    if let Some(prefix) = ip.prefix
                        && prefix != v4.subnet.prefix_len()
                    {
                        return Err(ValidationError::new(
                            &ip_field,
                            format!("prefix /{prefix} differs from the subnet {}", v4.subnet),
                        ));
                    }
                    v4.check_static_ip(ip.addr)
                        .map_err(|reason| ValidationError::new(&ip_field, reason))?;
                    Some(v4.with_prefix(ip.addr))
                }
                (Some(ip), None) => {
                    let prefix = ip.prefix.ok_or_else(|| {
                        ValidationError::new(
                            &ip_field,
                            format!(
                                "vmr does not know the subnet of network `{name}`; give a prefix length, e.g. {}/24",
                                ip.addr
                            ),
                        )
                    })?;
                    Some(Ipv4Net::new(ip.addr, prefix).map_err(|_| {
                        ValidationError::new(&ip_field, format!("/{prefix} is not a prefix length"))
                    })?)
                }
            };
            if let Some(ip) = static_ip
                && let Some(owner) = book.ips.insert((name.clone(), ip.addr()), ip_field.clone())
            {
                return Err(ValidationError::new(
                    &ip_field,
                    format!("{} is already used by {owner}", ip.addr()),
                ));
            }
            let gateway = match (long.as_ref().and_then(|l| l.gateway), static_ip) {
                (Some(_), None) => {
                    return Err(ValidationError::new(
                        format!("{item_field}.gateway"),
                        "applies only with staticIp; with DHCP the network provides the gateway",
                    ));
                }
                (Some(gw), Some(ip)) => {
                    if !ip.contains(&gw)
                        || gw == ip.addr()
                        || gw == ip.network()
                        || gw == ip.broadcast()
                    {
                        return Err(ValidationError::new(
                            format!("{item_field}.gateway"),
                            format!("{gw} is not a usable gateway for {ip}"),
                        ));
                    }
                    Some(gw)
                }
                // A static NIC on a network that forwards gets the network's
                // gateway as its route, as DHCP would have given it.
                (None, Some(_)) => mode.and_then(|m| m.static_route(v4.as_ref())),
                (None, None) => None,
            };
            out.push(NetworkAttachment {
                network: network.name.clone(),
                mac,
                static_ip,
                gateway,
            });
        }
        Ok(out)
    }

    fn file(&self, field: &str, path: &str) -> Result<&Vec<u8>, ValidationError> {
        self.files.get(path).ok_or_else(|| {
            ValidationError::new(
                field,
                format!("file `{path}` was not provided with the compose file"),
            )
        })
    }

    fn cloud_init(&self, raw: Option<RawCloudInit>) -> Result<ServiceCloudInit, ValidationError> {
        let ci = self.sub("cloudInit");
        let Some(raw) = raw else {
            return Ok(ServiceCloudInit {
                user_data: DEFAULT_USER_DATA.as_bytes().to_vec(),
                meta: BTreeMap::new(),
                network_config: None,
            });
        };
        let both = |name: &str, other: &str| {
            Err(ValidationError::new(
                format!("{ci}.{name}"),
                format!("cannot be combined with {other}; give exactly one of the two"),
            ))
        };
        let user_data = match (raw.user_data, raw.user_data_file) {
            (Some(_), Some(_)) => return both("userDataFile", "userData"),
            (Some(text), None) => {
                check_user_data(&format!("{ci}.userData"), text.as_bytes())?;
                text.into_bytes()
            }
            (None, Some(path)) => {
                let field = format!("{ci}.userDataFile");
                let bytes = self.file(&field, &path)?.clone();
                check_user_data(&field, &bytes)?;
                bytes
            }
            (None, None) => DEFAULT_USER_DATA.as_bytes().to_vec(),
        };
        let meta = match (raw.meta_data, raw.meta_data_file) {
            (Some(_), Some(_)) => return both("metaDataFile", "metaData"),
            (Some(value), None) => mapping_keys(&format!("{ci}.metaData"), value)?,
            (None, Some(path)) => {
                let field = format!("{ci}.metaDataFile");
                mapping_keys(&field, self.yaml_file(&field, &path)?.1)?
            }
            (None, None) => BTreeMap::new(),
        };
        let network_config = match (raw.network_config, raw.network_config_file) {
            (Some(_), Some(_)) => return both("networkConfigFile", "networkConfig"),
            (Some(value), None) => {
                let field = format!("{ci}.networkConfig");
                if !value.is_mapping() {
                    return Err(ValidationError::new(
                        field,
                        "must be a mapping (a network-config document)",
                    ));
                }
                Some(
                    serde_yaml::to_string(&value)
                        .map_err(|e| ValidationError::new(field, e.to_string()))?,
                )
            }
            (None, Some(path)) => {
                let field = format!("{ci}.networkConfigFile");
                let (text, value) = self.yaml_file(&field, &path)?;
                if !value.is_mapping() {
                    return Err(ValidationError::new(
                        field,
                        format!("`{path}` is not a YAML mapping"),
                    ));
                }
                Some(text)
            }
            (None, None) => None,
        };
        Ok(ServiceCloudInit {
            user_data,
            meta,
            network_config,
        })
    }

    /// A named file read as YAML, errors pointing into that file.
    fn yaml_file(&self, field: &str, path: &str) -> Result<(String, Value), ValidationError> {
        let bytes = self.file(field, path)?;
        if bytes.len() > MAX_YAML_BYTES {
            return Err(ValidationError::new(
                field,
                format!("`{path}` is larger than 1 MiB"),
            ));
        }
        let text = String::from_utf8(bytes.clone())
            .map_err(|_| ValidationError::new(field, format!("`{path}` is not UTF-8 text")))?;
        let value = parse_yaml::<Value>(&text).map_err(|e| {
            let mut err =
                ValidationError::new(field, format!("in `{path}`: {}: {}", e.field, e.reason));
            err.line = e.line;
            err.column = e.column;
            err
        })?;
        Ok((text, value))
    }

    fn depends_on(&self, raw: Option<RawDependsOn>) -> Result<Vec<Dependency>, ValidationError> {
        let entries: Vec<(String, String, super::DependencyCondition)> = match raw {
            None => Vec::new(),
            Some(RawDependsOn::List(names)) => names
                .into_iter()
                .enumerate()
                .map(|(i, name)| {
                    (
                        format!("{}.dependsOn[{i}]", self.field),
                        name,
                        Default::default(),
                    )
                })
                .collect(),
            Some(RawDependsOn::Map(map)) => map
                .0
                .into_iter()
                .map(|(name, dep)| {
                    let condition = dep.and_then(|d| d.condition).unwrap_or_default();
                    (format!("{}.dependsOn.{name}", self.field), name, condition)
                })
                .collect(),
        };
        let mut out: Vec<Dependency> = Vec::new();
        for (field, name, condition) in entries {
            if !self.services.contains(&name) {
                return Err(ValidationError::new(
                    field,
                    format!("unknown service `{name}`"),
                ));
            }
            if out.iter().any(|d| d.service == name) {
                return Err(ValidationError::new(
                    field,
                    format!("`{name}` is listed twice"),
                ));
            }
            out.push(Dependency {
                service: name,
                condition,
            });
        }
        Ok(out)
    }
}

fn mapping_keys(field: &str, value: Value) -> Result<BTreeMap<String, Value>, ValidationError> {
    match value {
        Value::Null => Ok(BTreeMap::new()),
        Value::Mapping(map) => map
            .into_iter()
            .map(|(k, v)| match k {
                Value::String(k) => Ok((k, v)),
                other => Err(ValidationError::new(
                    field,
                    format!("keys must be strings, found {other:?}"),
                )),
            })
            .collect(),
        _ => Err(ValidationError::new(
            field,
            "must be a mapping of meta-data keys",
        )),
    }
}
