//! `vmr-load`: the load generator behind the RPC figures of
//! `docs/benchmarks.md` (no external gRPC load tool is available here).
//!
//! N callers share a bounded number of HTTP/2 connections to vmrd's Unix
//! socket and each fires one RPC in a loop: back to back (closed loop, the
//! default) or on a fixed schedule (`--interval-ms`, where a late call's
//! latency counts from when it should have started, so a stalled daemon
//! cannot hide behind callers that stopped sending). It prints one JSON line:
//! latency percentiles, calls per second, errors, and how many items the last
//! answer held (so a figure for "200 images" is checked to be one).
//! Everything is bounded: callers, connections, duration and calls.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::health_client::HealthClient;
use vmr_proto::v1 as pb;
use vmr_proto::v1::vm_service_client::VmServiceClient;

const MAX_CALLERS: usize = 10_000;
const MAX_SECONDS: u64 = 600;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Rpc {
    /// `VMService/ListImages`, every repository.
    ListImages,
    /// `VMService/ListVMs` with `all`.
    ListVms,
    /// `grpc.health.v1.Health/Check`: the cheapest call through the same
    /// server, layers and connection (the baseline).
    Health,
    /// `VMService/HealthCheck`: probes the store and the hypervisor.
    HealthCheck,
}

#[derive(Debug, Parser)]
#[command(about = "Fires one vmrd RPC from many concurrent callers and prints latency as JSON")]
struct Args {
    /// vmrd's Unix socket.
    #[arg(long, required_unless_present = "measure_start")]
    socket: Option<PathBuf>,
    /// Concurrent callers.
    #[arg(long, default_value_t = 500)]
    callers: usize,
    /// HTTP/2 connections the callers are spread over; 0 = one per caller.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// How long to measure (ignored with --calls-per-caller).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Stop after this many calls per caller instead of after a duration.
    #[arg(long)]
    calls_per_caller: Option<u64>,
    /// Each caller starts a call every this many ms (open schedule) instead
    /// of back to back.
    #[arg(long)]
    interval_ms: Option<u64>,
    /// The RPC to fire.
    #[arg(long, value_enum, required_unless_present = "measure_start")]
    rpc: Option<Rpc>,
    /// Instead of a load: start this vmrd (fake mode, empty store in a
    /// temporary directory) `--starts` times and time spawn to the first
    /// answered Health call, against spawning `true`; then report the idle
    /// RSS of the last start after a few calls.
    #[arg(long, value_name = "VMRD", conflicts_with = "rpc")]
    measure_start: Option<PathBuf>,
    /// Starts to time with --measure-start.
    #[arg(long, default_value_t = 10)]
    starts: usize,
    /// With --measure-start: also copy the idle daemon's /proc/PID/smaps
    /// here (for `scripts/bench/smaps.py`'s per-mapping breakdown).
    #[arg(long, value_name = "PATH", requires = "measure_start")]
    idle_smaps: Option<PathBuf>,
}

/// One caller's client over a shared connection.
#[derive(Clone)]
enum Client {
    Vm(VmServiceClient<Channel>),
    Health(HealthClient<Channel>),
}

impl Client {
    /// One call; the number of items in the answer.
    async fn call(&mut self, rpc: Rpc) -> Result<usize, tonic::Status> {
        match (self, rpc) {
            (Client::Vm(c), Rpc::ListImages) => Ok(c
                .list_images(pb::ListImagesRequest::default())
                .await?
                .into_inner()
                .images
                .len()),
            (Client::Vm(c), Rpc::ListVms) => Ok(c
                .list_v_ms(pb::ListVMsRequest {
                    all: true,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .vms
                .len()),
            (Client::Vm(c), Rpc::HealthCheck) => Ok(c
                .health_check(pb::HealthCheckRequest {})
                .await?
                .into_inner()
                .components
                .len()),
            (Client::Health(c), _) => c
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|_| 1),
            (Client::Vm(_), Rpc::Health) => Err(tonic::Status::internal("wrong client")),
        }
    }
}

async fn channel(socket: &Path) -> anyhow::Result<Channel> {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .with_context(|| "connecting to vmrd")
}

/// What one caller saw.
#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    items: usize,
}

