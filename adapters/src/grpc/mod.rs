//! The gRPC edge: vmrd's `VMService` on a Unix socket, with reflection,
//! `grpc.health.v1`, per-call logging with the caller's credentials, and the
//! mapping between proto messages and the driving ports.

mod auth;
mod authority;
mod compose;
mod contexts;
mod convert;
mod events;
mod fdpass;
mod guard;
mod guest;
mod logging;
mod networks;
mod server;
mod service;
mod status;
mod transfer;
mod vms;

pub use fdpass::{MAGIC as FD_MAGIC, PassedDisks, TOKEN_TTL as FD_TOKEN_TTL};
pub use logging::CallLogLayer;
pub use server::{MAX_MESSAGE_SIZE, ServeError, serve};
pub use service::{Core, VmServiceImpl};
pub use status::to_status;
