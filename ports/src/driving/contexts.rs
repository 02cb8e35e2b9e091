//! Contexts: named remotes (registry URL, auth URL, TLS verification) that
//! the daemon keeps, and which one is current. The daemon's flags form the
//! context `default`.

use async_trait::async_trait;

use super::UseCaseError;

/// A named remote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Context {
    pub name: String,
    pub registry_url: Option<String>,
    pub auth_url: Option<String>,
    /// Allow plain http to non-loopback hosts and skip TLS verification.
    #[serde(default)]
    pub insecure: bool,
}

/// A context and whether it is the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextView {
    pub context: Context,
    pub current: bool,
}

#[async_trait]
pub trait ContextUseCases: Send + Sync {
    async fn create(&self, context: Context) -> Result<ContextView, UseCaseError>;
    async fn list(&self) -> Result<Vec<ContextView>, UseCaseError>;
    /// Makes `name` the current context.
    async fn use_context(&self, name: &str) -> Result<ContextView, UseCaseError>;
    async fn remove(&self, name: &str) -> Result<(), UseCaseError>;
    /// The named context, or the current one when `name` is empty.
    async fn inspect(&self, name: &str) -> Result<ContextView, UseCaseError>;
}
