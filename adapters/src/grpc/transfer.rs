//! Push and pull: images to and from OCI registries, with streamed progress.

use tonic::{Request, Response, Status};
use vmr_proto::v1 as pb;

use super::service::{Core, ServerStream, unimplemented};

pub async fn push_image(
    _core: &Core,
    _request: Request<pb::PushImageRequest>,
) -> Result<Response<ServerStream<pb::TransferProgress>>, Status> {
    Err(unimplemented("push"))
}

pub async fn pull_image(
    _core: &Core,
    _request: Request<pb::PullImageRequest>,
) -> Result<Response<ServerStream<pb::TransferProgress>>, Status> {
    Err(unimplemented("pull"))
}
