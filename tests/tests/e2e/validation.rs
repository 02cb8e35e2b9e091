//! Validation cases through the real CLI and daemon (fake hypervisor): a
//! static IP equal to its network's address, a macvtap network without a
//! host interface, and cloud-init data given both inline and as a file. Each
//! is refused with the field named and the reason, and changes nothing.

use vmr_tests::Daemon;
use vmr_tests::registry::import_qcow2;

/// A compose project in a directory of its own, with the files it names.
fn compose_config(daemon: &Daemon, yaml: &str, files: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("compose.yaml"), yaml).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    daemon
        .vmr_in(
            &["compose", "-f", "compose.yaml", "config"],
            Some(dir.path()),
        )
        .err()
}

#[track_caller]
fn assert_names(err: &str, field: &str, reason: &str) {
    assert!(
        err.contains(field) && err.contains(reason),
        "the error does not name {field:?} and {reason:?}: {err}"
    );
}

#[test]
fn compose_refuses_a_network_address_macvtap_without_interface_and_doubled_cloud_init() {
    let daemon = Daemon::start();
    let net = "networks:\n  n: {mode: nat, subnet: 10.1.0.0/24}\n";
    let err = compose_config(
        &daemon,
        &format!(
            "apiVersion: v1\n{net}services:\n  a: {{image: x, networks: [{{name: n, staticIp: 10.1.0.0}}]}}\n"
        ),
        &[],
    );
    assert_names(&err, "services.a.networks[0].staticIp", "network address");

    let err = compose_config(
        &daemon,
        "apiVersion: v1\nnetworks:\n  up: {mode: macvtap}\nservices:\n  a: {image: x, networks: [up]}\n",
        &[],
    );
    assert_names(&err, "networks.up.interface", "macvtap");

    let err = compose_config(
        &daemon,
        "apiVersion: v1\nservices:\n  a: {image: x, cloudInit: {metaData: {a: 1}, metaDataFile: m.yaml}}\n",
        &[("m.yaml", "instance-id: a\n")],
    );
    assert_names(
        &err,
        "services.a.cloudInit.metaDataFile",
        "cannot be combined with metaData",
    );

    let err = compose_config(
        &daemon,
        "apiVersion: v1\nservices:\n  a: {image: x, cloudInit: {networkConfig: {version: 2}, networkConfigFile: n.yaml}}\n",
        &[("n.yaml", "version: 2\n")],
    );
    assert_names(
        &err,
        "services.a.cloudInit.networkConfigFile",
        "networkConfig",
    );
}

#[test]
fn the_cli_refuses_a_macvtap_network_without_interface_and_a_vm_on_the_network_address() {
    let daemon = Daemon::start();
    let err = daemon
        .vmr(&["network", "create", "up", "--mode", "macvtap"])
        .err();
    assert_names(&err, "interface", "macvtap");
    let listed = daemon.vmr(&["network", "ls"]).ok();
    assert!(
        !listed.contains("up"),
        "a refused network was created: {listed}"
    );

    daemon
        .vmr(&[
            "network",
            "create",
            "lan",
            "--mode",
            "nat",
            "--subnet",
            "10.1.0.0/24",
        ])
        .ok();
    let work = tempfile::tempdir().unwrap();
    import_qcow2(&daemon, work.path(), "tests/valid", "1");
    let err = daemon
        .vmr(&[
            "run",
            "tests/valid:1",
            "--name",
            "on-net-addr",
            "--network",
            "lan:10.1.0.0",
        ])
        .err();
    assert_names(&err, "networks[0].static_ip", "network address");
    let vms = daemon.vmr(&["ps", "-a", "-o", "json"]).json().to_string();
    assert!(!vms.contains("on-net-addr"), "a refused VM exists: {vms}");
}
