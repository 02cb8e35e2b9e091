//! For the registry tests: where the shared test registries are (from
//! `scripts/test-services.sh env`), a private `docker-registry` a test may
//! kill and restart at will and whose access log it reads, `skopeo` as the
//! independent client, OCI image layouts written by hand, and `vmr` runs
//! that read a password from stdin.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::daemon::{Daemon, VmrOutput, bin};
use crate::fixtures::{qcow2, sha256_bytes, vmfile};

/// The value of a service variable, or `None` (after saying so) when the
/// registry tests are deliberately skipped with `VMR_TEST_SKIP_REGISTRY=1`.
/// Otherwise an unset variable fails the test with the way to fix it.
pub fn service_env(name: &str) -> Option<String> {
    if let Ok(value) = std::env::var(name)
        && !value.is_empty()
    {
        return Some(value);
    }
    if std::env::var("VMR_TEST_SKIP_REGISTRY").as_deref() == Ok("1") {
        eprintln!("skipping: {name} is not set and VMR_TEST_SKIP_REGISTRY=1");
        return None;
    }
    panic!(
        "{name} is not set. Start the test registries with `scripts/test-services.sh start` and load \
         their settings with `eval \"$(scripts/test-services.sh env)\"`, or set \
         VMR_TEST_SKIP_REGISTRY=1 to skip the registry tests."
    );
}

/// A repository name no other test run uses: `vmr-e2e/<test>-<nanos>`.
pub fn unique_repo(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("vmr-e2e/{test}-{nanos:x}-{}", std::process::id())
}

/// A loopback port nobody listens on (right now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The HTTP status of `GET http://127.0.0.1:<port><path>`, if anything answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// One line of a registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// `GET /v2/team/vm/blobs/sha256:... HTTP/1.1`
    pub request: String,
    pub status: u16,
    /// Body bytes the registry sent.
    pub bytes: u64,
}

/// A `docker-registry` of the test's own on a free loopback port, anonymous,
/// with its access log in a file. Killed when dropped.
pub struct PrivateRegistry {
    /// Config, storage and log; removed when dropped.
    _dir: tempfile::TempDir,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl PrivateRegistry {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vmr-registry-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let config = dir.path().join("registry.yml");
        let storage = dir.path().join("data");
        // Like scripts/test-services.sh writes, with the access log on.
        let text = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: vmr-private-registry\n",
            storage.display()
        );
        std::fs::write(&config, text).expect("registry config");
        let log = dir.path().join("registry.log");
        let mut registry = Self {
            _dir: dir,
            port,
            config,
            log,
            child: None,
        };
        registry.spawn();
        registry
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed (scripts/install-deps.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_status(self.port, "/v2/") != Some(200) {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on 127.0.0.1:{} within 20 s:\n{}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// Kills the registry at once (SIGKILL), as a crash or a pulled cable.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The access log's request lines (`POST /v2/team/vm/blobs/uploads/ HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|line| {
                let start = line.find("] \"")? + 3;
                let rest = &line[start..];
                Some(rest[..rest.find('"')?].to_owned())
            })
            .collect()
    }

    /// The access log's entries: request line, status and body bytes sent
    /// (`PUT /v2/.../blobs/uploads/<id>?...&digest=sha256%3A... HTTP/1.1`, 201, 0).
    pub fn answered(&self) -> Vec<Access> {
        self.log_text()
            .lines()
            .filter_map(|line| {
                let start = line.find("] \"")? + 3;
                let rest = &line[start..];
                let end = rest.find('"')?;
                let mut fields = rest[end + 1..].split_whitespace();
                let status = fields.next()?.parse().ok()?;
                let bytes = fields.next()?.parse().ok()?;
                Some(Access {
                    request: rest[..end].to_owned(),
                    status,
                    bytes,
                })
            })
            .collect()
    }

    /// The digests of the blob uploads the registry completed (201), in
    /// order, one entry per completed upload.
    pub fn stored_blobs(&self) -> Vec<String> {
        self.answered()
            .into_iter()
            .filter(|a| {
                a.status == 201
                    && a.request.starts_with("PUT ")
                    && a.request.contains("/blobs/uploads/")
            })
            .filter_map(|a| {
                let digest = a.request.split("digest=").nth(1)?;
                let digest = digest.split(['&', ' ']).next()?;
                Some(digest.replace("%3A", ":").replace("%3a", ":"))
            })
            .collect()
    }

    /// Requests whose method is `method` and whose path contains `path`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with(&format!("{method} ")) && r.contains(path))
            .count()
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Imports a small qcow2 image as `repository:tag`; returns the disk path.
pub fn import_qcow2(daemon: &Daemon, work: &Path, repository: &str, tag: &str) -> PathBuf {
    let disk = qcow2(
        work,
        &format!("{}.qcow2", repository.replace('/', "_")),
        "64M",
    );
    let file = vmfile(
        work,
        repository,
        disk.to_str().expect("a UTF-8 temp path"),
        "qcow2",
    );
    daemon
        .vmr(&[
            "import",
            "-f",
            file.to_str().expect("a UTF-8 temp path"),
            "-t",
            tag,
        ])
        .ok();
    disk
}

