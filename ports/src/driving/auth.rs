//! Accounts: log in (a credential the user keeps and sends with each push or
//! pull), log out (revoke it), register. The core keeps no credential.

use async_trait::async_trait;

use super::UseCaseError;
use crate::auth::Credential;

/// What a login gives the user to keep (`Credential`'s `Debug` hides the
/// secret, so this may be logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    /// The context logged in to (the current one when none was named).
    pub context: String,
    /// `Bearer` (the auth server's access token) or `Basic` (the user's own
    /// password, checked against the registry).
    pub credential: Credential,
    /// Seconds until the credential expires, when known.
    pub expires_in: Option<u64>,
    pub username: String,
    pub registry_url: Option<String>,
}

#[async_trait]
pub trait AuthUseCases: Send + Sync {
    /// Logs in to a context (empty: the current one): with an auth server,
    /// exchanges the password for its access token; without one, checks the
    /// password against the registry.
    async fn login(
        &self,
        context: &str,
        username: &str,
        password: &str,
    ) -> Result<LoginOutcome, UseCaseError>;
    /// Revokes a credential at the context's auth server (a Basic
    /// credential has nothing to revoke).
    async fn logout(&self, context: &str, credential: &Credential) -> Result<(), UseCaseError>;
    /// Creates a user at the context's auth server; returns the user name.
    async fn register(
        &self,
        context: &str,
        username: &str,
        password: &str,
        email: Option<&str>,
    ) -> Result<String, UseCaseError>;
}
