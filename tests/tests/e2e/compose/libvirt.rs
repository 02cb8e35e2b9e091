//! Compose against a real libvirt with TCG guests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use vmr_tests::Daemon;
use vmr_tests::fixtures::qcow2;

use super::support::*;

fn virsh(uri: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()
        .expect("virsh is installed");
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Imports a disk with a VMFile asking for 128 MiB and one vCPU.
fn import_tiny(daemon: &Daemon, name: &str, tag: &str, disk: &Path, format: &str) {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("vmfile.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nmetadata:\n  name: {name}\nspec:\n  diskImage: {}\n  diskFormat: {format}\n  resources:\n    cpu: 1\n    memory: 128MiB\n",
            disk.display()
        ),
    )
    .unwrap();
    daemon
        .vmr(&["import", "-f", file.to_str().unwrap(), "-t", tag])
        .ok();
}

#[test]
fn ziti_example_on_real_libvirt() {
    let Some(uri) = vmr_tests::libvirt::uri() else {
        return;
    };
    let daemon = Daemon::on_libvirt(&uri);
    let work = tempfile::tempdir().unwrap();
    let disk = qcow2(work.path(), "disk.qcow2", "64M");
    import_tiny(&daemon, ZITI_IMAGE, "ziti", &disk, "qcow2");
    let tiny = ZITI.replace("memory: \"8GiB\"", "memory: \"128MiB\"");
    let project = Project::new(&tiny, &[("cloud-init/server-a-2.yaml", ZITI_USER_DATA)]);
    // What an interrupted earlier run left goes first.
    compose(&daemon, &project, &["down"]).ok();

    let events = up(&daemon, &project);
    assert_eq!(
        kinds(&events, "ziti-server-a-1"),
        ["creating", "starting", "started"]
    );
    assert_eq!(
        kinds(&events, "ziti-server-a-2"),
        ["creating", "starting", "started"]
    );
    let domains = virsh(&uri, &["list", "--name"]);
    for vm in ["ziti-ziti-server-a-1", "ziti-ziti-server-a-2"] {
        assert!(
            domains.iter().any(|d| d == vm),
            "{vm} is not running: {domains:?}"
        );
    }
    let networks = virsh(&uri, &["net-list", "--name"]);
    for net in ["ziti-ziti-private-a", "ziti-ziti-public"] {
        assert!(
            networks.iter().any(|n| n == net),
            "{net} is not active: {networks:?}"
        );
    }
    let services = ps(&daemon, &project);
    assert_eq!(services[0].1, "running");
    assert!(
        services[0].2.contains(&"192.168.70.10".to_owned()),
        "{services:?}"
    );
    assert!(
        services[0].2.contains(&"10.170.0.10".to_owned()),
        "{services:?}"
    );
    assert_eq!(services[1].2, ["192.168.70.11"]);

    // Unchanged on real libvirt too, by libvirt's own account: the same
    // running domains (ids: not restarted), the same definitions (UUIDs and
    // XML: not redefined or changed), the same networks.
    let vms = ["ziti-ziti-server-a-1", "ziti-ziti-server-a-2"];
    let nets = ["ziti-ziti-private-a", "ziti-ziti-public"];
    let libvirt_view = || {
        let mut view = Vec::new();
        for vm in vms {
            view.push(virsh(&uri, &["domid", vm]));
            view.push(virsh(&uri, &["domuuid", vm]));
            view.push(virsh(&uri, &["dumpxml", "--inactive", vm]));
        }
        for net in nets {
            view.push(virsh(&uri, &["net-uuid", net]));
            view.push(virsh(&uri, &["net-dumpxml", "--inactive", net]));
        }
        view
    };
    let before = libvirt_view();
    let events = up(&daemon, &project);
    assert_eq!(kinds(&events, "ziti-server-a-1"), ["unchanged"]);
    assert_eq!(kinds(&events, "ziti-server-a-2"), ["unchanged"]);
    let after = libvirt_view();
    for (was, is) in before.iter().zip(&after) {
        assert_eq!(was, is, "a second up changed libvirt's state");
    }

    assert_down_removes_everything(
        &daemon,
        &project,
        &["ziti-ziti-server-a-1", "ziti-ziti-server-a-2"],
        &["ziti-ziti-private-a", "ziti-ziti-public"],
    );
    let left = virsh(&uri, &["list", "--all", "--name"]);
    assert!(
        !left.iter().any(|d| d.starts_with("ziti-ziti-")),
        "{left:?}"
    );
    let left = virsh(&uri, &["net-list", "--all", "--name"]);
    assert!(
        !left.iter().any(|n| n.starts_with("ziti-ziti-")),
        "{left:?}"
    );
}

