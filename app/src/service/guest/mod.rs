//! The ways into a VM without a network: `exec` through the guest agent,
//! `logs` from the serial console's log file, `console` over the serial
//! console. Each checks its input and the VM first (an empty command, too
//! much input, an unknown VM) and then hands over to the guest ports; the
//! streams toward clients are bounded where they are made (the backends'
//! channels, and the log reader's one chunk at a time).

mod logs;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use vmr_domain::vm::VmName;
use vmr_ports::driving::{ExecOutputStream, GuestUseCases, LogStream, LogsRequest, UseCaseError};
use vmr_ports::{ConsoleStream, ExecRequest, GuestAgent, MAX_EXEC_STDIN, SerialConsole, VmDriver};

use super::vms::RuntimeDirs;

/// The guest use cases.
pub struct GuestService {
    hypervisor: Arc<dyn VmDriver>,
    agent: Arc<dyn GuestAgent>,
    console: Arc<dyn SerialConsole>,
    runtime: RuntimeDirs,
}

impl GuestService {
    pub fn new(
        hypervisor: Arc<dyn VmDriver>,
        agent: Arc<dyn GuestAgent>,
        console: Arc<dyn SerialConsole>,
        runtime: RuntimeDirs,
    ) -> Self {
        Self {
            hypervisor,
            agent,
            console,
            runtime,
        }
    }
}

/// Checks a command before anything reaches the guest.
fn exec_request(argv: Vec<String>, stdin: Option<Bytes>) -> Result<ExecRequest, UseCaseError> {
    match argv.first() {
        None => {
            return Err(UseCaseError::invalid(
                "command",
                "is empty; give the program to run after `--`, e.g. `vmr exec web -- hostname`",
            ));
        }
        Some(program) if program.trim().is_empty() => {
            return Err(UseCaseError::invalid(
                "command",
                "names no program (its first word is blank)",
            ));
        }
        Some(_) => {}
    }
    if let Some((index, _)) = argv.iter().enumerate().find(|(_, a)| a.contains('\0')) {
        return Err(UseCaseError::invalid(
            format!("command[{index}]"),
            "contains a NUL byte, which no program argument can hold",
        ));
    }
    if let Some(stdin) = &stdin
        && stdin.len() > MAX_EXEC_STDIN
    {
        return Err(UseCaseError::invalid(
            "stdin",
            format!(
                "is {} bytes; the guest agent takes at most {MAX_EXEC_STDIN} (copy larger files with `vmr ssh`)",
                stdin.len()
            ),
        ));
    }
    Ok(ExecRequest { argv, stdin })
}

#[async_trait]
impl GuestUseCases for GuestService {
    async fn exec(
        &self,
        name: &VmName,
        argv: Vec<String>,
        stdin: Option<Bytes>,
    ) -> Result<ExecOutputStream, UseCaseError> {
        let request = exec_request(argv, stdin)?;
        tracing::info!(vm = %name, program = %request.argv[0], "exec");
        let output = self.agent.exec(name, request).await?;
        Ok(output.map(|item| item.map_err(UseCaseError::from)).boxed())
    }

    async fn logs(&self, name: &VmName, request: LogsRequest) -> Result<LogStream, UseCaseError> {
        let record = self.hypervisor.inspect_vm(name).await?.record;
        let path = record
            .console_log
            .unwrap_or_else(|| self.runtime.console_log(name));
        logs::stream(path, request, Arc::clone(&self.hypervisor), name.clone()).await
    }

    async fn console(
        &self,
        name: &VmName,
        input: ConsoleStream,
    ) -> Result<ConsoleStream, UseCaseError> {
        tracing::info!(vm = %name, "console attached");
        Ok(self.console.open_console(name, input).await?)
    }
}

#[cfg(test)]
mod tests;
