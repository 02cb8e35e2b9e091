//! The guest ports on libvirt: `exec` through QEMU's guest agent
//! (`guest-exec` with captured output, then `guest-exec-status` polled
//! until the process exits) and the serial console through libvirt's
//! console stream (`virDomainOpenConsole`).
//!
//! QEMU's agent hands captured output back only once the process has
//! exited, so a command's stdout and stderr arrive in one piece at its end;
//! the port's stream is ready for agents that send it sooner. Polling backs
//! off from 50 ms to 1 s, so a long command costs one agent call a second.
//!
//! A console runs on a thread of its own (a session lasts as long as the
//! user stays attached) over a non-blocking stream: it moves what arrives in
//! either direction and waits [`CONSOLE_IDLE`] when nothing did. Both
//! directions go through bounded channels.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::stream::Stream;
use vmr_domain::vm::VmState;
use vmr_ports::{ConsoleStream, ExecOutput, ExecRequest, ExecStream, HypervisorError};

use super::agent::{AGENT_TIMEOUT_S, agent_call};
use super::conn::{Connection, map_err, vm};
use super::events::vm_state;
use super::vms::{invalid_state, lookup, parsed};

/// The first and the longest wait between two `guest-exec-status` polls.
const EXEC_POLL_FIRST: Duration = Duration::from_millis(50);
const EXEC_POLL_MAX: Duration = Duration::from_secs(1);
/// How long a console waits when neither side had anything to say.
const CONSOLE_IDLE: Duration = Duration::from_millis(20);
/// Chunks buffered per console direction.
const CONSOLE_BUFFER: usize = 64;

/// The running domain `name`, which must have the agent's channel.
fn running_domain(conn: &Connect, name: &str) -> Result<Domain, HypervisorError> {
    let dom = lookup(conn, name)?;
    let parsed = parsed(&dom, name)?;
    let (state, _) = vm_state(&dom);
    if state != VmState::Running {
        return Err(invalid_state(name, state, "running"));
    }
    if !parsed.guest_agent {
        return Err(HypervisorError::InvalidState {
            kind: "VM",
            name: name.to_owned(),
            state: "defined without a guest agent channel (by an older vmr)".to_owned(),
            wanted: "recreated to run commands through the agent".to_owned(),
        });
    }
    Ok(dom)
}

#[derive(Deserialize)]
struct Started {
    pid: i64,
}

#[derive(Deserialize)]
struct Status {
    exited: bool,
    #[serde(default)]
    exitcode: Option<i32>,
    #[serde(default)]
    signal: Option<i32>,
    #[serde(rename = "out-data", default)]
    out_data: Option<String>,
    #[serde(rename = "err-data", default)]
    err_data: Option<String>,
}

/// What starting a command gave: its pid, or the agent's refusal (a
/// program that does not exist), told as a shell would.
enum Launch {
    Pid(i64),
    Refused(String),
}

fn launch(conn: &Connect, name: &str, request: &ExecRequest) -> Result<Launch, HypervisorError> {
    let dom = running_domain(conn, name)?;
    let (path, args) = request
        .argv
        .split_first()
        .ok_or_else(|| HypervisorError::invalid("command", "is empty"))?;
    let mut arguments = json!({"path": path, "arg": args, "capture-output": true});
    if let Some(stdin) = &request.stdin {
        arguments["input-data"] = json!(BASE64.encode(stdin));
    }
    match agent_call::<Started>(
        &dom,
        name,
        &json!({"execute": "guest-exec", "arguments": arguments}),
        AGENT_TIMEOUT_S,
    ) {
        Ok(started) => Ok(Launch::Pid(started.pid)),
        // The agent reports a program it cannot start as a failed command.
        Err(HypervisorError::Backend(cause))
            if cause.message().contains("Failed to execute child") =>
        {
            Ok(Launch::Refused(cause.message().to_owned()))
        }
        Err(e) => Err(e),
    }
}

fn status(conn: &Connect, name: &str, pid: i64) -> Result<Vec<ExecOutput>, HypervisorError> {
    let dom = lookup(conn, name)?;
    let status: Status = agent_call(
        &dom,
        name,
        &json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}),
        AGENT_TIMEOUT_S,
    )?;
    let decode = |data: Option<String>| -> Result<Option<Bytes>, HypervisorError> {
        data.filter(|d| !d.is_empty())
            .map(|d| {
                BASE64.decode(d).map(Bytes::from).map_err(|e| {
                    HypervisorError::backend(
                        format!("the guest agent of VM {name} sent output that is not base64: {e}"),
                        e,
                    )
                })
            })
            .transpose()
    };
    let mut out = Vec::new();
    if let Some(data) = decode(status.out_data)? {
        out.push(ExecOutput::Stdout(data));
    }
    if let Some(data) = decode(status.err_data)? {
        out.push(ExecOutput::Stderr(data));
    }
    if status.exited {
        let code = match (status.exitcode, status.signal) {
            (_, Some(signal)) => 128 + signal,
            (Some(code), None) => code,
            (None, None) => 0,
        };
        out.push(ExecOutput::Exited(code));
    }
    Ok(out)
}