/// A bootable ISO: the host's Debian kernel and a busybox initramfs whose
/// init prints cloud-init's finished line on the serial console, booted by
/// isolinux with `console=ttyS0`. Needs the packages scripts/install-deps.sh
/// installs (linux-image-cloud-amd64, busybox-static, isolinux,
/// syslinux-common, cpio, genisoimage).
fn bootable_guest_iso(dir: &Path) -> PathBuf {
    let kernel = std::fs::read_dir("/boot")
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .expect("no /boot/vmlinuz-*: run scripts/install-deps.sh (linux-image-cloud-amd64)");
    let need = |path: &str| {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: run scripts/install-deps.sh"
        );
        PathBuf::from(path)
    };
    let busybox = need("/bin/busybox");
    let isolinux = need("/usr/lib/ISOLINUX/isolinux.bin");
    let ldlinux = need("/usr/lib/syslinux/modules/bios/ldlinux.c32");

    let root = dir.join("initramfs");
    for sub in ["bin", "dev", "proc"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    let init = root.join("init");
    std::fs::write(
        &init,
        format!(
            "#!/bin/busybox sh\n\
             /bin/busybox mount -t devtmpfs devtmpfs /dev\n\
             /bin/busybox echo '[    1.0] cloud-init[1]: {FINISHED_LINE}' > /dev/ttyS0\n\
             while true; do /bin/busybox sleep 3600; done\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();

    let tree = dir.join("iso");
    let boot = tree.join("isolinux");
    std::fs::create_dir_all(&boot).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc --quiet | gzip -1 > \"$0\"")
        .arg(boot.join("initrd.gz"))
        .current_dir(&root)
        .status()
        .expect("sh, cpio and gzip are installed");
    assert!(status.success(), "building the initramfs failed");
    std::fs::copy(&kernel, boot.join("vmlinuz")).unwrap();
    std::fs::copy(&isolinux, boot.join("isolinux.bin")).unwrap();
    std::fs::copy(&ldlinux, boot.join("ldlinux.c32")).unwrap();
    std::fs::write(
        boot.join("isolinux.cfg"),
        "DEFAULT guest\nPROMPT 0\nTIMEOUT 0\nLABEL guest\n  KERNEL vmlinuz\n  APPEND initrd=initrd.gz console=ttyS0 quiet panic=-1\n",
    )
    .unwrap();
    let iso = dir.join("guest.iso");
    let status = Command::new("genisoimage")
        .args([
            "-quiet",
            "-V",
            "GUEST",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
        ])
        .args([
            "-b",
            "isolinux/isolinux.bin",
            "-c",
            "isolinux/boot.cat",
            "-o",
        ])
        .arg(&iso)
        .arg(&tree)
        .status()
        .expect("genisoimage is installed");
    assert!(status.success(), "genisoimage failed");
    iso
}

#[test]
fn ready_gate_against_a_real_boot() {
    let Some(uri) = vmr_tests::libvirt::uri() else {
        return;
    };
    let daemon = Daemon::on_libvirt(&uri);
    let work = tempfile::tempdir().unwrap();
    let iso = bootable_guest_iso(work.path());
    import_tiny(&daemon, "tests/bootable", "1", &iso, "iso");
    let disk = qcow2(work.path(), "disk.qcow2", "16M");
    import_tiny(&daemon, "tests/tiny", "1", &disk, "qcow2");
    let project = Project::new(
        "apiVersion: v1
name: vmrboot
services:
  guest: {image: tests/bootable:1}
  app:
    image: tests/tiny:1
    dependsOn:
      guest: {condition: ready}
",
        &[],
    );
    compose(&daemon, &project, &["down"]).ok();

    let begun = Instant::now();
    let events = up(&daemon, &project);
    let took = begun.elapsed();
    assert_eq!(
        kinds(&events, "guest"),
        ["creating", "starting", "started", "ready"]
    );
    assert_eq!(kinds(&events, "app"), ["creating", "starting", "started"]);
    // The guest needs seconds to boot under TCG: `ready` really waited.
    let waited = at(&events, "guest", "ready") - at(&events, "guest", "started");
    assert!(
        waited > 1_000_000_000,
        "ready {waited} ns after start: too fast for a real boot"
    );
    assert!(at(&events, "app", "creating") >= at(&events, "guest", "ready"));
    let log =
        std::fs::read_to_string(daemon.store.join("runtime/vmrboot-guest/console.log")).unwrap();
    assert!(log.contains("Cloud-init v. 24.1 finished"), "{log}");
    eprintln!("compose up with a real boot took {took:?}");

    assert_down_removes_everything(
        &daemon,
        &project,
        &["vmrboot-app", "vmrboot-guest"],
        &["vmrboot-default"],
    );
    let left = virsh(&uri, &["list", "--all", "--name"]);
    assert!(!left.iter().any(|d| d.starts_with("vmrboot-")), "{left:?}");
}
