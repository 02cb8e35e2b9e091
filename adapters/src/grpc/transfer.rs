//! Push and pull: images to and from OCI registries, with streamed progress.
//! The user's registry credential comes in the call metadata.

use futures::StreamExt;
use tonic::{Request, Response, Status};
use vmr_ports::driving::{TransferEvent, TransferEventStream, TransferRequest};
use vmr_proto::v1 as pb;

use super::auth::registry_credential;
use super::convert;
use super::service::{Core, ServerStream};
use super::status::to_status;

fn progress(event: TransferEvent) -> pb::TransferProgress {
    use pb::transfer_progress::Event;
    let event = match event {
        TransferEvent::Blob(blob) => Event::Blob(pb::BlobProgress {
            digest: blob.digest.to_string(),
            media_type: blob.media_type,
            done: blob.done,
            total: blob.total,
            skipped: blob.skipped,
        }),
        TransferEvent::Done(done) => Event::Done(pb::TransferDone {
            reference: done.reference,
            digest: done.digest.to_string(),
            bytes_transferred: done.bytes_transferred,
        }),
    };
    pb::TransferProgress { event: Some(event) }
}

fn transfer_request<T>(
    request: Request<T>,
    parts: impl FnOnce(T) -> (String, String),
) -> Result<TransferRequest, Status> {
    let credential = registry_credential(request.metadata())?;
    let (reference, context) = parts(request.into_inner());
    Ok(TransferRequest {
        reference: convert::reference("reference", &reference)?,
        context,
        credential,
    })
}

fn respond(events: TransferEventStream) -> Response<ServerStream<pb::TransferProgress>> {
    let stream = events.map(|event| event.map(progress).map_err(to_status));
    Response::new(Box::pin(stream))
}

pub async fn push_image(
    core: &Core,
    request: Request<pb::PushImageRequest>,
) -> Result<Response<ServerStream<pb::TransferProgress>>, Status> {
    let request = transfer_request(request, |r| (r.reference, r.context))?;
    let events = core.transfers.push(request).await.map_err(to_status)?;
    Ok(respond(events))
}

pub async fn pull_image(
    core: &Core,
    request: Request<pb::PullImageRequest>,
) -> Result<Response<ServerStream<pb::TransferProgress>>, Status> {
    let request = transfer_request(request, |r| (r.reference, r.context))?;
    let events = core.transfers.pull(request).await.map_err(to_status)?;
    Ok(respond(events))
}
