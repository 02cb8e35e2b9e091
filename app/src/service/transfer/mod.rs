//! Push and pull: images between the local store and OCI registries. This
//! module decides which registry a reference means and whether the user's
//! credential may go there, runs each transfer as a task that reports
//! per-blob progress on a bounded channel (a slow client slows the transfer,
//! a departed one cancels it), and remembers where blobs were seen so a push
//! can mount them across repositories instead of uploading them again.
//!
//! Locally an image is kept under its repository path without the registry
//! host: `127.0.0.1:5000/team/vm:1` is pulled into `team/vm:1`, and pushing
//! `127.0.0.1:5000/team/vm:1` sends the local `team/vm:1` there.

mod chunks;
mod pull;
mod push;
mod target;
#[cfg(test)]
mod tests;

use crate::service::events::Publisher;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use vmr_ports::driving::events::{EventType, NewEvent};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, Span, info, info_span, warn};
use vmr_domain::image::{Digest, Repository};
use vmr_ports::driving::{
    ErrorKind, TransferDone, TransferEvent, TransferEventStream, TransferRequest, TransferUseCases,
    UseCaseError,
};
use vmr_ports::{ByteFlow, MetricsRecorder, RegistryConnector};

pub use chunks::ChunkSettings;
pub use target::registry_target;

use chunks::ChunkIndex;

use super::contexts::ContextService;
use super::images::ImageService;

/// Events a transfer may run ahead of its client.
const EVENT_BUFFER: usize = 16;
/// Blob locations remembered for mounts; past this the memory starts over.
const MAX_KNOWN_BLOBS: usize = 65_536;

/// The push and pull use cases.
pub struct TransferService {
    images: Arc<ImageService>,
    contexts: Arc<ContextService>,
    registries: Arc<dyn RegistryConnector>,
    known: Arc<KnownBlobs>,
    chunking: Arc<ChunkSettings>,
    chunks: Arc<ChunkIndex>,
}

impl TransferService {
    pub fn new(
        images: Arc<ImageService>,
        contexts: Arc<ContextService>,
        registries: Arc<dyn RegistryConnector>,
    ) -> Self {
        Self {
            images,
            contexts,
            registries,
            known: Arc::new(KnownBlobs::default()),
            chunking: Arc::new(ChunkSettings::default()),
            chunks: Arc::new(ChunkIndex::default()),
        }
    }

    /// Sets how large disks are cut and how many chunks travel at once.
    #[must_use]
    pub fn with_chunking(mut self, settings: ChunkSettings) -> Self {
        self.chunking = Arc::new(settings);
        self
    }
}

/// In which repository of which registry each blob was last seen (pushed,
/// found or pulled), for cross-repository mounts. Memory only: a restarted
/// daemon uploads once more, which is merely slower.
#[derive(Default)]
pub(crate) struct KnownBlobs {
    seen: Mutex<HashMap<(String, Digest), Repository>>,
}

impl KnownBlobs {
    pub(crate) fn remember(&self, registry: &str, digest: &Digest, repository: &Repository) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= MAX_KNOWN_BLOBS {
            seen.clear();
        }
        seen.insert((registry.to_owned(), digest.clone()), repository.clone());
    }

    /// Another repository of `registry` known to hold the blob.
    pub(crate) fn elsewhere(
        &self,
        registry: &str,
        digest: &Digest,
        repository: &Repository,
    ) -> Option<Repository> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get(&(registry.to_owned(), digest.clone()))
            .filter(|from| *from != repository)
            .cloned()
    }
}

type EventSender = mpsc::Sender<Result<TransferEvent, UseCaseError>>;

/// A transfer's side of its event channel.
#[derive(Clone)]
pub(crate) struct Progress {
    tx: EventSender,
}

impl Progress {
    /// Sends an event, waiting for room; fails when the client left.
    pub(crate) async fn send(&self, event: TransferEvent) -> Result<(), UseCaseError> {
        self.tx.send(Ok(event)).await.map_err(|_| cancelled())
    }

    /// Sends an event if there is room; intermediate progress may be dropped
    /// (the next one, or the blob's last, says more anyway).
    pub(crate) fn offer(&self, event: TransferEvent) {
        let _ = self.tx.try_send(Ok(event));
    }
}

fn cancelled() -> UseCaseError {
    UseCaseError::new(
        ErrorKind::Cancelled,
        "the client stopped following the transfer",
    )
}

/// Where a finished transfer is told: the event source (as `action`) and
/// the byte counts (as `flow`).
struct Report {
    events: Publisher,
    metrics: Arc<dyn MetricsRecorder>,
    action: &'static str,
    flow: ByteFlow,
}

impl Report {
    fn of(images: &ImageService, action: &'static str, flow: ByteFlow) -> Self {
        Self {
            events: images.events().clone(),
            metrics: images.metrics().clone(),
            action,
            flow,
        }
    }
}

/// Runs `job` as a task that reports on a fresh channel; returns the
/// client's end. The job is dropped (cancelled) when the client goes away:
/// a pull keeps its partial blobs for the next attempt.
/// A transfer that succeeds is told as `report` says.
fn spawn_transfer<F, J>(span: Span, report: Report, job: J) -> TransferEventStream
where
    J: FnOnce(Progress) -> F,
    F: Future<Output = Result<TransferDone, UseCaseError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    let work = job(Progress { tx: tx.clone() });
    tokio::spawn(
        async move {
            let outcome = tokio::select! {
                outcome = work => outcome,
                () = tx.closed() => {
                    info!("the client left; transfer cancelled");
                    return;
                }
            };
            let last = match outcome {
                Ok(done) => {
                    info!(digest = %done.digest, bytes = done.bytes_transferred, "transfer done");
                    report
                        .metrics
                        .image_bytes(report.flow, done.bytes_transferred);
                    report.events.publish(
                        NewEvent::new(EventType::Image, report.action, done.reference.clone())
                            .with("digest", done.digest.to_string())
                            .with("bytes", done.bytes_transferred.to_string()),
                    );
                    Ok(TransferEvent::Done(done))
                }
                Err(e) => {
                    warn!(error = %e, "transfer failed");
                    Err(e)
                }
            };
            let _ = tx.send(last).await;
        }
        .instrument(span),
    );
    Box::pin(ReceiverStream::new(rx))
}

#[async_trait]
impl TransferUseCases for TransferService {
    async fn push(&self, request: TransferRequest) -> Result<TransferEventStream, UseCaseError> {
        let span = info_span!("push", image = %request.reference);
        let job = push::prepare(self, request)
            .instrument(span.clone())
            .await?;
        let report = Report::of(&self.images, "push", ByteFlow::Pushed);
        Ok(spawn_transfer(span, report, move |progress| {
            job.run(progress)
        }))
    }

    async fn pull(&self, request: TransferRequest) -> Result<TransferEventStream, UseCaseError> {
        let span = info_span!("pull", image = %request.reference);
        let job = pull::prepare(self, request)
            .instrument(span.clone())
            .await?;
        let report = Report::of(&self.images, "pull", ByteFlow::Pulled);
        Ok(spawn_transfer(span, report, move |progress| {
            job.run(progress)
        }))
    }
}
