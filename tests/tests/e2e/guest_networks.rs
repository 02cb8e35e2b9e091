//! The real guest on the network modes beyond NAT and isolated: routed,
//! open, bridged (a test bridge with the test's own DHCP server, so the
//! address comes from the guest agent) and macvtap (on a `dummy`
//! interface, or a veth on a kernel without one: a static address). One
//! VM with a card on each, one boot; each card's address is checked from
//! inside the guest with `vmr exec` (the host cannot reach a macvtap guest
//! through the lower link), each card's host side from the host's links.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vmr_tests::guest;
use vmr_tests::libvirt::{unique_suffix, wait_for};
use vmr_tests::{Daemon, VmrOutput};

#[test]
fn real_guest_gets_its_address_on_routed_open_bridged_and_macvtap() {
    let sfx = unique_suffix();
    let n = u32::from_str_radix(&sfx[..4], 16).unwrap();
    let a = 200 + n % 50;
    let b = (n / 50) % 60 * 4;
    let subnet = |i: u32| format!("10.{a}.{}", b + i);
    // Host links before the VM's guard: they are removed after the domain.
    let links = HostLinks::new(&sfx, &subnet(2));
    let Some(mut t) = guest::Setup::new() else {
        return;
    };
    let vm = t.domain("nets");
    let routed = t.network("rt");
    let open = t.network("op");
    let bridged = t.network("br");
    let macvtap = t.network("mv");
    let daemon = &t.daemon;

    for (name, mode, subnet) in [(&routed, "routed", subnet(0)), (&open, "open", subnet(1))] {
        daemon
            .vmr(&[
                "network",
                "create",
                name,
                "--mode",
                mode,
                "--subnet",
                &format!("{subnet}.0/24"),
            ])
            .ok();
    }
    daemon
        .vmr(&[
            "network",
            "create",
            &bridged,
            "--mode",
            "bridged",
            "--bridge",
            &links.bridge,
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
            &links.dummy,
        ])
        .ok();
    let static_ip = format!("{}.10", subnet(3));
    daemon
        .vmr(&[
            "run",
            &t.image,
            "--name",
            &vm,
            "--network",
            &routed,
            "--network",
            &open,
            "--network",
            &bridged,
            "--network",
            &format!("{macvtap}:{static_ip}/24"),
        ])
        .ok();

    // From inside, through the guest agent (no host route is needed: the
    // host cannot reach a macvtap guest through its own lower link): every
    // card, by its MAC, gets an address on its network.
    guest::wait_for_agent(daemon, &["exec", &vm, "--", "true"], &vm);
    let inspected = daemon.vmr(&["inspect", "--type", "vm", &vm]).json();
    let macs: Vec<String> = inspected["vm"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["mac"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(macs.len(), 4, "{inspected}");
    let expected = [
        (&routed, "dhcp", subnet(0)),
        (&open, "dhcp", subnet(1)),
        (&bridged, "agent", subnet(2)),
        (&macvtap, "static", subnet(3)),
    ];
    let on_its_network = |inside: &BTreeMap<String, String>| {
        macs.iter().zip(&expected).all(|(mac, (_, _, subnet))| {
            inside
                .get(mac)
                .is_some_and(|ip| ip.starts_with(&format!("{subnet}.")))
        })
    };
    let mut inside = BTreeMap::new();
    let addressed = wait_for(guest::BOOT_DEADLINE, || {
        inside = guest_ipv4_by_mac(daemon, &vm);
        on_its_network(&inside)
    });
    assert!(
        addressed,
        "within {:?} not every card of {vm} had an address on its network inside the guest: \
         cards {macs:?} expected on {expected:?}, the guest has {inside:?}; dnsmasq of {}:\n{}",
        guest::BOOT_DEADLINE,
        links.bridge,
        links.dnsmasq_log()
    );
    assert_eq!(inside[&macs[3]], static_ip, "{inside:?}");

    // vmr reports the same addresses, each from where it came: libvirt's
    // leases, the guest agent (bridged: the DHCP server is not libvirt's),
    // the spec.
    let mut interfaces = Vec::new();
    let reported = wait_for(Duration::from_secs(60), || {
        let inspected = daemon.vmr(&["inspect", "--type", "vm", &vm]).json();
        interfaces = inspected["vm"]["interfaces"].as_array().unwrap().clone();
        interfaces.iter().all(|i| {
            inside.get(i["mac"].as_str().unwrap()) == i["ip"].as_str().map(str::to_owned).as_ref()
        })
    });
    assert!(
        reported,
        "vmr inspect does not report the guest's own addresses {inside:?}: {interfaces:?}"
    );
    for (i, (network, source, _)) in expected.iter().enumerate() {
        assert_eq!(interfaces[i]["network"], **network, "{interfaces:?}");
        assert_eq!(
            interfaces[i]["ipSource"], *source,
            "card {i}: {interfaces:?}"
        );
    }
    let ps = daemon.vmr(&["ps"]).ok();
    let bridged_ip = &inside[&macs[2]];
    assert!(
        ps.lines()
            .any(|l| l.contains(&vm) && l.contains(&format!("{bridged_ip} (agent)"))),
        "{ps}"
    );

    // The bridged card's address came from the bridge's own DHCP server.
    let bridged_mac = &macs[2];
    let leases = std::fs::read_to_string(links.leases()).unwrap_or_default();
    assert!(
        leases
            .lines()
            .any(|l| l.contains(bridged_mac.as_str()) && l.contains(bridged_ip.as_str())),
        "the test bridge's dnsmasq leased no {bridged_ip} to {bridged_mac}:\n{leases}"
    );

    // Host side: the bridged card's tap is a port of the test bridge, the
    // macvtap card a macvtap on the lower link, with the guest's MAC.
    let ports = ip(&["-o", "link", "show", "master", &links.bridge]);
    let tap_mac = format!("fe{}", &bridged_mac[2..]);
    assert!(
        ports.contains(&tap_mac),
        "no tap {tap_mac} on {}:\n{ports}",
        links.bridge
    );
    let macvtaps = ip(&["-o", "link", "show", "type", "macvtap"]);
    assert!(
        macvtaps
            .lines()
            .any(|l| l.contains(&format!("@{}:", links.dummy)) && l.contains(macs[3].as_str())),
        "no macvtap {} on {}:\n{macvtaps}",
        macs[3],
        links.dummy
    );

    // A guest agent that stops answering with its port still open (frozen
    // by SIGSTOP) holds up neither inspect nor ps: the bridged card's
    // address, which only the agent knows, is then blank.
    daemon
        .vmr(&[
            "exec",
            &vm,
            "--",
            "sh",
            "-c",
            "setsid sh -c 'sleep 2; kill -STOP $(pidof qemu-ga)' </dev/null >/dev/null 2>&1 &",
        ])
        .ok();
    let mut exec_err = String::new();
    let frozen = wait_for(Duration::from_secs(60), || {
        let out = daemon.vmr(&["exec", &vm, "--", "true"]);
        exec_err = out.stderr();
        !out.success()
    });
    assert!(frozen, "the guest agent still answers exec: {exec_err:?}");
    assert!(
        exec_err.contains(&vm) && exec_err.contains("guest agent"),
        "{exec_err}"
    );
    let inspected = answered(daemon, &["inspect", "--type", "vm", &vm]).json();
    let now = inspected["vm"]["interfaces"].as_array().unwrap();
    assert_eq!(now[2]["ip"], "", "the frozen agent's answer: {inspected}");
    for i in [0, 1, 3] {
        assert_eq!(now[i]["ip"], interfaces[i]["ip"], "{inspected}");
    }
    let ps = answered(daemon, &["ps"]).ok();
    assert!(ps.contains(&vm), "{ps}");

    daemon.vmr(&["rm", "--force", &vm]).ok();
    for network in [&routed, &open, &bridged, &macvtap] {
        daemon.vmr(&["network", "rm", network]).ok();
    }
}

/// Each guest card's IPv4 address by MAC, from `ip -o link` and `ip -o -4
/// addr` run inside the guest through `vmr exec`.
fn guest_ipv4_by_mac(daemon: &Daemon, vm: &str) -> BTreeMap<String, String> {
    let links = daemon.vmr(&["exec", vm, "--", "ip", "-o", "link"]).ok();
    let addrs = daemon
        .vmr(&["exec", vm, "--", "ip", "-o", "-4", "addr"])
        .ok();
    // "2: eth0: <...> mtu 1500 ... link/ether 52:54:00:.. brd ff:.."
    let mac_of: BTreeMap<&str, &str> = links
        .lines()
        .filter_map(|l| {
            let name = l.split(':').nth(1)?.trim();
            let mut words = l.split_whitespace();
            words.find(|w| *w == "link/ether")?;
            Some((name, words.next()?))
        })
        .collect();
    // "2: eth0    inet 10.1.2.3/24 brd ... scope global eth0"
    addrs
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip(1);
            let name = words.next()?;
            words.find(|w| *w == "inet")?;
            let ip = words.next()?.split('/').next()?;
            Some((mac_of.get(name)?.to_string(), ip.to_owned()))
        })
        .collect()
}

