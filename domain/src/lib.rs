//! vmr's pure model and rules: images and their OCI documents, VMFiles,
//! VMCompose plans, VMs, networks, cloud-init documents and byte sizes. No
//! I/O, no async: everything here is deterministic and tested without a
//! runtime. Every parse or validation error is a
//! [`validation::ValidationError`] naming the field at fault.

#![forbid(unsafe_code)]

pub mod cloudinit;
pub mod compose;
pub mod image;
pub mod network;
pub mod provision;
pub mod units;
pub mod validation;
pub mod vm;
pub mod vmfile;

pub use validation::ValidationError;
