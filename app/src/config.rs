//! vmrd's settings, in this order of precedence: flag, environment variable,
//! config file (TOML or YAML), default. The original daemon's single-dash flags (`-socket`) are
//! accepted too. A bad value is refused with one line naming the setting.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

/// A setting that could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{flag}: {reason}")]
    Invalid { flag: &'static str, reason: String },
    #[error("--config {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        reason: reason.into(),
    }
}

/// Command-line flags and their environment variables. Everything is
/// optional here so that the config file can fill what neither gives.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(
    name = "vmrd",
    version,
    about = "vmr daemon: VM images, VMs, networks and compose projects over gRPC on a Unix socket"
)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Flags {
    /// Config file (TOML or YAML) with any of these settings.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Unix socket to serve on.
    #[arg(long, env = "VM_REGISTRY_SOCKET_PATH", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Default registry (OCI distribution) URL.
    #[arg(long, env = "VM_REGISTRY_SERVER_URL", value_name = "URL")]
    pub registry_url: Option<String>,
    /// Auth server URL.
    #[arg(long, env = "VM_AUTH_SERVER_URL", value_name = "URL")]
    pub auth_url: Option<String>,
    /// PEM file of certificate authorities trusted for registries and auth
    /// servers, in addition to the system's (a private registry's CA).
    #[arg(long, env = "VM_REGISTRY_CA_FILE", value_name = "PATH")]
    pub registry_ca_file: Option<PathBuf>,
    /// Storage backend: filesystem, s3 or memory.
    #[arg(long, env = "VM_REGISTRY_STORAGE")]
    pub storage: Option<String>,
    /// Store root; also holds runtime/.
    #[arg(long, env = "VM_REGISTRY_STORAGE_PATH", value_name = "DIR")]
    pub fs_path: Option<PathBuf>,
    /// trace, debug, info, warn or error.
    #[arg(long, env = "VM_REGISTRY_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// text or json.
    #[arg(long, env = "VM_REGISTRY_LOG_FORMAT")]
    pub log_format: Option<String>,
    #[arg(long, env = "VM_REGISTRY_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    #[arg(long, env = "VM_REGISTRY_S3_REGION")]
    pub s3_region: Option<String>,
    #[arg(long, env = "VM_REGISTRY_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<String>,
    /// Do not create the bucket at start.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub s3_skip_bucket_creation: Option<bool>,
    /// Age in seconds after which an unfinished S3 multipart upload is a
    /// crash's leftover, aborted at start (default 3600).
    #[arg(long, env = "VM_REGISTRY_S3_UPLOAD_EXPIRY", value_name = "SECONDS")]
    pub s3_upload_expiry: Option<u64>,
    /// Seconds after which a daemon's lease record in the bucket, not
    /// renewed, is a dead host's (default 120; renewed every quarter).
    #[arg(long, env = "VM_REGISTRY_S3_LEASE_TTL", value_name = "SECONDS")]
    pub s3_lease_ttl: Option<u64>,
    /// Seconds during which an unreferenced blob in the bucket is never
    /// collected, by its Last-Modified (default 3600).
    #[arg(long, env = "VM_REGISTRY_S3_GC_GRACE", value_name = "SECONDS")]
    pub s3_gc_grace: Option<u64>,
    /// libvirt or fake.
    #[arg(long, env = "VM_REGISTRY_HYPERVISOR")]
    pub hypervisor: Option<String>,
    /// Any libvirt URI, test:///default included.
    #[arg(long, env = "LIBVIRT_DEFAULT_URI", value_name = "URI")]
    pub libvirt_uri: Option<String>,
    /// kvm or qemu (TCG); default: kvm when the host can run it.
    #[arg(long)]
    pub virt_type: Option<String>,
    /// Group that owns the socket (default: vmr, if it exists).
    #[arg(long)]
    pub socket_group: Option<String>,
    /// Socket permissions, octal (default 0660).
    #[arg(long)]
    pub socket_mode: Option<String>,
    /// Disks larger than this many MiB are pushed in chunks of this size
    /// (default 32; 0 pushes every disk as one layer).
    #[arg(long, env = "VM_REGISTRY_PUSH_CHUNK_MIB", value_name = "MIB")]
    pub push_chunk_mib: Option<u64>,
    /// Chunks transferred at once in a push or pull (default 3).
    #[arg(long, env = "VM_REGISTRY_TRANSFER_PARALLEL", value_name = "N")]
    pub transfer_parallel: Option<usize>,
    /// Serve Prometheus metrics on this address (IP:PORT, loopback unless
    /// --metrics-allow-remote) at /metrics; off when not given.
    #[arg(long, env = "VM_REGISTRY_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Let --metrics-listen take an address other hosts can reach.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub metrics_allow_remote: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    Filesystem,
    S3,
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypervisorKind {
    Libvirt,
    Fake,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub skip_bucket_creation: bool,
    pub upload_expiry_secs: Option<u64>,
    /// Lease TTL in seconds (docs/shared-bucket.md).
    pub lease_ttl_secs: u64,
    /// Collection grace window in seconds.
    pub gc_grace_secs: u64,
}

/// The daemon's resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    pub registry_url: Option<String>,
    pub auth_url: Option<String>,
    /// Extra trusted CAs (PEM) for registries and auth servers.
    pub registry_ca_file: Option<PathBuf>,
    pub storage: StorageKind,
    pub fs_path: PathBuf,
    pub log_level: String,
    pub log_format: LogFormat,
    pub s3: Option<S3Config>,
    pub hypervisor: HypervisorKind,
    pub libvirt_uri: String,
    pub virt_type: Option<String>,
    pub socket_group: Option<String>,
    pub socket_mode: u32,
    /// Chunk size of chunked pushes in bytes; 0: no chunking.
    pub push_chunk_bytes: u64,
    pub transfer_parallel: usize,
    /// Where the metrics endpoint listens; `None`: not served.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Where things go when nothing says otherwise: system paths for root, the
/// XDG directories for everyone else (rootless).
#[derive(Debug, Clone)]
pub struct Defaults {
    pub root: bool,
    pub runtime_dir: Option<PathBuf>,
    pub data_home: Option<PathBuf>,
}

impl Defaults {
    pub fn from_env() -> Self {
        Self {
            root: nix::unistd::geteuid().is_root(),
            runtime_dir: std::env::var_os("XDG_RUNTIME_DIR")
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from),
            data_home: std::env::var_os("XDG_DATA_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share"))),
        }
    }

    /// The daemon's default socket; the CLI looks there too.
    pub fn socket(&self) -> PathBuf {
        match (&self.root, &self.runtime_dir) {
            (false, Some(dir)) => dir.join("vm-registry.sock"),
            _ => PathBuf::from("/var/run/vm-registry.sock"),
        }
    }

    fn fs_path(&self) -> PathBuf {
        match (&self.root, &self.data_home) {
            (false, Some(dir)) => dir.join("vm-registry"),
            _ => PathBuf::from("/var/lib/vm-registry"),
        }
    }

    fn libvirt_uri(&self) -> &'static str {
        if self.root {
            "qemu:///system"
        } else {
            "qemu:///session"
        }
    }
}

