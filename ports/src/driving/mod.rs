//! Driving ports: the use cases vmr offers, in domain types. The gRPC adapter
//! depends only on these traits, so a library user can embed the core
//! without gRPC (see `app/examples/`).

pub mod auth;
pub mod compose;
pub mod contexts;
pub mod error;
pub mod events;
pub mod guest;
pub mod health;
pub mod images;
pub mod metrics;
pub mod networks;
pub mod transfer;
pub mod vms;

pub use auth::{AuthUseCases, LoginOutcome};
pub use compose::{
    ComposeConfig, ComposeDownOutcome, ComposeEvent, ComposeEventKind, ComposeEventStream,
    ComposeServiceStatus, ComposeSource, ComposeStatus, ComposeUseCases,
};
pub use contexts::{Context, ContextUseCases, ContextView};
pub use error::{ErrorKind, UseCaseError};
pub use guest::{ExecOutputStream, GuestUseCases, LogStream, LogsRequest};
pub use health::{ComponentHealth, HealthReport, HealthUseCases, ServingStatus};
pub use images::{
    DiskSource, ImageDetails, ImageInfo, ImageUseCases, ImportOutcome, ImportRequest, PruneOutcome,
    RemoveOutcome, StoreCheck, StoreProblem, StoreProblemKind, UploadStream,
};
pub use metrics::{MetricsSnapshot, MetricsSnapshotUseCases};
pub use networks::NetworkUseCases;
pub use transfer::{
    BlobProgress, TransferDone, TransferEvent, TransferEventStream, TransferRequest,
    TransferUseCases,
};
pub use vms::{CreateVm, NicRequest, StaticAddress, StopVm, VmFilter, VmUseCases};
