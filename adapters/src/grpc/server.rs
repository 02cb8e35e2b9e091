//! Serving `VMService` on a Unix socket: reflection, `grpc.health.v1`, the
//! call log, 4 GiB messages each way, and a graceful stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};
use tonic_reflection::server::v1alpha;
use vmr_proto::v1::vm_service_server::VmServiceServer;

use super::authority::AuthorityRepair;
use super::fdpass::{self, Kind, PassedDisks};
use super::guard::RequestGuardLayer;
use super::logging::CallLogLayer;
use super::service::{Core, VmServiceImpl};

/// Largest message accepted or sent, each way (PRODUCT.md §1).
pub const MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024 * 1024 - 1;

/// Serves until `shutdown` resolves, then lets in-flight calls finish.
pub async fn serve(
    listener: UnixListener,
    core: Core,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (reflection_v1, reflection_v1alpha) = reflection()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<VmServiceServer<VmServiceImpl>>()
        .await;

    let calls = CallLogLayer::new(core.metrics.clone());
    let disks = Arc::new(PassedDisks::default());
    let service = VmServiceServer::new(VmServiceImpl::with_passed_disks(core, Arc::clone(&disks)))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);

    let mut builder = Server::builder()
        // Large HTTP/2 windows: disk uploads are bulk transfers over a local
        // socket (see shared/research/stream-throughput.md).
        .initial_stream_window_size(Some(16 * 1024 * 1024))
        .initial_connection_window_size(Some(32 * 1024 * 1024))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        // Outermost first: the call log sees the guard's statuses.
        .layer(calls)
        .layer(RequestGuardLayer);
    let router = builder
        .add_service(health_service)
        .add_service(service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let (incoming, grpc_connections) = mpsc::channel(64);
    let acceptor = AbortOnDrop(tokio::spawn(accept(listener, disks, incoming)));
    let served = router
        .serve_with_incoming_shutdown(ReceiverStream::new(grpc_connections), shutdown)
        .await;
    drop(acceptor);
    Ok(served?)
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    /// The compiled-in descriptor sets do not form a whole: a build bug.
    #[error("the reflection descriptor sets are invalid: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Reflection in both versions clients ask for (grpcurl and grpcio's
/// `v1alpha`, newer tools' `v1`), each describing every service served:
/// `VMService`, `grpc.health.v1.Health` and both reflection services, so
/// every message a listed method names resolves.
fn reflection() -> Result<
    (
        ServerReflectionServer<impl ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(vmr_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

#[cfg(test)]
#[test]
fn the_reflection_descriptor_sets_form_a_whole() {
    assert!(reflection().is_ok());
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Accepts connections and sorts them by their first bytes (each on its own
/// task, so a silent client holds up nobody): gRPC goes to tonic, the
/// descriptor side channel is served here.
async fn accept(
    listener: UnixListener,
    disks: Arc<PassedDisks>,
    grpc: mpsc::Sender<std::io::Result<AuthorityRepair<UnixStream>>>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically out of descriptors: wait instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let grpc = grpc.clone();
        let disks = Arc::clone(&disks);
        tokio::spawn(async move {
            match fdpass::classify(&stream).await {
                Kind::Grpc => {
                    let _ = grpc.send(Ok(AuthorityRepair::new(stream))).await;
                }
                Kind::SideChannel => fdpass::serve_side_channel(stream, &disks).await,
                Kind::Gone => {}
            }
        });
    }
}
