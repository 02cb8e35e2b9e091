//! What tests can script about the fake's calls: a failure for the next
//! call of a kind (optionally about one target), a delay for every call of
//! a kind, and the log of every call with its start and end time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use vmr_ports::HypervisorError;

/// The port's calls, to script failures and delays and to read the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FakeCall {
    Ping,
    DefineVm,
    StartVm,
    StopVm,
    RestartVm,
    UndefineVm,
    ListVms,
    InspectVm,
    DefineNetwork,
    StartNetwork,
    StopNetwork,
    RemoveNetwork,
    ListNetworks,
    InspectNetwork,
    CreateOverlay,
    CreateBlankDisk,
    /// `GuestAgent::exec`.
    Exec,
    /// `SerialConsole::open_console`.
    OpenConsole,
}

/// One call as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub call: FakeCall,
    /// The VM, network or file the call was about (empty for listings).
    pub target: String,
    pub started: Instant,
    pub finished: Instant,
    pub ok: bool,
}

struct Failure {
    call: FakeCall,
    target: Option<String>,
    error: HypervisorError,
}

/// The scripted behaviour and the call log.
#[derive(Default)]
pub(super) struct Script {
    calls: Mutex<Vec<CallRecord>>,
    failures: Mutex<Vec<Failure>>,
    delays: Mutex<HashMap<FakeCall, Duration>>,
    /// Set: calls are not logged.
    unlogged: AtomicBool,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in one test thread must not hide the state from the others.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Script {
    pub(super) fn fail_next(&self, call: FakeCall, target: Option<&str>, error: HypervisorError) {
        lock(&self.failures).push(Failure {
            call,
            target: target.map(str::to_owned),
            error,
        });
    }

    pub(super) fn set_delay(&self, call: FakeCall, delay: Duration) {
        lock(&self.delays).insert(call, delay);
    }

    pub(super) fn stop_logging(&self) {
        self.unlogged.store(true, Ordering::Relaxed);
    }

    pub(super) fn calls(&self) -> Vec<CallRecord> {
        lock(&self.calls).clone()
    }

    /// Records the call, applies its delay and any scripted failure, and
    /// otherwise runs `body`.
    pub(super) async fn run<T>(
        &self,
        call: FakeCall,
        target: &str,
        body: impl FnOnce() -> Result<T, HypervisorError>,
    ) -> Result<T, HypervisorError> {
        self.run_async(call, target, async { body() }).await
    }

    /// As [`Script::run`], for a body that waits (it starts only after the
    /// delay, and not at all when a failure is scripted).
    pub(super) async fn run_async<T>(
        &self,
        call: FakeCall,
        target: &str,
        body: impl Future<Output = Result<T, HypervisorError>>,
    ) -> Result<T, HypervisorError> {
        let started = Instant::now();
        let delay = lock(&self.delays).get(&call).copied();
        let logged = !self.unlogged.load(Ordering::Relaxed);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let scripted = {
            let mut failures = lock(&self.failures);
            failures
                .iter()
                .position(|f| f.call == call && f.target.as_deref().is_none_or(|t| t == target))
                .map(|i| failures.remove(i).error)
        };
        let result = match scripted {
            Some(error) => Err(error),
            None => body.await,
        };
        if logged {
            lock(&self.calls).push(CallRecord {
                call,
                target: target.to_owned(),
                started,
                finished: Instant::now(),
                ok: result.is_ok(),
            });
        }
        result
    }
}
