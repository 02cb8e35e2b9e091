//! vmr's gRPC API, package `vmregistry.v1`: the generated messages, the
//! `VMService` client and server, and the descriptor set for reflection.

#![allow(clippy::all, clippy::unwrap_used, clippy::needless_pass_by_value)]

pub mod v1 {
    tonic::include_proto!("vmregistry.v1");
}

/// The encoded `FileDescriptorSet` of every vmr proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vmregistry_descriptor");
