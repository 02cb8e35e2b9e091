//! Blocking VM operations on a libvirt connection: each function runs on a
//! blocking thread (see [`super::conn::Connection::run`]) and checks the
//! port's state machine before asking libvirt, so that misuse gives the
//! same error as with the fake.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use vmr_domain::network::MacAddr;
use vmr_domain::vm::VmState;
use vmr_ports::{HypervisorError, VmDefinition, VmDetails, VmInterface, VmRecord};

use super::agent;
use super::conn::{is_missing, map_err, network, vm};
use super::events::vm_state;
use vmr_adapters::libvirt::domain_xml::{self, ParsedDomain};

pub(crate) fn lookup(conn: &Connect, name: &str) -> Result<Domain, HypervisorError> {
    conn.lookup_domain_by_name(name)
        .map_err(|e| map_err(vm(name), &e))
}

/// Fails with `NotFound` for a domain that exists but is not vmr's.
pub(crate) fn parsed(dom: &Domain, name: &str) -> Result<ParsedDomain, HypervisorError> {
    let xml = dom
        .xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE)
        .map_err(|e| map_err(vm(name), &e))?;
    domain_xml::parse(&xml)?.ok_or_else(|| HypervisorError::NotFound {
        kind: "VM",
        name: name.to_owned(),
    })
}

pub(crate) fn define(
    conn: &Connect,
    def: &VmDefinition,
    virt_type: &str,
) -> Result<VmRecord, HypervisorError> {
    let name = def.spec.name.as_str();
    match conn.lookup_domain_by_name(name) {
        Ok(_) => {
            return Err(HypervisorError::AlreadyExists {
                kind: "VM",
                name: name.to_owned(),
            });
        }
        Err(e) if is_missing(&e) => {}
        Err(e) => return Err(map_err(vm(name), &e)),
    }
    for nic in &def.spec.networks {
        let net = nic.network.as_str();
        conn.lookup_network_by_name(net)
            .map_err(|e| map_err(network(net), &e))?;
    }
    let xml = domain_xml::render(def, virt_type)?;
    tracing::debug!(vm = name, %xml, "defining domain");
    let dom = conn
        .define_domain_xml(&xml)
        .map_err(|e| map_err(vm(name), &e))?;
    record(&dom, name)
}

/// Starts a domain that is not active, once its networks are up.
pub(crate) fn start(conn: &Connect, name: &str) -> Result<(), HypervisorError> {
    let dom = lookup(conn, name)?;
    let parsed = parsed(&dom, name)?;
    let (state, _) = vm_state(&dom);
    if state.is_active() {
        return Err(invalid_state(name, state, "stopped"));
    }
    for nic in &parsed.spec.networks {
        let net_name = nic.network.as_str();
        let net = conn
            .lookup_network_by_name(net_name)
            .map_err(|e| map_err(network(net_name), &e))?;
        if !net
            .is_active()
            .map_err(|e| map_err(network(net_name), &e))?
        {
            return Err(HypervisorError::InvalidState {
                kind: "network",
                name: net_name.to_owned(),
                state: "inactive".into(),
                wanted: "active".into(),
            });
        }
    }
    // libvirt's and QEMU's own share of a start, apart from vmr's checks
    // around it (`scripts/bench/vm.sh` tables it).
    let began = std::time::Instant::now();
    let created = dom.create();
    let duration_ms = began.elapsed().as_secs_f64() * 1e3;
    tracing::debug!(
        vm = name,
        call = "virDomainCreate",
        duration_ms,
        "libvirt call"
    );
    created.map_err(|e| map_err(vm(name), &e))?;
    Ok(())
}

/// Checks that the VM is active before a stop; returns the domain.
pub(crate) fn active_domain(conn: &Connect, name: &str) -> Result<Domain, HypervisorError> {
    let dom = lookup(conn, name)?;
    parsed(&dom, name)?;
    let (state, _) = vm_state(&dom);
    if !state.is_active() {
        return Err(invalid_state(name, state, "running"));
    }
    Ok(dom)
}

/// Asks the guest to power off (ACPI).
pub(crate) fn shutdown(conn: &Connect, name: &str) -> Result<(), HypervisorError> {
    let dom = active_domain(conn, name)?;
    dom.shutdown().or_else(|e| ignore_not_running(name, &e))
}

/// Powers the VM off at once; a VM that stopped meanwhile is fine.
pub(crate) fn destroy(conn: &Connect, name: &str) -> Result<(), HypervisorError> {
    let dom = lookup(conn, name)?;
    if !vm_state(&dom).0.is_active() {
        return Ok(());
    }
    dom.destroy().or_else(|e| ignore_not_running(name, &e))
}

pub(crate) fn is_active(conn: &Connect, name: &str) -> Result<bool, HypervisorError> {
    let dom = lookup(conn, name)?;
    Ok(vm_state(&dom).0.is_active())
}

fn ignore_not_running(name: &str, e: &virt::error::Error) -> Result<(), HypervisorError> {
    if e.code().unwrap_or(ErrorNumber::InternalError) == ErrorNumber::OperationInvalid {
        Ok(())
    } else {
        Err(map_err(vm(name), e))
    }
}

