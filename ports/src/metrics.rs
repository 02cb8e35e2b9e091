//! Metrics the core counts as things happen: calls as the server ends them,
//! image bytes as imports, pushes and pulls finish. What is sampled rather
//! than counted (VMs by state, images, store bytes, reachability) is asked
//! of the core when metrics are read, through
//! [`crate::driving::metrics::MetricsSnapshotUseCases`].

use std::fmt;
use std::time::Duration;

/// Which way image bytes moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteFlow {
    /// A disk received by an import.
    Imported,
    /// Blob bytes sent to a registry by a push.
    Pushed,
    /// Blob bytes received from a registry by a pull.
    Pulled,
}

impl ByteFlow {
    pub const ALL: [ByteFlow; 3] = [Self::Imported, Self::Pushed, Self::Pulled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Imported => "imported",
            Self::Pushed => "pushed",
            Self::Pulled => "pulled",
        }
    }
}

impl fmt::Display for ByteFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where counts go. Recording never fails and never waits.
pub trait MetricsRecorder: Send + Sync {
    /// A call ended: its full method path (`/package.Service/Method`), its
    /// gRPC status code (0 = OK) and how long it took.
    fn call_finished(&self, method: &str, code: i32, elapsed: Duration);
    /// `bytes` moved `flow`-wards in a finished import, push or pull.
    fn image_bytes(&self, flow: ByteFlow, bytes: u64);
}

/// A recorder that keeps nothing: metrics off, unit tests, embedders.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetrics;

impl MetricsRecorder for NoMetrics {
    fn call_finished(&self, _method: &str, _code: i32, _elapsed: Duration) {}
    fn image_bytes(&self, _flow: ByteFlow, _bytes: u64) {}
}
