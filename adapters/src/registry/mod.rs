//! The OCI Distribution client over reqwest: [`OciRegistryConnector`] opens
//! an [`OciRegistryClient`] per target. It answers Basic and Bearer
//! challenges itself (tokens from the realm, cached per scope until they
//! expire), retries 429/5xx and dropped connections with a bounded back-off,
//! uploads small blobs in one PUT and large ones in chunks, downloads with
//! HTTP Range, and refuses plain http:// except to loopback or an insecure
//! target. No credential or token is ever logged.

mod challenge;
mod client;
mod download;
pub(crate) mod errors;
pub mod http;
mod transport;
pub mod trust;
mod upload;

use std::sync::Arc;

use reqwest::header::HeaderMap;
use vmr_ports::{RegistryClient, RegistryConnector, RegistryError, RegistryTarget};

pub use client::OciRegistryClient;
pub use http::{ClientBuildError, RetryPolicy};
pub use trust::{TrustError, TrustedRoots};

use http::{Endpoint, EndpointError, build_client};
use transport::Transport;

/// How uploads are cut and failures retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Blobs up to this size go in one PUT (held in memory); larger ones in
    /// chunks.
    pub monolithic_limit: u64,
    /// Bytes per PATCH (raised to the registry's `OCI-Chunk-Min-Length`).
    pub chunk_size: usize,
    /// Uploads from a re-openable source (`upload_blob_from`) up to this
    /// size go in one streamed `PUT ?digest=`; larger ones in one streamed,
    /// resumable PATCH.
    pub streamed_put_limit: u64,
    pub retry: RetryPolicy,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            monolithic_limit: 8 * 1024 * 1024,
            chunk_size: 16 * 1024 * 1024,
            streamed_put_limit: 256 * 1024 * 1024,
            retry: RetryPolicy::default(),
        }
    }
}

/// Opens [`OciRegistryClient`]s; holds the connection pools (one verifying
/// TLS, one not, for insecure targets).
pub struct OciRegistryConnector {
    secure: reqwest::Client,
    insecure: reqwest::Client,
    options: RegistryOptions,
}

impl OciRegistryConnector {
    /// Trusting the system's certificate authorities.
    pub fn new(options: RegistryOptions) -> Result<Self, ClientBuildError> {
        Self::with_roots(options, &TrustedRoots::default())
    }

    /// Trusting `roots` too (the daemon's `--registry-ca-file`).
    pub fn with_roots(
        options: RegistryOptions,
        roots: &TrustedRoots,
    ) -> Result<Self, ClientBuildError> {
        Ok(Self {
            secure: build_client(false, roots)?,
            insecure: build_client(true, roots)?,
            options,
        })
    }

    /// The concrete client (the port returns it as `Arc<dyn RegistryClient>`).
    pub fn client(&self, target: &RegistryTarget) -> Result<OciRegistryClient, RegistryError> {
        let endpoint = Endpoint::parse(&target.base_url, target.insecure).map_err(|e| match e {
            EndpointError::Invalid { url, reason } => RegistryError::InvalidTarget { url, reason },
            EndpointError::InsecureRefused { host } => RegistryError::InsecureRefused { host },
        })?;
        let http = if target.insecure {
            &self.insecure
        } else {
            &self.secure
        };
        Ok(OciRegistryClient {
            transport: Transport::new(
                http.clone(),
                endpoint,
                target.insecure,
                target.credential.clone(),
                self.options.retry.clone(),
            ),
            options: self.options.clone(),
        })
    }
}

impl RegistryConnector for OciRegistryConnector {
    fn connect(&self, target: &RegistryTarget) -> Result<Arc<dyn RegistryClient>, RegistryError> {
        Ok(Arc::new(self.client(target)?))
    }
}

/// A header's value as text, when it is text.
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