/// Starts `request` in VM `name` and streams its output.
pub(crate) async fn exec(
    conn: &Arc<Connection>,
    name: &str,
    request: ExecRequest,
) -> Result<ExecStream, HypervisorError> {
    let owned = name.to_owned();
    let launched = conn.run(move |c| launch(c, &owned, &request)).await?;
    let pid = match launched {
        Launch::Pid(pid) => pid,
        Launch::Refused(message) => {
            let items = vec![
                Ok(ExecOutput::Stderr(Bytes::from(format!("{message}\n")))),
                Ok(ExecOutput::Exited(127)),
            ];
            return Ok(futures::stream::iter(items).boxed());
        }
    };
    struct Poll {
        conn: Arc<Connection>,
        name: String,
        pid: i64,
        wait: Duration,
        done: bool,
    }
    let first = Poll {
        conn: Arc::clone(conn),
        name: name.to_owned(),
        pid,
        wait: Duration::ZERO,
        done: false,
    };
    let polls = futures::stream::unfold(first, |mut poll| async move {
        if poll.done {
            return None;
        }
        tokio::time::sleep(poll.wait).await;
        poll.wait = (poll.wait * 2).clamp(EXEC_POLL_FIRST, EXEC_POLL_MAX);
        let (name, pid) = (poll.name.clone(), poll.pid);
        let batch = poll.conn.run(move |c| status(c, &name, pid)).await;
        let items: Vec<Result<ExecOutput, HypervisorError>> = match batch {
            Ok(items) => {
                poll.done = items.iter().any(|i| matches!(i, ExecOutput::Exited(_)));
                items.into_iter().map(Ok).collect()
            }
            Err(e) => {
                poll.done = true;
                vec![Err(e)]
            }
        };
        Some((futures::stream::iter(items), poll))
    });
    Ok(polls.flatten().boxed())
}

/// Connects `input` to VM `name`'s serial console.
pub(crate) async fn open_console(
    conn: &Arc<Connection>,
    name: &str,
    mut input: ConsoleStream,
) -> Result<ConsoleStream, HypervisorError> {
    let (opened_tx, opened_rx) = oneshot::channel();
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(CONSOLE_BUFFER);
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(CONSOLE_BUFFER);
    let conn = Arc::clone(conn);
    let owned = name.to_owned();
    thread::Builder::new()
        .name(format!("vmr-console-{name}"))
        .spawn(move || console_session(&conn, &owned, opened_tx, &out_tx, in_rx))
        .map_err(|e| HypervisorError::backend(format!("cannot start a console thread: {e}"), e))?;
    opened_rx
        .await
        .map_err(|e| HypervisorError::backend("the console thread ended early", e))??;
    tokio::spawn(async move {
        while let Some(chunk) = input.next().await {
            if in_tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    Ok(ReceiverStream::new(out_rx).boxed())
}

fn open_stream(conn: &Connect, name: &str) -> Result<Stream, HypervisorError> {
    let dom = lookup(conn, name)?;
    parsed(&dom, name)?;
    let (state, _) = vm_state(&dom);
    if state != VmState::Running {
        return Err(invalid_state(name, state, "running"));
    }
    let stream =
        Stream::new(conn, virt::sys::VIR_STREAM_NONBLOCK).map_err(|e| map_err(vm(name), &e))?;
    dom.open_console(None, &stream, virt::sys::VIR_DOMAIN_CONSOLE_SAFE)
        .map_err(|e| {
            if e.message().contains("Active console session") {
                HypervisorError::AlreadyExists {
                    kind: "console session of VM",
                    name: name.to_owned(),
                }
            } else {
                map_err(vm(name), &e)
            }
        })?;
    Ok(stream)
}

fn console_session(
    conn: &Connection,
    name: &str,
    opened: oneshot::Sender<Result<(), HypervisorError>>,
    output: &mpsc::Sender<Bytes>,
    mut input: mpsc::Receiver<Bytes>,
) {
    let stream = match conn.get().and_then(|c| open_stream(&c, name)) {
        Ok(stream) => stream,
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    if opened.send(Ok(())).is_err() {
        let _ = stream.abort();
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Option<Bytes> = None;
    loop {
        let mut busy = false;
        match stream.recv(&mut buf) {
            // The console closed: the VM stopped.
            Ok(0) => break,
            Ok(n) if n > 0 => {
                busy = true;
                let chunk = Bytes::copy_from_slice(&buf[..n as usize]);
                if output.blocking_send(chunk).is_err() {
                    break;
                }
            }
            // -2: nothing to read yet.
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(vm = name, error = %e.message(), "console stream ended");
                break;
            }
        }
        if pending.is_none() {
            match input.try_recv() {
                Ok(chunk) => pending = Some(chunk),
                Err(mpsc::error::TryRecvError::Empty) => {}
                // The user detached.
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        if let Some(chunk) = pending.take() {
            match stream.send(&chunk) {
                Ok(n) if n >= 0 => {
                    busy = true;
                    let sent = n as usize;
                    if sent < chunk.len() {
                        pending = Some(chunk.slice(sent..));
                    }
                }
                // -2: the stream is full; try again.
                Ok(_) => pending = Some(chunk),
                Err(e) => {
                    tracing::debug!(vm = name, error = %e.message(), "console stream ended");
                    break;
                }
            }
        }
        if output.is_closed() {
            break;
        }
        if !busy {
            thread::sleep(CONSOLE_IDLE);
        }
    }
    let _ = stream.abort();
}
