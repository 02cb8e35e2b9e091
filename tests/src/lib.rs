//! Support for vmr's end-to-end tests: a real daemon on a private socket,
//! the real CLI, and fixtures made with real tools.

pub mod authserver;
pub mod daemon;
pub mod fixtures;
pub mod guest;
pub mod hostile_registry;
pub mod hypervisor_contract;
pub mod libvirt;
pub mod registry;
pub mod s3;

pub use daemon::{Daemon, VmrOutput, bin, connect};
