//! `VMService`: each RPC converts its request, calls a driving port and
//! converts the answer. No decisions are made here.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use vmr_ports::driving::{
    ErrorKind, HealthUseCases, ImageUseCases, ImportRequest, UploadStream, UseCaseError,
};
use vmr_proto::v1 as pb;
use vmr_proto::v1::vm_service_server::VmService;

use super::convert;
use super::status::to_status;

/// A disk chunk may be at most this large ("a few MiB"; the CLI sends 1 MiB).
pub const MAX_CHUNK: usize = 16 * 1024 * 1024;

type ServerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The use cases the gRPC service serves.
#[derive(Clone)]
pub struct Core {
    pub images: Arc<dyn ImageUseCases>,
    pub health: Arc<dyn HealthUseCases>,
}

/// The tonic service over a `Core`.
#[derive(Clone)]
pub struct VmServiceImpl {
    core: Core,
}

impl VmServiceImpl {
    pub fn new(core: Core) -> Self {
        Self { core }
    }
}

fn unimplemented(feature: &str) -> Status {
    Status::unimplemented(format!(
        "{feature} is not implemented by vmrd {} yet",
        env!("CARGO_PKG_VERSION")
    ))
}

/// Splits an import stream into its header and an upload stream of chunks.
async fn split_import(
    mut stream: Streaming<pb::ImportImageRequest>,
) -> Result<(ImportRequest, UploadStream), Status> {
    use pb::import_image_request::Part;
    let header = match stream.message().await? {
        Some(pb::ImportImageRequest {
            part: Some(Part::Header(header)),
        }) => header,
        _ => {
            return Err(Status::invalid_argument(
                "header: the first message of an import must be its header",
            ));
        }
    };
    let request = ImportRequest {
        vmfile: header.vmfile,
        tags: header.tags,
        disk_size: header.disk_size,
        disk_digest: Some(header.disk_digest).filter(|d| !d.is_empty()),
        disk_file_name: Some(header.disk_file_name).filter(|d| !d.is_empty()),
    };
    let chunks = stream.map(|message| match message {
        Ok(pb::ImportImageRequest {
            part: Some(Part::Chunk(chunk)),
        }) => {
            if chunk.len() > MAX_CHUNK {
                Err(UseCaseError::new(
                    ErrorKind::ResourceExhausted,
                    format!("chunk: {} bytes is more than the {MAX_CHUNK} allowed", chunk.len()),
                ))
            } else {
                Ok(Bytes::from(chunk))
            }
        }
        Ok(_) => Err(UseCaseError::invalid(
            "chunk",
            "only disk chunks may follow the header",
        )),
        Err(status) => Err(UseCaseError::new(
            ErrorKind::Cancelled,
            format!("the import stream broke: {}", status.message()),
        )),
    });
    Ok((request, chunks.boxed()))
}

#[tonic::async_trait]
impl VmService for VmServiceImpl {
    async fn login(&self, _: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        Err(unimplemented("login"))
    }

    async fn logout(&self, _: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        Err(unimplemented("logout"))
    }

    async fn register(
        &self,
        _: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Err(unimplemented("register"))
    }

    async fn health_check(
        &self,
        _: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        let report = self.core.health.check().await;
        Ok(Response::new(convert::health(&report)))
    }

    async fn create_context(
        &self,
        _: Request<pb::CreateContextRequest>,
    ) -> Result<Response<pb::ContextInfo>, Status> {
        Err(unimplemented("contexts"))
    }

    async fn list_contexts(
        &self,
        _: Request<pb::ListContextsRequest>,
    ) -> Result<Response<pb::ListContextsResponse>, Status> {
        Err(unimplemented("contexts"))
    }

    async fn use_context(&self, _: Request<pb::UseContextRequest>) -> Result<Response<pb::ContextInfo>, Status> {
        Err(unimplemented("contexts"))
    }

    async fn remove_context(
        &self,
        _: Request<pb::RemoveContextRequest>,
    ) -> Result<Response<pb::RemoveContextResponse>, Status> {
        Err(unimplemented("contexts"))
    }

    async fn inspect_context(
        &self,
        _: Request<pb::InspectContextRequest>,
    ) -> Result<Response<pb::ContextInfo>, Status> {
        Err(unimplemented("contexts"))
    }

