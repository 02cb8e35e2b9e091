//! Compose use cases: validate a VMCompose project (`config`), bring it up
//! as a stream of per-service events (`up`), show it (`ps`) and tear it down
//! (`down`). The client sends the compose file and every file it names; the
//! core never reads a client path.

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_trait::async_trait;
use futures::stream::BoxStream;

use super::UseCaseError;
use crate::hypervisor::VmRecord;

/// What the client read: the compose file and the files it names.
#[derive(Debug, Clone, Default)]
pub struct ComposeSource {
    /// The compose file's text.
    pub yaml: String,
    /// Path as written in the compose file -> contents. `down` and `ps` are
    /// sent whatever could be read, and work without any.
    pub files: BTreeMap<String, Vec<u8>>,
    /// `-p`: the project name when the file has no `name`.
    pub project: Option<String>,
    /// The compose file's directory name, the last fallback project name.
    pub directory_name: String,
    /// `up`: OpenSSH public keys merged into every service's user-data (the
    /// user's vmr key, so that `vmr compose ssh` gets in).
    pub ssh_authorized_keys: Vec<String>,
}

/// What happened to a network or a service during `up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComposeEventKind {
    /// A network of the project was defined and started.
    NetworkCreated,
    /// A network was already there (started if it was inactive).
    NetworkExists,
    /// A service's VM is being created (runtime files, definition).
    Creating,
    /// A service's VM is being started.
    Starting,
    /// A service's VM runs.
    Started,
    /// A service's guest reported that cloud-init finished.
    Ready,
    /// A service's VM runs and matches the file: left alone.
    Unchanged,
    /// A service's VM no longer matches the file and is being replaced.
    Recreating,
    /// A service (or, without a service, the project) failed; the message
    /// says why.
    Failed,
    /// The whole project is up.
    Done,
}

/// One event of `up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeEvent {
    pub project: String,
    /// The service's key in the file; `None` for project and network events.
    pub service: Option<String>,
    /// The network's name (namespaced) for network events.
    pub network: Option<String>,
    pub kind: ComposeEventKind,
    /// Details: the VM's name, the reason of a failure.
    pub message: String,
    /// When the event happened (not when it was delivered).
    pub at: SystemTime,
}

/// The events of one `up`. A failure ends the stream with the error that
/// names the service and the cause, after that service's `Failed` event.
pub type ComposeEventStream = BoxStream<'static, Result<ComposeEvent, UseCaseError>>;

/// `config`: the validated, normalised plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeConfig {
    pub project: String,
    /// Networks namespaced, services in dependency levels.
    pub normalized_yaml: String,
}

/// `ps`: one service of the project.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeServiceStatus {
    pub service: String,
    /// The service's VM; `None` when it does not exist.
    pub vm: Option<VmRecord>,
}

/// `ps`: the project's services, in the file's dependency order when the
/// file could be read, then any other VM labelled with the project.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeStatus {
    pub project: String,
    pub services: Vec<ComposeServiceStatus>,
}

/// `down`: what was removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComposeDownOutcome {
    pub project: String,
    pub removed_vms: Vec<String>,
    pub removed_networks: Vec<String>,
}

#[async_trait]
pub trait ComposeUseCases: Send + Sync {
    /// Validates the project and returns its plan; creates nothing.
    async fn config(&self, source: ComposeSource) -> Result<ComposeConfig, UseCaseError>;
    /// Validates everything (file, images, external networks, name clashes)
    /// before the stream starts: an invalid project is an error here and
    /// nothing is created. `FailedPrecondition` while another `up` or `down`
    /// of the same project runs.
    async fn up(&self, source: ComposeSource) -> Result<ComposeEventStream, UseCaseError>;
    /// The project's services and their VMs.
    async fn ps(&self, source: ComposeSource) -> Result<ComposeStatus, UseCaseError>;
    /// Removes the project's VMs (with their runtime files) and the networks
    /// it created; removing nothing is not an error.
    async fn down(&self, source: ComposeSource) -> Result<ComposeDownOutcome, UseCaseError>;
}
