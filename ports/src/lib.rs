//! The ports of vmr's hexagon. Driven ports are what the core needs from the
//! world (a hypervisor, a blob store, a registry, an auth server); driving
//! ports are the use cases the world calls (the gRPC adapter, or a library
//! user embedding the core). All are object safe and used as `Arc<dyn _>`.

#![forbid(unsafe_code)]

pub mod auth;
pub mod blobstore;
pub mod disks;
pub mod driving;
pub mod guest;
pub mod hypervisor;
pub mod leases;
pub mod metrics;
pub mod registry;
pub mod seed;

pub use auth::{
    AuthClient, AuthConnector, AuthError, AuthTarget, Credential, LoginToken, RegistryToken,
};
pub use blobstore::{
    BlobStore, BlobWriter, Blobs, ByteStream, Manifests, PlacedWriter, StoreCache, StoreError,
    StoreParts, StoreUpkeep,
};
pub use disks::OverlayDisks;
pub use guest::{
    ConsoleStream, ExecOutput, ExecRequest, ExecStream, GuestAgent, MAX_EXEC_STDIN, SerialConsole,
};
pub use hypervisor::{
    DiskAttachment, Hypervisor, HypervisorError, HypervisorInfo, LifecycleEvent, LifecycleEvents,
    LifecycleKind, NetworkDefinition, NetworkDetails, NetworkDriver, NetworkRecord, StopMode,
    StopReason, VmDefinition, VmDetails, VmDriver, VmInterface, VmRecord,
};
pub use leases::{
    CollectionView, ExpiredKind, ExpiredLease, HostRecord, NoSharedLeases, SharedLeases,
};
pub use metrics::{ByteFlow, MetricsRecorder, NoMetrics};
pub use registry::{
    BlobDownload, BlobSource, ManifestReference, RegistryByteStream, RegistryClient,
    RegistryConnector, RegistryError, RegistryTarget, RemoteManifest, UploadProgress,
};
pub use seed::{SeedError, SeedMedia};