    async fn import_image(
        &self,
        request: Request<Streaming<pb::ImportImageRequest>>,
    ) -> Result<Response<pb::ImportImageResponse>, Status> {
        let (header, chunks) = split_import(request.into_inner()).await?;
        let outcome = self
            .core
            .images
            .import(header, chunks)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ImportImageResponse {
            image: Some(convert::image_summary(&outcome.image)),
            references: outcome.references,
        }))
    }

    async fn list_images(
        &self,
        request: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let filter = request.into_inner().repository;
        let repository = if filter.is_empty() {
            None
        } else {
            Some(
                filter
                    .parse()
                    .map_err(|e| Status::invalid_argument(format!("repository: {e}")))?,
            )
        };
        let images = self.core.images.list(repository).await.map_err(to_status)?;
        Ok(Response::new(pb::ListImagesResponse {
            images: images.iter().map(convert::image_summary).collect(),
        }))
    }

    async fn inspect_image(
        &self,
        request: Request<pb::InspectImageRequest>,
    ) -> Result<Response<pb::InspectImageResponse>, Status> {
        let reference = convert::reference("reference", &request.into_inner().reference)?;
        let details = self.core.images.inspect(&reference).await.map_err(to_status)?;
        Ok(Response::new(convert::image_details(&details)))
    }

    async fn tag_image(
        &self,
        request: Request<pb::TagImageRequest>,
    ) -> Result<Response<pb::TagImageResponse>, Status> {
        let request = request.into_inner();
        let source = convert::reference("source", &request.source)?;
        let target = convert::reference("target", &request.target)?;
        let digest = self.core.images.tag(&source, &target).await.map_err(to_status)?;
        Ok(Response::new(pb::TagImageResponse {
            reference: format!("{}:{}", target.repository, target.tag_or_latest()),
            digest: digest.to_string(),
        }))
    }

    async fn remove_image(
        &self,
        request: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        let request = request.into_inner();
        let reference = convert::reference("reference", &request.reference)?;
        let outcome = self
            .core
            .images
            .remove(&reference, request.force)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::remove_outcome(outcome)))
    }

    async fn prune_images(
        &self,
        request: Request<pb::PruneImagesRequest>,
    ) -> Result<Response<pb::PruneImagesResponse>, Status> {
        let outcome = self
            .core
            .images
            .prune(request.into_inner().all)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::prune_outcome(outcome)))
    }

    type PushImageStream = ServerStream<pb::TransferProgress>;

    async fn push_image(
        &self,
        _: Request<pb::PushImageRequest>,
    ) -> Result<Response<Self::PushImageStream>, Status> {
        Err(unimplemented("push"))
    }

    type PullImageStream = ServerStream<pb::TransferProgress>;

    async fn pull_image(
        &self,
        _: Request<pb::PullImageRequest>,
    ) -> Result<Response<Self::PullImageStream>, Status> {
        Err(unimplemented("pull"))
    }

    async fn create_vm(&self, _: Request<pb::CreateVmRequest>) -> Result<Response<pb::VmInfo>, Status> {
        Err(unimplemented("VMs"))
    }

    async fn start_vm(&self, _: Request<pb::StartVmRequest>) -> Result<Response<pb::VmInfo>, Status> {
        Err(unimplemented("VMs"))
    }

    async fn stop_vm(&self, _: Request<pb::StopVmRequest>) -> Result<Response<pb::VmInfo>, Status> {
        Err(unimplemented("VMs"))
    }

    async fn restart_vm(&self, _: Request<pb::RestartVmRequest>) -> Result<Response<pb::VmInfo>, Status> {
        Err(unimplemented("VMs"))
    }

    async fn remove_vm(
        &self,
        _: Request<pb::RemoveVmRequest>,
    ) -> Result<Response<pb::RemoveVmResponse>, Status> {
        Err(unimplemented("VMs"))
    }

    async fn list_v_ms(
        &self,
        _: Request<pb::ListVMsRequest>,
    ) -> Result<Response<pb::ListVMsResponse>, Status> {
        Err(unimplemented("VMs"))
    }

    async fn inspect_vm(
        &self,
        _: Request<pb::InspectVmRequest>,
    ) -> Result<Response<pb::InspectVmResponse>, Status> {
        Err(unimplemented("VMs"))
    }

    async fn create_network(
        &self,
        _: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::NetworkInfo>, Status> {
        Err(unimplemented("networks"))
    }

    async fn start_network(
        &self,
        _: Request<pb::StartNetworkRequest>,
    ) -> Result<Response<pb::NetworkInfo>, Status> {
        Err(unimplemented("networks"))
    }

    async fn stop_network(
        &self,
        _: Request<pb::StopNetworkRequest>,
    ) -> Result<Response<pb::NetworkInfo>, Status> {
        Err(unimplemented("networks"))
    }

    async fn remove_network(
        &self,
        _: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
        Err(unimplemented("networks"))
    }

    async fn list_networks(
        &self,
        _: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        Err(unimplemented("networks"))
    }

    async fn inspect_network(
        &self,
        _: Request<pb::InspectNetworkRequest>,
    ) -> Result<Response<pb::NetworkInfo>, Status> {
        Err(unimplemented("networks"))
    }

    type ComposeUpStream = ServerStream<pb::ComposeEvent>;

    async fn compose_up(
        &self,
        _: Request<pb::ComposeUpRequest>,
    ) -> Result<Response<Self::ComposeUpStream>, Status> {
        Err(unimplemented("compose"))
    }

    async fn compose_down(
        &self,
        _: Request<pb::ComposeDownRequest>,
    ) -> Result<Response<pb::ComposeDownResponse>, Status> {
        Err(unimplemented("compose"))
    }

    async fn compose_ps(
        &self,
        _: Request<pb::ComposePsRequest>,
    ) -> Result<Response<pb::ComposePsResponse>, Status> {
        Err(unimplemented("compose"))
    }

    async fn compose_config(
        &self,
        _: Request<pb::ComposeConfigRequest>,
    ) -> Result<Response<pb::ComposeConfigResponse>, Status> {
        Err(unimplemented("compose"))
    }
}
