//! VMs: create, start, stop, restart, remove, list, inspect.

use tonic::{Request, Response, Status};
use vmr_proto::v1 as pb;

use super::service::{Core, unimplemented};

pub async fn create_vm(
    _core: &Core,
    _request: Request<pb::CreateVmRequest>,
) -> Result<Response<pb::VmInfo>, Status> {
    Err(unimplemented("VMs"))
}

pub async fn start_vm(
    _core: &Core,
    _request: Request<pb::StartVmRequest>,
) -> Result<Response<pb::VmInfo>, Status> {
    Err(unimplemented("VMs"))
}

pub async fn stop_vm(
    _core: &Core,
    _request: Request<pb::StopVmRequest>,
) -> Result<Response<pb::VmInfo>, Status> {
    Err(unimplemented("VMs"))
}

pub async fn restart_vm(
    _core: &Core,
    _request: Request<pb::RestartVmRequest>,
) -> Result<Response<pb::VmInfo>, Status> {
    Err(unimplemented("VMs"))
}

pub async fn remove_vm(
    _core: &Core,
    _request: Request<pb::RemoveVmRequest>,
) -> Result<Response<pb::RemoveVmResponse>, Status> {
    Err(unimplemented("VMs"))
}

pub async fn list_v_ms(
    _core: &Core,
    _request: Request<pb::ListVMsRequest>,
) -> Result<Response<pb::ListVMsResponse>, Status> {
    Err(unimplemented("VMs"))
}

pub async fn inspect_vm(
    _core: &Core,
    _request: Request<pb::InspectVmRequest>,
) -> Result<Response<pb::InspectVmResponse>, Status> {
    Err(unimplemented("VMs"))
}
