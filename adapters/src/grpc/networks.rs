//! Virtual networks: create, start, stop, remove, list, inspect.

use tonic::{Request, Response, Status};
use vmr_proto::v1 as pb;

use super::service::{Core, unimplemented};

pub async fn create_network(
    _core: &Core,
    _request: Request<pb::CreateNetworkRequest>,
) -> Result<Response<pb::NetworkInfo>, Status> {
    Err(unimplemented("networks"))
}

pub async fn start_network(
    _core: &Core,
    _request: Request<pb::StartNetworkRequest>,
) -> Result<Response<pb::NetworkInfo>, Status> {
    Err(unimplemented("networks"))
}

pub async fn stop_network(
    _core: &Core,
    _request: Request<pb::StopNetworkRequest>,
) -> Result<Response<pb::NetworkInfo>, Status> {
    Err(unimplemented("networks"))
}

pub async fn remove_network(
    _core: &Core,
    _request: Request<pb::RemoveNetworkRequest>,
) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
    Err(unimplemented("networks"))
}

pub async fn list_networks(
    _core: &Core,
    _request: Request<pb::ListNetworksRequest>,
) -> Result<Response<pb::ListNetworksResponse>, Status> {
    Err(unimplemented("networks"))
}

pub async fn inspect_network(
    _core: &Core,
    _request: Request<pb::InspectNetworkRequest>,
) -> Result<Response<pb::NetworkInfo>, Status> {
    Err(unimplemented("networks"))
}
