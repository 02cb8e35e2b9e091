//! The auth server a user logs in to (vmr's contract in PROTOCOLS.md:
//! register, login, logout, and Docker-style registry tokens), and the
//! credential a user presents to it or to a registry. Secrets never appear in
//! `Debug` output, so a credential can sit in a logged struct safely.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

/// What a user presents: a username and password, or a bearer token (the
/// access token `vmr login` stored).
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic { username: String, password: String },
    Bearer { token: String },
}

impl Credential {
    /// The username, when the credential names one.
    pub fn username(&self) -> Option<&str> {
        match self {
            Self::Basic { username, .. } => Some(username),
            Self::Bearer { .. } => None,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Self::Bearer { .. } => f
                .debug_struct("Bearer")
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

/// Where the auth server is: its base URL (`https://auth.example.com`,
/// `http://127.0.0.1:5005`) and whether plain HTTP to a non-loopback host and
/// unverified TLS are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthTarget {
    pub base_url: String,
    pub insecure: bool,
}

/// The answer to a login.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginToken {
    pub access_token: String,
    pub token_type: String,
    /// Lifetime in seconds, when the server said.
    pub expires_in: Option<u64>,
}

impl fmt::Debug for LoginToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginToken")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// A registry token from the token endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryToken {
    pub token: String,
    /// Lifetime in seconds (the Docker token spec's default is 60).
    pub expires_in: u64,
}

impl fmt::Debug for RegistryToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryToken")
            .field("token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// What can go wrong talking to the auth server. The gRPC edge maps
/// `Unauthorized` to UNAUTHENTICATED, `Denied` to PERMISSION_DENIED,
/// `AlreadyExists` to ALREADY_EXISTS, `InvalidRequest` and the target errors
/// to INVALID_ARGUMENT, `Unavailable` to UNAVAILABLE.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth server URL `{url}` is not usable: {reason}")]
    InvalidTarget { url: String, reason: String },
    #[error(
        "refusing plain http:// to {host}: only loopback hosts may use http unless the context is marked insecure"
    )]
    InsecureRefused { host: String },
    #[error("auth server {server}: wrong username, password or token: {message}")]
    Unauthorized { server: String, message: String },
    #[error("auth server {server}: access denied: {message}")]
    Denied { server: String, message: String },
    #[error("auth server {server}: {message}")]
    AlreadyExists { server: String, message: String },
    #[error("auth server {server} rejected the request: {message}")]
    InvalidRequest { server: String, message: String },
    #[error("auth server {server} is unavailable: {message}")]
    Unavailable { server: String, message: String },
    #[error("auth server {server} sent an invalid response: {message}")]
    InvalidResponse { server: String, message: String },
}

/// Opens clients for auth servers; one per call, since each context names
/// its own auth URL.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait AuthConnector: Send + Sync {
    /// A client for `target`. Fails at once, without network traffic, when
    /// the URL is malformed or uses http:// where it must not.
    fn connect(&self, target: &AuthTarget) -> Result<Arc<dyn AuthClient>, AuthError>;
}

/// The auth server of one context.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait AuthClient: Send + Sync {
    /// `POST /api/v1/register`: creates a user.
    async fn register<'a>(
        &self,
        username: &str,
        password: &str,
        email: Option<&'a str>,
    ) -> Result<(), AuthError>;
    /// `POST /api/v1/login`: exchanges a username and password for an access
    /// token the user keeps.
    async fn login(&self, username: &str, password: &str) -> Result<LoginToken, AuthError>;
    /// `POST /api/v1/logout`: revokes an access token.
    async fn logout(&self, access_token: &str) -> Result<(), AuthError>;
    /// `GET /token?service=&scope=` (Docker token spec): a registry token for
    /// `scopes` such as `repository:team/vm:pull,push`, authenticated with the
    /// credential (anonymous without one). The server may grant fewer actions
    /// than asked; the registry then refuses what is missing.
    async fn token<'a>(
        &self,
        service: &str,
        scopes: &[String],
        credential: Option<&'a Credential>,
    ) -> Result<RegistryToken, AuthError>;
    /// Whether the server answers HTTP at all (for health checks).
    async fn ping(&self) -> Result<(), AuthError>;
    /// The server, for logs and messages (`auth.example.com`).
    fn describe(&self) -> String;
}
