//! Import over a passed descriptor: `vmr import` hands vmrd the open disk
//! file over its socket (SCM_RIGHTS) and imports with the one-shot token it
//! gets back; the stream stays the fallback and the portable path.

use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tonic::Code;
use vmr_proto::v1 as pb;
use vmr_proto::v1::import_image_request::Part;
use vmr_tests::fixtures::{raw, sha256_file, vmfile};
use vmr_tests::{Daemon, VmrOutput, bin};

const MAGIC: &[u8] = b"VMRFD/1\n";

/// Sends the magic line with `fds` attached; returns the daemon's answer line.
fn pass_fds(socket: &Path, fds: &[RawFd]) -> String {
    let stream = UnixStream::connect(socket).unwrap();
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(MAGIC)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    assert_eq!(sent, MAGIC.len());
    let mut answer = String::new();
    (&stream).read_to_string(&mut answer).unwrap();
    answer
}

/// Passes an open file and returns its token.
fn token_for(socket: &Path, file: &std::fs::File) -> String {
    let answer = pass_fds(socket, &[file.as_raw_fd()]);
    let token = answer
        .strip_prefix("OK ")
        .and_then(|t| t.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("no token: {answer:?}"));
    assert_eq!(token.len(), 32, "128 bits in hex: {token}");
    token.to_owned()
}

fn raw_vmfile(name: &str) -> String {
    format!(
        "apiVersion: vmregistry.io/v1alpha1\nmetadata:\n  name: {name}\nspec:\n  \
         diskImage: d.raw\n  diskFormat: raw\n  resources: {{cpu: 1, memory: 1GiB}}\n"
    )
}

async fn import_with_token(
    daemon: &Daemon,
    name: &str,
    token: &str,
    disk_size: u64,
) -> Result<pb::ImportImageResponse, tonic::Status> {
    let header = pb::ImportHeader {
        vmfile: raw_vmfile(name),
        disk_size,
        disk_token: token.to_owned(),
        ..Default::default()
    };
    let request = pb::ImportImageRequest {
        part: Some(Part::Header(header)),
    };
    daemon
        .client()
        .await
        .import_image(tokio_stream::iter([request]))
        .await
        .map(tonic::Response::into_inner)
}

