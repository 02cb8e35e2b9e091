//! How long each step of creating or starting a VM took, as debug events.

use std::time::Instant;

use vmr_domain::vm::VmName;

/// Each phase's duration as a debug event (`scripts/bench/vm.sh` tables
/// them): "create phase" while a VM is created, "start phase" when an
/// existing VM is started (`vmr start`, compose). The phase names are the
/// same in both: `start` is the hypervisor's start call as vmr makes it,
/// `inspect` the read-back of the started VM.
pub(crate) struct Phases<'a> {
    vm: &'a VmName,
    since: Instant,
}

impl<'a> Phases<'a> {
    pub(crate) fn new(vm: &'a VmName) -> Self {
        Self {
            vm,
            since: Instant::now(),
        }
    }

    fn lap(&mut self) -> f64 {
        let ms = self.since.elapsed().as_secs_f64() * 1e3;
        self.since = Instant::now();
        ms
    }

    /// Ends a phase of a create.
    pub(crate) fn create(&mut self, phase: &'static str) {
        let duration_ms = self.lap();
        tracing::debug!(vm = %self.vm, phase, duration_ms, "create phase");
    }

    /// Ends a phase of a start.
    pub(crate) fn start(&mut self, phase: &'static str) {
        let duration_ms = self.lap();
        tracing::debug!(vm = %self.vm, phase, duration_ms, "start phase");
    }
}
