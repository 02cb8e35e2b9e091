//! In-memory fakes of the driven ports, with real state machines: they back
//! the daemon's fake mode and the tests that need no outside service.

pub mod auth;
pub mod hypervisor;
pub mod registry;
