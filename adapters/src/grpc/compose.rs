//! VMCompose projects: up (streamed events), down, ps, config.

use std::time::UNIX_EPOCH;

use futures::StreamExt;
use tonic::{Request, Response, Status};
use vmr_ports::driving::{ComposeEvent, ComposeEventKind, ComposeSource};
use vmr_proto::v1 as pb;

use super::service::{Core, ServerStream};
use super::status::to_status;
use super::vms::vm_info;

fn source(source: Option<pb::ComposeSource>) -> Result<ComposeSource, Status> {
    let source = source.ok_or_else(|| Status::invalid_argument("source: is required"))?;
    Ok(ComposeSource {
        yaml: source.yaml,
        files: source.files.into_iter().collect(),
        project: Some(source.project).filter(|p| !p.is_empty()),
        directory_name: source.directory_name,
        ssh_authorized_keys: Vec::new(),
    })
}

fn event_kind(kind: ComposeEventKind) -> pb::ComposeEventKind {
    match kind {
        ComposeEventKind::NetworkCreated => pb::ComposeEventKind::NetworkCreated,
        ComposeEventKind::NetworkExists => pb::ComposeEventKind::NetworkExists,
        ComposeEventKind::Creating => pb::ComposeEventKind::Creating,
        ComposeEventKind::Starting => pb::ComposeEventKind::Starting,
        ComposeEventKind::Started => pb::ComposeEventKind::Started,
        ComposeEventKind::Ready => pb::ComposeEventKind::Ready,
        ComposeEventKind::Unchanged => pb::ComposeEventKind::Unchanged,
        ComposeEventKind::Recreating => pb::ComposeEventKind::Recreating,
        ComposeEventKind::Failed => pb::ComposeEventKind::Failed,
        ComposeEventKind::Done => pb::ComposeEventKind::Done,
    }
}

fn event(event: ComposeEvent) -> pb::ComposeEvent {
    let nanos = event
        .at
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    pb::ComposeEvent {
        project: event.project,
        service: event.service.unwrap_or_default(),
        network: event.network.unwrap_or_default(),
        kind: event_kind(event.kind) as i32,
        message: event.message,
        timestamp_unix_nanos: nanos,
    }
}

pub async fn compose_up(
    core: &Core,
    request: Request<pb::ComposeUpRequest>,
) -> Result<Response<ServerStream<pb::ComposeEvent>>, Status> {
    let request = request.into_inner();
    let source = ComposeSource {
        ssh_authorized_keys: request.ssh_authorized_keys,
        ..source(request.source)?
    };
    let events = core.compose.up(source).await.map_err(to_status)?;
    let stream = events.map(|item| item.map(event).map_err(to_status));
    Ok(Response::new(Box::pin(stream)))
}

pub async fn compose_down(
    core: &Core,
    request: Request<pb::ComposeDownRequest>,
) -> Result<Response<pb::ComposeDownResponse>, Status> {
    let source = source(request.into_inner().source)?;
    let outcome = core.compose.down(source).await.map_err(to_status)?;
    Ok(Response::new(pb::ComposeDownResponse {
        removed_vms: outcome.removed_vms,
        removed_networks: outcome.removed_networks,
    }))
}

pub async fn compose_ps(
    core: &Core,
    request: Request<pb::ComposePsRequest>,
) -> Result<Response<pb::ComposePsResponse>, Status> {
    let source = source(request.into_inner().source)?;
    let status = core.compose.ps(source).await.map_err(to_status)?;
    Ok(Response::new(pb::ComposePsResponse {
        project: status.project,
        services: status
            .services
            .into_iter()
            .map(|s| pb::ComposeServiceStatus {
                service: s.service,
                vm: s.vm.map(vm_info),
            })
            .collect(),
    }))
}

pub async fn compose_config(
    core: &Core,
    request: Request<pb::ComposeConfigRequest>,
) -> Result<Response<pb::ComposeConfigResponse>, Status> {
    let source = source(request.into_inner().source)?;
    let config = core.compose.config(source).await.map_err(to_status)?;
    Ok(Response::new(pb::ComposeConfigResponse {
        project: config.project,
        normalized_yaml: config.normalized_yaml,
    }))
}
