//! Blocking network operations on a libvirt connection, with the checks
//! libvirt itself does not make: subnets that overlap another network's,
//! missing host bridges and interfaces (on a local QEMU host), networks
//! still used by a VM.

use std::path::Path;

use virt::connect::Connect;
use virt::network::Network;
use vmr_domain::network::{NetworkMode, SubnetOverlap, check_no_overlap};
use vmr_ports::{HypervisorError, NetworkDefinition, NetworkDetails, NetworkRecord};

use super::conn::{is_missing, map_err, network};
use super::vms;
use vmr_adapters::libvirt::network_xml::{self, ParsedNetwork};

fn lookup(conn: &Connect, name: &str) -> Result<Network, HypervisorError> {
    conn.lookup_network_by_name(name)
        .map_err(|e| map_err(network(name), &e))
}

fn parsed(net: &Network, name: &str) -> Result<Option<ParsedNetwork>, HypervisorError> {
    let xml = net.xml_desc(0).map_err(|e| map_err(network(name), &e))?;
    network_xml::parse(&xml)
}

fn record(net: &Network, name: &str) -> Result<Option<NetworkRecord>, HypervisorError> {
    let Some(parsed) = parsed(net, name)? else {
        return Ok(None);
    };
    let active = net.is_active().map_err(|e| map_err(network(name), &e))?;
    Ok(Some(NetworkRecord {
        spec: parsed.spec,
        project: parsed.project,
        active,
        bridge: parsed.bridge,
        managed: parsed.managed,
    }))
}

/// `host_checks`: whether the host's interfaces are the hypervisor's (a
/// local QEMU driver), so a missing bridge or interface can be caught now
/// rather than when a VM starts.
pub(crate) fn define(
    conn: &Connect,
    def: &NetworkDefinition,
    host_checks: bool,
) -> Result<NetworkRecord, HypervisorError> {
    let spec = &def.spec;
    let name = spec.name.as_str();
    match conn.lookup_network_by_name(name) {
        Ok(_) => {
            return Err(HypervisorError::AlreadyExists {
                kind: "network",
                name: name.to_owned(),
            });
        }
        Err(e) if is_missing(&e) => {}
        Err(e) => return Err(map_err(network(name), &e)),
    }
    if spec.ipv4.is_some() {
        let others = list(conn)?;
        check_no_overlap(spec, others.iter().map(|n| &n.spec))
            .map_err(|e| HypervisorError::invalid(SubnetOverlap::FIELD, e.to_string()))?;
    }
    if host_checks {
        check_host_devices(def)?;
    }
    let xml = network_xml::render(def)?;
    tracing::debug!(network = name, %xml, "defining network");
    let net = conn
        .define_network_xml(&xml)
        .map_err(|e| map_err(network(name), &e))?;
    record(&net, name)?.ok_or_else(|| {
        HypervisorError::Backend(
            format!("network {name} was defined but reads back unlike vmr's").into(),
        )
    })
}

fn check_host_devices(def: &NetworkDefinition) -> Result<(), HypervisorError> {
    let sys = Path::new("/sys/class/net");
    match def.spec.mode {
        NetworkMode::Bridged => {
            let bridge = def.spec.bridge.as_deref().unwrap_or_default();
            if !sys.join(bridge).join("bridge").exists() {
                return Err(HypervisorError::NotFound {
                    kind: "host bridge",
                    name: bridge.to_owned(),
                });
            }
        }
        NetworkMode::Macvtap => {
            let interface = def.spec.interface.as_deref().unwrap_or_default();
            if !sys.join(interface).exists() {
                return Err(HypervisorError::NotFound {
                    kind: "host interface",
                    name: interface.to_owned(),
                });
            }
        }
        _ => {}
    }
    Ok(())
}

pub(crate) fn start(conn: &Connect, name: &str) -> Result<(), HypervisorError> {
    let net = lookup(conn, name)?;
    if net.is_active().map_err(|e| map_err(network(name), &e))? {
        return Err(network_state(name, "active", "inactive"));
    }
    net.create().map_err(|e| map_err(network(name), &e))
}

pub(crate) fn stop(conn: &Connect, name: &str) -> Result<(), HypervisorError> {
    let net = lookup(conn, name)?;
    if !net.is_active().map_err(|e| map_err(network(name), &e))? {
        return Err(network_state(name, "inactive", "active"));
    }
    net.destroy().map_err(|e| map_err(network(name), &e))
}

pub(crate) fn remove(conn: &Connect, name: &str) -> Result<(), HypervisorError> {
    let net = lookup(conn, name)?;
    if net.is_active().map_err(|e| map_err(network(name), &e))? {
        return Err(network_state(name, "active", "inactive"));
    }
    let users = vms::users_of_network(conn, name)?;
    if !users.is_empty() {
        return Err(network_state(
            name,
            &format!("used by VM {}", users.join(", ")),
            "unused (remove those VMs first)",
        ));
    }
    net.undefine().map_err(|e| map_err(network(name), &e))
}

pub(crate) fn list(conn: &Connect) -> Result<Vec<NetworkRecord>, HypervisorError> {
    let nets = conn
        .list_all_networks(0)
        .map_err(|e| map_err(network("*"), &e))?;
    let mut records = Vec::new();
    for net in nets {
        let Ok(name) = net.name() else { continue };
        match record(&net, &name) {
            Ok(Some(r)) => records.push(r),
            Ok(None) | Err(HypervisorError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    records.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Ok(records)
}

pub(crate) fn inspect(conn: &Connect, name: &str) -> Result<NetworkDetails, HypervisorError> {
    let net = lookup(conn, name)?;
    let record = record(&net, name)?.ok_or_else(|| {
        HypervisorError::invalid(
            "network",
            format!("{name} uses a libvirt network form that vmr does not describe"),
        )
    })?;
    let definition = net.xml_desc(0).map_err(|e| map_err(network(name), &e))?;
    Ok(NetworkDetails { record, definition })
}

fn network_state(name: &str, state: &str, wanted: &str) -> HypervisorError {
    HypervisorError::InvalidState {
        kind: "network",
        name: name.to_owned(),
        state: state.to_owned(),
        wanted: wanted.to_owned(),
    }
}
