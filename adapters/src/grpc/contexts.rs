//! Contexts: named remotes (registry URL, auth URL, TLS) persisted by the daemon.

use tonic::{Request, Response, Status};
use vmr_ports::driving::{Context, ContextView};
use vmr_proto::v1 as pb;

use super::service::Core;
use super::status::to_status;

fn info(view: ContextView) -> pb::ContextInfo {
    pb::ContextInfo {
        name: view.context.name,
        registry_url: view.context.registry_url.unwrap_or_default(),
        auth_url: view.context.auth_url.unwrap_or_default(),
        insecure: view.context.insecure,
        current: view.current,
    }
}

fn non_empty(s: &str) -> Option<String> {
    Some(s.trim_end_matches('/').to_string()).filter(|s| !s.is_empty())
}

pub async fn create_context(
    core: &Core,
    request: Request<pb::CreateContextRequest>,
) -> Result<Response<pb::ContextInfo>, Status> {
    let r = request.into_inner();
    let context = Context {
        name: r.name,
        registry_url: non_empty(&r.registry_url),
        auth_url: non_empty(&r.auth_url),
        insecure: r.insecure,
    };
    let view = core.contexts.create(context).await.map_err(to_status)?;
    Ok(Response::new(info(view)))
}

pub async fn list_contexts(
    core: &Core,
    _request: Request<pb::ListContextsRequest>,
) -> Result<Response<pb::ListContextsResponse>, Status> {
    let views = core.contexts.list().await.map_err(to_status)?;
    Ok(Response::new(pb::ListContextsResponse {
        contexts: views.into_iter().map(info).collect(),
    }))
}

pub async fn use_context(
    core: &Core,
    request: Request<pb::UseContextRequest>,
) -> Result<Response<pb::ContextInfo>, Status> {
    let view = core
        .contexts
        .use_context(&request.into_inner().name)
        .await
        .map_err(to_status)?;
    Ok(Response::new(info(view)))
}

pub async fn remove_context(
    core: &Core,
    request: Request<pb::RemoveContextRequest>,
) -> Result<Response<pb::RemoveContextResponse>, Status> {
    core.contexts
        .remove(&request.into_inner().name)
        .await
        .map_err(to_status)?;
    Ok(Response::new(pb::RemoveContextResponse {}))
}

pub async fn inspect_context(
    core: &Core,
    request: Request<pb::InspectContextRequest>,
) -> Result<Response<pb::ContextInfo>, Status> {
    let view = core
        .contexts
        .inspect(&request.into_inner().name)
        .await
        .map_err(to_status)?;
    Ok(Response::new(info(view)))
}