/// Runs `skopeo ARGS`, asserting success.
#[track_caller]
pub fn skopeo(args: &[&str]) -> Output {
    let output = Command::new("skopeo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("skopeo is installed (scripts/install-deps.sh)");
    assert!(
        output.status.success(),
        "skopeo {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `vmr --socket <daemon> ARGS` with `stdin` as its standard input
/// (for `--password-stdin`), with the daemon's private config directory.
pub fn vmr_with_stdin(daemon: &Daemon, args: &[&str], stdin: &str) -> VmrOutput {
    let mut child = Command::new(bin("vmr"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(args)
        .env("XDG_CONFIG_HOME", config_home(daemon))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vmr");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    VmrOutput(child.wait_with_output().expect("vmr output"))
}

/// The `XDG_CONFIG_HOME` that `Daemon::vmr` gives the CLI.
pub fn config_home(daemon: &Daemon) -> PathBuf {
    daemon.dir.path().join("config")
}

/// The CLI's credential file for that daemon's runs.
pub fn credentials_file(daemon: &Daemon) -> PathBuf {
    config_home(daemon).join("vmr").join("credentials.json")
}

/// An OCI image layout holding one vmr image, written by hand as another
/// tool would: `oci-layout`, `index.json` (the manifest under `tag`), and the
/// config, disk and manifest blobs. Returns the manifest's digest.
pub fn write_oci_layout(
    dir: &Path,
    tag: &str,
    repository: &str,
    disk: &[u8],
    disk_format: &str,
) -> String {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).expect("layout dir");
    let put = |bytes: &[u8]| -> String {
        let digest = sha256_bytes(bytes);
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes)
            .expect("write blob");
        digest
    };
    let config = serde_json::to_vec(&json!({
        "metadata": {"name": repository, "description": "made by hand, pushed by skopeo"},
        "spec": {
            "diskFormat": disk_format,
            "resources": {"cpu": 2, "memory": 268_435_456u64, "bootloader": "UEFI"},
        },
        "disk": {"virtualSize": disk.len()},
    }))
    .expect("config json");
    let config_digest = put(&config);
    let disk_digest = put(disk);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.vmregistry.vm.v1",
        "config": {
            "mediaType": "application/vnd.vmregistry.vm.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": format!("application/vnd.vmregistry.disk.v1.{disk_format}"),
            "digest": disk_digest,
            "size": disk.len(),
            "annotations": {"org.opencontainers.image.title": format!("disk.{disk_format}")},
        }],
        "annotations": {"org.opencontainers.image.created": "2025-01-01T00:00:00Z"},
    }))
    .expect("manifest json");
    let manifest_digest = put(&manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("index json"),
    )
    .expect("index.json");
    manifest_digest
}

/// Whether any file below `root` contains `needle` (binary-safe).
pub fn any_file_contains(root: &Path, needle: &[u8]) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = any_file_contains(&path, needle) {
                return Some(found);
            }
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            return Some(path);
        }
    }
    None
}
