//! The use cases: each implements a driving port over the driven ports. This
//! is where ordering, rollback on partial failure and progress live.

pub mod auth;
pub mod compose;
pub mod contexts;
pub mod default_network;
pub mod events;
pub mod guest;
pub mod health;
pub mod images;
pub mod metrics;
pub mod networks;
pub mod provision;
pub mod restart;
pub mod store_check;
pub mod transfer;
pub mod vms;

pub use auth::AuthService;
pub use compose::{ComposeService, ComposeSettings};
pub use contexts::ContextService;
pub use default_network::DefaultNetworks;
pub use guest::GuestService;
pub use health::HealthService;
pub use images::{ImageService, ImagesInUse, NoVms};
pub use metrics::MetricsSnapshotService;
pub use networks::NetworkService;
pub use provision::{Provisioner, VmBlueprint, VmMedia};
pub use restart::{RestartSupervisor, RestartTask};
pub use transfer::TransferService;
pub use vms::{RuntimeDirs, VmImages, VmService};
