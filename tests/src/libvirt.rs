//! Support for the tests that run real VMs under libvirt: where libvirt is
//! (`VMR_TEST_LIBVIRT_URI`, set by `scripts/test-services.sh env`), unique
//! names, `virsh` queries, and a guard that removes the test's domains and
//! networks even when the test fails half-way.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The libvirt URI the tests use, or `None` when the caller opted out with
/// `VMR_TEST_SKIP_LIBVIRT=1`. Without either, the test fails: a suite that
/// silently skips its real-VM tests proves nothing.
pub fn uri() -> Option<String> {
    if let Some(uri) = std::env::var("VMR_TEST_LIBVIRT_URI")
        .ok()
        .filter(|u| !u.is_empty())
    {
        return Some(uri);
    }
    if std::env::var("VMR_TEST_SKIP_LIBVIRT").as_deref() == Ok("1") {
        eprintln!("VMR_TEST_SKIP_LIBVIRT=1: skipping a real-libvirt test");
        return None;
    }
    panic!(
        "VMR_TEST_LIBVIRT_URI is not set: start the test services and load their settings \
         (`scripts/test-services.sh start; eval \"$(scripts/test-services.sh env)\"`), \
         or set VMR_TEST_SKIP_LIBVIRT=1 to skip the real-libvirt tests"
    );
}

/// A short random suffix, so parallel and repeated runs never share names.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_owned()
}

/// The first three octets of a /24 picked from `sfx` (a [`unique_suffix`]),
/// unlikely to clash with other tests' networks on the same host.
pub fn subnet_prefix(sfx: &str) -> String {
    let n = u32::from_str_radix(&sfx[..4], 16).expect("a hex suffix");
    format!("10.{}.{}", 100 + n % 100, (n / 100) % 250)
}

/// Runs `virsh -c URI ARGS`.
pub fn virsh(uri: &str, args: &[&str]) -> Output {
    Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()
        .expect("virsh is installed")
}

/// `virsh domstate NAME` (e.g. `running`, `shut off`), or `None` when the
/// domain does not exist.
pub fn domstate(uri: &str, domain: &str) -> Option<String> {
    let out = virsh(uri, &["domstate", domain]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Whether `virsh dominfo NAME` finds the domain.
pub fn domain_exists(uri: &str, domain: &str) -> bool {
    virsh(uri, &["dominfo", domain]).status.success()
}

/// The pid of a running domain's QEMU process, from libvirt's pid file.
pub fn qemu_pid(domain: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/run/libvirt/qemu/{domain}.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Polls `check` every 200 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Removes the domains and networks it was told about when dropped (after
/// the daemon that made them, so declare it before the daemon).
pub struct Cleanup {
    uri: String,
    domains: Vec<String>,
    networks: Vec<String>,
}

impl Cleanup {
    pub fn new(uri: &str) -> Self {
        Self {
            uri: uri.to_owned(),
            domains: Vec::new(),
            networks: Vec::new(),
        }
    }

    /// Returns `name`, to be removed at the end.
    pub fn domain(&mut self, name: &str) -> String {
        self.domains.push(name.to_owned());
        name.to_owned()
    }

    /// Returns `name`, to be removed at the end.
    pub fn network(&mut self, name: &str) -> String {
        self.networks.push(name.to_owned());
        name.to_owned()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for domain in &self.domains {
            let _ = virsh(&self.uri, &["destroy", domain]);
            let _ = virsh(&self.uri, &["undefine", "--nvram", domain]);
            let _ = virsh(&self.uri, &["undefine", domain]);
        }
        for network in &self.networks {
            let _ = virsh(&self.uri, &["net-destroy", network]);
            let _ = virsh(&self.uri, &["net-undefine", network]);
        }
    }
}
