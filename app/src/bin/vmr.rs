//! `vmr`, the command-line client of vmrd. Everything lives in
//! `vmr_app::cli`; this only provides the runtime and the exit code.

use std::process::ExitCode;

/// Restores the default SIGPIPE action, so `vmr ps | head` ends quietly as
/// other Unix tools do instead of panicking on a closed stdout (Rust ignores
/// SIGPIPE by default).
#[allow(unsafe_code)]
fn default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called first thing in main, before any thread exists; SigDfl
    // installs no Rust handler.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

fn main() -> ExitCode {
    default_sigpipe();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("vmr: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(vmr_app::cli::main());
    // The command is over: a blocking reader still waiting on a closed
    // stream must not hold the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match err.downcast_ref::<vmr_app::cli::CommandExit>() {
            // `vmr exec`: the guest's command printed its own; its code is ours.
            Some(exit) => ExitCode::from(exit.0),
            None => {
                eprintln!("vmr: {}", vmr_app::cli::error_sentence(&err));
                ExitCode::FAILURE
            }
        },
    }
}
