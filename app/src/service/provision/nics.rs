//! A VM's NICs: each request checked against its network (static address
//! inside the subnet, not the gateway, broadcast or DHCP range, not used by
//! another VM; gateway inside the subnet; MAC unique), with the defaults
//! filled in (a gateway for static addresses on forwarding networks, a MAC
//! derived from the VM's and the network's names), with the network's IPv4
//! settings its cloud-init network-config entry is written from.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use vmr_domain::network::{MacAddr, NetworkName};
use vmr_domain::provision::Nic;
use vmr_domain::vm::NetworkAttachment;
use vmr_ports::driving::{NicRequest, UseCaseError};
use vmr_ports::{NetworkRecord, VmRecord};

/// Addresses and MACs already taken, by whom.
pub(super) struct Taken {
    macs: BTreeMap<MacAddr, String>,
    addresses: BTreeMap<(NetworkName, Ipv4Addr), String>,
}

impl Taken {
    pub(super) fn of(vms: &[VmRecord]) -> Self {
        let mut taken = Self {
            macs: BTreeMap::new(),
            addresses: BTreeMap::new(),
        };
        for vm in vms {
            let owner = vm.spec.name.to_string();
            for nic in &vm.spec.networks {
                taken.macs.insert(nic.mac, owner.clone());
                if let Some(ip) = nic.static_ip {
                    taken
                        .addresses
                        .insert((nic.network.clone(), ip.addr()), owner.clone());
                }
            }
            for iface in &vm.interfaces {
                if let Some(ip) = iface.ip {
                    taken
                        .addresses
                        .insert((iface.network.clone(), ip), owner.clone());
                }
            }
        }
        taken
    }
}

/// Builds one NIC.
pub(super) fn attach(
    vm: &str,
    index: usize,
    nic: &NicRequest,
    network: &NetworkRecord,
    taken: &mut Taken,
    occurrence: usize,
) -> Result<Nic, UseCaseError> {
    let field = |name: &str| format!("networks[{index}].{name}");
    let ipv4 = network.spec.ipv4;
    let static_ip = match nic.static_ip {
        None => None,
        Some(requested) => {
            let net = match (ipv4, requested.prefix_len) {
                (Some(cfg), prefix) => {
                    if let Some(prefix) = prefix
                        && prefix != cfg.subnet.prefix_len()
                    {
                        return Err(UseCaseError::invalid(
                            field("static_ip"),
                            format!(
                                "{}/{prefix} does not match the subnet {} of network {}",
                                requested.addr, cfg.subnet, nic.network
                            ),
                        ));
                    }
                    cfg.check_static_ip(requested.addr).map_err(|reason| {
                        UseCaseError::invalid(
                            field("static_ip"),
                            format!("{reason} of network {}", nic.network),
                        )
                    })?;
                    cfg.with_prefix(requested.addr)
                }
                (None, Some(prefix)) => Ipv4Net::new(requested.addr, prefix).map_err(|_| {
                    UseCaseError::invalid(
                        field("static_ip"),
                        format!("/{prefix} is not an IPv4 prefix length"),
                    )
                })?,
                (None, None) => {
                    return Err(UseCaseError::invalid(
                        field("static_ip"),
                        format!(
                            "network {} is {} and has no subnet vmr knows: give the address with its prefix length, like {}/24",
                            nic.network, network.spec.mode, requested.addr
                        ),
                    ));
                }
            };
            let key = (nic.network.clone(), net.addr());
            if let Some(owner) = taken.addresses.get(&key) {
                return Err(UseCaseError::invalid(
                    field("static_ip"),
                    format!(
                        "{} is already used by VM {owner} on network {}",
                        net.addr(),
                        nic.network
                    ),
                ));
            }
            taken.addresses.insert(key, vm.to_owned());
            Some(net)
        }
    };
    let gateway = match (nic.gateway, ipv4) {
        (Some(gateway), Some(cfg)) if !cfg.subnet.contains(&gateway) => {
            return Err(UseCaseError::invalid(
                field("gateway"),
                format!(
                    "{gateway} is outside the subnet {} of network {}",
                    cfg.subnet, nic.network
                ),
            ));
        }
        (Some(gateway), _) => Some(gateway),
        // A static address on a network that forwards routes through the
        // host, as DHCP would have told the guest.
        (None, cfg) if static_ip.is_some() => network.spec.mode.static_route(cfg.as_ref()),
        (None, _) => None,
    };
    let mac = match nic.mac {
        Some(mac) => {
            if let Some(owner) = taken.macs.get(&mac) {
                return Err(UseCaseError::invalid(
                    field("mac"),
                    format!("{mac} is already used by VM {owner}"),
                ));
            }
            mac
        }
        None => derive_mac(vm, &nic.network, occurrence, &taken.macs),
    };
    taken.macs.insert(mac, vm.to_owned());
    let attachment = NetworkAttachment {
        network: nic.network.clone(),
        mac,
        static_ip,
        gateway,
    };
    Ok(Nic { attachment, ipv4 })
}

/// A stable MAC for the VM's `occurrence`-th NIC on `network`, avoiding the
/// (unlikely) clash with one already in use.
fn derive_mac(
    vm: &str,
    network: &NetworkName,
    occurrence: usize,
    taken: &BTreeMap<MacAddr, String>,
) -> MacAddr {
    let seed = if occurrence == 0 {
        format!("{vm}/{network}")
    } else {
        format!("{vm}/{network}/{occurrence}")
    };
    let mut mac = MacAddr::derive(&seed);
    for attempt in 1..=64 {
        if !taken.contains_key(&mac) {
            break;
        }
        mac = MacAddr::derive(&format!("{seed}#{attempt}"));
    }
    mac
}
