//! vmr-adapters' integration tests: the adapters against real files, a real
//! S3 server and real OCI registries (`scripts/test-services.sh`).
//!
//! One test binary with a module per subject, rather than one binary per
//! file: each binary links the whole dependency tree, so one link instead
//! of eight saves build time and about 200 MB of disk per build.

// Integration tests: a failed unwrap is the test failing (clippy.toml allows
// it in #[test] functions, not in the helpers they share).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod blobstore_suite;
mod registry_support;

mod blobstore_fs;
mod blobstore_memory;
mod blobstore_s3;
mod disks;
mod hypervisor_cloudinit;
mod hypervisor_fake;
mod registry_anonymous;
mod registry_auth;
mod registry_resilience;
