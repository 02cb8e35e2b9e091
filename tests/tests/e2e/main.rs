//! vmr end to end: the real `vmrd` and `vmr` binaries against real services
//! (`scripts/test-services.sh`). Build the binaries first
//! (`cargo build --workspace --bins --tests`).
//!
//! One test binary with a module per subject, rather than one binary per
//! file: each binary links the whole dependency tree, so one link instead
//! of fifteen saves build time and about 360 MB of disk per build.

// Integration tests: a failed unwrap is the test failing (clippy.toml allows
// it in #[test] functions, not in the helpers they share).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chunked;
mod compose;
mod contexts;
mod daemon;
mod doors;
mod guest;
mod guest_exec;
mod guest_networks;
mod guest_reach;
mod hostile;
mod hostile_registry;
mod images;
mod import_fd;
mod python_client;
mod races;
mod registry;
mod restarts;
mod shared_bucket;
mod ssh;
mod system;
mod tls;
mod torture;
mod validation;
mod vms;
mod ways_in;