pub(crate) fn undefine(conn: &Connect, name: &str) -> Result<(), HypervisorError> {
    let dom = lookup(conn, name)?;
    parsed(&dom, name)?;
    let (state, _) = vm_state(&dom);
    if state.is_active() {
        return Err(invalid_state(name, state, "stopped"));
    }
    let flags = virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM
        | virt::sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA;
    match dom.undefine_flags(flags) {
        Ok(()) => Ok(()),
        // Drivers without those flags (the test driver) have nothing to clean.
        Err(e)
            if matches!(
                e.code().unwrap_or(ErrorNumber::InternalError),
                ErrorNumber::NoSupport | ErrorNumber::InvalidArg | ErrorNumber::ArgumentUnsupported
            ) =>
        {
            dom.undefine().map_err(|e| map_err(vm(name), &e))
        }
        Err(e) => Err(map_err(vm(name), &e)),
    }
}

pub(crate) fn list(conn: &Connect) -> Result<Vec<VmRecord>, HypervisorError> {
    let domains = conn.list_all_domains(0).map_err(|e| map_err(vm("*"), &e))?;
    let mut records = Vec::new();
    for dom in domains {
        let Ok(name) = dom.name() else { continue };
        match record(&dom, &name) {
            Ok(r) => records.push(r),
            // Not vmr's, or undefined between the listing and now.
            Err(HypervisorError::NotFound { .. }) => {}
            // One domain whose metadata was mangled by hand must not hide
            // all the others; inspecting it reports the error.
            Err(HypervisorError::Backend(reason)) => {
                tracing::warn!(vm = %name, %reason, "skipping a domain vmr cannot read");
            }
            Err(e) => return Err(e),
        }
    }
    records.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Ok(records)
}

pub(crate) fn inspect(conn: &Connect, name: &str) -> Result<VmDetails, HypervisorError> {
    let dom = lookup(conn, name)?;
    let record = record(&dom, name)?;
    let definition = dom.xml_desc(0).map_err(|e| map_err(vm(name), &e))?;
    Ok(VmDetails { record, definition })
}

fn record(dom: &Domain, name: &str) -> Result<VmRecord, HypervisorError> {
    let parsed = parsed(dom, name)?;
    let (state, _) = vm_state(dom);
    let active = state.is_active();
    let leases = if active { leases(dom) } else { HashMap::new() };
    // The agent only for what neither the spec nor a lease says (bridged and
    // macvtap networks, whose DHCP server libvirt does not run), and only
    // once per VM: it answers from inside the guest, so it is the slow one,
    // and a bounded call (a silent agent must not hold up a listing).
    let needs_agent = active
        && parsed
            .spec
            .networks
            .iter()
            .any(|nic| nic.static_ip.is_none() && !leases.contains_key(&nic.mac));
    let agent = if needs_agent {
        agent::addresses(dom, name)
    } else {
        HashMap::new()
    };
    let interfaces = parsed
        .spec
        .networks
        .iter()
        .map(|nic| {
            VmInterface::of(
                nic,
                leases.get(&nic.mac).copied(),
                agent.get(&nic.mac).copied(),
            )
        })
        .collect();
    Ok(VmRecord {
        spec: parsed.spec,
        state,
        interfaces,
        disk: parsed.disk,
        cdroms: parsed.cdroms,
        console_log: parsed.console_log,
        spec_hash: parsed.spec_hash,
    })
}

/// IPv4 addresses by MAC from the DHCP leases of libvirt's own networks.
/// Missing answers (no DHCP yet, a driver without leases) are not errors.
fn leases(dom: &Domain) -> HashMap<MacAddr, Ipv4Addr> {
    let Ok(interfaces) =
        dom.interface_addresses(virt::sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
    else {
        return HashMap::new();
    };
    agent::first_ipv4_by_mac(interfaces.iter().map(|iface| {
        (
            iface.hwaddr.as_deref(),
            iface.addrs.iter().map(|a| a.addr.as_str()),
        )
    }))
}

pub(crate) fn invalid_state(name: &str, state: VmState, wanted: &str) -> HypervisorError {
    HypervisorError::InvalidState {
        kind: "VM",
        name: name.to_owned(),
        state: state.to_string(),
        wanted: wanted.to_owned(),
    }
}

/// Names of the vmr VMs whose interfaces attach to `network_name`.
pub(crate) fn users_of_network(
    conn: &Connect,
    network_name: &str,
) -> Result<Vec<String>, HypervisorError> {
    let domains = conn.list_all_domains(0).map_err(|e| map_err(vm("*"), &e))?;
    let mut users = Vec::new();
    for dom in domains {
        let (Ok(name), Ok(xml)) = (dom.name(), dom.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE))
        else {
            continue;
        };
        if domain_xml::attached_networks(&xml)?
            .iter()
            .any(|n| n == network_name)
        {
            users.push(name);
        }
    }
    Ok(users)
}
