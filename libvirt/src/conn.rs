//! The libvirt connection: shared by every call, used only from blocking
//! threads (every libvirt call is blocking FFI), and self-healing: a dead
//! connection (closed socket, failed keepalive, RPC error) starts an outage;
//! during it calls fail at once with `Unavailable` (saying since when) and
//! reconnect attempts back off from 250 ms doubling to 5 s. The event
//! poller's thread keeps trying, so vmrd reconnects without any call.
//! Also maps libvirt's errors to the port's.

use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tokio::task;
use virt::connect::Connect;
use virt::error::{Error as VirtError, ErrorDomain, ErrorNumber};
use vmr_ports::HypervisorError;

/// The first wait before reconnecting; each failed attempt doubles it.
pub(crate) const RECONNECT_INITIAL: Duration = Duration::from_millis(250);
/// The longest wait between two reconnect attempts.
pub(crate) const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Keepalive: a libvirtd that answers no ping for `interval * (count + 1)`
/// seconds is considered dead, so a hung daemon does not hang calls forever.
const KEEPALIVE_INTERVAL_S: i32 = 2;
const KEEPALIVE_COUNT: u32 = 3;

/// The delay before the reconnect attempt that follows `failures` failed ones.
pub(crate) fn reconnect_delay(failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    RECONNECT_INITIAL.saturating_mul(factor).min(RECONNECT_MAX)
}

/// The link to libvirt as health checks report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkState {
    Connected,
    Unavailable {
        since: SystemTime,
        error: String,
        next_attempt_in: Duration,
    },
}

#[derive(Debug)]
struct Outage {
    since: SystemTime,
    error: String,
    failures: u32,
    next_attempt: Instant,
}

#[derive(Default)]
struct State {
    current: Option<Connect>,
    /// Set while libvirt cannot be reached.
    outage: Option<Outage>,
    /// How many times a connection was (re)opened.
    generation: u64,
}

/// A shared, self-healing libvirt connection.
pub(crate) struct Connection {
    uri: String,
    state: Mutex<State>,
}

impl Connection {
    /// Tries to open `uri` (blocking). libvirt being down is not an error:
    /// the connection starts in an outage and keeps retrying.
    pub(crate) fn new(uri: &str) -> Self {
        init_libvirt();
        let this = Self {
            uri: uri.to_owned(),
            state: Mutex::new(State::default()),
        };
        if let Err(e) = this.get() {
            tracing::warn!(uri, error = %e, "libvirt is not reachable yet; retrying in the background");
        }
        this
    }

    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    /// The test driver keeps its whole state in the connection, so it is
    /// never reopened: a new connection would be an empty host.
    fn is_private_test_driver(&self) -> bool {
        self.uri.starts_with("test:")
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, HypervisorError> {
        self.state
            .lock()
            .map_err(|_| HypervisorError::Backend("libvirt connection lock poisoned".into()))
    }

    /// A handle on the live connection (blocking). A dead one starts an
    /// outage; during an outage this fails at once unless a reconnect
    /// attempt is due.
    pub(crate) fn get(&self) -> Result<Connect, HypervisorError> {
        let mut state = self.lock()?;
        if let Some(conn) = state.current.as_ref() {
            if self.is_private_test_driver() || conn.is_alive().unwrap_or(false) {
                return Ok(conn.clone());
            }
            tracing::warn!(uri = %self.uri, "libvirt connection lost; reconnecting");
            let lost = state.current.take();
            Self::start_outage(&mut state, "the connection to libvirt was closed");
            drop(lost);
        }
        if let Some(outage) = state.outage.as_ref() {
            let now = Instant::now();
            if now < outage.next_attempt {
                return Err(self.unavailable(outage, outage.next_attempt - now));
            }
        }
        match open_uri(&self.uri) {
            Ok(conn) => {
                if let Some(outage) = state.outage.take() {
                    let lasted = outage.since.elapsed().unwrap_or_default();
                    tracing::info!(uri = %self.uri, outage_ms = lasted.as_millis() as u64, "reconnected to libvirt");
                }
                state.generation += 1;
                state.current = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                let message = e.to_string();
                Self::start_outage(&mut state, &message);
                let outage = state.outage.as_mut().expect("outage just started");
                outage.error = message;
                let delay = reconnect_delay(outage.failures);
                outage.failures = outage.failures.saturating_add(1);
                outage.next_attempt = Instant::now() + delay;
                tracing::debug!(uri = %self.uri, error = %outage.error, delay_ms = delay.as_millis() as u64, "libvirt reconnect failed");
                Err(self.unavailable(outage, delay))
            }
        }
    }

    fn start_outage(state: &mut State, error: &str) {
        if state.outage.is_none() {
            state.outage = Some(Outage {
                since: SystemTime::now(),
                error: error.to_owned(),
                failures: 0,
                next_attempt: Instant::now(),
            });
        }
    }

    fn unavailable(&self, outage: &Outage, next_in: Duration) -> HypervisorError {
        HypervisorError::Unavailable(
            format!(
                "libvirt at {} unavailable since {} ({}); next reconnect attempt in {} ms",
                self.uri,
                format_time(outage.since),
                outage.error,
                next_in.as_millis()
            )
            .into(),
        )
    }

    /// Whether libvirt is reachable, as far as the last call knew.
    pub(crate) fn link_state(&self) -> LinkState {
        let Ok(state) = self.lock() else {
            return LinkState::Connected;
        };
        match state.outage.as_ref() {
            None => LinkState::Connected,
            Some(outage) => LinkState::Unavailable {
                since: outage.since,
                error: outage.error.clone(),
                next_attempt_in: outage
                    .next_attempt
                    .saturating_duration_since(Instant::now()),
            },
        }
    }

    /// How many times the connection was (re)opened: a change means
    /// libvirtd may have restarted in between.
    pub(crate) fn generation(&self) -> u64 {
        self.lock().map(|s| s.generation).unwrap_or(0)
    }

    /// The connection failed mid-call: forget it, so the next call
    /// reconnects (and an outage starts if that fails).
    pub(crate) fn invalidate(&self, error: &str) {
        if self.is_private_test_driver() {
            return;
        }
        if let Ok(mut state) = self.state.lock()
            && state.current.take().is_some()
        {
            tracing::warn!(uri = %self.uri, error, "libvirt call failed on a broken connection; reconnecting");
            Self::start_outage(&mut state, error);
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
            if let Err(HypervisorError::Unavailable(message)) = &result
                && !conn.is_alive().unwrap_or(false)
            {
                this.invalidate(message.message());
                // Report the outage the way every later call will (since
                // when, next attempt), not the transport's last words.
                this.get()?;
            }
            result
        })
        .await
        .map_err(|e| {
            HypervisorError::backend(format!("libvirt call panicked or was cancelled: {e}"), e)
        })?
    }
}

