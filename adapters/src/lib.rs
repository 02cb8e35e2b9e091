//! vmr's adapters: every outside system behind a port. libvirt, the blob
//! store (opendal: fs, S3, memory), OCI registries, the auth server, the gRPC
//! server, the metrics endpoint, VM disks (qcow2 overlays, qemu-img), the
//! cloud-init ISO writer, and in-memory fakes.

pub mod auth;
pub mod blobstore;
pub mod cloudinit;
pub mod disks;
pub mod fake;
pub mod grpc;
pub mod libvirt;
pub mod metrics;
pub mod registry;
