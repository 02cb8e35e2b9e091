//! Extra certificate authorities the daemon trusts for registries and auth
//! servers, on top of the system's (rustls-platform-verifier, which on Linux
//! reads the system store and honours `SSL_CERT_FILE` / `SSL_CERT_DIR`).
//! Loaded once from a PEM file named in the daemon's settings: a private
//! registry's CA, like docker's `/etc/docker/certs.d/<host>/ca.crt`.

use std::path::{Path, PathBuf};

/// A CA file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read the CA file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA file {path} is not a PEM certificate bundle")]
    Parse {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("the CA file {path} holds no PEM certificate")]
    Empty { path: PathBuf },
}

/// Certificates trusted in addition to the system's. Empty by default.
#[derive(Debug, Clone, Default)]
pub struct TrustedRoots(Vec<reqwest::Certificate>);

impl TrustedRoots {
    /// Every certificate in the PEM file at `path` (one or a bundle).
    pub fn from_pem_file(path: &Path) -> Result<Self, TrustError> {
        let pem = std::fs::read(path).map_err(|source| TrustError::Read {
            path: path.to_owned(),
            source,
        })?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| TrustError::Parse {
                path: path.to_owned(),
                source,
            })?;
        if certs.is_empty() {
            return Err(TrustError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Self(certs))
    }

    /// How many certificates are added.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The certificates, for `ClientBuilder::tls_certs_merge`.
    pub(crate) fn certificates(&self) -> impl Iterator<Item = reqwest::Certificate> + '_ {
        self.0.iter().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_empty_and_garbage_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = TrustedRoots::from_pem_file(&missing).unwrap_err();
        assert!(matches!(e, TrustError::Read { .. }), "{e}");
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = TrustedRoots::from_pem_file(&empty).unwrap_err();
        assert!(e.to_string().contains("empty.pem"), "{e}");
    }
}
