//! The real Debian guest (`scripts/guest-image.sh`) under real libvirt: one
//! TCG boot shared by every assertion, since a boot takes minutes.

use std::time::Duration;

use vmr_tests::Daemon;
use vmr_tests::guest;
use vmr_tests::libvirt::{domstate, virsh, wait_for};

#[test]
fn real_guest_applies_the_seed_and_shuts_down_on_acpi() {
    let Some(mut t) = guest::Setup::new() else {
        return;
    };
    let vm = t.domain("guest");
    let net = t.network("giso");
    let (uri, sfx, daemon, image) = (&t.uri, &t.sfx, &t.daemon, &t.image);

    let prefix = vmr_tests::libvirt::subnet_prefix(sfx);
    daemon
        .vmr(&[
            "network",
            "create",
            &net,
            "--mode",
            "isolated",
            "--subnet",
            &format!("{prefix}.0/24"),
        ])
        .ok();
    let static_ip = format!("{prefix}.10");
    daemon
        .vmr(&[
            "run",
            image,
            "--name",
            &vm,
            "--network",
            &format!("{net}:{static_ip}"),
        ])
        .ok();
    assert_eq!(domstate(uri, &vm).as_deref(), Some("running"));

    // Real cloud-init read the NoCloud seed and finished.
    let console = guest::console_log(daemon, &vm);
    let log = guest::wait_cloud_init_finished(&console);
    let finished = guest::finished_line(&log).unwrap();
    assert!(finished.contains("DataSourceNoCloud"), "{finished}");

    // network-config: cloud-init's ci-info table lists an interface with the
    // static address vmr generated for it.
    let mac = inspect_mac(daemon, &vm);
    assert!(
        guest::ci_info_ipv4(&log)
            .iter()
            .any(|(_, ip, hw)| *ip == static_ip && *hw == mac),
        "no interface {mac} with {static_ip} in cloud-init's table:\n{log}"
    );

    // meta-data: the hostname is the VM's name, as the getty shows it.
    let prompt = format!("{vm} login:");
    assert!(
        wait_for(Duration::from_secs(120), || {
            std::fs::read(&console).is_ok_and(|b| String::from_utf8_lossy(&b).contains(&prompt))
        }),
        "no `{prompt}` on the console:\n{}",
        String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default())
    );

    // `vmr stop` asks the guest over ACPI; the guest powers itself off.
    daemon.vmr(&["stop", &vm]).ok();
    let out = virsh(uri, &["domstate", "--reason", &vm]);
    let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(state, "shut off (shutdown)", "{out:?}");

    daemon.vmr(&["rm", &vm]).ok();
    daemon.vmr(&["network", "rm", &net]).ok();
}

/// The MAC of a VM's first card, as `vmr inspect` reports it.
fn inspect_mac(daemon: &Daemon, vm: &str) -> String {
    let inspected = daemon.vmr(&["inspect", "--type", "vm", vm]).json();
    inspected["vm"]["interfaces"][0]["mac"]
        .as_str()
        .unwrap_or_else(|| panic!("no MAC in {inspected}"))
        .to_owned()
}
