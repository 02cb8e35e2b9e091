//! vmrd: the vmr daemon. It does not link libvirt: with `--hypervisor
//! libvirt` (the default) it becomes `vmrd-libvirt`, so the fake hypervisor
//! runs without libvirt's libraries in memory.

use std::process::ExitCode;

fn main() -> ExitCode {
    vmr_app::daemon::main(vmr_app::daemon::Libvirt::Exec)
}
