//! vmr's application layer: the use cases (`service`), the daemon's
//! configuration and assembly, and the `vmr` command line.

#![forbid(unsafe_code)]

pub mod assemble;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod service;
pub mod socket;
