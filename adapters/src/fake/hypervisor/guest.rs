//! The fake's scripted guest: what `vmr exec`, `vmr logs` and `vmr console`
//! meet in fake mode, so that CI pipelines can test against them without a
//! hypervisor. It knows a few commands (docs/ways-in.md lists them):
//!
//! - `hostname`, `cat /etc/hostname`: the VM's name;
//! - `cat` (or `cat -`): standard input back;
//! - `echo [-n] WORDS...`;
//! - `true`, `false`;
//! - `sh -c SCRIPT`: statements separated by `;`, each one of the above or
//!   `exit N`, with `> /dev/ttyS0` (or `/dev/console`) writing to the serial
//!   console and `>&2` to standard error.
//!
//! Anything else is `sh: NAME: not found` with exit code 127. A start writes
//! a boot line to the console log; the console echoes what is typed and logs
//! each line typed, as a guest's getty would.

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use vmr_domain::vm::{VmName, VmState};
use vmr_ports::{
    ConsoleStream, ExecOutput, ExecRequest, ExecStream, GuestAgent, HypervisorError, SerialConsole,
};

use super::script::lock;
use super::world::invalid_vm_state;
use super::{FakeCall, FakeHypervisor};

/// What a scripted command produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// What the command wrote to the serial console.
    pub console: Vec<u8>,
    pub code: i32,
}

/// Where a statement's standard output goes.
#[derive(Clone, Copy)]
enum Sink {
    Stdout,
    Stderr,
    Console,
}

impl Outcome {
    fn write(&mut self, sink: Sink, bytes: &[u8]) {
        match sink {
            Sink::Stdout => self.stdout.extend_from_slice(bytes),
            Sink::Stderr => self.stderr.extend_from_slice(bytes),
            Sink::Console => self.console.extend_from_slice(bytes),
        }
    }
}

/// Runs `argv` in the scripted guest named `hostname`.
pub(crate) fn run_scripted(argv: &[String], stdin: &[u8], hostname: &str) -> Outcome {
    let mut out = Outcome::default();
    out.code = command(argv, stdin, hostname, Sink::Stdout, &mut out);
    out
}

fn command(argv: &[String], stdin: &[u8], hostname: &str, sink: Sink, out: &mut Outcome) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        return 0;
    };
    match (program.as_str(), args) {
        ("hostname", []) => {
            out.write(sink, format!("{hostname}\n").as_bytes());
            0
        }
        ("cat", []) => {
            out.write(sink, stdin);
            0
        }
        ("cat", [file]) if file == "-" => {
            out.write(sink, stdin);
            0
        }
        ("cat", [file]) if file == "/etc/hostname" => {
            out.write(sink, format!("{hostname}\n").as_bytes());
            0
        }
        ("cat", [file]) => {
            out.write(
                Sink::Stderr,
                format!("cat: {file}: No such file or directory\n").as_bytes(),
            );
            1
        }
        ("echo", args) => {
            let (newline, words) = match args.split_first() {
                Some((flag, rest)) if flag == "-n" => (false, rest),
                _ => (true, args),
            };
            let mut line = words.join(" ");
            if newline {
                line.push('\n');
            }
            out.write(sink, line.as_bytes());
            0
        }
        ("true", _) => 0,
        ("false", _) => 1,
        ("sh", [flag, script]) if flag == "-c" => shell(script, stdin, hostname, out),
        (program, _) => {
            out.write(
                Sink::Stderr,
                format!("sh: {program}: not found\n").as_bytes(),
            );
            127
        }
    }
}

/// `sh -c SCRIPT`: statements separated by `;`, `exit N` ends the script.
fn shell(script: &str, stdin: &[u8], hostname: &str, out: &mut Outcome) -> i32 {
    let mut code = 0;
    for statement in script.split(';') {
        let mut words = split_words(statement);
        let mut sink = Sink::Stdout;
        if let Some(at) = words.iter().position(|w| w.starts_with('>')) {
            let target = match words[at].as_str() {
                ">" => words.get(at + 1).cloned().unwrap_or_default(),
                redirect => redirect[1..].to_owned(),
            };
            sink = match target.as_str() {
                "&2" => Sink::Stderr,
                "/dev/ttyS0" | "/dev/console" => Sink::Console,
                other => {
                    out.write(
                        Sink::Stderr,
                        format!("sh: cannot create {other}: Read-only file system\n").as_bytes(),
                    );
                    return 2;
                }
            };
            words.truncate(at);
        }
        match words.as_slice() {
            [] => {}
            [exit] if exit == "exit" => return code,
            [exit, n] if exit == "exit" => return n.parse::<i32>().map_or(2, |n| n & 0xff),
            _ => code = command(&words, stdin, hostname, sink, out),
        }
    }
    code
}

