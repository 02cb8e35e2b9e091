//! `vmr console NAME`: the VM's interactive serial console. The terminal is
//! put in raw mode (every key goes to the guest, Ctrl-C included) and
//! restored however the session ends; `Ctrl-]` detaches, as in virsh. The
//! session also ends when the VM stops (the daemon ends the output) or
//! standard input ends.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use vmr_proto::v1 as pb;

use super::Session;
use super::connect::{Reply, RpcError};

/// The key that detaches: Ctrl-] (ASCII GS), as virsh and telnet use.
pub const DETACH: u8 = 0x1d;
/// Keystroke messages buffered toward the daemon.
const INPUT_BUFFER: usize = 64;

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The VM
    pub name: String,
}

/// The terminal's settings before raw mode, put back when dropped.
struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    /// Raw mode on standard input, when it is a terminal.
    fn enter() -> anyhow::Result<Option<Self>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = termios::tcgetattr(stdin.as_fd())
            .map_err(|e| anyhow::anyhow!("cannot read the terminal's settings: {e}"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(|e| anyhow::anyhow!("cannot put the terminal in raw mode: {e}"))?;
        Ok(Some(Self { saved }))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// What the user typed, up to the detach key: `(input, detached)`.
pub fn split_detach(chunk: &[u8]) -> (&[u8], bool) {
    match chunk.iter().position(|b| *b == DETACH) {
        Some(at) => (&chunk[..at], true),
        None => (chunk, false),
    }
}

/// Reads standard input into console messages until the detach key or the
/// input's end; `done` fires then.
fn forward_keys(keys: mpsc::Sender<pb::VmConsoleRequest>, done: oneshot::Sender<()>) {
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let (input, detached) = split_detach(&buf[..n]);
            if !input.is_empty() {
                let message = pb::VmConsoleRequest {
                    part: Some(pb::vm_console_request::Part::Input(Bytes::copy_from_slice(
                        input,
                    ))),
                };
                if keys.send(message).await.is_err() {
                    break;
                }
            }
            if detached {
                break;
            }
        }
        // Dropping `keys` ends the request stream: the daemon closes the
        // console.
        let _ = done.send(());
    });
}

pub(super) async fn run(session: &Session, args: ConsoleArgs) -> anyhow::Result<()> {
    let mut client = session.client().await?;
    let (keys, typed) = mpsc::channel(INPUT_BUFFER);
    keys.send(pb::VmConsoleRequest {
        part: Some(pb::vm_console_request::Part::Name(args.name.clone())),
    })
    .await
    .map_err(|_| anyhow::anyhow!("the console request could not be queued"))?;
    let mut output = client
        .vm_console(ReceiverStream::new(typed))
        .await
        .reply()?;
    eprintln!("Connected to VM {} (detach with Ctrl-])\r", args.name);
    let raw = RawTerminal::enter()?;
    let (done, mut detached) = oneshot::channel();
    forward_keys(keys, done);
    let mut stdout = tokio::io::stdout();
    let outcome: anyhow::Result<()> = loop {
        tokio::select! {
            chunk = output.next() => match chunk {
                Some(Ok(chunk)) => {
                    stdout.write_all(&chunk.output).await?;
                    stdout.flush().await?;
                }
                Some(Err(status)) => break Err(RpcError(status).into()),
                None => break Ok(()),
            },
            _ = &mut detached => break Ok(()),
        }
    };
    drop(raw);
    eprintln!();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detach_key_ends_the_input_there() {
        assert_eq!(split_detach(b"ls\r"), (&b"ls\r"[..], false));
        assert_eq!(split_detach(b"ab\x1dcd"), (&b"ab"[..], true));
        assert_eq!(split_detach(b"\x1d"), (&b""[..], true));
    }
}
