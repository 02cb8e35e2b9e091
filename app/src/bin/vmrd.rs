//! vmrd: the vmr daemon.

use std::process::ExitCode;

use vmr_app::config::{ConfigOrUsage, DaemonConfig};

fn main() -> ExitCode {
    let config = match DaemonConfig::from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(ConfigOrUsage::Usage(e)) => e.exit(),
        Err(ConfigOrUsage::Config(e)) => {
            eprintln!("vmrd: {e}");
            return ExitCode::from(2);
        }
    };
    vmr_app::daemon::init_logging(&config);
    // TLS for S3 and registries goes through rustls with ring (no aws-lc
    // build); installing twice is harmless, so the result is ignored.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vmrd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vmr_app::daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmrd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
