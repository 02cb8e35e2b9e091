//! The ways into a running guest that need no network: a command run by the
//! guest agent ([`GuestAgent`], QEMU's `guest-exec` on libvirt) and the
//! serial console ([`SerialConsole`], libvirt's console stream). Two small
//! traits of their own, beside the hypervisor's VM port, because a backend
//! may offer one without the other (a guest without an agent still has a
//! console). The console's log file needs no port: it is a file the core
//! names in `VmDefinition::console_log`.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use vmr_domain::vm::VmName;

use crate::hypervisor::HypervisorError;

/// The most standard input an exec carries: the agent takes it in one
/// message (base64 in JSON), so it is bounded.
pub const MAX_EXEC_STDIN: usize = 8 * 1024 * 1024;

/// A command to run in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The program and its arguments; never empty (the use case checks).
    pub argv: Vec<String>,
    /// Standard input, given whole (`vmr exec -i`); `None`: none.
    pub stdin: Option<Bytes>,
}

/// What a running command produced, in order. The last item of a stream
/// that did not fail is `Exited`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Bytes),
    Stderr(Bytes),
    /// The command's exit code; a command killed by signal N reports
    /// 128 + N, as a shell does.
    Exited(i32),
}

/// A command's output as it comes.
pub type ExecStream = BoxStream<'static, Result<ExecOutput, HypervisorError>>;

/// Bytes from or to a serial console.
pub type ConsoleStream = BoxStream<'static, Bytes>;

/// Runs commands in a guest through its agent.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait GuestAgent: Send + Sync {
    /// Starts `request` in the running VM `name`. `NotFound` for an unknown
    /// VM, `InvalidState` for one that is not running, `Unavailable` or
    /// `Timeout` (within a bounded time) when its agent does not answer.
    async fn exec(
        &self,
        name: &VmName,
        request: ExecRequest,
    ) -> Result<ExecStream, HypervisorError>;
}

/// The interactive serial console of a guest.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait SerialConsole: Send + Sync {
    /// Connects to the running VM's console: `input` is typed into it and
    /// the returned stream is what the guest prints. The console closes when
    /// `input` ends (the user detached) or the VM stops (the output ends).
    /// Errors as for [`GuestAgent::exec`]; `AlreadyExists` when another
    /// client holds the console.
    async fn open_console(
        &self,
        name: &VmName,
        input: ConsoleStream,
    ) -> Result<ConsoleStream, HypervisorError>;
}
