//! `vmr`, the command-line client of vmrd. Everything lives in
//! `vmr_app::cli`; this only provides the runtime and the exit code.

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
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
        Err(err) => {
            eprintln!("vmr: {}", vmr_app::cli::error_sentence(&err));
            ExitCode::FAILURE
        }
    }
}
