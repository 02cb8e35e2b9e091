//! The libvirt connection: opened lazily and reopened after libvirtd went
//! away, shared by every call, and used only from blocking threads (every
//! libvirt call is blocking FFI). Also maps libvirt's errors to the port's.

use std::sync::{Arc, Mutex, Once};

use tokio::task;
use virt::connect::Connect;
use virt::error::{Error as VirtError, ErrorDomain, ErrorNumber};
use vmr_ports::HypervisorError;

/// A shared, self-healing libvirt connection.
pub(crate) struct Connection {
    uri: String,
    current: Mutex<Option<Connect>>,
}

impl Connection {
    /// Opens `uri` (blocking).
    pub(crate) fn open(uri: &str) -> Result<Self, HypervisorError> {
        silence_libvirt_stderr();
        let conn = open_uri(uri)?;
        Ok(Self {
            uri: uri.to_owned(),
            current: Mutex::new(Some(conn)),
        })
    }

    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    /// A handle on the live connection, reconnecting if it died (blocking).
    ///
    /// The test driver keeps its whole state in the connection, so it is
    /// never reopened: a new connection would be an empty host.
    pub(crate) fn get(&self) -> Result<Connect, HypervisorError> {
        let mut current = self
            .current
            .lock()
            .map_err(|_| HypervisorError::Backend("libvirt connection lock poisoned".into()))?;
        if let Some(conn) = current.as_ref() {
            if self.uri.starts_with("test:") || conn.is_alive().unwrap_or(false) {
                return Ok(conn.clone());
            }
            tracing::warn!(uri = %self.uri, "libvirt connection lost; reconnecting");
        }
        *current = None;
        let conn = open_uri(&self.uri)?;
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the connection so the next call reconnects.
    pub(crate) fn invalidate(&self) {
        if self.uri.starts_with("test:") {
            return;
        }
        if let Ok(mut current) = self.current.lock() {
            *current = None;
        }
    }

    /// Runs `f` on a blocking thread with the connection.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, HypervisorError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, HypervisorError> + Send + 'static,
    {
        let this = Arc::clone(self);
        task::spawn_blocking(move || {
            let conn = this.get()?;
            let result = f(&conn);
            if matches!(result, Err(HypervisorError::Unavailable(_))) {
                this.invalidate();
            }
            result
        })
        .await
        .map_err(|e| {
            HypervisorError::Backend(format!("libvirt call panicked or was cancelled: {e}"))
        })?
    }
}

fn open_uri(uri: &str) -> Result<Connect, HypervisorError> {
    Connect::open(Some(uri)).map_err(|e| {
        HypervisorError::Unavailable(format!(
            "cannot connect to libvirt at {uri}: {}",
            e.message()
        ))
    })
}

/// libvirt prints every error to stderr by default; vmr reports them itself.
fn silence_libvirt_stderr() {
    static ONCE: Once = Once::new();
    ONCE.call_once(virt::error::clear_error_callback);
}

/// Which object a libvirt call was about, to word the mapped error.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub kind: &'static str,
    pub name: &'a str,
}

pub(crate) fn vm(name: &str) -> Subject<'_> {
    Subject { kind: "VM", name }
}

pub(crate) fn network(name: &str) -> Subject<'_> {
    Subject {
        kind: "network",
        name,
    }
}

/// Maps a libvirt error about `subject` to the port's error.
pub(crate) fn map_err(subject: Subject<'_>, err: &VirtError) -> HypervisorError {
    let message = err.message().to_owned();
    // A connection that broke mid-call reports whatever code, from the RPC layer.
    if err.domain().unwrap_or(ErrorDomain::None) == ErrorDomain::Rpc {
        return HypervisorError::Unavailable(message);
    }
    let not_found = || HypervisorError::NotFound {
        kind: subject.kind,
        name: subject.name.to_owned(),
    };
    match err.code().unwrap_or(ErrorNumber::InternalError) {
        ErrorNumber::NoDomain | ErrorNumber::NoNetwork => not_found(),
        ErrorNumber::DomExist | ErrorNumber::NetworkExist => HypervisorError::AlreadyExists {
            kind: subject.kind,
            name: subject.name.to_owned(),
        },
        ErrorNumber::OperationInvalid => HypervisorError::InvalidState {
            kind: subject.kind,
            name: subject.name.to_owned(),
            state: "in a state libvirt refuses".to_owned(),
            wanted: format!("otherwise ({message})"),
        },
        ErrorNumber::XmlError
        | ErrorNumber::XmlDetail
        | ErrorNumber::InvalidArg
        | ErrorNumber::ConfigUnsupported
        | ErrorNumber::ArgumentUnsupported => HypervisorError::Invalid {
            field: "definition".to_owned(),
            reason: message,
        },
        ErrorNumber::NoConnect | ErrorNumber::InvalidConn | ErrorNumber::Rpc => {
            HypervisorError::Unavailable(message)
        }
        _ => HypervisorError::Backend(message),
    }
}

/// Whether `err` says the object does not exist.
pub(crate) fn is_missing(err: &VirtError) -> bool {
    matches!(
        err.code().unwrap_or(ErrorNumber::InternalError),
        ErrorNumber::NoDomain | ErrorNumber::NoNetwork
    )
}
