//! `vmr ssh` on the real guest whose first card the host cannot reach (a
//! macvtap card with a static address, known long before any lease, on a
//! lower link with no traffic of its own) and whose second is on NAT: ssh
//! goes through the NAT card, and with sshd stopped it fails within its
//! wait naming both addresses and why each gave no banner.

use std::process::Command;

use vmr_tests::guest;
use vmr_tests::libvirt::{subnet_prefix, unique_suffix};

use super::guest_networks::{add_lower_link, answered};

/// The macvtap card's address: TEST-NET-2, on no segment the host is on.
const UNREACHABLE: &str = "198.51.100.10";

#[test]
fn real_guest_ssh_skips_an_unreachable_first_card_for_the_nat_one() {
    let sfx = unique_suffix();
    // The lower link before the VM's guard: it is removed after the domain.
    let lower = LowerLink::new(&format!("vmrss{sfx}"));
    let Some(mut t) = guest::Setup::new() else {
        return;
    };
    let vm = t.domain("sshreach");
    let nat = t.network("sshnat");
    let macvtap = t.network("sshmv");
    let daemon = &t.daemon;
    let prefix = subnet_prefix(&t.sfx);
    daemon
        .vmr(&[
            "network",
            "create",
            &nat,
            "--mode",
            "nat",
            "--subnet",
            &format!("{prefix}.0/24"),
        ])
        .ok();
    daemon
        .vmr(&[
            "network",
            "create",
            &macvtap,
            "--mode",
            "macvtap",
            "--interface",
            &lower.0,
        ])
        .ok();
    daemon
        .vmr(&[
            "run",
            &t.image,
            "--name",
            &vm,
            "--network",
            &format!("{macvtap}:{UNREACHABLE}/24"),
            "--network",
            &nat,
        ])
        .ok();

    // Right after run: the static address is known at once, the lease and
    // sshd only once the guest has booted; ssh waits and takes the NAT card.
    let hostname = daemon
        .vmr(&["ssh", "--wait", "300", &vm, "--", "cat", "/etc/hostname"])
        .ok();
    assert_eq!(hostname.trim(), vm);
    let inspected = daemon.vmr(&["inspect", "--type", "vm", &vm]).json();
    let cards = inspected["vm"]["interfaces"].as_array().unwrap();
    assert_eq!(cards[0]["ip"], UNREACHABLE, "{inspected}");
    assert_eq!(cards[1]["network"], *nat, "{inspected}");
    let nat_ip = cards[1]["ip"].as_str().unwrap().to_owned();
    assert!(nat_ip.starts_with(&format!("{prefix}.")), "{inspected}");
    // sshd's view of the connection: "CLIENT PORT SERVER 22".
    let connection = daemon
        .vmr(&["ssh", &vm, "--", "sh", "-c", "echo $SSH_CONNECTION"])
        .ok();
    assert_eq!(
        connection.split_whitespace().nth(2),
        Some(nat_ip.as_str()),
        "{connection}"
    );

    // With sshd stopped (through the guest agent), the wait ends with every
    // address tried and why it failed, instead of hanging.
    daemon
        .vmr(&["exec", &vm, "--", "systemctl", "stop", "ssh.service"])
        .ok();
    let err = answered(daemon, &["ssh", "--wait", "5", &vm, "--", "true"]).err();
    assert!(
        err.contains(&format!("VM {vm}: no address answered")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{nat_ip} (nat network {nat}, dhcp): connect:")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{UNREACHABLE} (macvtap network {macvtap}, static): "
        )),
        "{err}"
    );
    daemon
        .vmr(&["exec", &vm, "--", "systemctl", "start", "ssh.service"])
        .ok();
    let back = daemon.vmr(&["ssh", &vm, "--", "true"]);
    assert!(back.success(), "{}", back.stderr());

    daemon.vmr(&["rm", "--force", &vm]).ok();
    for network in [&nat, &macvtap] {
        daemon.vmr(&["network", "rm", network]).ok();
    }
}

/// The macvtap card's lower link ([`add_lower_link`]), removed when dropped.
struct LowerLink(String);

impl LowerLink {
    fn new(name: &str) -> Self {
        let link = Self(name.to_owned());
        add_lower_link(&link.0);
        link
    }
}

impl Drop for LowerLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}
