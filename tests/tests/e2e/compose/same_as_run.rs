//! `vmr create` and a compose service built from the same image and the same
//! overrides are the same VM (issue 14: one provisioner). On a real libvirt:
//! libvirt's inactive domain XML and the seed ISO's files are compared,
//! modulo what must differ (the VM's name, its UUID and MAC, compose's own
//! labels).

use vmr_tests::Daemon;
use vmr_tests::fixtures::{iso_file, qcow2, vmfile};
use vmr_tests::libvirt::{Cleanup, unique_suffix, uri, virsh};

use super::support::*;

/// libvirt's persistent definition of `vm`, with what names a VM replaced by
/// `NAME`: its name, UUID, MAC and the runtime directory that carries its name.
fn normalised_xml(uri: &str, vm: &str, mac: &str) -> String {
    let out = virsh(uri, &["dumpxml", "--inactive", vm]);
    assert!(
        out.status.success(),
        "virsh dumpxml {vm}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("<uuid>"))
        // compose's own label names the project and service, and the spec's
        // hash covers that label.
        .filter(|l| !l.contains("<vmr:compose ") && !l.contains("<vmr:spec-hash>"))
        .map(|l| l.replace(vm, "NAME").replace(mac, "MAC"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn mac_of(daemon: &Daemon, vm: &str) -> String {
    let info = daemon.vmr(&["inspect", vm, "-o", "json"]).json();
    info["vm"]["interfaces"][0]["mac"]
        .as_str()
        .unwrap_or_else(|| panic!("{vm} has no interface: {info}"))
        .to_owned()
}

#[test]
fn a_compose_service_is_the_vm_vmr_create_makes_from_the_same_overrides() {
    let Some(uri) = uri() else { return };
    let sfx = unique_suffix();
    let mut cleanup = Cleanup::new(&uri);
    let project_name = format!("same{sfx}");
    let net = cleanup.network(&format!("vmr-e2e-same-{sfx}"));
    let by_create = cleanup.domain(&format!("vmr-e2e-made-{sfx}"));
    let by_compose = cleanup.domain(&format!("{project_name}-web"));
    let daemon = Daemon::on_libvirt(&uri);
    let work = tempfile::tempdir().unwrap();
    qcow2(work.path(), "disk.qcow2", "64M");
    let file = vmfile(work.path(), "same/img", "disk.qcow2", "qcow2");
    daemon
        .vmr(&["import", "-f", file.to_str().unwrap(), "-t", "1"])
        .ok();

    let prefix = vmr_tests::libvirt::subnet_prefix(&sfx);
    daemon
        .vmr(&[
            "network",
            "create",
            &net,
            "--mode",
            "nat",
            "--subnet",
            &format!("{prefix}.0/24"),
        ])
        .ok();
    let static_ip = format!("{prefix}.10");
    let user_data = "#cloud-config\nhostname: same\nruncmd:\n  - [echo, made]\n";

    // The same overrides, spelt the two ways.
    std::fs::write(work.path().join("user-data.yaml"), user_data).unwrap();
    daemon
        .vmr(&[
            "create",
            "same/img:1",
            "--name",
            &by_create,
            "--cpu",
            "1",
            "--memory",
            "192MiB",
            "--disk-size",
            "96M",
            "--network",
            &format!("{net}:{static_ip}"),
            "--user-data",
            work.path().join("user-data.yaml").to_str().unwrap(),
            "--restart",
            "on-failure",
        ])
        .ok();
    let project = Project::new(
        &format!(
            "apiVersion: vmregistry.io/v1alpha1\nname: {project_name}\nnetworks:\n  {net}:\n    external: true\nservices:\n  web:\n    \
             image: same/img:1\n    diskSize: 96M\n    resources: {{cpu: 1, memory: 192MiB}}\n    \
             networks:\n      - name: {net}\n        staticIp: {static_ip}/24\n    \
             cloudInit:\n      userDataFile: user-data.yaml\n    restartPolicy: on-failure\n"
        ),
        &[("user-data.yaml", user_data)],
    );
    up(&daemon, &project);

    let create_mac = mac_of(&daemon, &by_create);
    let compose_mac = mac_of(&daemon, &by_compose);
    let created = normalised_xml(&uri, &by_create, &create_mac);
    let composed = normalised_xml(&uri, &by_compose, &compose_mac);
    assert!(
        created.contains(&format!("<source network='{net}'")),
        "the card is on {net}: {created}"
    );
    assert_eq!(
        created, composed,
        "vmr create's domain XML (left) differs from compose's (right)"
    );

    // The seeds: the same user-data (with the same ssh key merged in) and
    // network-config; meta-data differs only in the names.
    let runtime = daemon.store.join("runtime");
    let seed_of = |vm: &str| runtime.join(vm).join("cidata.iso");
    for file in ["user-data", "network-config"] {
        let a = iso_file(&seed_of(&by_create), file);
        let b = iso_file(&seed_of(&by_compose), file);
        assert!(!a.is_empty(), "{file} is empty");
        assert_eq!(
            a.replace(&create_mac, "MAC"),
            b.replace(&compose_mac, "MAC"),
            "{file} of vmr create (left) and compose (right)"
        );
    }
    let user = iso_file(&seed_of(&by_create), "user-data");
    // The user's own document is in it (the merge keeps its keys).
    assert!(user.contains("hostname: same"), "{user}");
    assert!(user.contains("made"), "{user}");
    assert!(user.contains("ssh_authorized_keys"), "{user}");
    let meta = |vm: &str| iso_file(&seed_of(vm), "meta-data").replace(vm, "NAME");
    let (a, b) = (meta(&by_create), meta(&by_compose));
    let without_instance = |m: &str| {
        m.lines()
            .filter(|l| !l.starts_with("instance-id"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(without_instance(&a), without_instance(&b), "meta-data");

    compose(&daemon, &project, &["down"]).ok();
    daemon.vmr(&["rm", &by_create]).ok();
    daemon.vmr(&["network", "rm", &net]).ok();
}