/// Splits a statement into words, honouring single and double quotes.
fn split_words(statement: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in statement.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_default().push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_default();
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    words
}

/// Appends to a console log; a log that cannot be written (a test's
/// definition naming no real directory) is not the guest's problem.
pub(super) async fn append_console(path: &Path, bytes: &[u8]) {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await;
    let written = match file {
        Ok(mut file) => file.write_all(bytes).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        tracing::debug!(path = %path.display(), error = %e, "fake console log not written");
    }
}

impl FakeHypervisor {
    /// The console log of a running VM.
    fn running_console_log(&self, name: &VmName) -> Result<std::path::PathBuf, HypervisorError> {
        let world = lock(&self.world);
        let vm = world.vm(name)?;
        if vm.state != VmState::Running {
            return Err(invalid_vm_state(name, vm.state, "running"));
        }
        Ok(vm.def.console_log.clone())
    }
}

#[async_trait]
impl GuestAgent for FakeHypervisor {
    async fn exec(
        &self,
        name: &VmName,
        request: ExecRequest,
    ) -> Result<ExecStream, HypervisorError> {
        let log = self
            .script
            .run(FakeCall::Exec, name.as_str(), || {
                self.running_console_log(name)
            })
            .await?;
        let stdin = request.stdin.unwrap_or_default();
        let outcome = run_scripted(&request.argv, &stdin, name.as_str());
        if !outcome.console.is_empty() {
            append_console(&log, &outcome.console).await;
        }
        let mut items = Vec::new();
        if !outcome.stdout.is_empty() {
            items.push(Ok(ExecOutput::Stdout(outcome.stdout.into())));
        }
        if !outcome.stderr.is_empty() {
            items.push(Ok(ExecOutput::Stderr(outcome.stderr.into())));
        }
        items.push(Ok(ExecOutput::Exited(outcome.code)));
        Ok(futures::stream::iter(items).boxed())
    }
}

#[async_trait]
impl SerialConsole for FakeHypervisor {
    async fn open_console(
        &self,
        name: &VmName,
        input: ConsoleStream,
    ) -> Result<ConsoleStream, HypervisorError> {
        let log = self
            .script
            .run(FakeCall::OpenConsole, name.as_str(), || {
                self.running_console_log(name)
            })
            .await?;
        // Echo, as a terminal does, and log each line once it is complete.
        let output = futures::stream::unfold(
            (input, log, Vec::<u8>::new()),
            |(mut input, log, mut pending)| async move {
                let chunk: Bytes = input.next().await?;
                let echoed: Vec<u8> = chunk
                    .iter()
                    .map(|b| if *b == b'\r' { b'\n' } else { *b })
                    .collect();
                pending.extend_from_slice(&echoed);
                if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                    let lines: Vec<u8> = pending.drain(..=end).collect();
                    append_console(&log, &lines).await;
                }
                Some((Bytes::from(echoed), (input, log, pending)))
            },
        );
        Ok(output.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str]) -> Outcome {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        run_scripted(&argv, b"typed\n", "g1")
    }

    #[test]
    fn hostname_and_its_file_name_the_vm() {
        assert_eq!(run(&["hostname"]).stdout, b"g1\n");
        assert_eq!(run(&["cat", "/etc/hostname"]).stdout, b"g1\n");
    }

    #[test]
    fn cat_echoes_stdin_and_misses_other_files() {
        assert_eq!(run(&["cat"]).stdout, b"typed\n");
        let missing = run(&["cat", "/etc/shadow"]);
        assert_eq!(missing.code, 1);
        assert_eq!(
            missing.stderr,
            b"cat: /etc/shadow: No such file or directory\n"
        );
    }

    #[test]
    fn sh_exit_codes_and_statements() {
        assert_eq!(run(&["sh", "-c", "exit 7"]).code, 7);
        assert_eq!(run(&["false"]).code, 1);
        assert_eq!(run(&["true"]).code, 0);
        let both = run(&["sh", "-c", "echo 'a b'; echo err >&2; exit 3"]);
        assert_eq!(both.stdout, b"a b\n");
        assert_eq!(both.stderr, b"err\n");
        assert_eq!(both.code, 3);
    }

    #[test]
    fn console_redirect_goes_to_the_console() {
        let out = run(&["sh", "-c", "echo MARK > /dev/ttyS0"]);
        assert_eq!(out.console, b"MARK\n");
        assert!(out.stdout.is_empty());
        assert_eq!(out.code, 0);
    }

    #[test]
    fn unknown_commands_are_not_found() {
        let out = run(&["uname", "-a"]);
        assert_eq!(out.code, 127);
        assert_eq!(out.stderr, b"sh: uname: not found\n");
    }

    #[test]
    fn echo_without_newline() {
        assert_eq!(run(&["echo", "-n", "x", "y"]).stdout, b"x y");
    }
}
