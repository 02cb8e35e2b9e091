//! The gRPC edge: vmrd's `VMService` on a Unix socket, with reflection,
//! `grpc.health.v1`, per-call logging with the caller's credentials, and the
//! mapping between proto messages and the driving ports.

mod convert;
mod logging;
mod server;
mod service;
mod status;

pub use logging::CallLogLayer;
pub use server::{MAX_MESSAGE_SIZE, serve};
pub use service::{Core, VmServiceImpl};
pub use status::to_status;
