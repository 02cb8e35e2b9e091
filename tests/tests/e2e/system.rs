//! `vmr system check` against a real store: clean after imports, and each
//! kind of damage done behind the daemon's back is reported with exit 1.

use std::path::Path;

use serde_json::Value;
use vmr_proto::v1 as pb;
use vmr_tests::Daemon;
use vmr_tests::fixtures::{raw, sha256_file, vmfile};

/// Imports a raw disk as `repo:latest` and returns the disk's digest hex.
fn import(daemon: &Daemon, work: &Path, repo: &str, seed: u64) -> String {
    let disk = raw(work, &format!("{seed}.raw"), 64 * 1024 + 3, seed);
    let file = vmfile(work, repo, &disk.display().to_string(), "raw");
    daemon.vmr(&["import", "-f", file.to_str().unwrap()]).ok();
    sha256_file(&disk).trim_start_matches("sha256:").to_owned()
}

fn problems(json: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_store_checks_clean_and_each_kind_of_damage_is_reported() {
    let daemon = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let corrupt = import(&daemon, work.path(), "check/corrupt", 1);
    let dangling = import(&daemon, work.path(), "check/dangling", 2);
    import(&daemon, work.path(), "check/fine", 3);

    // Clean: three images, each a disk, a config and a manifest blob.
    let out = daemon.vmr(&["system", "check"]);
    let text = out.ok();
    assert!(
        text.contains("Store is clean: 9 blobs and 3 manifests"),
        "{text}"
    );
    let json = daemon.vmr(&["system", "check", "-o", "json"]).json();
    assert_eq!(json["clean"], true, "{json}");
    assert_eq!(json["blobsChecked"], 9);
    assert_eq!(json["manifestsChecked"], 3);
    assert_eq!(problems(&json), []);

    // Damage: flipped bytes in one disk blob, another disk blob deleted, a
    // temporary no writer owns, and a tag whose manifest is not JSON.
    let blobs = daemon.store.join("blobs/sha256");
    let mut bytes = std::fs::read(blobs.join(&corrupt)).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(blobs.join(&corrupt), bytes).unwrap();
    std::fs::remove_file(blobs.join(&dangling)).unwrap();
    std::fs::write(daemon.store.join("tmp/tmp-crashed"), b"half a blob").unwrap();
    let junk = daemon.store.join("manifests/check/junk/latest");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("manifest.json"), b"{not json").unwrap();

    let out = daemon.vmr(&["system", "check"]);
    assert_eq!(out.0.status.code(), Some(1), "{}", out.stderr());
    let table = out.stdout();
    assert!(table.starts_with("PROBLEM"), "{table}");
    for expected in [
        "corrupt-blob",
        "dangling-manifest-blob",
        "unparsable-manifest",
        "leftover-temporary",
        "check/dangling:latest",
        "tmp-crashed",
    ] {
        assert!(
            table.contains(expected),
            "{expected} missing from:\n{table}"
        );
    }
    assert!(out.stderr().contains("4 problem(s)"), "{}", out.stderr());

    let out = daemon.vmr(&["system", "check", "-o", "json"]);
    assert_eq!(out.0.status.code(), Some(1), "{}", out.stderr());
    let json: Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(json["clean"], false);
    assert_eq!(json["blobsChecked"], 8);
    assert_eq!(json["manifestsChecked"], 4);
    assert_eq!(
        problems(&json),
        [
            ("corrupt-blob".to_owned(), format!("sha256:{corrupt}")),
            (
                "dangling-manifest-blob".to_owned(),
                "check/dangling:latest".to_owned()
            ),
            ("leftover-temporary".to_owned(), "tmp-crashed".to_owned()),
            (
                "unparsable-manifest".to_owned(),
                "check/junk:latest".to_owned()
            ),
        ]
    );

    // The RPC answers the same; a check repairs nothing.
    let mut client = daemon.client().await;
    let answer = client
        .system_check(pb::SystemCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.problems.len(), 4);
    assert!(daemon.store.join("tmp/tmp-crashed").exists());
    assert!(blobs.join(&corrupt).exists());

    // A restart sweeps the temporary; the rest stays reported.
    let mut daemon = daemon;
    daemon.restart();
    let out = daemon.vmr(&["system", "check", "-o", "json"]);
    let json: Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(problems(&json).len(), 3, "{json}");
}
