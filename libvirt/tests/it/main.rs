//! vmr-libvirt's integration tests: the hypervisor contract against
//! libvirt's `test:///` driver and against a real libvirtd with QEMU. One
//! test binary with a module each (see adapters/tests/it/main.rs for why).

// Integration tests: a failed unwrap is the test failing (clippy.toml allows
// it in #[test] functions, not in the helpers they share).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod hypervisor_libvirt_system;
mod hypervisor_libvirt_test;
