//! The ways into a guest: ExecVM (the command and its input in, its output
//! and exit code out), VMLogs (the console log, server-streamed) and
//! VMConsole (keystrokes in, the guest's output out).
//!
//! Every stream toward a client is pulled: tonic reads the next item only
//! when HTTP/2 flow control lets it send, so a client that reads slowly
//! slows the guest's side down instead of filling the daemon's memory. The
//! client's console keystrokes pass through a bounded channel.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vmr_ports::driving::{ErrorKind, LogsRequest, UseCaseError};
use vmr_ports::{ExecOutput, MAX_EXEC_STDIN};
use vmr_proto::v1 as pb;

use super::service::{Core, ServerStream};
use super::status::to_status;
use super::vms::vm_name;

/// Keystrokes buffered toward a console before the client is slowed down.
const CONSOLE_INPUT_BUFFER: usize = 64;

fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    to_status(UseCaseError::invalid(field, reason))
}

/// The exec's input, whole: the agent takes it in one message.
async fn read_stdin(stream: &mut Streaming<pb::ExecVmRequest>) -> Result<Bytes, Status> {
    use pb::exec_vm_request::Part;
    let mut stdin = BytesMut::new();
    while let Some(message) = stream.message().await? {
        match message.part {
            Some(Part::Stdin(chunk)) => {
                if stdin.len() + chunk.len() > MAX_EXEC_STDIN {
                    return Err(to_status(UseCaseError::new(
                        ErrorKind::ResourceExhausted,
                        format!(
                            "stdin: more than the {MAX_EXEC_STDIN} bytes the guest agent takes (copy larger files with `vmr ssh`)"
                        ),
                    )));
                }
                stdin.extend_from_slice(&chunk);
            }
            Some(Part::Start(_)) => {
                return Err(invalid("start", "an exec has one start message, first"));
            }
            None => return Err(invalid("part", "an exec message carries start or stdin")),
        }
    }
    Ok(stdin.freeze())
}

fn exec_message(output: ExecOutput) -> pb::ExecVmResponse {
    use pb::exec_vm_response::Output;
    pb::ExecVmResponse {
        output: Some(match output {
            ExecOutput::Stdout(data) => Output::Stdout(data),
            ExecOutput::Stderr(data) => Output::Stderr(data),
            ExecOutput::Exited(code) => Output::ExitCode(code),
        }),
    }
}

pub async fn exec_vm(
    core: &Core,
    request: Request<Streaming<pb::ExecVmRequest>>,
) -> Result<Response<ServerStream<pb::ExecVmResponse>>, Status> {
    use pb::exec_vm_request::Part;
    let mut stream = request.into_inner();
    let start = match stream.message().await? {
        Some(pb::ExecVmRequest {
            part: Some(Part::Start(start)),
        }) => start,
        _ => {
            return Err(invalid(
                "start",
                "the first message of an exec names the VM and the command",
            ));
        }
    };
    let name = vm_name(&start.name)?;
    let stdin = if start.stdin {
        Some(read_stdin(&mut stream).await?)
    } else {
        None
    };
    let output = core
        .guest
        .exec(&name, start.command, stdin)
        .await
        .map_err(to_status)?;
    Ok(Response::new(
        output
            .map(|item| item.map(exec_message).map_err(to_status))
            .boxed(),
    ))
}

pub async fn vm_logs(
    core: &Core,
    request: Request<pb::VmLogsRequest>,
) -> Result<Response<ServerStream<pb::VmLogsChunk>>, Status> {
    let request = request.into_inner();
    let name = vm_name(&request.name)?;
    let tail = request
        .tail
        .map(|n| usize::try_from(n).map_err(|_| invalid("tail", "is larger than any log")))
        .transpose()?;
    let logs = core
        .guest
        .logs(
            &name,
            LogsRequest {
                follow: request.follow,
                tail,
            },
        )
        .await
        .map_err(to_status)?;
    Ok(Response::new(
        logs.map(|item| item.map(|data| pb::VmLogsChunk { data }).map_err(to_status))
            .boxed(),
    ))
}

pub async fn vm_console(
    core: &Core,
    request: Request<Streaming<pb::VmConsoleRequest>>,
) -> Result<Response<ServerStream<pb::VmConsoleResponse>>, Status> {
    use pb::vm_console_request::Part;
    let mut stream = request.into_inner();
    let name = match stream.message().await? {
        Some(pb::VmConsoleRequest {
            part: Some(Part::Name(name)),
        }) => vm_name(&name)?,
        _ => {
            return Err(invalid(
                "name",
                "the first message of a console session names the VM",
            ));
        }
    };
    let (keys, typed) = mpsc::channel::<Bytes>(CONSOLE_INPUT_BUFFER);
    let vm = name.clone();
    // The client's side: keystrokes until it detaches (ends its stream) or
    // the connection breaks; either closes the console's input.
    tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(pb::VmConsoleRequest {
                    part: Some(Part::Input(input)),
                })) => {
                    if keys.send(input).await.is_err() {
                        break;
                    }
                }
                Ok(Some(_)) => {
                    tracing::debug!(vm = %vm, "console: a message without input ignored");
                }
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(vm = %vm, error = %status.message(), "console: the client went away");
                    break;
                }
            }
        }
    });
    let output = core
        .guest
        .console(&name, ReceiverStream::new(typed).boxed())
        .await
        .map_err(to_status)?;
    Ok(Response::new(
        output
            .map(|output| Ok(pb::VmConsoleResponse { output }))
            .boxed(),
    ))
}
