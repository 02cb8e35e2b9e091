//! Running vmrd: logging, assembly, the socket, serving, and a graceful
//! stop on SIGTERM/SIGINT (stop accepting, let in-flight calls finish for a
//! bounded time, remove the socket; VMs keep running, libvirt owns them).

use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::assemble::OpenLibvirt;
use crate::config::{ConfigOrUsage, DaemonConfig, HypervisorKind, LogFormat};

/// The binary that serves `--hypervisor libvirt`, installed next to `vmrd`.
pub const LIBVIRT_BINARY: &str = "vmrd-libvirt";

/// Where a daemon binary gets libvirt from.
#[derive(Debug, Clone, Copy)]
pub enum Libvirt {
    /// This binary links it.
    Linked(OpenLibvirt),
    /// This binary does not: with `--hypervisor libvirt` it becomes
    /// [`LIBVIRT_BINARY`] from its own directory (exec: same process, same
    /// arguments and environment), so it never loads libvirt otherwise.
    Exec,
}

/// The whole of a daemon binary's `main`: configuration, logging, the
/// runtime, serving.
pub fn main(libvirt: Libvirt) -> ExitCode {
    let config = match DaemonConfig::from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(ConfigOrUsage::Usage(e)) => e.exit(),
        Err(ConfigOrUsage::Config(e)) => {
            eprintln!("vmrd: {e}");
            return ExitCode::from(2);
        }
    };
    let libvirt = match libvirt {
        Libvirt::Linked(open) => Some(open),
        Libvirt::Exec if config.hypervisor == HypervisorKind::Libvirt => {
            let e = exec_libvirt_binary();
            eprintln!("vmrd: --hypervisor libvirt: {e:#}");
            return ExitCode::FAILURE;
        }
        Libvirt::Exec => None,
    };
    init_logging(&config);
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
    match runtime.block_on(run(config, libvirt)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmrd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Replaces this process with [`LIBVIRT_BINARY`]; returns only on failure.
fn exec_libvirt_binary() -> anyhow::Error {
    let program = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(LIBVIRT_BINARY),
        Err(e) => return anyhow::anyhow!("cannot find this program's directory: {e}"),
    };
    let e = Command::new(&program)
        .args(std::env::args_os().skip(1))
        .exec();
    anyhow::anyhow!(
        "cannot run {} (it serves libvirt; install it next to vmrd, or use --hypervisor fake): {e}",
        program.display()
    )
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long in-flight calls may take to finish after a stop signal.
const DRAIN: Duration = Duration::from_secs(10);

pub fn init_logging(config: &DaemonConfig) {
    // RUST_LOG, when set, refines the level for debugging.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},h2=warn,hyper=warn,tower=warn",
            config.log_level
        ))
    });
    // Colours only on a terminal: logs in files and journald stay greppable.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn stop_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the daemon still serves; it just cannot
        // stop gracefully.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}

/// Runs the daemon until a stop signal.
pub async fn run(config: DaemonConfig, libvirt: Option<OpenLibvirt>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let core = crate::assemble::assemble(&config, libvirt).await?;
    let listener = crate::socket::bind(
        &config.socket,
        config.socket_mode,
        config.socket_group.as_deref(),
    )
    .await?;
    tracing::info!(
        socket = %config.socket.display(),
        store = %core.store_description,
        hypervisor = %core.hypervisor_description,
        startup_ms = started.elapsed().as_millis() as u64,
        "vmrd {} serving",
        env!("CARGO_PKG_VERSION")
    );

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        stop_signal().await;
        let _ = stopping_tx.send(());
    };
    // Bound before the socket serves, so a bad address fails the start.
    let metrics_server = match (config.metrics_listen, core.metrics) {
        (Some(addr), Some(endpoint)) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-listen {addr}"))?;
            let bound = listener.local_addr().unwrap_or(addr);
            tracing::info!(address = %bound, "metrics served at http://{bound}/metrics");
            Some(AbortOnDrop(tokio::spawn(async move {
                let served = vmr_adapters::metrics::http::serve(
                    listener,
                    endpoint.counters,
                    endpoint.snapshot,
                    std::future::pending(),
                )
                .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the metrics endpoint failed");
                }
            })))
        }
        _ => None,
    };
    let images = core.images.clone();
    let heartbeat = core.heartbeat;
    let serve = vmr_adapters::grpc::serve(listener, core.grpc, shutdown);
    tokio::pin!(serve);
    let result = tokio::select! {
        result = &mut serve => result.context("gRPC server failed"),
        _ = async {
            let _ = stopping_rx.await;
            tokio::time::sleep(DRAIN).await;
        } => {
            tracing::warn!("in-flight calls did not finish within {}s; stopping anyway", DRAIN.as_secs());
            Ok(())
        }
    };
    drop(metrics_server);
    if let Err(e) = std::fs::remove_file(&config.socket) {
        tracing::warn!(error = %e, "could not remove the socket");
    }
    // No renewal after the record is gone; then nothing of this host pins
    // blobs in a shared store (a killed daemon's record expires instead).
    drop(heartbeat);
    images.withdraw_shared().await;
    tracing::info!("vmrd stopped");
    result
}
