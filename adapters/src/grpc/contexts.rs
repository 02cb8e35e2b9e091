//! Contexts: named remotes (registry URL, auth URL, TLS) persisted by the daemon.

use tonic::{Request, Response, Status};
use vmr_proto::v1 as pb;

use super::service::{Core, unimplemented};

pub async fn create_context(
    _core: &Core,
    _request: Request<pb::CreateContextRequest>,
) -> Result<Response<pb::ContextInfo>, Status> {
    Err(unimplemented("contexts"))
}

pub async fn list_contexts(
    _core: &Core,
    _request: Request<pb::ListContextsRequest>,
) -> Result<Response<pb::ListContextsResponse>, Status> {
    Err(unimplemented("contexts"))
}

pub async fn use_context(
    _core: &Core,
    _request: Request<pb::UseContextRequest>,
) -> Result<Response<pb::ContextInfo>, Status> {
    Err(unimplemented("contexts"))
}

pub async fn remove_context(
    _core: &Core,
    _request: Request<pb::RemoveContextRequest>,
) -> Result<Response<pb::RemoveContextResponse>, Status> {
    Err(unimplemented("contexts"))
}

pub async fn inspect_context(
    _core: &Core,
    _request: Request<pb::InspectContextRequest>,
) -> Result<Response<pb::ContextInfo>, Status> {
    Err(unimplemented("contexts"))
}
