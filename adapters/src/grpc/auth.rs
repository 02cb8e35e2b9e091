//! Login, logout and register: credentials for registries.

use tonic::{Request, Response, Status};
use vmr_proto::v1 as pb;

use super::service::{Core, unimplemented};

pub async fn login(
    _core: &Core,
    _request: Request<pb::LoginRequest>,
) -> Result<Response<pb::LoginResponse>, Status> {
    Err(unimplemented("login"))
}

pub async fn logout(
    _core: &Core,
    _request: Request<pb::LogoutRequest>,
) -> Result<Response<pb::LogoutResponse>, Status> {
    Err(unimplemented("logout"))
}

pub async fn register(
    _core: &Core,
    _request: Request<pb::RegisterRequest>,
) -> Result<Response<pb::RegisterResponse>, Status> {
    Err(unimplemented("register"))
}
