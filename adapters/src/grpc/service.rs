//! `VMService`: each RPC converts its request, calls a driving port and
//! converts the answer. No decisions are made here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status, Streaming};
use vmr_ports::driving::events::EventUseCases;
use vmr_ports::driving::{AuthUseCases, TransferUseCases};
use vmr_ports::driving::{ComposeUseCases, GuestUseCases, NetworkUseCases, VmUseCases};
use vmr_ports::driving::{
    ContextUseCases, DiskSource, ErrorKind, HealthUseCases, ImageUseCases, ImportRequest,
    StoreCheck, StoreProblemKind, UploadStream, UseCaseError,
};
use vmr_proto::v1 as pb;
use vmr_proto::v1::vm_service_server::VmService;

use super::fdpass::{PassedDisk, PassedDisks};
use super::status::to_status;
use super::{auth, compose, contexts, convert, events, guest, networks, transfer, vms};

/// A disk chunk may be at most this large ("a few MiB"; the CLI sends 1 MiB).
pub const MAX_CHUNK: usize = 16 * 1024 * 1024;

pub(super) type ServerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The use cases the gRPC service serves.
#[derive(Clone)]
pub struct Core {
    pub images: Arc<dyn ImageUseCases>,
    pub health: Arc<dyn HealthUseCases>,
    pub contexts: Arc<dyn ContextUseCases>,
    pub vms: Arc<dyn VmUseCases>,
    pub networks: Arc<dyn NetworkUseCases>,
    pub compose: Arc<dyn ComposeUseCases>,
    pub guest: Arc<dyn GuestUseCases>,
    pub transfers: Arc<dyn TransferUseCases>,
    pub auth: Arc<dyn AuthUseCases>,
    pub events: Arc<dyn EventUseCases>,
    /// Told how every call ends (`NoMetrics` when metrics are off).
    pub metrics: Arc<dyn vmr_ports::MetricsRecorder>,
}

/// The tonic service over a `Core`.
#[derive(Clone)]
pub struct VmServiceImpl {
    core: Core,
    /// Disks passed as open files over the descriptor side channel.
    disks: Arc<PassedDisks>,
}

impl VmServiceImpl {
    pub fn new(core: Core) -> Self {
        Self::with_passed_disks(core, Arc::default())
    }

    /// A service that also accepts disks passed to the side channel serving
    /// `disks`.
    pub fn with_passed_disks(core: Core, disks: Arc<PassedDisks>) -> Self {
        Self { core, disks }
    }
}

/// The import's disk: the passed file its token names, else the chunks that
/// follow the header.
fn import_source(
    disks: &PassedDisks,
    caller_uid: Option<u32>,
    token: &str,
    mut request: ImportRequest,
    chunks: UploadStream,
) -> Result<(ImportRequest, DiskSource), Status> {
    if token.is_empty() {
        return Ok((request, DiskSource::Stream(chunks)));
    }
    let disk = disks
        .take(token, caller_uid, Instant::now())
        .map_err(to_status)?;
    if request.disk_size != 0 && request.disk_size != disk.size {
        return Err(to_status(UseCaseError::invalid(
            "disk_size",
            format!(
                "{} bytes announced, but the passed file has {}",
                request.disk_size, disk.size
            ),
        )));
    }
    request.disk_size = disk.size;
    // Chunks after a token are not read: the passed file is the disk.
    drop(chunks);
    let PassedDisk { file, size } = disk;
    Ok((request, DiskSource::File { file, size }))
}

/// Splits an import stream into its header and an upload stream of chunks.
async fn split_import(
    mut stream: Streaming<pb::ImportImageRequest>,
) -> Result<(ImportRequest, String, UploadStream), Status> {
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
    let token = header.disk_token;
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
                    format!(
                        "chunk: {} bytes is more than the {MAX_CHUNK} allowed",
                        chunk.len()
                    ),
                ))
            } else {
                Ok(chunk)
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
    Ok((request, token, chunks.boxed()))
}

