//! `vmr exec NAME [-i] -- CMD...` (a command through the guest agent, its
//! stdout and stderr apart, its exit code as vmr's) and `vmr logs NAME [-f]
//! [--tail N]` (the serial console's log). Both work without a network.

use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vmr_proto::v1 as pb;

use super::Session;
use super::connect::{Reply, RpcError};

/// Input read per message of `vmr exec -i`.
const STDIN_CHUNK: usize = 64 * 1024;
/// Input messages buffered toward the daemon.
const STDIN_BUFFER: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ExecArgs {
    /// Pass standard input to the command (read to its end, up to 8 MiB, before it starts)
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// The VM (with `compose exec`: the service)
    pub name: String,
    /// The program and its arguments, after `--`
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing what the guest writes next (until Ctrl-C or the VM is removed)
    #[arg(short = 'f', long = "follow")]
    pub follow: bool,
    /// Only the last N lines so far
    #[arg(short = 'n', long = "tail", value_name = "N")]
    pub tail: Option<u64>,
    /// The VM
    pub name: String,
}

/// The exit status of a command run in a guest, passed on as vmr's own:
/// not an error to print (the command printed its own).
#[derive(Debug, thiserror::Error)]
#[error("the command exited with {0}")]
pub struct CommandExit(pub u8);

/// A guest's exit code as a process exit status: 0-255 as it is, anything
/// else (no shell gives it) as a plain failure.
fn exit_status(code: i32) -> Result<(), CommandExit> {
    match u8::try_from(code) {
        Ok(0) => Ok(()),
        Ok(code) => Err(CommandExit(code)),
        Err(_) => Err(CommandExit(1)),
    }
}

/// Sends standard input, in chunks, after the start message.
fn send_stdin(messages: mpsc::Sender<pb::ExecVmRequest>) {
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        loop {
            let mut buf = vec![0u8; STDIN_CHUNK];
            let n = match stdin.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    eprintln!("vmr: reading standard input: {e}");
                    break;
                }
            };
            buf.truncate(n);
            let message = pb::ExecVmRequest {
                part: Some(pb::exec_vm_request::Part::Stdin(Bytes::from(buf))),
            };
            if messages.send(message).await.is_err() {
                break;
            }
        }
    });
}

/// Runs one command in VM `name` and passes its output and exit code on.
pub async fn exec_in(
    session: &Session,
    name: &str,
    command: Vec<String>,
    interactive: bool,
) -> anyhow::Result<()> {
    let mut client = session.client().await?;
    let (messages, requests) = mpsc::channel(STDIN_BUFFER);
    let start = pb::ExecVmRequest {
        part: Some(pb::exec_vm_request::Part::Start(pb::ExecVmStart {
            name: name.to_owned(),
            command,
            stdin: interactive,
        })),
    };
    messages
        .send(start)
        .await
        .map_err(|_| anyhow::anyhow!("the exec request could not be queued"))?;
    if interactive {
        send_stdin(messages);
    } else {
        drop(messages);
    }
    let mut output = client
        .exec_vm(ReceiverStream::new(requests))
        .await
        .reply()?;
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    while let Some(message) = output.next().await {
        use pb::exec_vm_response::Output;
        match message.map_err(RpcError)?.output {
            Some(Output::Stdout(data)) => {
                stdout.write_all(&data).await?;
                stdout.flush().await?;
            }
            Some(Output::Stderr(data)) => {
                stderr.write_all(&data).await?;
                stderr.flush().await?;
            }
            Some(Output::ExitCode(code)) => return Ok(exit_status(code)?),
            None => {}
        }
    }
    anyhow::bail!(
        "the daemon ended the exec in VM {name} without the command's exit code (did the VM stop?)"
    )
}

pub(super) async fn exec(session: &Session, args: ExecArgs) -> anyhow::Result<()> {
    exec_in(session, &args.name, args.command, args.interactive).await
}

/// Prints VM `name`'s console log as it comes.
pub async fn logs_of(
    session: &Session,
    name: &str,
    follow: bool,
    tail: Option<u64>,
) -> anyhow::Result<()> {
    let mut client = session.client().await?;
    let mut chunks = client
        .vm_logs(pb::VmLogsRequest {
            name: name.to_owned(),
            follow,
            tail,
        })
        .await
        .reply()?;
    let mut stdout = tokio::io::stdout();
    while let Some(chunk) = chunks.next().await {
        stdout.write_all(&chunk.map_err(RpcError)?.data).await?;
        stdout.flush().await?;
    }
    Ok(())
}

pub(super) async fn logs(session: &Session, args: LogsArgs) -> anyhow::Result<()> {
    logs_of(session, &args.name, args.follow, args.tail).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_pass_through() {
        assert!(exit_status(0).is_ok());
        assert_eq!(exit_status(7).unwrap_err().0, 7);
        assert_eq!(exit_status(255).unwrap_err().0, 255);
        assert_eq!(exit_status(-1).unwrap_err().0, 1);
        assert_eq!(exit_status(300).unwrap_err().0, 1);
    }
}