async fn caller(
    mut client: Client,
    rpc: Rpc,
    start: Instant,
    offset: Duration,
    stop: Stop,
    interval: Option<Duration>,
) -> Tally {
    let mut tally = Tally::default();
    let mut due = start + offset;
    let mut n = 0u64;
    loop {
        if interval.is_some() {
            tokio::time::sleep_until(due.into()).await;
        }
        let began = if interval.is_some() {
            due
        } else {
            Instant::now()
        };
        if stop.done(n, began) {
            break;
        }
        match client.call(rpc).await {
            Ok(items) => tally.items = items,
            Err(status) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| status.to_string());
            }
        }
        tally.latencies_ns.push(began.elapsed().as_nanos() as u64);
        n += 1;
        if let Some(interval) = interval {
            due += interval;
        }
    }
    tally
}

#[derive(Clone, Copy)]
enum Stop {
    Calls(u64),
    At(Instant),
}

impl Stop {
    fn done(self, calls: u64, now: Instant) -> bool {
        match self {
            Stop::Calls(max) => calls >= max,
            Stop::At(deadline) => now >= deadline,
        }
    }
}

fn percentile_ms(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted_ns.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted_ns.len()) - 1;
    round3(sorted_ns[index] as f64 / 1e6)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The median of some durations, in ms.
fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort_unstable();
    samples
        .get(samples.len() / 2)
        .map_or(0.0, |d| round3(d.as_secs_f64() * 1000.0))
}

/// Whether the daemon on `socket` answers a Health call now.
async fn answers(socket: &Path) -> bool {
    let Ok(stream) = tokio::net::UnixStream::connect(socket).await else {
        return false;
    };
    let Ok(endpoint) = Endpoint::try_from("http://[::]:50051") else {
        return false;
    };
    let mut stream = Some(stream);
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let stream = stream.take();
            async move {
                stream
                    .map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("one connection only"))
            }
        }))
        .await;
    let Ok(channel) = channel else { return false };
    HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .is_ok()
}

fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