fn system_check_response(check: StoreCheck) -> pb::SystemCheckResponse {
    let problems = check
        .problems
        .into_iter()
        .map(|problem| pb::StoreProblem {
            kind: match problem.kind {
                StoreProblemKind::CorruptBlob => pb::StoreProblemKind::CorruptBlob,
                StoreProblemKind::DanglingManifestBlob => {
                    pb::StoreProblemKind::DanglingManifestBlob
                }
                StoreProblemKind::UnparsableManifest => pb::StoreProblemKind::UnparsableManifest,
                StoreProblemKind::LeftoverTemporary => pb::StoreProblemKind::LeftoverTemporary,
                StoreProblemKind::ExpiredLease => pb::StoreProblemKind::ExpiredLease,
            } as i32,
            subject: problem.subject,
            message: problem.message,
        })
        .collect();
    pb::SystemCheckResponse {
        problems,
        blobs_checked: check.blobs_checked,
        manifests_checked: check.manifests_checked,
    }
}

#[tonic::async_trait]
impl VmService for VmServiceImpl {
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        auth::login(&self.core, request).await
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        auth::logout(&self.core, request).await
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        auth::register(&self.core, request).await
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
        request: Request<pb::CreateContextRequest>,
    ) -> Result<Response<pb::ContextInfo>, Status> {
        contexts::create_context(&self.core, request).await
    }

    async fn list_contexts(
        &self,
        request: Request<pb::ListContextsRequest>,
    ) -> Result<Response<pb::ListContextsResponse>, Status> {
        contexts::list_contexts(&self.core, request).await
    }

    async fn use_context(
        &self,
        request: Request<pb::UseContextRequest>,
    ) -> Result<Response<pb::ContextInfo>, Status> {
        contexts::use_context(&self.core, request).await
    }

    async fn remove_context(
        &self,
        request: Request<pb::RemoveContextRequest>,
    ) -> Result<Response<pb::RemoveContextResponse>, Status> {
        contexts::remove_context(&self.core, request).await
    }

    async fn inspect_context(
        &self,
        request: Request<pb::InspectContextRequest>,
    ) -> Result<Response<pb::ContextInfo>, Status> {
        contexts::inspect_context(&self.core, request).await
    }

    async fn import_image(
        &self,
        request: Request<Streaming<pb::ImportImageRequest>>,
    ) -> Result<Response<pb::ImportImageResponse>, Status> {
        let caller_uid = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .map(|cred| cred.uid());
        let (header, token, chunks) = split_import(request.into_inner()).await?;
        let (header, chunks) = import_source(&self.disks, caller_uid, &token, header, chunks)?;
        let outcome = self
            .core
            .images
            .import(header, chunks)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ImportImageResponse {
            image: Some(convert::image_summary(outcome.image)),
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
            images: images.into_iter().map(convert::image_summary).collect(),
        }))
    }

    async fn inspect_image(
        &self,
        request: Request<pb::InspectImageRequest>,
    ) -> Result<Response<pb::InspectImageResponse>, Status> {
        let reference = convert::reference("reference", &request.into_inner().reference)?;
        let details = self
            .core
            .images
            .inspect(&reference)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::image_details(&details)))
    }

    async fn tag_image(
        &self,
        request: Request<pb::TagImageRequest>,
    ) -> Result<Response<pb::TagImageResponse>, Status> {
        let request = request.into_inner();
        let source = convert::reference("source", &request.source)?;
        let target = convert::reference("target", &request.target)?;
        let digest = self
            .core
            .images
            .tag(&source, &target)
            .await
            .map_err(to_status)?;
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
        request: Request<pb::PushImageRequest>,
    ) -> Result<Response<Self::PushImageStream>, Status> {
        transfer::push_image(&self.core, request).await
    }

    type PullImageStream = ServerStream<pb::TransferProgress>;

    async fn pull_image(
        &self,
        request: Request<pb::PullImageRequest>,
    ) -> Result<Response<Self::PullImageStream>, Status> {
        transfer::pull_image(&self.core, request).await
    }

    async fn system_check(
        &self,
        _: Request<pb::SystemCheckRequest>,
    ) -> Result<Response<pb::SystemCheckResponse>, Status> {
        let check = self.core.images.check().await.map_err(to_status)?;
        Ok(Response::new(system_check_response(check)))
    }

    async fn create_vm(
        &self,
        request: Request<pb::CreateVmRequest>,
    ) -> Result<Response<pb::VmInfo>, Status> {
        vms::create_vm(&self.core, request).await
    }

    async fn start_vm(
        &self,
        request: Request<pb::StartVmRequest>,
    ) -> Result<Response<pb::VmInfo>, Status> {
        vms::start_vm(&self.core, request).await
    }

    async fn stop_vm(
        &self,
        request: Request<pb::StopVmRequest>,
    ) -> Result<Response<pb::VmInfo>, Status> {
        vms::stop_vm(&self.core, request).await
    }

    async fn restart_vm(
        &self,
        request: Request<pb::RestartVmRequest>,
    ) -> Result<Response<pb::VmInfo>, Status> {
        vms::restart_vm(&self.core, request).await
    }

    async fn remove_vm(
        &self,
        request: Request<pb::RemoveVmRequest>,
    ) -> Result<Response<pb::RemoveVmResponse>, Status> {
        vms::remove_vm(&self.core, request).await
    }

    async fn list_v_ms(
        &self,
        request: Request<pb::ListVMsRequest>,
    ) -> Result<Response<pb::ListVMsResponse>, Status> {
        vms::list_v_ms(&self.core, request).await
    }

    async fn inspect_vm(
        &self,
        request: Request<pb::InspectVmRequest>,
    ) -> Result<Response<pb::InspectVmResponse>, Status> {
        vms::inspect_vm(&self.core, request).await
    }

    type ExecVMStream = ServerStream<pb::ExecVmResponse>;

    async fn exec_vm(
        &self,
        request: Request<Streaming<pb::ExecVmRequest>>,
    ) -> Result<Response<Self::ExecVMStream>, Status> {
        guest::exec_vm(&self.core, request).await
    }

    type VMLogsStream = ServerStream<pb::VmLogsChunk>;

    async fn vm_logs(
        &self,
        request: Request<pb::VmLogsRequest>,
    ) -> Result<Response<Self::VMLogsStream>, Status> {
        guest::vm_logs(&self.core, request).await
    }

    type VMConsoleStream = ServerStream<pb::VmConsoleResponse>;

    async fn vm_console(
        &self,
        request: Request<Streaming<pb::VmConsoleRequest>>,
    ) -> Result<Response<Self::VMConsoleStream>, Status> {
        guest::vm_console(&self.core, request).await
    }

    async fn create_network(
        &self,
        request: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::NetworkInfo>, Status> {
        networks::create_network(&self.core, request).await
    }

    async fn start_network(
        &self,
        request: Request<pb::StartNetworkRequest>,
    ) -> Result<Response<pb::NetworkInfo>, Status> {
        networks::start_network(&self.core, request).await
    }

    async fn stop_network(
        &self,
        request: Request<pb::StopNetworkRequest>,
    ) -> Result<Response<pb::NetworkInfo>, Status> {
        networks::stop_network(&self.core, request).await
    }

    async fn remove_network(
        &self,
        request: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
        networks::remove_network(&self.core, request).await
    }

    async fn list_networks(
        &self,
        request: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        networks::list_networks(&self.core, request).await
    }

    async fn inspect_network(
        &self,
        request: Request<pb::InspectNetworkRequest>,
    ) -> Result<Response<pb::NetworkInfo>, Status> {
        networks::inspect_network(&self.core, request).await
    }

    type ComposeUpStream = ServerStream<pb::ComposeEvent>;

    async fn compose_up(
        &self,
        request: Request<pb::ComposeUpRequest>,
    ) -> Result<Response<Self::ComposeUpStream>, Status> {
        compose::compose_up(&self.core, request).await
    }

    async fn compose_down(
        &self,
        request: Request<pb::ComposeDownRequest>,
    ) -> Result<Response<pb::ComposeDownResponse>, Status> {
        compose::compose_down(&self.core, request).await
    }

    async fn compose_ps(
        &self,
        request: Request<pb::ComposePsRequest>,
    ) -> Result<Response<pb::ComposePsResponse>, Status> {
        compose::compose_ps(&self.core, request).await
    }

    async fn compose_config(
        &self,
        request: Request<pb::ComposeConfigRequest>,
    ) -> Result<Response<pb::ComposeConfigResponse>, Status> {
        compose::compose_config(&self.core, request).await
    }

    type WatchEventsStream = ServerStream<pb::Event>;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        events::watch_events(&self.core, request)
    }
}
