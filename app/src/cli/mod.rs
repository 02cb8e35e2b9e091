//! `vmr`, the command-line client of vmrd. `args` holds the clap
//! definitions, one module per area turns parsed arguments into requests and
//! answers into output, `connect` reaches the daemon over its Unix socket.
//! Everything the daemon needs from the user's files (VMFile, disk, compose
//! file, cloud-init files) is read here and sent as contents: the daemon
//! never reads a client path.

pub mod args;
mod auth;
mod compose;
mod compose_guest;
pub mod connect;
mod console;
mod credentials;
mod events;
mod fdpass;
mod guest;
mod images;
mod import;
pub mod json;
mod networks;
pub mod output;
mod progress;
pub mod ssh;
mod ssh_keys;
mod ssh_reach;
mod system;
mod transfer;
mod vms;

use std::path::PathBuf;

use clap::Parser;

pub use args::Cli;
use args::{Command, ImageCommand, SystemCommand};
pub use compose::{ComposeFileError, ComposeFiles, find_compose_file};
pub use connect::{Client, ConnectError, RpcError, default_socket_path};
pub use credentials::{CredentialStore, CredentialStoreError, StoredCredential};
pub use guest::CommandExit;
use output::OutputFormat;

/// Parses the process's arguments and runs the command. Usage errors print
/// clap's help and exit with 1 here, as every other failure does.
pub async fn main() -> anyhow::Result<()> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Printing to a closed stdout/stderr has nowhere to report to.
            let _ = err.print();
            std::process::exit(if err.use_stderr() { 1 } else { 0 });
        }
    };
    run(cli).await
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let session = Session {
        socket: cli.global.socket.unwrap_or_else(default_socket_path),
        output: cli.global.output,
        context: cli.global.context,
    };
    match cli.command {
        Command::Health => system::health(&session).await,
        Command::Version => system::version(&session).await,
        Command::System(SystemCommand::Check) => system::check(&session).await,
        Command::Import(args) => import::run(&session, args).await,
        Command::Images(args) | Command::Image(ImageCommand::Ls(args)) => {
            images::list(&session, args).await
        }
        Command::Image(ImageCommand::Prune(args)) => images::prune(&session, args).await,
        Command::Image(ImageCommand::Rm(args)) | Command::Rmi(args) => {
            images::remove(&session, args).await
        }
        Command::Image(ImageCommand::Inspect(args)) => {
            images::inspect(&session, args.reference).await
        }
        Command::Tag(args) => images::tag(&session, args).await,
        Command::Push(args) => transfer::push(&session, args).await,
        Command::Pull(args) => transfer::pull(&session, args).await,
        Command::Login(args) => auth::login(&session, args).await,
        Command::Logout => auth::logout(&session).await,
        Command::Register(args) => auth::register(&session, args).await,
        Command::Run(args) => vms::create(&session, args, true).await,
        Command::Create(args) => vms::create(&session, args, false).await,
        Command::Start(args) => vms::start(&session, args).await,
        Command::Restart(args) => vms::restart(&session, args).await,
        Command::Stop(args) => vms::stop(&session, args).await,
        Command::Rm(args) => vms::remove(&session, args).await,
        Command::Ps(args) => vms::list(&session, args).await,
        Command::Inspect(args) => vms::inspect(&session, args).await,
        Command::Network(command) => networks::run(&session, command).await,
        Command::Compose(args) => compose::run(&session, args).await,
        Command::Context(command) => auth::context(&session, command).await,
        Command::Ssh(args) => ssh::run(&session, args).await,
        Command::Exec(args) => guest::exec(&session, args).await,
        Command::Logs(args) => guest::logs(&session, args).await,
        Command::Console(args) => console::run(&session, args).await,
        Command::Events(args) => events::run(&session, args).await,
    }
}

/// What every command needs: where the daemon is, how to print, which
/// registry context the user named.
#[derive(Debug)]
struct Session {
    socket: PathBuf,
    output: OutputFormat,
    context: Option<String>,
}

impl Session {
    async fn client(&self) -> Result<Client, ConnectError> {
        connect::connect(&self.socket).await
    }
}

/// An error as the one line the user reads: the message, then each cause
/// that the message does not already spell out (many error types print
/// their source themselves; repeating it would double the sentence).
pub fn error_sentence(err: &anyhow::Error) -> String {
    let mut sentence = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !sentence.contains(&cause) {
            sentence.push_str(": ");
            sentence.push_str(&cause);
        }
    }
    sentence
}

/// Commands that act on several targets (`stop a b c`) go on after a
/// failure, like docker: each failure is printed as it happens and the
/// command fails at the end. A single target's failure is simply returned.
#[derive(Debug)]
struct Batch {
    total: usize,
    failures: Vec<anyhow::Error>,
}

impl Batch {
    fn new(total: usize) -> Self {
        Self {
            total,
            failures: Vec::new(),
        }
    }

    fn fail(&mut self, err: impl Into<anyhow::Error>) {
        let err = err.into();
        if self.total > 1 {
            eprintln!("vmr: {}", error_sentence(&err));
        }
        self.failures.push(err);
    }

    /// `what` names the targets in the plural: "VMs", "images".
    fn finish(mut self, what: &str) -> anyhow::Result<()> {
        match self.failures.len() {
            0 => Ok(()),
            1 if self.total == 1 => Err(self.failures.remove(0)),
            failed => Err(anyhow::anyhow!("{failed} of {} {what} failed", self.total)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Spelled {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn causes_are_told_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let spelled = anyhow::Error::new(Spelled {
            path: "/x",
            source: io(),
        });
        assert_eq!(error_sentence(&spelled), "cannot read /x: no such file");
        let chained = anyhow::Error::new(io()).context("cannot start");
        assert_eq!(error_sentence(&chained), "cannot start: no such file");
    }

    #[test]
    fn one_failure_of_one_target_is_the_error_itself() {
        let mut batch = Batch::new(1);
        batch.fail(anyhow::anyhow!("no VM named web"));
        let err = batch.finish("VMs").expect_err("failed");
        assert_eq!(err.to_string(), "no VM named web");

        let mut batch = Batch::new(3);
        batch.fail(anyhow::anyhow!("no VM named a"));
        batch.fail(anyhow::anyhow!("no VM named b"));
        let err = batch.finish("VMs").expect_err("failed");
        assert_eq!(err.to_string(), "2 of 3 VMs failed");
        assert!(Batch::new(2).finish("VMs").is_ok());
    }
}
