//! The default network, `--network none`, address sources and `vmr ssh`'s
//! refusals end to end, with the fake hypervisor: the real `vmr` (and the
//! system `ssh-keygen`) against a real `vmrd`.

use std::os::unix::fs::PermissionsExt;

use vmr_tests::Daemon;
use vmr_tests::fixtures::{qcow2, vmfile};

#[test]
fn fake_default_network_none_and_ssh_refusals() {
    let daemon = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    qcow2(work.path(), "tiny.qcow2", "64M");
    let file = vmfile(work.path(), "tests/tiny", "tiny.qcow2", "qcow2");
    daemon
        .vmr(&["import", "-f", file.to_str().unwrap(), "-t", "1"])
        .ok();

    // Two VMs without --network: one default network, made on first use.
    daemon.vmr(&["run", "tests/tiny:1", "--name", "a"]).ok();
    daemon.vmr(&["run", "tests/tiny:1", "--name", "b"]).ok();
    let listing = daemon.vmr(&["network", "ls", "-o", "json"]).json();
    let networks = listing.get("networks").unwrap_or(&listing);
    let names: Vec<&str> = networks
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vmr-default"]);
    assert_eq!(networks[0]["mode"], "nat");
    assert_eq!(networks[0]["subnet"], "10.89.0.0/24");
    let a = daemon.vmr(&["inspect", "--type", "vm", "a"]).json();
    let iface = &a["vm"]["interfaces"][0];
    assert_eq!(iface["network"], "vmr-default");
    assert_eq!(iface["ipSource"], "dhcp");
    assert!(iface["ip"].as_str().unwrap().starts_with("10.89.0."));
    let ps = daemon.vmr(&["ps"]).ok();
    assert!(ps.contains("(dhcp)"), "{ps}");

    // The user's key was made once, private, and travelled with the request.
    let key = daemon.dir.path().join("config/vmr/ssh/id_ed25519");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let iso = std::fs::read(daemon.store.join("runtime/a/cidata.iso")).unwrap();
    assert!(
        String::from_utf8_lossy(&iso).contains(public.split_whitespace().nth(1).unwrap()),
        "the public key is in the seed"
    );

    // --network none: no card, and ssh says why and what to use instead.
    daemon
        .vmr(&["run", "tests/tiny:1", "--name", "bare", "--network", "none"])
        .ok();
    let bare = daemon.vmr(&["inspect", "--type", "vm", "bare"]).json();
    assert_eq!(bare["vm"]["interfaces"], serde_json::json!([]));
    let err = daemon
        .vmr(&["ssh", "bare", "--user", "u", "--", "true"])
        .err();
    assert!(err.contains("no network card"), "{err}");
    assert!(err.contains("vmr exec bare"), "{err}");
    let err = daemon
        .vmr(&[
            "run",
            "tests/tiny:1",
            "--name",
            "x",
            "--network",
            "none",
            "--network",
            "vmr-default",
        ])
        .err();
    assert!(err.contains("cannot be combined"), "{err}");

    // A stopped VM: not running, start it.
    daemon.vmr(&["stop", "--force", "a"]).ok();
    let err = daemon.vmr(&["ssh", "a", "--user", "u"]).err();
    assert!(err.contains("not running"), "{err}");
    assert!(err.contains("vmr start a"), "{err}");

    // rm forgets the VM's host keys.
    let known = daemon.dir.path().join("config/vmr/known_hosts.d");
    std::fs::create_dir_all(&known).unwrap();
    std::fs::write(known.join("a"), "a ssh-ed25519 AAAA\n").unwrap();
    daemon.vmr(&["rm", "a"]).ok();
    assert!(!known.join("a").exists());
}
