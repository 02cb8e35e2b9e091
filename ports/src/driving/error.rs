//! The one error every use case returns: a kind that decides the status a
//! caller sees, and a sentence that says what went wrong.

use vmr_domain::validation::ValidationError;

use crate::auth::AuthError;
use crate::blobstore::StoreError;
use crate::hypervisor::HypervisorError;
use crate::registry::RegistryError;

/// How a failure is classified for callers (maps 1:1 onto gRPC codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unauthenticated,
    PermissionDenied,
    Unavailable,
    DataLoss,
    ResourceExhausted,
    Cancelled,
    /// A wait the caller asked for ran out (a graceful stop the guest did
    /// not honour in time).
    DeadlineExceeded,
    Unimplemented,
    Internal,
}

/// A use case's failure. `field` is set for invalid input (the YAML/JSON path
/// of the offending field).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UseCaseError {
    pub kind: ErrorKind,
    pub message: String,
    pub field: Option<String>,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl UseCaseError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            field: None,
            source: None,
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            kind: ErrorKind::InvalidArgument,
            message: format!("{field}: {reason}"),
            field: Some(field),
            source: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

impl From<ValidationError> for UseCaseError {
    fn from(e: ValidationError) -> Self {
        Self {
            kind: ErrorKind::InvalidArgument,
            message: e.to_string(),
            field: Some(e.field.clone()),
            source: Some(Box::new(e)),
        }
    }
}

impl From<StoreError> for UseCaseError {
    fn from(e: StoreError) -> Self {
        let (kind, field) = match &e {
            StoreError::BlobNotFound(_) | StoreError::ManifestNotFound { .. } => {
                (ErrorKind::NotFound, None)
            }
            StoreError::DigestMismatch { .. } | StoreError::Corrupt { .. } => {
                (ErrorKind::DataLoss, None)
            }
            StoreError::SizeMismatch { .. } | StoreError::OutOfBounds { .. } => {
                (ErrorKind::InvalidArgument, None)
            }
            StoreError::Invalid { field, .. } => (ErrorKind::InvalidArgument, Some(field.clone())),
            StoreError::WriterFailed => (ErrorKind::FailedPrecondition, None),
            StoreError::NoSpace { .. } => (ErrorKind::ResourceExhausted, None),
            StoreError::Backend { .. } => (ErrorKind::Unavailable, None),
            StoreError::Io(_) => (ErrorKind::Internal, None),
        };
        Self {
            kind,
            message: e.to_string(),
            field,
            source: Some(Box::new(e)),
        }
    }
}

impl From<HypervisorError> for UseCaseError {
    fn from(e: HypervisorError) -> Self {
        let (kind, field) = match &e {
            HypervisorError::NotFound { .. } => (ErrorKind::NotFound, None),
            HypervisorError::AlreadyExists { .. } => (ErrorKind::AlreadyExists, None),
            HypervisorError::InvalidState { .. } => (ErrorKind::FailedPrecondition, None),
            HypervisorError::Invalid { field, .. } => {
                (ErrorKind::InvalidArgument, Some(field.clone()))
            }
            HypervisorError::Timeout { .. } => (ErrorKind::DeadlineExceeded, None),
            HypervisorError::Unavailable(_) => (ErrorKind::Unavailable, None),
            HypervisorError::Backend(_) => (ErrorKind::Internal, None),
        };
        Self {
            kind,
            message: e.to_string(),
            field,
            source: Some(Box::new(e)),
        }
    }
}

