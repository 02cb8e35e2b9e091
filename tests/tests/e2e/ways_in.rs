//! `vmr exec`, `vmr logs`, `vmr console` and compose's `logs`/`exec` end to
//! end on the fake hypervisor's scripted guest: the real `vmr` against a
//! real `vmrd`, the console driven through a real pty.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vmr_proto::v1 as pb;
use vmr_tests::Daemon;
use vmr_tests::fixtures::{qcow2, vmfile};

const DEADLINE: Duration = Duration::from_secs(30);

fn image(daemon: &Daemon) {
    let work = tempfile::tempdir().unwrap();
    qcow2(work.path(), "tiny.qcow2", "16M");
    let file = vmfile(work.path(), "tests/tiny", "tiny.qcow2", "qcow2");
    daemon
        .vmr(&["import", "-f", file.to_str().unwrap(), "-t", "1"])
        .ok();
}

pub(crate) fn vmr(daemon: &Daemon, args: &[&str]) -> Command {
    daemon.vmr_command(args)
}

/// `vmr ARGS` with `input` on its standard input.
pub(crate) fn vmr_with_stdin(daemon: &Daemon, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = vmr(daemon, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Reads `from` on a thread; the chunks arrive on the returned channel.
pub(crate) fn reader(mut from: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects from `rx` until the text holds `needle` (within the deadline).
#[track_caller]
pub(crate) fn read_until(rx: &mpsc::Receiver<Vec<u8>>, seen: &mut String, needle: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Err(_) => panic!("no `{needle}` within {DEADLINE:?}; got:\n{seen}"),
        }
    }
}

/// `vmr console VM` on a fresh pty, attached: the session, the pty's
/// master (what the user types into), and what the screen showed so far.
pub(crate) struct Console {
    pub child: Child,
    pub keyboard: std::fs::File,
    pub screen: mpsc::Receiver<Vec<u8>>,
    pub shown: String,
}

impl Console {
    #[track_caller]
    pub(crate) fn attach(daemon: &Daemon, vm: &str) -> Self {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        let child = vmr(daemon, &["console", vm])
            .stdin(slave(&pty.slave))
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave))
            .spawn()
            .unwrap();
        drop(pty.slave);
        let keyboard = std::fs::File::from(pty.master);
        let screen = reader(keyboard.try_clone().unwrap());
        let mut console = Self {
            child,
            keyboard,
            screen,
            shown: String::new(),
        };
        console.shows("detach with Ctrl-]");
        console
    }

    #[track_caller]
    pub(crate) fn shows(&mut self, needle: &str) {
        read_until(&self.screen, &mut self.shown, needle);
    }

    pub(crate) fn types(&mut self, keys: &[u8]) {
        self.keyboard.write_all(keys).unwrap();
    }

    /// Ctrl-], then the session must end with success.
    #[track_caller]
    pub(crate) fn detach(mut self) {
        self.types(&[0x1d]);
        let status = wait_exit(&mut self.child);
        assert!(status.success(), "{status}\n{}", self.shown);
    }
}