/// The disk blob's digest of an imported image, from its manifest.
async fn layer_digest(daemon: &Daemon, reference: &str) -> String {
    let inspected = daemon
        .client()
        .await
        .inspect_image(pb::InspectImageRequest {
            reference: reference.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    inspected.layers[0].digest.clone()
}

fn vmr_env(daemon: &Daemon, args: &[&str], env: &[(&str, &str)]) -> VmrOutput {
    let mut command = Command::new(bin("vmr"));
    command
        .arg("--socket")
        .arg(&daemon.socket)
        .args(args)
        .env("XDG_CONFIG_HOME", daemon.dir.path().join("config"))
        .env_remove("VMR_IMPORT_STREAM");
    for (key, value) in env {
        command.env(key, value);
    }
    VmrOutput(command.stdin(Stdio::null()).output().unwrap())
}

fn descriptors_received(daemon: &Daemon) -> usize {
    daemon
        .log_text()
        .matches("disk descriptor received")
        .count()
}

/// Nothing half-written: no temporary, and only the blobs of images that exist.
fn assert_store_clean(daemon: &Daemon, blobs: usize) {
    let files = daemon.store_files();
    assert!(
        !files.iter().any(|f| f.starts_with("tmp/")),
        "temporaries left: {files:?}"
    );
    let blob_count = files.iter().filter(|f| f.starts_with("blobs/")).count();
    assert_eq!(blob_count, blobs, "{files:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn vmr_import_passes_the_file_and_gets_the_streams_digest() {
    let daemon = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let disk = raw(work.path(), "disk.raw", 5 * 1024 * 1024 + 3, 7);
    let file = vmfile(work.path(), "fd/disk", "disk.raw", "raw");
    let want = sha256_file(&disk);

    vmr_env(
        &daemon,
        &["import", "-f", file.to_str().unwrap(), "-t", "fd"],
        &[],
    )
    .ok();
    assert_eq!(descriptors_received(&daemon), 1, "the fast path was taken");
    vmr_env(
        &daemon,
        &["import", "-f", file.to_str().unwrap(), "-t", "stream"],
        &[("VMR_IMPORT_STREAM", "1")],
    )
    .ok();
    assert_eq!(descriptors_received(&daemon), 1, "the stream was forced");

    assert_eq!(layer_digest(&daemon, "fd/disk:fd").await, want);
    assert_eq!(layer_digest(&daemon, "fd/disk:stream").await, want);
    // One disk blob, one config, one manifest per import (timestamps differ).
    assert_store_clean(&daemon, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_one_shot_and_a_bogus_one_is_refused() {
    let daemon = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let disk = raw(work.path(), "d.raw", 100_000, 3);
    let file = std::fs::File::open(&disk).unwrap();
    let token = token_for(&daemon.socket, &file);

    let imported = import_with_token(&daemon, "tok/once", &token, 100_000)
        .await
        .unwrap();
    assert_eq!(imported.references, ["tok/once:latest"]);
    assert_eq!(
        layer_digest(&daemon, "tok/once:latest").await,
        sha256_file(&disk)
    );

    let again = import_with_token(&daemon, "tok/twice", &token, 100_000)
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::PermissionDenied);
    assert!(
        again.message().contains("disk_token"),
        "{}",
        again.message()
    );
    assert!(
        again.message().contains("already used"),
        "{}",
        again.message()
    );

    let bogus = import_with_token(&daemon, "tok/bogus", &"0".repeat(32), 0)
        .await
        .unwrap_err();
    assert_eq!(bogus.code(), Code::PermissionDenied);
    assert!(
        bogus.message().contains("disk_token"),
        "{}",
        bogus.message()
    );

    // A wrong disk_size spends the token and says which field is wrong.
    let token = token_for(&daemon.socket, &file);
    let wrong = import_with_token(&daemon, "tok/size", &token, 99)
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
    assert!(
        wrong.message().starts_with("disk_size:"),
        "{}",
        wrong.message()
    );
    assert!(
        import_with_token(&daemon, "tok/size", &token, 0)
            .await
            .is_err()
    );
    assert_store_clean(&daemon, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_reads_the_descriptor_never_the_path() {
    let daemon = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let disk = raw(work.path(), "d.raw", 300_000, 5);
    let want = sha256_file(&disk);
    let file = std::fs::File::open(&disk).unwrap();
    let token = token_for(&daemon.socket, &file);
    // The path now names other bytes, then nothing at all: the import still
    // gets the file that was opened and passed.
    let other = raw(work.path(), "other.raw", 300_000, 6);
    std::fs::rename(&other, &disk).unwrap();
    std::fs::remove_file(&disk).unwrap();
    drop(file);

    import_with_token(&daemon, "path/never", &token, 300_000)
        .await
        .unwrap();
    assert_eq!(layer_digest(&daemon, "path/never:latest").await, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn pipes_directories_and_missing_descriptors_are_refused() {
    let daemon = Daemon::start();
    let work = tempfile::tempdir().unwrap();

    let (reader, _writer) = nix::unistd::pipe().unwrap();
    let answer = pass_fds(&daemon.socket, &[reader.as_raw_fd()]);
    assert_eq!(
        answer,
        "ERR the passed descriptor is a pipe, not a regular file\n"
    );

    let dir = std::fs::File::open(work.path()).unwrap();
    let answer = pass_fds(&daemon.socket, &[dir.as_raw_fd()]);
    assert_eq!(
        answer,
        "ERR the passed descriptor is a directory, not a regular file\n"
    );

    let answer = pass_fds(&daemon.socket, &[]);
    assert!(
        answer.starts_with("ERR ") && answer.contains("one descriptor"),
        "{answer}"
    );

    let write_only = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(work.path().join("w.raw"))
        .unwrap();
    std::fs::write(work.path().join("w.raw"), b"data").unwrap();
    let answer = pass_fds(&daemon.socket, &[write_only.as_raw_fd()]);
    assert_eq!(
        answer,
        "ERR the passed descriptor is not open for reading\n"
    );

    // The daemon still serves gRPC on the same socket.
    daemon.vmr(&["images"]).ok();
    assert_store_clean(&daemon, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_truncated_after_passing_fails_and_leaves_nothing() {
    let daemon = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let disk = raw(work.path(), "d.raw", 3 * 1024 * 1024, 9);
    let file = std::fs::File::open(&disk).unwrap();
    let token = token_for(&daemon.socket, &file);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(1024 * 1024 + 10)
        .unwrap();

    let err = import_with_token(&daemon, "cut/short", &token, 0)
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("ended after 1048586 of 3145728 bytes"),
        "{}",
        err.message()
    );
    assert_store_clean(&daemon, 0);
    let images = daemon.vmr(&["images", "-o", "json"]).json();
    assert_eq!(
        images["images"].as_array().map(Vec::len),
        Some(0),
        "{images}"
    );
}

/// Another user's token does not work for root. Needs root, where a child
/// can pass a file as `nobody`; fails (never passes by skipping) otherwise.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_bound_to_the_user_who_passed_the_file() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test passes a file as the user nobody: run the suite as root (scripts/test.sh does)"
    );
    let daemon = Daemon::start_with(&["--hypervisor", "fake", "--socket-mode", "0666"]);
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let disk = raw(work.path(), "d.raw", 4096, 1);
    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o644)).unwrap();

    // `nobody` opens the file itself and passes it.
    let script = "import os, socket, sys\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  s.connect(sys.argv[1])\n\
                  socket.send_fds(s, [b'VMRFD/1\\n'], [os.open(sys.argv[2], os.O_RDONLY)])\n\
                  sys.stdout.write(s.recv(200).decode())\n";
    let output = std::os::unix::process::CommandExt::uid(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&daemon.socket)
            .arg(&disk),
        65534,
    )
    .output()
    .unwrap();
    let answer = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{answer} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = answer
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("{answer}"))
        .trim_end();

    let err = import_with_token(&daemon, "uid/other", token, 4096)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("another user"), "{}", err.message());
    assert_store_clean(&daemon, 0);
}
