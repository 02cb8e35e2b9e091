//! What the metrics endpoint samples from the core each time it is read.

use std::collections::BTreeMap;

use async_trait::async_trait;

/// The state of things now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// VMs by state (`running`, `stopped`, ...), every state listed (0 for
    /// none) when the hypervisor answered; empty when it did not.
    pub vms_by_state: BTreeMap<String, u64>,
    /// Images as `vmr images` lists them; `None` when the store did not answer.
    pub images: Option<u64>,
    /// Bytes of every blob in the store; `None` when it did not answer.
    pub store_bytes: Option<u64>,
    /// Whether each configured component (hypervisor, store, registry,
    /// auth) answers its health probe; unconfigured ones are left out.
    pub reachable: BTreeMap<String, bool>,
}

/// Sampling the core for the metrics endpoint.
#[async_trait]
pub trait MetricsSnapshotUseCases: Send + Sync {
    async fn snapshot(&self) -> MetricsSnapshot;
}
