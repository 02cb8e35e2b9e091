//! The seed media port: what a VM's cloud-init reads at first boot (its
//! user-data, meta-data and network-config), written to a file the VM's
//! definition attaches as a CD-ROM. Apart from the hypervisor's ports
//! because the medium is a file in the core's runtime directory, the same
//! for every backend; the cloud-init adapter writes it as a NoCloud
//! `cidata` ISO.

use std::path::Path;

use async_trait::async_trait;
use vmr_domain::cloudinit::CloudInitSeed;

/// What can go wrong while building or writing a seed medium.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cloud-init {file}: {size} bytes is more than the {max} bytes allowed")]
    TooLarge {
        file: &'static str,
        size: usize,
        max: usize,
    },
    #[error("cannot build the cidata ISO: {source}")]
    Build {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot write the cidata ISO to {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Writes seed media.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait SeedMedia: Send + Sync {
    /// Writes `seed` to `path`, replacing an older medium there; a VM
    /// never sees half of one.
    async fn write_seed(&self, seed: &CloudInitSeed, path: &Path) -> Result<(), SeedError>;
}