impl From<RegistryError> for UseCaseError {
    fn from(e: RegistryError) -> Self {
        let kind = match &e {
            RegistryError::InvalidTarget { .. } => ErrorKind::InvalidArgument,
            // The context (or the reference's host) says http:// where only
            // https:// may go: fix the context, not the call.
            RegistryError::InsecureRefused { .. } => ErrorKind::FailedPrecondition,
            RegistryError::Unauthorized { .. } => ErrorKind::Unauthenticated,
            RegistryError::Denied { .. } => ErrorKind::PermissionDenied,
            RegistryError::NotFound { .. } => ErrorKind::NotFound,
            // A registry that answers nonsense is as good as one that is down.
            RegistryError::Unavailable { .. } | RegistryError::InvalidResponse { .. } => {
                ErrorKind::Unavailable
            }
            RegistryError::Rejected { .. } => ErrorKind::FailedPrecondition,
            RegistryError::DigestMismatch { .. } => ErrorKind::DataLoss,
            // A document larger than vmr reads (a 100 MB or endless manifest).
            RegistryError::TooLarge { .. } => ErrorKind::ResourceExhausted,
            RegistryError::Source { source, .. } => match source {
                StoreError::Corrupt { .. } | StoreError::DigestMismatch { .. } => {
                    ErrorKind::DataLoss
                }
                StoreError::BlobNotFound(_) => ErrorKind::NotFound,
                StoreError::Backend { .. } => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
        };
        Self {
            kind,
            message: e.to_string(),
            field: None,
            source: Some(Box::new(e)),
        }
    }
}

impl From<AuthError> for UseCaseError {
    fn from(e: AuthError) -> Self {
        let kind = match &e {
            AuthError::InvalidTarget { .. } => ErrorKind::InvalidArgument,
            AuthError::InsecureRefused { .. } => ErrorKind::FailedPrecondition,
            AuthError::Unauthorized { .. } => ErrorKind::Unauthenticated,
            AuthError::Denied { .. } => ErrorKind::PermissionDenied,
            AuthError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            AuthError::InvalidRequest { .. } => ErrorKind::InvalidArgument,
            AuthError::Unavailable { .. } | AuthError::InvalidResponse { .. } => {
                ErrorKind::Unavailable
            }
        };
        Self {
            kind,
            message: e.to_string(),
            field: None,
            source: Some(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn hypervisor_errors_keep_their_sentence_and_get_a_kind() {
        let cases = [
            (
                HypervisorError::NotFound {
                    kind: "network",
                    name: "lan".into(),
                },
                ErrorKind::NotFound,
            ),
            (
                HypervisorError::AlreadyExists {
                    kind: "VM",
                    name: "web".into(),
                },
                ErrorKind::AlreadyExists,
            ),
            (
                HypervisorError::InvalidState {
                    kind: "VM",
                    name: "web".into(),
                    state: "stopped".into(),
                    wanted: "running".into(),
                },
                ErrorKind::FailedPrecondition,
            ),
            (
                HypervisorError::Timeout {
                    kind: "VM",
                    name: "web".into(),
                    what: "shut down",
                    after: Duration::from_secs(3),
                },
                ErrorKind::DeadlineExceeded,
            ),
            (
                HypervisorError::Unavailable("libvirtd is down".into()),
                ErrorKind::Unavailable,
            ),
            (HypervisorError::Backend("boom".into()), ErrorKind::Internal),
        ];
        for (error, kind) in cases {
            let message = error.to_string();
            let converted = UseCaseError::from(error);
            assert_eq!(converted.kind, kind, "{message}");
            assert_eq!(converted.message, message);
            assert!(converted.field.is_none());
        }
        let invalid = UseCaseError::from(HypervisorError::invalid("subnet", "overlaps lan"));
        assert_eq!(invalid.kind, ErrorKind::InvalidArgument);
        assert_eq!(invalid.field.as_deref(), Some("subnet"));
        assert_eq!(invalid.message, "subnet: overlaps lan");
    }

    #[test]
    fn registry_and_auth_errors_get_their_codes() {
        let registry = || "127.0.0.1:5000".to_owned();
        let cases = [
            (
                RegistryError::Unauthorized {
                    registry: registry(),
                    message: "wrong password".into(),
                },
                ErrorKind::Unauthenticated,
            ),
            (
                RegistryError::Denied {
                    registry: registry(),
                    message: "no push".into(),
                },
                ErrorKind::PermissionDenied,
            ),
            (
                RegistryError::NotFound {
                    registry: registry(),
                    what: "manifest team/vm:1".into(),
                    message: "MANIFEST_UNKNOWN".into(),
                },
                ErrorKind::NotFound,
            ),
            (
                RegistryError::Unavailable {
                    registry: registry(),
                    message: "connection refused".into(),
                },
                ErrorKind::Unavailable,
            ),
            (
                RegistryError::InsecureRefused {
                    host: "example.org".into(),
                },
                ErrorKind::FailedPrecondition,
            ),
            (
                RegistryError::DigestMismatch {
                    registry: registry(),
                    what: "blob".into(),
                    expected: vmr_domain::image::Digest::of(b"a"),
                    actual: vmr_domain::image::Digest::of(b"b"),
                },
                ErrorKind::DataLoss,
            ),
            (
                RegistryError::TooLarge {
                    registry: registry(),
                    what: "manifest team/vm:1".into(),
                    limit: 4 << 20,
                },
                ErrorKind::ResourceExhausted,
            ),
        ];
        for (error, kind) in cases {
            let message = error.to_string();
            let converted = UseCaseError::from(error);
            assert_eq!(converted.kind, kind, "{message}");
            assert_eq!(converted.message, message);
        }
        let auth = |e: AuthError| UseCaseError::from(e).kind;
        let server = || "auth.example".to_owned();
        let message = || "m".to_owned();
        assert_eq!(
            auth(AuthError::Unauthorized {
                server: server(),
                message: message()
            }),
            ErrorKind::Unauthenticated
        );
        assert_eq!(
            auth(AuthError::AlreadyExists {
                server: server(),
                message: message()
            }),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            auth(AuthError::Unavailable {
                server: server(),
                message: message()
            }),
            ErrorKind::Unavailable
        );
    }
}