/// How long a read (`inspect`, `ps`) may take with the guest's agent frozen
/// before it counts as held up by it: far more than any bounded agent call.
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `vmr ARGS` and returns its output once it exits; fails, killing it,
/// when it has not answered within [`ANSWER_DEADLINE`].
fn answered(daemon: &Daemon, args: &[&str]) -> VmrOutput {
    let mut child = Command::new(vmr_tests::bin("vmr"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(args)
        .env("XDG_CONFIG_HOME", daemon.dir.path().join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_for(ANSWER_DEADLINE, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let out = VmrOutput(child.wait_with_output().unwrap());
    assert!(
        exited,
        "vmr {args:?} did not answer within {ANSWER_DEADLINE:?} (killed): {}",
        out.stderr()
    );
    out
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host interface under the macvtap card: a `dummy`, or, on a kernel
/// built without the dummy driver (some VM hosts' kernels), one end of a
/// veth pair. Either is a real link macvtap attaches to, with no traffic of
/// its own; the assertions do not change.
fn add_lower_link(name: &str) {
    let out = Command::new("ip")
        .args(["link", "add", name, "type", "dummy"])
        .output()
        .unwrap();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Unknown device type"),
            "ip link add {name}: {out:?}"
        );
        eprintln!("this kernel has no dummy driver: macvtap goes on a veth pair instead");
        ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{name}p"),
        ]);
        ip(&["link", "set", &format!("{name}p"), "up"]);
    }
    ip(&["link", "set", name, "up"]);
}

/// A test bridge with an address and a DHCP server (dnsmasq) of its own,
/// and a dummy interface for macvtap ([`add_lower_link`]); all removed
/// when dropped.
struct HostLinks {
    bridge: String,
    dummy: String,
    dir: tempfile::TempDir,
    dnsmasq: Option<Child>,
}

impl HostLinks {
    /// `prefix` is the bridge's /24 without its last octet: the host is `.1`,
    /// DHCP hands out `.100`–`.150`.
    fn new(sfx: &str, prefix: &str) -> Self {
        // The guard first, so that a failure half-way still removes what
        // was made.
        let mut links = Self {
            bridge: format!("vmrbr{sfx}"),
            dummy: format!("vmrdm{sfx}"),
            dir: tempfile::tempdir().unwrap(),
            dnsmasq: None,
        };
        let (bridge, dir) = (&links.bridge, &links.dir);
        ip(&["link", "add", bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", bridge]);
        ip(&["link", "set", bridge, "up"]);
        add_lower_link(&links.dummy);
        let dnsmasq = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=0",
                "--user=root",
                "--bind-interfaces",
                "--dhcp-authoritative",
                "--log-dhcp",
            ])
            .arg(format!(
                "--log-facility={}",
                dir.path().join("dnsmasq.log").display()
            ))
            .arg(format!("--interface={bridge}"))
            .arg(format!(
                "--dhcp-range={prefix}.100,{prefix}.150,255.255.255.0,1h"
            ))
            .arg(format!(
                "--dhcp-leasefile={}",
                dir.path().join("leases").display()
            ))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is installed (scripts/install-deps.sh)");
        links.dnsmasq = Some(dnsmasq);
        links
    }

    fn leases(&self) -> std::path::PathBuf {
        Path::new(self.dir.path()).join("leases")
    }

    /// What the bridge's DHCP server logged (for a failure's message).
    fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }
}

impl Drop for HostLinks {
    fn drop(&mut self) {
        if let Some(dnsmasq) = self.dnsmasq.as_mut() {
            let _ = dnsmasq.kill();
            let _ = dnsmasq.wait();
        }
        for link in [&self.bridge, &self.dummy] {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
    }
}
