//! The metrics endpoint: `GET /metrics` on a TCP listener, answering the
//! Prometheus text format (version 0.0.4). Anything else is 404 (405 for
//! another method on `/metrics`). Each read samples the core afresh.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::prometheus_text;
use tokio::net::TcpListener;
use vmr_ports::driving::MetricsSnapshotUseCases;

use super::PrometheusMetrics;

#[derive(Clone)]
struct Endpoint {
    metrics: Arc<PrometheusMetrics>,
    snapshot: Arc<dyn MetricsSnapshotUseCases>,
}

async fn read_metrics(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let snapshot = endpoint.snapshot.snapshot().await;
    (
        [(CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        endpoint.metrics.render(&snapshot),
    )
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<PrometheusMetrics>,
    snapshot: Arc<dyn MetricsSnapshotUseCases>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(read_metrics))
        .with_state(Endpoint { metrics, snapshot });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
