//! The real test guest (`scripts/guest-image.sh`: Debian 12 with cloud-init,
//! openssh-server and qemu-guest-agent): where it is, importing it into a
//! test daemon, and waiting for its cloud-init to finish on the console.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Daemon;
use crate::libvirt::{Cleanup, unique_suffix};

/// How long a TCG boot of the guest may take to reach cloud-init's finished
/// line. About 1–2 minutes on a loaded 2-core machine; the margin is for
/// CI machines shared with other builds.
pub const BOOT_DEADLINE: Duration = Duration::from_secs(300);

/// The guest's qcow2, from `VMR_TEST_GUEST_IMAGE` (set by `scripts/test.sh`).
/// Panics when it is not set or the file is missing: a real-guest test that
/// skips proves nothing.
pub fn image() -> PathBuf {
    let path = std::env::var_os("VMR_TEST_GUEST_IMAGE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "VMR_TEST_GUEST_IMAGE is not set: build the test guest and name it \
                 (`export VMR_TEST_GUEST_IMAGE=$(scripts/guest-image.sh | tail -1)`; \
                 `make test` does this)"
            )
        });
    assert!(
        path.is_file(),
        "VMR_TEST_GUEST_IMAGE={} does not exist: run scripts/guest-image.sh",
        path.display()
    );
    path
}

/// The VMFile `scripts/guest-image.sh` writes next to the image.
pub fn vmfile() -> PathBuf {
    let image = image();
    let vmfile = image.with_extension("vmfile.yaml");
    assert!(
        vmfile.is_file(),
        "{} is missing next to the test guest: run scripts/guest-image.sh",
        vmfile.display()
    );
    vmfile
}

/// Imports the guest into `daemon` as `REPOSITORY:TAG` (from the image's
/// VMFile, so its name is `tests/debian12`). Returns the reference.
pub fn import(daemon: &Daemon, tag: &str) -> String {
    let vmfile = vmfile();
    daemon
        .vmr(&["import", "-f", path_str(&vmfile), "-t", tag])
        .ok();
    format!("tests/debian12:{tag}")
}

/// What every real-guest test starts from: a daemon on the real libvirt
/// with the guest imported, a unique suffix for names, and a guard that
/// removes the test's domains and networks. Fields drop in order: the
/// daemon before the guard that cleans up after it.
pub struct Setup {
    pub uri: String,
    pub sfx: String,
    pub daemon: Daemon,
    /// The imported guest's reference (`tests/debian12:1`).
    pub image: String,
    pub cleanup: Cleanup,
}

impl Setup {
    /// `None` only when the caller opted out of real-libvirt tests
    /// (`VMR_TEST_SKIP_LIBVIRT=1`, see [`crate::libvirt::uri`]).
    pub fn new() -> Option<Self> {
        let uri = crate::libvirt::uri()?;
        let cleanup = Cleanup::new(&uri);
        let daemon = Daemon::on_libvirt(&uri);
        let image = import(&daemon, "1");
        Some(Self {
            sfx: unique_suffix(),
            uri,
            daemon,
            image,
            cleanup,
        })
    }

    /// A domain name `vmr-e2e-KIND-SFX`, removed at the end.
    pub fn domain(&mut self, kind: &str) -> String {
        self.cleanup.domain(&format!("vmr-e2e-{kind}-{}", self.sfx))
    }

    /// A network name `vmr-e2e-KIND-SFX`, removed at the end.
    pub fn network(&mut self, kind: &str) -> String {
        self.cleanup
            .network(&format!("vmr-e2e-{kind}-{}", self.sfx))
    }
}

/// Runs `vmr ARGS` (an exec in `vm`) until it succeeds, within the boot's
/// deadline; every failure before must say that `vm`'s guest agent is not
/// answering. Returns those refusals.
pub fn wait_for_agent(daemon: &Daemon, args: &[&str], vm: &str) -> Vec<String> {
    let begun = Instant::now();
    let mut refusals = Vec::new();
    loop {
        let out = daemon.vmr(args);
        if out.success() {
            return refusals;
        }
        let err = out.stderr();
        assert!(
            err.contains(vm) && err.contains("guest agent"),
            "exec before the agent is up: {err}"
        );
        refusals.push(err);
        assert!(
            begun.elapsed() < BOOT_DEADLINE,
            "the guest agent of {vm} did not answer within {:?}: {:?}",
            BOOT_DEADLINE,
            refusals.last()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A VM's serial console log in a daemon's store.
pub fn console_log(daemon: &Daemon, vm: &str) -> PathBuf {
    daemon.store.join("runtime").join(vm).join("console.log")
}

/// Waits until the console log holds cloud-init's `Cloud-init v. ... finished
/// at` line, and returns the whole log then. Panics with the log's end after
/// [`BOOT_DEADLINE`].
pub fn wait_cloud_init_finished(console: &Path) -> String {
    let begun = Instant::now();
    loop {
        let log = std::fs::read(console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if finished_line(&log).is_some() {
            eprintln!(
                "{}: cloud-init finished {:.0?} after the wait began",
                console.display(),
                begun.elapsed()
            );
            return log;
        }
        if begun.elapsed() >= BOOT_DEADLINE {
            let tail: String = log
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            panic!(
                "cloud-init did not finish within {BOOT_DEADLINE:?} ({}); the console's end:\n{tail}",
                console.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Cloud-init's finished line in a console log, if there is one.
pub fn finished_line(log: &str) -> Option<&str> {
    log.lines()
        .find(|l| l.contains("Cloud-init v. ") && l.contains(" finished at "))
}

/// The IPv4 rows of cloud-init's "Net device info" table in a console log,
/// as `(device, address, hardware address)`, e.g. `("eth0", "10.1.2.10",
/// "52:54:00:..")`. cloud-init centres each cell, so cells are trimmed.
pub fn ci_info_ipv4(log: &str) -> Vec<(String, String, String)> {
    log.lines()
        .filter_map(|line| {
            let table = &line[line.find("ci-info: |")? + "ci-info: ".len()..];
            let cells: Vec<&str> = table.split('|').map(str::trim).collect();
            // ["", device, up, address, mask, scope, hw, ""]
            let [_, device, _up, address, _mask, _scope, hw, _] = cells[..] else {
                return None;
            };
            address
                .parse::<std::net::Ipv4Addr>()
                .ok()
                .map(|_| (device.to_owned(), address.to_owned(), hw.to_owned()))
        })
        .collect()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}
