//! Health of the daemon and of each system it depends on.

use async_trait::async_trait;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingStatus {
    Serving,
    NotServing,
    NotConfigured,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentHealth {
    /// daemon, hypervisor, store, registry, auth
    pub name: String,
    pub status: ServingStatus,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub version: String,
    pub components: Vec<ComponentHealth>,
}

#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait HealthUseCases: Send + Sync {
    /// Probes every component; never fails (a failed probe is NotServing).
    async fn check(&self) -> HealthReport;
}
