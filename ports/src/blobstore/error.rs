//! What can go wrong in a blob store, with the backend's error kept as the
//! cause.

use vmr_domain::image::Digest;

/// What a store error keeps as its cause: the backend's own error (opendal,
/// HTTP, a background task), or a sentence where the backend gave none.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong in a blob store, in the user's words.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob {0} not found")]
    BlobNotFound(Digest),
    #[error("manifest {repository}:{tag} not found")]
    ManifestNotFound { repository: String, tag: String },
    #[error("digest mismatch: expected {expected}, content hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest} is corrupt: its content hashes to {actual}")]
    Corrupt { digest: Digest, actual: Digest },
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    /// A read or write reaching outside a blob (the caller's mistake):
    /// `doing` names the range.
    #[error("{doing}: outside blob {digest} of {size} bytes")]
    OutOfBounds {
        doing: String,
        digest: Digest,
        size: u64,
    },
    /// A writer used again after one of its writes failed (that failure
    /// was reported then).
    #[error("blob writer already failed; start a new one")]
    WriterFailed,
    /// A store setting that cannot work (`field` is its name in the config).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("store is out of space: {doing}: {source}")]
    NoSpace {
        doing: String,
        #[source]
        source: Cause,
    },
    /// The storage service or the store's machinery failed while `doing`
    /// something (S3 unreachable or refusing, a background task gone).
    #[error("store backend error: {doing}: {source}")]
    Backend {
        doing: String,
        #[source]
        source: Cause,
    },
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// A backend failure while `doing` something, keeping its cause.
    pub fn backend(doing: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Backend {
            doing: doing.into(),
            source: source.into(),
        }
    }

    /// A blocking task of the store that died (it panicked, or the runtime
    /// is shutting down) while `doing` something.
    pub fn task(doing: &str, source: tokio::task::JoinError) -> Self {
        Self::backend(format!("{doing}: background task failed"), source)
    }
}
