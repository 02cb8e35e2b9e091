//! The ways into a VM that need no network: run a command through the guest
//! agent (`vmr exec`), read the serial console's log (`vmr logs`), and type
//! into the serial console (`vmr console`).

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use vmr_domain::vm::VmName;

use super::UseCaseError;
use crate::guest::{ConsoleStream, ExecOutput};

/// A command's output as it comes; the last item is `Exited`.
pub type ExecOutputStream = BoxStream<'static, Result<ExecOutput, UseCaseError>>;

/// Console log bytes, whole lines where the guest wrote them.
pub type LogStream = BoxStream<'static, Result<Bytes, UseCaseError>>;

/// What `vmr logs` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogsRequest {
    /// Keep the stream open and send what the guest prints next.
    pub follow: bool,
    /// Only the last N lines written so far; `None`: all of them.
    pub tail: Option<usize>,
}

#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait GuestUseCases: Send + Sync {
    /// Runs `argv` in the running VM `name` (`INVALID_ARGUMENT` if empty),
    /// with `stdin` as its standard input when given.
    async fn exec(
        &self,
        name: &VmName,
        argv: Vec<String>,
        stdin: Option<Bytes>,
    ) -> Result<ExecOutputStream, UseCaseError>;
    /// The VM's serial console log (a stopped VM's too: the log outlives
    /// the run).
    async fn logs(&self, name: &VmName, request: LogsRequest) -> Result<LogStream, UseCaseError>;
    /// Connects `input` to the running VM's serial console; the answer is
    /// what the guest prints.
    async fn console(
        &self,
        name: &VmName,
        input: ConsoleStream,
    ) -> Result<ConsoleStream, UseCaseError>;
}