#[track_caller]
pub(crate) fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "vmr did not exit within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fake_exec_codes_stdin_stderr_and_refusals() {
    let daemon = Daemon::start();
    image(&daemon);
    daemon
        .vmr(&["run", "tests/tiny:1", "--name", "w1", "--network", "none"])
        .ok();

    // Output and exit code, with no network at all.
    assert_eq!(
        daemon
            .vmr(&["exec", "w1", "--", "cat", "/etc/hostname"])
            .ok(),
        "w1\n"
    );
    let out = daemon.vmr(&["exec", "w1", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.0.status.code(), Some(7), "{}", out.stderr());
    assert_eq!(out.stderr(), "", "a command's own exit is no vmr error");

    // stdout and stderr stay apart.
    let out = daemon.vmr(&[
        "exec",
        "w1",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.0.status.code(), Some(3));
    assert_eq!(out.stdout(), "out\n");
    assert_eq!(out.stderr(), "err\n");
    let out = daemon.vmr(&["exec", "w1", "--", "uname", "-a"]);
    assert_eq!(out.0.status.code(), Some(127));
    assert_eq!(out.stderr(), "sh: uname: not found\n");

    // -i passes standard input; without it the command reads none.
    let out = vmr_with_stdin(
        &daemon,
        &["exec", "-i", "w1", "--", "cat"],
        b"typed\nlines\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"typed\nlines\n");
    let out = vmr_with_stdin(&daemon, &["exec", "w1", "--", "cat"], b"ignored\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"");

    // Refusals: a clear sentence, exit code 1.
    let err = daemon.vmr(&["exec", "w1"]).err();
    assert!(err.contains("command") && err.contains("empty"), "{err}");
    let err = daemon.vmr(&["exec", "nope", "--", "true"]).err();
    assert!(err.contains("nope"), "{err}");
    daemon.vmr(&["stop", "--force", "w1"]).ok();
    let out = daemon.vmr(&["exec", "w1", "--", "true"]);
    assert_eq!(out.0.status.code(), Some(1));
    assert!(
        out.stderr().contains("w1") && out.stderr().contains("running"),
        "{}",
        out.stderr()
    );

    // The codes a program sees.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = daemon.client().await;
        let exec = |name: &str, command: &[&str]| {
            let start = pb::ExecVmRequest {
                part: Some(pb::exec_vm_request::Part::Start(pb::ExecVmStart {
                    name: name.to_owned(),
                    command: command.iter().map(ToString::to_string).collect(),
                    stdin: false,
                })),
            };
            tokio_stream::iter([start])
        };
        let code = |r: Result<_, tonic::Status>| r.map(|_| ()).unwrap_err().code();
        assert_eq!(
            code(client.exec_vm(exec("w1", &["true"])).await),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(client.exec_vm(exec("nope", &["true"])).await),
            tonic::Code::NotFound
        );
        assert_eq!(
            code(client.exec_vm(exec("w1", &[])).await),
            tonic::Code::InvalidArgument
        );
    });
}

#[test]
fn fake_logs_tail_follow_and_console_detach() {
    let daemon = Daemon::start();
    image(&daemon);
    daemon.vmr(&["run", "tests/tiny:1", "--name", "w2"]).ok();

    // The boot line, then what a command writes to the serial console.
    let log = daemon.vmr(&["logs", "w2"]).ok();
    assert!(log.contains("vmr fake guest w2: booted"), "{log}");
    daemon
        .vmr(&["exec", "w2", "--", "sh", "-c", "echo MARK1 > /dev/ttyS0"])
        .ok();
    let log = daemon.vmr(&["logs", "w2"]).ok();
    assert!(log.contains("booted") && log.ends_with("MARK1\n"), "{log}");
    assert_eq!(daemon.vmr(&["logs", "--tail", "1", "w2"]).ok(), "MARK1\n");

    // -f: what the guest prints after the call began.
    let mut follow = vmr(&daemon, &["logs", "-f", "w2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = reader(follow.stdout.take().unwrap());
    let mut seen = String::new();
    read_until(&rx, &mut seen, "MARK1");
    daemon
        .vmr(&["exec", "w2", "--", "sh", "-c", "echo MARK2 > /dev/ttyS0"])
        .ok();
    read_until(&rx, &mut seen, "MARK2\n");

    // The console: through a pty, input reaches the guest (its echo, and
    // its log), and Ctrl-] detaches with success.
    let mut console = Console::attach(&daemon, "w2");
    console.types(b"typed-in-console\r");
    console.shows("typed-in-console");
    read_until(&rx, &mut seen, "typed-in-console\n");
    console.detach();

    // Removing the VM ends the follow.
    daemon.vmr(&["rm", "--force", "w2"]).ok();
    let status = wait_exit(&mut follow);
    assert!(status.success(), "{status}");

    // Refusals.
    let err = daemon.vmr(&["logs", "w2"]).err();
    assert!(err.contains("w2"), "{err}");
    let err = daemon.vmr(&["console", "w2"]).err();
    assert!(err.contains("w2"), "{err}");
}

const PROJECT: &str = "apiVersion: v1
name: wi
services:
  db: {image: tests/tiny:1}
  web: {image: tests/tiny:1}
";

#[test]
fn fake_compose_exec_and_logs() {
    let daemon = Daemon::start();
    image(&daemon);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vmcompose.yaml");
    std::fs::write(&file, PROJECT).unwrap();
    let compose = |args: &[&str]| {
        let mut all = vec!["compose", "-f", file.to_str().unwrap()];
        all.extend_from_slice(args);
        daemon.vmr(&all)
    };
    compose(&["up"]).ok();

    assert_eq!(compose(&["exec", "db", "--", "hostname"]).ok(), "wi-db\n");
    let out = compose(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "echo hi > /dev/ttyS0; exit 4",
    ]);
    assert_eq!(out.0.status.code(), Some(4));

    let all = compose(&["logs"]).ok();
    assert!(all.contains("db  | vmr fake guest wi-db: booted"), "{all}");
    assert!(all.contains("web | vmr fake guest wi-web: booted"), "{all}");
    assert!(all.contains("web | hi\n"), "{all}");
    let web = compose(&["logs", "--tail", "1", "web"]).ok();
    assert_eq!(web, "web | hi\n");

    let err = compose(&["exec", "cache", "--", "true"]).err();
    assert!(
        err.contains("no service named cache") && err.contains("db, web"),
        "{err}"
    );
    compose(&["down"]).ok();
    let err = compose(&["logs", "db"]).err();
    assert!(
        err.contains("service db") && err.contains("compose up"),
        "{err}"
    );
}
