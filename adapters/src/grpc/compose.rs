//! VMCompose projects: up (streamed events), down, ps, config.

use tonic::{Request, Response, Status};
use vmr_proto::v1 as pb;

use super::service::{Core, ServerStream, unimplemented};

pub async fn compose_up(
    _core: &Core,
    _request: Request<pb::ComposeUpRequest>,
) -> Result<Response<ServerStream<pb::ComposeEvent>>, Status> {
    Err(unimplemented("compose"))
}

pub async fn compose_down(
    _core: &Core,
    _request: Request<pb::ComposeDownRequest>,
) -> Result<Response<pb::ComposeDownResponse>, Status> {
    Err(unimplemented("compose"))
}

pub async fn compose_ps(
    _core: &Core,
    _request: Request<pb::ComposePsRequest>,
) -> Result<Response<pb::ComposePsResponse>, Status> {
    Err(unimplemented("compose"))
}

pub async fn compose_config(
    _core: &Core,
    _request: Request<pb::ComposeConfigRequest>,
) -> Result<Response<pb::ComposeConfigResponse>, Status> {
    Err(unimplemented("compose"))
}
