//! The one error every use case returns: a kind that decides the status a
//! caller sees, and a sentence that says what went wrong.

use vmr_domain::validation::ValidationError;

use crate::blobstore::StoreError;

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
        let kind = match &e {
            StoreError::BlobNotFound(_) | StoreError::ManifestNotFound { .. } => {
                ErrorKind::NotFound
            }
            StoreError::DigestMismatch { .. } | StoreError::Corrupt { .. } => ErrorKind::DataLoss,
            StoreError::SizeMismatch { .. } => ErrorKind::InvalidArgument,
            StoreError::NoSpace(_) => ErrorKind::ResourceExhausted,
            StoreError::Backend(_) => ErrorKind::Unavailable,
            StoreError::Io(_) => ErrorKind::Internal,
        };
        Self {
            kind,
            message: e.to_string(),
            field: None,
            source: Some(Box::new(e)),
        }
    }
}
