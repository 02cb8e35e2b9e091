//! Starting a real `vmrd` on a private socket and store, and running the real
//! `vmr` binary against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use vmr_proto::v1::vm_service_client::VmServiceClient;

/// The directory holding the workspace's built binaries (`vmrd`, `vmr`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VMR_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().expect("deps dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile dir")
    } else {
        dir
    };
    dir.to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins --tests`)",
        path.display()
    );
    path
}

/// A running daemon, stopped (SIGTERM) when dropped.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub store: PathBuf,
    pub log: PathBuf,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Daemon {
    /// A daemon with a filesystem store and the fake hypervisor.
    pub fn start() -> Self {
        Self::start_with(&["--hypervisor", "fake"])
    }

    /// A daemon on the real libvirt at `uri`, with TCG guests. QEMU runs as
    /// another user: it must be able to reach the store and runtime files.
    pub fn on_libvirt(uri: &str) -> Self {
        let daemon = Self::start_with(&[
            "--hypervisor",
            "libvirt",
            "--libvirt-uri",
            uri,
            "--virt-type",
            "qemu",
        ]);
        let open = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
        std::fs::set_permissions(daemon.dir.path(), open)
            .expect("opening the daemon's directory to QEMU");
        daemon
    }

    /// A daemon with extra flags (the socket and store path are always set).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// A daemon with extra flags and environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vmr-e2e-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("vmr.sock");
        let store = dir.path().join("store");
        let log = dir.path().join("vmrd.log");
        let mut daemon = Self {
            dir,
            socket,
            store,
            log,
            extra: extra.iter().map(ToString::to_string).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("daemon log");
        let child = Command::new(bin("vmrd"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--fs-path")
            .arg(&self.store)
            .args(&self.extra)
            .env("VM_REGISTRY_LOG_LEVEL", "debug")
            .env_remove("VM_REGISTRY_SOCKET_PATH")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn vmrd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "vmrd exited with {status} before serving:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("vmrd did not serve within 30 s:\n{}", self.log_text());
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits (30 s at most) until the daemon's log holds `needle`: an event
    /// the daemon reports, rather than a guess at how long it takes.
    #[track_caller]
    pub fn wait_for_log(&self, needle: &str) {
        self.wait_for_log_line(&[needle]);
    }

    /// Waits (30 s at most) until one line of the daemon's log holds every
    /// one of `parts` (a message and its fields, like `vm=web`).
    #[track_caller]
    pub fn wait_for_log_line(&self, parts: &[&str]) {
        self.wait_for_log_line_within(Duration::from_secs(30), parts);
    }

    /// As [`Self::wait_for_log_line`], with a deadline of `limit`.
    pub fn wait_for_log_line_within(&self, limit: Duration, parts: &[&str]) {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.log_text();
            if text
                .lines()
                .any(|line| parts.iter().all(|part| line.contains(part)))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not log a line with {parts:?} within {limit:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the daemon with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix_pid(&child);
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the daemon with SIGKILL (no cleanup).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the daemon with SIGKILL wherever it is (no cleanup, no flush),
    /// then starts it again on the same socket, store and flags, and waits
    /// until it serves: what a power cut or OOM kill followed by a service
    /// restart looks like.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Stops and starts the daemon on the same socket and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs `vmr --socket <socket> ARGS`.
    pub fn vmr(&self, args: &[&str]) -> VmrOutput {
        self.vmr_in(args, None)
    }

    /// `vmr --socket <socket> ARGS` with this daemon's config home, not yet
    /// started: for a test that spawns it, feeds it or watches it run.
    pub fn vmr_command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut command = Command::new(bin("vmr"));
        command.arg("--socket").arg(&self.socket).args(args);
        command.env("XDG_CONFIG_HOME", self.dir.path().join("config"));
        command
    }

    /// Runs `vmr` in a working directory.
    pub fn vmr_in(&self, args: &[&str], cwd: Option<&Path>) -> VmrOutput {
        let mut command = self.vmr_command(args);
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        VmrOutput(command.stdin(Stdio::null()).output().expect("run vmr"))
    }

    /// A gRPC client on the daemon's socket.
    pub async fn client(&self) -> VmServiceClient<Channel> {
        connect(&self.socket).await
    }

    /// Every file below the store root, relative to it, sorted.
    pub fn store_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.store, &self.store, &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

fn nix_pid(child: &Child) -> String {
    child.id().to_string()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The result of one `vmr` run.
pub struct VmrOutput(pub Output);

impl VmrOutput {
    pub fn success(&self) -> bool {
        self.0.status.success()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert!(
            self.success(),
            "vmr failed ({}):\nstdout: {}\nstderr: {}",
            self.0.status,
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }

    /// Asserts success and parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        let out = self.ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("vmr printed no JSON ({e}): {out}"))
    }

    /// Asserts failure and returns stderr.
    #[track_caller]
    pub fn err(&self) -> String {
        assert!(
            !self.success(),
            "vmr should have failed:\nstdout: {}\nstderr: {}",
            self.stdout(),
            self.stderr()
        );
        self.stderr()
    }
}

/// Connects a gRPC client to a Unix socket.
pub async fn connect(socket: &Path) -> VmServiceClient<Channel> {
    VmServiceClient::new(channel(socket).await)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

/// A gRPC channel over a Unix socket (for any service on it).
pub async fn channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .expect("static endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to vmrd")
}
