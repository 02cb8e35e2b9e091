//! Network use cases: create (define and start), start, stop, remove, list
//! and inspect virtual networks.

use async_trait::async_trait;
use vmr_domain::network::{NetworkName, NetworkSpec};

use super::UseCaseError;
use crate::hypervisor::{NetworkDetails, NetworkRecord};

#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait NetworkUseCases: Send + Sync {
    /// Defines and starts a network. A subnet overlapping another network's
    /// is refused; on failure nothing is left.
    async fn create(
        &self,
        spec: NetworkSpec,
        project: Option<String>,
    ) -> Result<NetworkRecord, UseCaseError>;
    async fn start(&self, name: &NetworkName) -> Result<NetworkRecord, UseCaseError>;
    /// Stops a network no running VM uses.
    async fn stop(&self, name: &NetworkName) -> Result<NetworkRecord, UseCaseError>;
    /// Stops (if needed) and removes a network no VM attaches to.
    async fn remove(&self, name: &NetworkName) -> Result<(), UseCaseError>;
    /// Every network, sorted by name.
    async fn list(&self) -> Result<Vec<NetworkRecord>, UseCaseError>;
    async fn inspect(&self, name: &NetworkName) -> Result<NetworkDetails, UseCaseError>;
}
