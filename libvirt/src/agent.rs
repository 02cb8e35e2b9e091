//! Calls to QEMU's guest agent, each bounded by a timeout of its own
//! (`virDomainQemuAgentCommand`): `exec`'s commands and the addresses of
//! the cards whose address neither the spec nor a DHCP lease of libvirt's
//! gives (bridged and macvtap).
//!
//! The addresses are not asked with `virDomainInterfaceAddresses(.._AGENT)`:
//! libvirt bounds that call only by the domain's agent response timeout,
//! which blocks by default, so a guest whose agent stops answering with its
//! port still open (frozen, busy, or a half-dead guest) held `ps` and
//! `inspect` forever. [`ADDRESSES_TIMEOUT_S`] bounds it instead; an agent
//! that does not answer in time leaves those addresses blank.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use virt::domain::Domain;
use virt::error::{Error as VirtError, ErrorNumber};
use vmr_domain::network::MacAddr;
use vmr_ports::HypervisorError;

use super::conn::{map_err, vm};

/// How long one of `exec`'s agent commands may take before the agent counts
/// as not answering (libvirt's timeout, in seconds).
pub(crate) const AGENT_TIMEOUT_S: i32 = 10;
/// How long `ps` and `inspect` wait for the agent's addresses of one VM: a
/// listing of every VM must not wait on a silent agent for long.
pub(crate) const ADDRESSES_TIMEOUT_S: i32 = 3;

fn agent_error(name: &str, err: &VirtError, timeout_s: i32) -> HypervisorError {
    match err.code().unwrap_or(ErrorNumber::InternalError) {
        ErrorNumber::AgentUnresponsive | ErrorNumber::AgentUnsynced => {
            HypervisorError::unavailable(
                format!(
                    "the guest agent of VM {name} is not answering (is qemu-guest-agent installed and running in the guest?): {}",
                    err.message()
                ),
                err.clone(),
            )
        }
        ErrorNumber::AgentCommandTimeout => HypervisorError::Timeout {
            kind: "VM",
            name: name.to_owned(),
            what: "answer through its guest agent",
            after: Duration::from_secs(timeout_s.unsigned_abs().into()),
        },
        _ => map_err(vm(name), err),
    }
}

#[derive(Deserialize)]
struct Reply<T> {
    #[serde(rename = "return")]
    value: T,
}

/// Runs one agent `command` in the domain `name`, waiting `timeout_s`
/// seconds at most for its answer, and reads the answer's `return`.
pub(crate) fn agent_call<T: for<'de> Deserialize<'de>>(
    dom: &Domain,
    name: &str,
    command: &serde_json::Value,
    timeout_s: i32,
) -> Result<T, HypervisorError> {
    let answer = dom
        .qemu_agent_command(&command.to_string(), timeout_s, 0)
        .map_err(|e| agent_error(name, &e, timeout_s))?;
    serde_json::from_str::<Reply<T>>(&answer)
        .map(|r| r.value)
        .map_err(|e| {
            HypervisorError::backend(
                format!("unreadable answer from the guest agent of VM {name}: {e}"),
                e,
            )
        })
}

/// One card of `guest-network-get-interfaces`.
#[derive(Debug, Deserialize)]
struct GuestInterface {
    #[serde(rename = "hardware-address", default)]
    hardware_address: Option<String>,
    #[serde(rename = "ip-addresses", default)]
    ip_addresses: Vec<GuestAddress>,
}

#[derive(Debug, Deserialize)]
struct GuestAddress {
    #[serde(rename = "ip-address")]
    address: String,
}

/// The first IPv4 address of each guest card, by MAC, as the guest agent
/// reports them within [`ADDRESSES_TIMEOUT_S`]; empty when it does not
/// answer (not booted yet, no agent, frozen), which is not an error.
pub(crate) fn addresses(dom: &Domain, name: &str) -> HashMap<MacAddr, Ipv4Addr> {
    match agent_call::<Vec<GuestInterface>>(
        dom,
        name,
        &json!({"execute": "guest-network-get-interfaces"}),
        ADDRESSES_TIMEOUT_S,
    ) {
        Ok(interfaces) => by_mac(&interfaces),
        Err(e) => {
            tracing::debug!(vm = name, error = %e, "no addresses from the guest agent");
            HashMap::new()
        }
    }
}

fn by_mac(interfaces: &[GuestInterface]) -> HashMap<MacAddr, Ipv4Addr> {
    first_ipv4_by_mac(interfaces.iter().map(|iface| {
        (
            iface.hardware_address.as_deref(),
            iface.ip_addresses.iter().map(|a| a.address.as_str()),
        )
    }))
}

/// Each card's first IPv4 address by MAC, from `(MAC, addresses)` pairs
/// (the agent's or libvirt's leases); a card without a MAC or without an
/// IPv4 address is left out.
pub(crate) fn first_ipv4_by_mac<'a, A: Iterator<Item = &'a str>>(
    cards: impl Iterator<Item = (Option<&'a str>, A)>,
) -> HashMap<MacAddr, Ipv4Addr> {
    cards
        .filter_map(|(mac, mut addresses)| {
            let mac = mac?.parse::<MacAddr>().ok()?;
            let ip = addresses.find_map(|a| a.parse::<Ipv4Addr>().ok())?;
            Some((mac, ip))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_card_gets_its_first_ipv4_address_by_mac() {
        // What qemu-ga 7 answers, trimmed: loopback, a card with IPv6
        // first, a card without addresses, one without a MAC.
        let answer = r#"{"return": [
            {"name": "lo", "hardware-address": "00:00:00:00:00:00",
             "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}]},
            {"name": "eth0", "hardware-address": "52:54:00:12:34:56",
             "ip-addresses": [
                {"ip-address-type": "ipv6", "ip-address": "fe80::5054:ff:fe12:3456", "prefix": 64},
                {"ip-address-type": "ipv4", "ip-address": "10.1.2.3", "prefix": 24},
                {"ip-address-type": "ipv4", "ip-address": "10.1.2.4", "prefix": 24}],
             "statistics": {"rx-bytes": 1}},
            {"name": "eth1", "hardware-address": "52:54:00:ab:cd:ef"},
            {"name": "sit0", "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "10.9.9.9", "prefix": 8}]}
        ]}"#;
        let reply: Reply<Vec<GuestInterface>> = serde_json::from_str(answer).unwrap();
        let found = by_mac(&reply.value);
        let mac = |s: &str| s.parse::<MacAddr>().unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[&mac("52:54:00:12:34:56")], Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(
            found[&mac("00:00:00:00:00:00")],
            Ipv4Addr::new(127, 0, 0, 1)
        );
    }
}
