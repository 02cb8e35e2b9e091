//! The real Debian guest on the default network, reached the way a user
//! would: `vmr run` with no `--network`, the DHCP lease in `ps`/`inspect`,
//! then `vmr ssh` (the system OpenSSH client) with vmr's key next to the
//! user's own user-data. One TCG boot shared by every assertion.

use std::path::Path;
use std::process::Command;

use vmr_tests::Daemon;
use vmr_tests::guest;
use vmr_tests::libvirt::{Cleanup, unique_suffix, virsh};

/// What the user's own user-data writes, checked from inside the guest.
const MARKER: &str = "/etc/vmr-e2e-user-data";

#[test]
fn real_guest_on_the_default_network_answers_vmr_ssh() {
    let Some(uri) = vmr_tests::libvirt::uri() else {
        return;
    };
    let sfx = unique_suffix();
    let mut cleanup = Cleanup::new(&uri);
    let vm = cleanup.domain(&format!("vmr-e2e-reach-{sfx}"));
    let daemon = Daemon::on_libvirt(&uri);
    let image = guest::import(&daemon, "1");

    // The user's user-data: a file of theirs and a key of their own.
    let work = tempfile::tempdir().unwrap();
    let own_key = work.path().join("own");
    keygen(&own_key);
    let own_public = std::fs::read_to_string(own_key.with_extension("pub")).unwrap();
    let user_data = work.path().join("user-data.yaml");
    std::fs::write(
        &user_data,
        format!(
            "#cloud-config\nwrite_files:\n  - path: {MARKER}\n    content: \"kept {sfx}\\n\"\n\
             ssh_authorized_keys:\n  - {}\n",
            own_public.trim()
        ),
    )
    .unwrap();

    // No --network: the VM joins vmr-default.
    daemon
        .vmr(&[
            "run",
            &image,
            "--name",
            &vm,
            "--user-data",
            user_data.to_str().unwrap(),
        ])
        .ok();

    // Right after `run`: `vmr ssh` waits for the address and for sshd, then
    // logs in as the image's `vmr.ssh.user` with vmr's own key.
    let hostname = daemon
        .vmr(&["ssh", "--wait", "300", &vm, "--", "hostname"])
        .ok();
    assert_eq!(hostname.trim(), vm, "meta-data's hostname");

    // The address came from the network's DHCP server, and ps/inspect say so.
    let inspected = daemon.vmr(&["inspect", "--type", "vm", &vm]).json();
    let iface = &inspected["vm"]["interfaces"][0];
    assert_eq!(iface["network"], "vmr-default", "{inspected}");
    assert_eq!(iface["ipSource"], "dhcp", "{inspected}");
    let ip = iface["ip"].as_str().unwrap().to_owned();
    let mac = iface["mac"].as_str().unwrap().to_owned();
    let leases = String::from_utf8_lossy(
        &virsh(&uri, &["net-dhcp-leases", "vmr-default", "--mac", &mac]).stdout,
    )
    .into_owned();
    assert!(
        leases.contains(&format!("{ip}/")),
        "libvirt's lease for {mac} is not {ip}:\n{leases}"
    );
    let ps = daemon.vmr(&["ps"]).ok();
    assert!(
        ps.lines()
            .any(|l| l.contains(&vm) && l.contains(&format!("{ip} (dhcp)"))),
        "{ps}"
    );
    // ... and it is the address the guest itself has on that card.
    let inside = daemon
        .vmr(&["ssh", &vm, "--", "ip", "-4", "-o", "addr", "show"])
        .ok();
    assert!(
        inside.lines().any(|l| l.contains(&format!("inet {ip}/"))),
        "{inside}"
    );

    // The remote command's exit code is vmr's.
    let status = daemon.vmr(&["ssh", &vm, "--", "exit", "7"]).0.status;
    assert_eq!(status.code(), Some(7), "{status}");

    // The user's user-data was applied next to vmr's key, and their own key
    // logs in too.
    let marker = daemon.vmr(&["ssh", &vm, "--", "cat", MARKER]).ok();
    assert_eq!(marker.trim(), format!("kept {sfx}"));
    let whoami = daemon
        .vmr(&[
            "ssh",
            "--identity",
            own_key.to_str().unwrap(),
            &vm,
            "--",
            "whoami",
        ])
        .ok();
    assert_eq!(whoami.trim(), "debian");

    // The guest's host key (as cloud-init printed it on the console once
    // it finished) was accepted into the VM's own known_hosts file.
    let console = guest::console_log(&daemon, &vm);
    guest::wait_cloud_init_finished(&console);
    let known = daemon.dir.path().join("config/vmr/known_hosts.d").join(&vm);
    let host_key = console_host_key(&console);
    let known_text = std::fs::read_to_string(&known).unwrap();
    assert!(
        known_text.contains(&host_key),
        "{} lacks the guest's key {host_key}:\n{known_text}",
        known.display()
    );

    // A graceful stop on the default network too, then rm forgets the key.
    daemon.vmr(&["stop", &vm]).ok();
    let out = virsh(&uri, &["domstate", "--reason", &vm]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "shut off (shutdown)",
        "{out:?}"
    );
    daemon.vmr(&["rm", &vm]).ok();
    assert!(!known.exists(), "{} outlived the VM", known.display());
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "own", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {out:?}");
}

/// The ed25519 host key blob cloud-init printed between its `BEGIN SSH
/// HOST KEY KEYS` lines.
fn console_host_key(console: &Path) -> String {
    let log = String::from_utf8_lossy(&std::fs::read(console).unwrap()).into_owned();
    log.lines()
        .skip_while(|l| !l.contains("BEGIN SSH HOST KEY KEYS"))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("ssh-ed25519")).then(|| words.next().map(str::to_owned))?
        })
        .unwrap_or_else(|| panic!("no host key on the console:\n{log}"))
}
