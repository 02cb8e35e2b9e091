//! What can go wrong in a hypervisor (and in the VM files the core makes
//! beside it: disks, seed media), in the user's words. The gRPC edge maps
//! each variant to one status code.
//!
//! A failure the backend reports keeps its own error as a [`Cause`]: the
//! sentence users see (unchanged from the backend's message) and the typed
//! error behind it for `source()`. The error stays `Clone` and `Eq` (the
//! fake replays scripted errors, tests compare them) because a cause is
//! shared and compared by its sentence.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use vmr_domain::network::NetworkName;
use vmr_domain::vm::VmName;

/// What can go wrong in a hypervisor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HypervisorError {
    /// NOT_FOUND: `kind` is `VM`, `network`, `disk` or `host interface`.
    #[error("{kind} {name} not found")]
    NotFound { kind: &'static str, name: String },
    /// ALREADY_EXISTS.
    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    /// FAILED_PRECONDITION: the object is not in a state the call accepts.
    #[error("{kind} {name} is {state}; it must be {wanted}")]
    InvalidState {
        kind: &'static str,
        name: String,
        state: String,
        wanted: String,
    },
    /// INVALID_ARGUMENT: a value the backend refuses, with its field.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// DEADLINE_EXCEEDED: a graceful stop the guest did not honour in time.
    #[error("{kind} {name} did not {what} within {after:?}")]
    Timeout {
        kind: &'static str,
        name: String,
        what: &'static str,
        after: Duration,
    },
    /// UNAVAILABLE: the backend cannot be reached (libvirtd down, qemu-img
    /// missing).
    #[error("hypervisor unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// INTERNAL: anything else the backend reported.
    #[error("hypervisor error: {0}")]
    Backend(#[source] Cause),
}

impl HypervisorError {
    pub fn vm_not_found(name: &VmName) -> Self {
        Self::NotFound {
            kind: "VM",
            name: name.to_string(),
        }
    }

    pub fn network_not_found(name: &NetworkName) -> Self {
        Self::NotFound {
            kind: "network",
            name: name.to_string(),
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// `Backend`: `message` says what failed, `source` is why.
    pub fn backend(message: impl Into<String>, source: impl Error + Send + Sync + 'static) -> Self {
        Self::Backend(Cause::with_source(message, source))
    }

    /// `Unavailable`: `message` says what could not be reached, `source` why.
    pub fn unavailable(
        message: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable(Cause::with_source(message, source))
    }
}

/// Why a backend call failed: the sentence users see and, when the backend
/// gave one, its own error. Two causes are equal when their sentences are.
#[derive(Clone)]
pub struct Cause {
    message: String,
    source: Option<Arc<dyn Error + Send + Sync>>,
}

impl Cause {
    /// A cause that is only a sentence (the backend gave no error value).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// A cause with the error behind it. `message` is shown as is: it
    /// usually ends with the source's own text, as users saw it before.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// The sentence.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_tuple("Cause");
        debug.field(&self.message);
        if let Some(source) = &self.source {
            debug.field(source);
        }
        debug.finish()
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for Cause {}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_error_keeps_its_cause_and_its_message() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full");
        let e = HypervisorError::backend("cannot write /r/disk.qcow2: disk full", io);
        assert_eq!(
            e.to_string(),
            "hypervisor error: cannot write /r/disk.qcow2: disk full"
        );
        let cause = e.source().expect("the cause");
        let io = cause.source().expect("the I/O error");
        assert_eq!(
            io.downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind),
            Some(std::io::ErrorKind::StorageFull)
        );
        // Compared by what users see: a scripted copy equals the real one.
        assert_eq!(
            e.clone(),
            HypervisorError::Backend("cannot write /r/disk.qcow2: disk full".into())
        );
        assert_ne!(e, HypervisorError::Backend("other".into()));
    }
}