/// Rewrites the original daemon's single-dash long flags (`-socket x`,
/// `-log-level=debug`) to clap's `--socket`.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .enumerate()
        .map(|(i, arg)| {
            let Some(s) = arg.to_str() else { return arg };
            let long_single_dash = i > 0
                && s.starts_with('-')
                && !s.starts_with("--")
                && s.split('=').next().is_some_and(|name| name.len() > 2);
            if long_single_dash {
                OsString::from(format!("-{s}"))
            } else {
                arg
            }
        })
        .collect()
}

fn read_file(path: &Path) -> Result<Flags, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    if is_toml {
        toml::from_str(&text).map_err(|e| file_error(e.to_string()))
    } else {
        serde_yaml::from_str(&text).map_err(|e| file_error(e.to_string()))
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn check_url(flag: &'static str, url: Option<String>) -> Result<Option<String>, ConfigError> {
    match non_empty(url) {
        None => Ok(None),
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Ok(Some(url.trim_end_matches('/').to_string()))
        }
        Some(url) => Err(invalid(
            flag,
            format!("'{url}' is not an http:// or https:// URL"),
        )),
    }
}

impl DaemonConfig {
    /// Resolves flags (already merged with the environment by clap), the
    /// config file they name, and the defaults.
    pub fn resolve(flags: Flags, defaults: &Defaults) -> Result<Self, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => Flags::default(),
        };
        macro_rules! pick {
            ($field:ident) => {
                flags.$field.or(file.$field)
            };
        }

        let storage = match pick!(storage).as_deref().unwrap_or("filesystem") {
            "filesystem" | "fs" => StorageKind::Filesystem,
            "s3" => StorageKind::S3,
            "memory" => StorageKind::Memory,
            other => {
                return Err(invalid(
                    "storage",
                    format!("'{other}' is not a storage backend (filesystem, s3 or memory)"),
                ));
            }
        };
        let log_level = pick!(log_level)
            .unwrap_or_else(|| "info".into())
            .to_lowercase();
        if !["trace", "debug", "info", "warn", "error"].contains(&log_level.as_str()) {
            return Err(invalid(
                "log-level",
                format!("'{log_level}' is not a level (trace, debug, info, warn or error)"),
            ));
        }
        let log_format = match pick!(log_format).as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log-format",
                    format!("'{other}' is not text or json"),
                ));
            }
        };
        let hypervisor = match pick!(hypervisor).as_deref().unwrap_or("libvirt") {
            "libvirt" => HypervisorKind::Libvirt,
            "fake" => HypervisorKind::Fake,
            other => {
                return Err(invalid(
                    "hypervisor",
                    format!("'{other}' is not a hypervisor (libvirt or fake)"),
                ));
            }
        };
        let virt_type = match non_empty(pick!(virt_type)) {
            None => None,
            Some(v) if v == "kvm" || v == "qemu" => Some(v),
            Some(v) => return Err(invalid("virt-type", format!("'{v}' is not kvm or qemu"))),
        };
        let socket_mode = match pick!(socket_mode) {
            None => 0o660,
            Some(raw) => u32::from_str_radix(raw.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    invalid(
                        "socket-mode",
                        format!("'{raw}' is not an octal mode like 0660"),
                    )
                })?,
        };
        let socket = pick!(socket).unwrap_or_else(|| defaults.socket());
        if socket.as_os_str().is_empty() {
            return Err(invalid("socket", "the path is empty"));
        }
        let fs_path = pick!(fs_path).unwrap_or_else(|| defaults.fs_path());
        if fs_path.as_os_str().is_empty() {
            return Err(invalid("fs-path", "the path is empty"));
        }

        let s3 = if storage == StorageKind::S3 {
            let bucket = non_empty(pick!(s3_bucket))
                .ok_or_else(|| invalid("s3-bucket", "is required with --storage s3"))?;
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !valid_bucket {
                return Err(invalid(
                    "s3-bucket",
                    format!(
                        "'{bucket}' is not a valid bucket name (3-63 lowercase letters, digits, '-' or '.')"
                    ),
                ));
            }
            Some(S3Config {
                bucket,
                region: non_empty(pick!(s3_region)).unwrap_or_else(|| "us-east-1".into()),
                endpoint: check_url("s3-endpoint", pick!(s3_endpoint))?,
                access_key: non_empty(pick!(s3_access_key)),
                secret_key: non_empty(pick!(s3_secret_key)),
                skip_bucket_creation: pick!(s3_skip_bucket_creation).unwrap_or(false),
                upload_expiry_secs: pick!(s3_upload_expiry),
                lease_ttl_secs: match pick!(s3_lease_ttl).unwrap_or(120) {
                    ttl @ 1..=86_400 => ttl,
                    ttl => {
                        return Err(invalid(
                            "s3-lease-ttl",
                            format!("{ttl} is outside 1..=86400 seconds"),
                        ));
                    }
                },
                gc_grace_secs: match pick!(s3_gc_grace).unwrap_or(3600) {
                    grace @ 0..=2_592_000 => grace,
                    grace => {
                        return Err(invalid(
                            "s3-gc-grace",
                            format!("{grace} is more than 2592000 seconds (30 days)"),
                        ));
                    }
                },
            })
        } else {
            None
        };

        let push_chunk_mib = pick!(push_chunk_mib).unwrap_or(32);
        if push_chunk_mib > 4096 {
            return Err(invalid(
                "push-chunk-mib",
                format!("{push_chunk_mib} is more than 4096 (4 GiB chunks)"),
            ));
        }
        let transfer_parallel = pick!(transfer_parallel).unwrap_or(3);
        if !(1..=32).contains(&transfer_parallel) {
            return Err(invalid(
                "transfer-parallel",
                format!("{transfer_parallel} is outside 1..=32"),
            ));
        }

        let metrics_listen = match non_empty(pick!(metrics_listen)) {
            None => None,
            Some(raw) => {
                let addr: std::net::SocketAddr = raw.trim().parse().map_err(|_| {
                    invalid(
                        "metrics-listen",
                        format!("'{raw}' is not an address like 127.0.0.1:9464 or [::1]:9464"),
                    )
                })?;
                if !addr.ip().is_loopback() && !pick!(metrics_allow_remote).unwrap_or(false) {
                    return Err(invalid(
                        "metrics-listen",
                        format!(
                            "{addr} is not a loopback address; metrics tell what runs on this host, so serving them to other hosts needs --metrics-allow-remote"
                        ),
                    ));
                }
                Some(addr)
            }
        };

        Ok(Self {
            socket,
            registry_url: check_url("registry-url", pick!(registry_url))?,
            auth_url: check_url("auth-url", pick!(auth_url))?,
            registry_ca_file: pick!(registry_ca_file).filter(|p| !p.as_os_str().is_empty()),
            storage,
            fs_path,
            log_level,
            log_format,
            s3,
            hypervisor,
            libvirt_uri: non_empty(pick!(libvirt_uri))
                .unwrap_or_else(|| defaults.libvirt_uri().into()),
            virt_type,
            socket_group: non_empty(pick!(socket_group)),
            socket_mode,
            push_chunk_bytes: push_chunk_mib * 1024 * 1024,
            transfer_parallel,
            metrics_listen,
        })
    }

    /// Parses the process's arguments and environment.
    pub fn from_args(args: impl IntoIterator<Item = OsString>) -> Result<Self, ConfigOrUsage> {
        let flags = Flags::try_parse_from(normalize_args(args)).map_err(ConfigOrUsage::Usage)?;
        Self::resolve(flags, &Defaults::from_env()).map_err(ConfigOrUsage::Config)
    }
}

/// Either a usage problem (clap prints it, with --help and --version) or a
/// bad value.
#[derive(Debug)]
pub enum ConfigOrUsage {
    Usage(clap::Error),
    Config(ConfigError),
}

#[cfg(test)]
mod tests;
