use super::*;

fn defaults(root: bool) -> Defaults {
    Defaults {
        root,
        runtime_dir: Some(PathBuf::from("/run/user/1000")),
        data_home: Some(PathBuf::from("/home/u/.local/share")),
    }
}

fn flags(args: &[&str]) -> Flags {
    let mut all = vec!["vmrd"];
    all.extend_from_slice(args);
    Flags::try_parse_from(normalize_args(all.into_iter().map(OsString::from))).expect("flags parse")
}

fn resolve(args: &[&str]) -> Result<DaemonConfig, ConfigError> {
    DaemonConfig::resolve(flags(args), &defaults(true))
}

#[test]
fn root_defaults_match_the_original_daemon() {
    let config = DaemonConfig::resolve(Flags::default(), &defaults(true)).unwrap();
    assert_eq!(config.socket, PathBuf::from("/var/run/vm-registry.sock"));
    assert_eq!(config.fs_path, PathBuf::from("/var/lib/vm-registry"));
    assert_eq!(config.storage, StorageKind::Filesystem);
    assert_eq!(config.log_level, "info");
    assert_eq!(config.hypervisor, HypervisorKind::Libvirt);
    assert_eq!(config.libvirt_uri, "qemu:///system");
    assert_eq!(config.socket_mode, 0o660);
}

#[test]
fn rootless_defaults_use_xdg_directories() {
    let config = DaemonConfig::resolve(Flags::default(), &defaults(false)).unwrap();
    assert_eq!(
        config.socket,
        PathBuf::from("/run/user/1000/vm-registry.sock")
    );
    assert_eq!(
        config.fs_path,
        PathBuf::from("/home/u/.local/share/vm-registry")
    );
    assert_eq!(config.libvirt_uri, "qemu:///session");
}

#[test]
fn single_dash_flags_of_the_original_are_accepted() {
    let config = resolve(&[
        "-socket",
        "/tmp/a.sock",
        "-log-level=debug",
        "-storage",
        "memory",
    ])
    .unwrap();
    assert_eq!(config.socket, PathBuf::from("/tmp/a.sock"));
    assert_eq!(config.log_level, "debug");
    assert_eq!(config.storage, StorageKind::Memory);
}

#[test]
fn short_flags_are_left_alone() {
    let args = normalize_args(["vmrd", "-h", "--socket", "x", "-"].map(OsString::from));
    assert_eq!(
        args,
        ["vmrd", "-h", "--socket", "x", "-"].map(OsString::from)
    );
}

#[test]
fn bad_values_name_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--storage", "tape"],
            "--storage: 'tape' is not a storage backend",
        ),
        (
            &["--log-level", "loud"],
            "--log-level: 'loud' is not a level",
        ),
        (
            &["--log-format", "xml"],
            "--log-format: 'xml' is not text or json",
        ),
        (
            &["--hypervisor", "xen"],
            "--hypervisor: 'xen' is not a hypervisor",
        ),
        (
            &["--socket-mode", "999"],
            "--socket-mode: '999' is not an octal mode",
        ),
        (
            &["--registry-url", "ftp://x"],
            "--registry-url: 'ftp://x' is not an http",
        ),
        (
            &["--storage", "s3"],
            "--s3-bucket: is required with --storage s3",
        ),
        (
            &["--storage", "s3", "--s3-bucket", "A_B"],
            "--s3-bucket: 'A_B' is not a valid bucket name",
        ),
        (
            &["--virt-type", "xen"],
            "--virt-type: 'xen' is not kvm or qemu",
        ),
    ];
    for (args, expected) in cases {
        let message = resolve(args).unwrap_err().to_string();
        assert!(message.starts_with(expected), "{args:?}: got {message:?}");
    }
}

#[test]
fn flag_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vmrd.toml");
    std::fs::write(
        &file,
        "socket = \"/from/file.sock\"\nlog-level = \"warn\"\nstorage = \"s3\"\ns3-bucket = \"images\"\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let config = resolve(&["--config", file_arg, "--socket", "/from/flag.sock"]).unwrap();
    assert_eq!(config.socket, PathBuf::from("/from/flag.sock"));
    assert_eq!(config.log_level, "warn");
    let s3 = config.s3.unwrap();
    assert_eq!(s3.bucket, "images");
    assert_eq!(s3.region, "us-east-1");
    assert!(!s3.skip_bucket_creation);
}

#[test]
fn yaml_config_files_work_and_unknown_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("vmrd.yaml");
    std::fs::write(&good, "fs-path: /data/vmr\nhypervisor: fake\n").unwrap();
    let config = resolve(&["--config", good.to_str().unwrap()]).unwrap();
    assert_eq!(config.fs_path, PathBuf::from("/data/vmr"));
    assert_eq!(config.hypervisor, HypervisorKind::Fake);

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "sockett: /x\n").unwrap();
    let message = resolve(&["--config", bad.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with(&format!("--config {}", bad.display())),
        "{message}"
    );
    assert!(message.contains("sockett"), "{message}");
}

#[test]
fn skip_bucket_creation_is_a_switch() {
    let config = resolve(&[
        "--storage",
        "s3",
        "--s3-bucket",
        "vm-images",
        "--s3-skip-bucket-creation",
    ])
    .unwrap();
    assert!(config.s3.unwrap().skip_bucket_creation);
}

#[test]
fn metrics_are_off_unless_an_address_is_given() {
    assert_eq!(resolve(&[]).unwrap().metrics_listen, None);
    let config = resolve(&["--metrics-listen", "127.0.0.1:9464"]).unwrap();
    assert_eq!(
        config.metrics_listen,
        Some("127.0.0.1:9464".parse().unwrap())
    );
    let config = resolve(&["--metrics-listen", "[::1]:0"]).unwrap();
    assert_eq!(config.metrics_listen, Some("[::1]:0".parse().unwrap()));
}

#[test]
fn a_metrics_address_beyond_loopback_needs_the_explicit_flag() {
    let error = resolve(&["--metrics-listen", "0.0.0.0:9464"])
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("--metrics-listen: 0.0.0.0:9464 is not a loopback address")
            && error.contains("--metrics-allow-remote"),
        "{error}"
    );
    let config = resolve(&["--metrics-listen", "0.0.0.0:9464", "--metrics-allow-remote"]).unwrap();
    assert_eq!(config.metrics_listen, Some("0.0.0.0:9464".parse().unwrap()));
    let error = resolve(&["--metrics-listen", "localhost"])
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("--metrics-listen: 'localhost' is not an address like"),
        "{error}"
    );
}
