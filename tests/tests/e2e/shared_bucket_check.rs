//! `vmr system check` on a bucket several `vmrd` share (docs/shared-bucket.md),
//! on both test S3 servers: run on one host, it reports what every host left
//! in the bucket (a dangling manifest, a corrupt blob, the unfinished upload
//! of an import killed mid-upload, the expired lease of the killed host,
//! named) and nothing for a healthy bucket, where other hosts' live leases
//! are not problems.

use std::time::Duration;

use serde_json::Value;
use vmr_tests::Daemon;
use vmr_tests::fixtures::{raw, vmfile};
use vmr_tests::s3::{S3Bucket, S3Server};

use super::shared_bucket::{bucket, host, import, vmr_child, wait_for};

/// Long enough that a busy machine does not expire a live host's record
/// (renewed every quarter), short enough to wait for a dead host's.
const TTL: &str = "10";

/// The id of the host whose lease record in the bucket `daemon` wrote (the
/// record names its writer's pid).
fn host_id(bucket: &S3Bucket, daemon: &Daemon) -> String {
    let pid = daemon.pid().expect("a running daemon");
    bucket
        .objects("leases/")
        .iter()
        .filter_map(|(_, bytes)| serde_json::from_slice::<Value>(bytes).ok())
        .find(|record| record["pid"] == pid)
        .and_then(|record| record["host"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no lease record of pid {pid} in the bucket"))
}

/// `vmr system check -o json` on `daemon`: its exit status and answer.
fn check(daemon: &Daemon) -> (bool, Value) {
    let out = daemon.vmr(&["system", "check", "-o", "json"]);
    let json = serde_json::from_str(&out.stdout())
        .unwrap_or_else(|e| panic!("no JSON ({e}): {} {}", out.stdout(), out.stderr()));
    (out.success(), json)
}

/// The (kind, subject) of every problem, sorted.
fn problems(json: &Value) -> Vec<(String, String)> {
    let mut out: Vec<_> = json["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems list in {json}"))
        .iter()
        .map(|p| {
            let field = |name: &str| p[name].as_str().unwrap_or_default().to_owned();
            (field("kind"), field("subject"))
        })
        .collect();
    out.sort();
    out
}

/// Starts an import of a 256 MiB disk on `a` and kills `a` while the disk's
/// multipart upload is in the bucket, unfinished. Returns that upload as the
/// store names it.
fn kill_mid_upload(bucket: &S3Bucket, a: &mut Daemon, work: &std::path::Path) -> String {
    raw(work, "killed.raw", 256 << 20, 11);
    let file = vmfile(work, "check/killed", "killed.raw", "raw");
    let mut importing = vmr_child(
        a,
        &["import", "-f", file.to_str().unwrap(), "-t", "t"].map(String::from),
    );
    let mut uploads = Vec::new();
    wait_for(
        "the killed import's upload is in the bucket",
        Duration::from_secs(180),
        || {
            uploads = bucket.unfinished_uploads();
            let finished = uploads.is_empty() && importing.try_wait().unwrap().is_some();
            assert!(!finished, "the import ended before its upload was seen");
            !uploads.is_empty()
        },
    );
    a.kill();
    let out = importing.wait_with_output().unwrap();
    assert!(!out.status.success(), "the import survived its daemon");
    assert_eq!(bucket.unfinished_uploads(), uploads, "after the kill");
    uploads.pop().unwrap()
}

fn check_reports_every_hosts_problems(server: S3Server) {
    let bucket = bucket(server, "vmr-shared-check");
    // B, the checker, calls every unfinished upload a leftover (a young one
    // is otherwise another host's upload in flight); it starts first, as it
    // aborts the stale ones at start.
    let b = host(&bucket, &["--s3-lease-ttl", TTL, "--s3-upload-expiry", "0"]);
    let mut a = host(&bucket, &["--s3-lease-ttl", TTL]);
    // C stays up: its lease is live throughout, never a problem.
    let c = host(&bucket, &["--s3-lease-ttl", TTL]);
    let work = tempfile::tempdir().unwrap();
    let dangling = import(&a, work.path(), "check/dangling", 64 << 10, 1);
    let corrupt = import(&a, work.path(), "check/corrupt", 64 << 10, 2);
    import(&a, work.path(), "check/fine", 64 << 10, 3);
    c.vmr(&["image", "ls"]).ok();
    let (a_id, c_id) = (host_id(&bucket, &a), host_id(&bucket, &c));

    // Healthy, with three live leases: zero problems, and B checked A's
    // images (a disk, a config and a manifest blob each).
    let (clean, json) = check(&b);
    assert_eq!(problems(&json), [], "{json}");
    assert!(clean, "{json}");
    assert_eq!(json["clean"], true, "{json}");
    assert_eq!(
        (&json["blobsChecked"], &json["manifestsChecked"]),
        (&Value::from(9), &Value::from(3)),
        "{json}"
    );
    let text = b.vmr(&["system", "check"]).ok();
    assert!(
        text.contains("Store is clean: 9 blobs and 3 manifests"),
        "{text}"
    );

    // Damage done by and to host A: one disk blob deleted, another's bytes
    // changed, an import killed mid-upload, and with it A's lease left to
    // expire.
    let blob_key = |digest: &str| format!("blobs/sha256/{}", &digest["sha256:".len()..]);
    bucket.write_objects(vec![
        (blob_key(&dangling), None),
        (blob_key(&corrupt), Some(b"not the disk".to_vec())),
    ]);
    let upload = kill_mid_upload(&bucket, &mut a, work.path());
    let a_lease = format!("leases/{a_id}.json");
    wait_for(
        "B's check reports A's lease expired",
        Duration::from_secs(90),
        || problems(&check(&b).1).iter().any(|(_, s)| *s == a_lease),
    );

    let (clean, json) = check(&b);
    assert!(!clean, "{json}");
    assert_eq!(json["clean"], false, "{json}");
    assert_eq!(
        problems(&json),
        [
            ("corrupt-blob".to_owned(), corrupt.clone()),
            (
                "dangling-manifest-blob".to_owned(),
                "check/dangling:t".to_owned()
            ),
            ("expired-lease".to_owned(), a_lease.clone()),
            ("leftover-temporary".to_owned(), upload.clone()),
        ],
        "{json}"
    );
    let messages: Vec<&str> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["message"].as_str())
        .collect();
    let expired = messages
        .iter()
        .find(|m| m.contains("expired lease"))
        .unwrap_or_else(|| panic!("no expired lease message in {json}"));
    assert!(expired.contains(&format!("host {a_id}")), "{expired}");
    assert!(
        !json.to_string().contains(&c_id),
        "C's live lease reported: {json}"
    );
    let out = b.vmr(&["system", "check"]);
    let table = out.stdout();
    assert_eq!(out.0.status.code(), Some(1), "{}", out.stderr());
    for expected in [
        "expired-lease",
        a_lease.as_str(),
        "corrupt-blob",
        "s3-upload:",
    ] {
        assert!(
            table.contains(expected),
            "{expected} missing from:\n{table}"
        );
    }
    assert!(out.stderr().contains("4 problem(s)"), "{}", out.stderr());

    // A collection on C removes the expired lease; the rest stays reported.
    c.vmr(&["image", "prune"]).ok();
    let after: Vec<String> = problems(&check(&b).1).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        after,
        [
            "corrupt-blob",
            "dangling-manifest-blob",
            "leftover-temporary"
        ],
        "after C's collection"
    );
}

#[test]
fn system_check_on_one_host_reports_every_hosts_problems_in_the_bucket_on_seaweedfs() {
    check_reports_every_hosts_problems(S3Server::Seaweed);
}

#[test]
fn system_check_on_one_host_reports_every_hosts_problems_in_the_bucket_on_moto() {
    check_reports_every_hosts_problems(S3Server::Moto);
}