/// RFC 3339, UTC, to the second.
pub(crate) fn format_time(at: SystemTime) -> String {
    jiff::Timestamp::try_from(at)
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_else(|_| "an unknown time".to_owned())
}

fn open_uri(uri: &str) -> Result<Connect, HypervisorError> {
    let conn = Connect::open(Some(uri)).map_err(|e| {
        HypervisorError::unavailable(
            format!("cannot connect to libvirt at {uri}: {}", e.message()),
            e,
        )
    })?;
    // Remote connections only; local drivers refuse, which is fine.
    let _ = conn.set_keep_alive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT);
    Ok(conn)
}

/// libvirt prints every error to stderr by default; vmr reports them
/// itself. Its default event loop runs on a thread of its own: keepalive
/// and noticing a closed connection need it.
fn init_libvirt() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        virt::error::clear_error_callback();
        if let Err(e) = virt::event::event_register_default_impl() {
            tracing::warn!(error = %e.message(), "no libvirt event loop: a hung libvirtd will not be detected");
            return;
        }
        let spawned = thread::Builder::new()
            .name("vmr-libvirt-loop".into())
            .spawn(|| {
                loop {
                    if virt::event::event_run_default_impl().is_err() {
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the libvirt event loop thread");
        }
    });
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
        return unavailable(err.clone());
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
            unavailable(err.clone())
        }
        _ => HypervisorError::backend(message, err.clone()),
    }
}

/// libvirt cannot be reached: its message, and its error kept as the cause.
pub(crate) fn unavailable(err: VirtError) -> HypervisorError {
    HypervisorError::unavailable(err.message().to_owned(), err)
}

/// Whether `err` says the object does not exist.
pub(crate) fn is_missing(err: &VirtError) -> bool {
    matches!(
        err.code().unwrap_or(ErrorNumber::InternalError),
        ErrorNumber::NoDomain | ErrorNumber::NoNetwork
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_from_250_ms_to_5_s() {
        let ms: Vec<u128> = (0..8).map(|n| reconnect_delay(n).as_millis()).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(reconnect_delay(u32::MAX), RECONNECT_MAX);
    }

    #[test]
    fn a_dead_socket_fails_fast_with_since_when_and_backs_off() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!(
            "test+unix:///default?socket={}",
            dir.path().join("none.sock").display()
        );
        let conn = Connection::new(&uri);
        let LinkState::Unavailable { since, .. } = conn.link_state() else {
            panic!("connected to a socket that does not exist");
        };
        // Within the back-off window no attempt is made: same outage, and
        // the error says since when.
        match conn.get() {
            Err(HypervisorError::Unavailable(message)) => {
                let message = message.message();
                assert!(message.contains("unavailable since"), "{message}");
                assert!(message.contains(&format_time(since)), "{message}");
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert_eq!(conn.generation(), 0);
    }
}
