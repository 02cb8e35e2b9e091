//! The test auth server on the token registry's realm port, as a process of
//! its own: started on demand by `AuthServer::shared_on_realm_port`, shared
//! by every test process, gone after `REALM_IDLE` without a request. Exits
//! at once (successfully) when the port is already taken.

use std::process::ExitCode;

use vmr_tests::authserver::serve_realm_until_idle;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vmr-test-authd: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve_realm_until_idle()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmr-test-authd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
