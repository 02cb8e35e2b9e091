//! VMs and a compose project whose images live on S3 (the real SeaweedFS of
//! `scripts/test-services.sh`, fake hypervisor): the hypervisor reads a
//! verified local copy of the disk, made once, reused by later VMs (the
//! same file: inode and change time), and checked again when the file was
//! written to since: kept when its bytes still match, fetched again when
//! they do not.

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use vmr_tests::Daemon;
use vmr_tests::fixtures::sha256_file;
use vmr_tests::s3::S3Bucket;

use super::support::*;

const PROJECT: &str = "apiVersion: v1
name: s3p
services:
  web: {image: tests/s3tiny:1}
";

/// (inode, change time in ns): a file written to or replaced differs.
fn file_identity(path: &Path) -> (u64, i64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.ino(), m.ctime() * 1_000_000_000 + m.ctime_nsec())
}

/// Overwrites the byte at `offset` with `value`, in place.
fn poke(path: &Path, offset: u64, value: u8) {
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&[value]).unwrap();
    file.sync_all().unwrap();
}

fn run(daemon: &Daemon, name: &str) {
    daemon
        .vmr(&["run", "tests/s3tiny:1", "--name", name, "--memory", "64MiB"])
        .ok();
}

#[test]
fn vms_and_compose_on_s3_use_a_verified_local_copy_made_once_and_checked_after_a_change() {
    let Some(bucket) = S3Bucket::fresh("vmr-e2e-vm") else {
        return;
    };
    let flags = bucket.daemon_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    // One host imports; another, with nothing cached, runs the VMs.
    let importer = Daemon::start_with(&flags);
    let digest = import(&importer, "tests/s3tiny", "1", "16M");
    drop(importer);
    let daemon = Daemon::start_with(&flags);
    let copy = daemon
        .store
        .join("cache/sha256")
        .join(digest.trim_start_matches("sha256:"));
    assert!(!copy.exists(), "nothing is cached before a VM needs it");

    // The first VM makes the local copy, with the disk's exact bytes.
    run(&daemon, "s3-a");
    assert_eq!(sha256_file(&copy), digest);
    let made = file_identity(&copy);

    // A second VM and a compose service reuse it: not fetched again.
    run(&daemon, "s3-b");
    assert_eq!(file_identity(&copy), made, "the copy was made again");
    let project = Project::new(PROJECT, &[]);
    let events = up(&daemon, &project);
    assert_eq!(kinds(&events, "web"), ["creating", "starting", "started"]);
    assert_eq!(file_identity(&copy), made, "compose made the copy again");

    // Written to but still the same bytes: checked again and kept.
    let first = std::fs::read(&copy).unwrap()[0];
    poke(&copy, 0, first);
    let touched = file_identity(&copy);
    assert_ne!(touched, made);
    run(&daemon, "s3-c");
    assert_eq!(file_identity(&copy), touched, "an intact copy was replaced");
    assert!(
        !daemon
            .log_text()
            .contains("cached copy of a blob is corrupt")
    );

    // Corrupted on disk: found out and replaced by a good copy, for a VM
    // and for compose alike.
    poke(&copy, 100, !std::fs::read(&copy).unwrap()[100]);
    run(&daemon, "s3-d");
    assert_eq!(sha256_file(&copy), digest, "the corrupt copy was used");
    daemon.wait_for_log("the cached copy of a blob is corrupt; fetching it again");

    poke(&copy, 200, !std::fs::read(&copy).unwrap()[200]);
    compose(&daemon, &project, &["down"]).ok();
    let events = up(&daemon, &project);
    assert_eq!(kinds(&events, "web"), ["creating", "starting", "started"]);
    assert_eq!(sha256_file(&copy), digest, "compose used the corrupt copy");

    compose(&daemon, &project, &["down"]).ok();
    for vm in ["s3-a", "s3-b", "s3-c", "s3-d"] {
        daemon.vmr(&["rm", "-f", vm]).ok();
    }
}