async fn measure_start(
    vmrd: &Path,
    starts: usize,
    idle_smaps: Option<&Path>,
) -> anyhow::Result<()> {
    if starts == 0 || starts > 100 {
        bail!("--starts must be 1..=100");
    }
    let mut baseline = Vec::with_capacity(starts);
    for _ in 0..starts {
        let began = Instant::now();
        std::process::Command::new("true").status()?;
        baseline.push(began.elapsed());
    }
    let mut samples = Vec::with_capacity(starts);
    let mut idle_rss_kib = 0;
    let mut idle_threads = 0;
    for i in 0..starts {
        let dir = tempfile::Builder::new().prefix("vmr-start-").tempdir()?;
        let socket = dir.path().join("vmr.sock");
        let began = Instant::now();
        let mut child = std::process::Command::new(vmrd)
            .arg("--socket")
            .arg(&socket)
            .arg("--fs-path")
            .arg(dir.path().join("store"))
            .args(["--hypervisor", "fake", "--log-level", "warn"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("spawning vmrd")?;
        let deadline = began + Duration::from_secs(30);
        let served = loop {
            if answers(&socket).await {
                break Ok(began.elapsed());
            }
            if Instant::now() > deadline {
                break Err(anyhow::anyhow!("vmrd did not answer within 30 s"));
            }
            if let Some(status) = child.try_wait()? {
                break Err(anyhow::anyhow!("vmrd exited with {status} before serving"));
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        if i + 1 == starts && served.is_ok() {
            // Idle: a few calls, then a moment of nothing.
            let mut client = VmServiceClient::new(channel(&socket).await?);
            for _ in 0..5 {
                client.list_images(pb::ListImagesRequest::default()).await?;
                client.list_v_ms(pb::ListVMsRequest::default()).await?;
            }
            drop(client);
            tokio::time::sleep(Duration::from_secs(1)).await;
            idle_rss_kib = vm_rss_kib(child.id())?;
            let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
            idle_threads = std::fs::read_dir(proc_dir.join("task"))
                .context("reading /proc/PID/task")?
                .count();
            if let Some(path) = idle_smaps {
                let smaps =
                    std::fs::read(proc_dir.join("smaps")).context("reading /proc/PID/smaps")?;
                std::fs::write(path, smaps)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        samples.push(served?);
    }
    let report = serde_json::json!({
        "starts": starts,
        "start_to_serving_ms_median": median_ms(samples.clone()),
        "start_to_serving_ms_max": samples.iter().max().map_or(0.0, |d| round3(d.as_secs_f64() * 1000.0)),
        "true_spawn_ms_median": median_ms(baseline),
        "idle_rss_kib": idle_rss_kib,
        "idle_threads": idle_threads,
    });
    println!("{report}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(vmrd) = &args.measure_start {
        return measure_start(vmrd, args.starts, args.idle_smaps.as_deref()).await;
    }
    let (Some(rpc), Some(socket)) = (args.rpc, &args.socket) else {
        bail!("--rpc and --socket are required");
    };
    if args.callers == 0 || args.callers > MAX_CALLERS {
        bail!("--callers must be 1..={MAX_CALLERS}");
    }
    if args.duration_secs == 0 || args.duration_secs > MAX_SECONDS {
        bail!("--duration-secs must be 1..={MAX_SECONDS}");
    }
    let connections = match args.connections {
        0 => args.callers,
        n => n.min(args.callers),
    };
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(channel(socket).await?);
    }
    let clients: Vec<Client> = channels
        .iter()
        .map(|ch| match rpc {
            Rpc::Health => Client::Health(HealthClient::new(ch.clone())),
            _ => Client::Vm(
                VmServiceClient::new(ch.clone()).max_decoding_message_size(64 * 1024 * 1024),
            ),
        })
        .collect();
    // One warm-up call per connection: the HTTP/2 handshake and the daemon's
    // first-call costs stay out of the figures.
    for client in &clients {
        client.clone().call(rpc).await.context("warm-up call")?;
    }

    let interval = args.interval_ms.map(Duration::from_millis);
    let start = Instant::now();
    let stop = match args.calls_per_caller {
        Some(n) => Stop::Calls(n),
        None => Stop::At(start + Duration::from_secs(args.duration_secs)),
    };
    let hard_deadline = Duration::from_secs(MAX_SECONDS + 60);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.callers {
        let client = clients[i % connections].clone();
        // Paced callers are spread evenly over one interval.
        let offset = interval.map_or(Duration::ZERO, |iv| iv * i as u32 / args.callers as u32);
        tasks.spawn(caller(client, rpc, start, offset, stop, interval));
    }
    let mut latencies = Vec::new();
    let (mut errors, mut items, mut first_error) = (0u64, 0usize, None);
    let joined = tokio::time::timeout(hard_deadline, async {
        while let Some(tally) = tasks.join_next().await {
            let tally = tally.context("caller task")?;
            latencies.extend(tally.latencies_ns);
            errors += tally.errors;
            items = items.max(tally.items);
            if first_error.is_none() {
                first_error = tally.first_error;
            }
        }
        anyhow::Ok(())
    })
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    joined.context("callers did not finish in time")??;
    latencies.sort_unstable();
    let calls = latencies.len();
    let mean_ms = if calls == 0 {
        0.0
    } else {
        latencies.iter().map(|&n| n as f64).sum::<f64>() / calls as f64 / 1e6
    };
    let report = serde_json::json!({
        "rpc": format!("{rpc:?}"),
        "callers": args.callers,
        "connections": connections,
        "interval_ms": args.interval_ms,
        "calls": calls,
        "errors": errors,
        "first_error": first_error,
        "items": items,
        "seconds": round3(elapsed),
        "calls_per_sec": (calls as f64 / elapsed).round(),
        "mean_ms": round3(mean_ms),
        "p50_ms": percentile_ms(&latencies, 50.0),
        "p90_ms": percentile_ms(&latencies, 90.0),
        "p99_ms": percentile_ms(&latencies, 99.0),
        "max_ms": percentile_ms(&latencies, 100.0),
    });
    println!("{report}");
    if errors > 0 {
        bail!("{errors} calls failed");
    }
    Ok(())
}
