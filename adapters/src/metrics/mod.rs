//! Prometheus metrics: a [`MetricsRecorder`] keeping counters and latency
//! histograms with the `prometheus-client` crate, the text exposition of
//! those plus a snapshot of the core sampled at each read, and the HTTP
//! endpoint serving it (`vmrd --metrics-listen`, see [`http`]).
//!
//! Labels come from what clients send (a method path), so their number is
//! bounded: past [`MAX_METHODS`] distinct methods, further ones count as
//! `other`.

pub mod http;

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vmr_ports::driving::MetricsSnapshot;
use vmr_ports::{ByteFlow, MetricsRecorder};

/// The most distinct methods labelled by name.
pub const MAX_METHODS: usize = 256;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    method: String,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    flow: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~65 s: a ListImages to a long import.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The canonical name of a gRPC status code, as grpc-go and the gRPC
/// Prometheus conventions write it.
pub fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// The daemon's counters and histograms.
#[derive(Debug)]
pub struct PrometheusMetrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    bytes: Family<FlowLabels, Counter>,
    /// The methods labelled by name so far.
    methods: Mutex<HashSet<(String, String)>>,
}

impl Default for PrometheusMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PrometheusMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        let latency: Family<MethodLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let bytes = Family::<FlowLabels, Counter>::default();
        registry.register(
            "vmr_grpc_requests",
            "gRPC calls finished, by service, method and status code",
            calls.clone(),
        );
        registry.register(
            "vmr_grpc_request_duration_seconds",
            "How long gRPC calls took, from their headers to their status, by service and method",
            latency.clone(),
        );
        registry.register(
            "vmr_image_bytes",
            "Image bytes moved by finished transfers: imported (disks received), pushed and pulled (blob bytes that travelled)",
            bytes.clone(),
        );
        // Every flow is shown from the start, at 0.
        for flow in ByteFlow::ALL {
            drop(bytes.get_or_create(&FlowLabels {
                flow: flow.as_str(),
            }));
        }
        Self {
            registry,
            calls,
            latency,
            bytes,
            methods: Mutex::new(HashSet::new()),
        }
    }

    /// `(service, method)` of a path, or `other` once too many were seen.
    fn labels_of(&self, path: &str) -> (String, String) {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", path));
        let key = (service.to_string(), method.to_string());
        let mut methods = self.methods.lock().unwrap_or_else(PoisonError::into_inner);
        if methods.contains(&key) {
            return key;
        }
        if methods.len() >= MAX_METHODS {
            return ("other".to_string(), "other".to_string());
        }
        methods.insert(key.clone());
        key
    }

    /// The text exposition: the counters, then `snapshot` as gauges.
    pub fn render(&self, snapshot: &MetricsSnapshot) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        let _ = prometheus_text::encode(&mut text, &snapshot_registry(snapshot));
        text
    }
}

/// The sampled values, as gauges of a registry made for one read (two
/// reads at once never mix their samples).
fn snapshot_registry(snapshot: &MetricsSnapshot) -> Registry {
    let mut registry = Registry::default();
    let vms = Family::<StateLabels, Gauge>::default();
    for (state, count) in &snapshot.vms_by_state {
        vms.get_or_create(&StateLabels {
            state: state.clone(),
        })
        .set(i64::try_from(*count).unwrap_or(i64::MAX));
    }
    registry.register("vmr_vms", "VMs by state", vms);
    if let Some(images) = snapshot.images {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::try_from(images).unwrap_or(i64::MAX));
        registry.register(
            "vmr_images",
            "Images in the store, as vmr images lists them",
            gauge,
        );
    }
    if let Some(bytes) = snapshot.store_bytes {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        registry.register("vmr_store_bytes", "Bytes of every blob in the store", gauge);
    }
    let up = Family::<ComponentLabels, Gauge>::default();
    for (component, reachable) in &snapshot.reachable {
        up.get_or_create(&ComponentLabels {
            component: component.clone(),
        })
        .set(i64::from(*reachable));
    }
    registry.register(
        "vmr_component_up",
        "1 when a configured component (hypervisor, store, registry, auth) answers its health probe, else 0",
        up,
    );
    registry
}

impl MetricsRecorder for PrometheusMetrics {
    fn call_finished(&self, method: &str, code: i32, elapsed: Duration) {
        let (service, method) = self.labels_of(method);
        self.latency
            .get_or_create(&MethodLabels {
                service: service.clone(),
                method: method.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.calls
            .get_or_create(&CallLabels {
                service,
                method,
                code: code_name(code).to_string(),
            })
            .inc();
    }

    fn image_bytes(&self, flow: ByteFlow, bytes: u64) {
        self.bytes
            .get_or_create(&FlowLabels {
                flow: flow.as_str(),
            })
            .inc_by(bytes);
    }
}

#[cfg(test)]
mod tests;
