//! Crash safety: 100 imports, pulls and removals against a real `vmrd`, which
//! is killed with SIGKILL at random points (some while a large import is
//! streaming into a temporary or an S3 multipart upload) and restarted. After
//! every third restart and at the end `vmr system check` must find no corrupt
//! blob, no dangling manifest and no leftover temporary (nor unfinished S3
//! upload), and after every restart every image whose import or pull was
//! acknowledged before the kill must still be there with its content.
//!
//! Seeded: `VMR_TORTURE_SEED=<n>` replays a run; the seed is printed at the
//! start and again on failure. Needs the test registry on `VMR_TEST_REGISTRY`
//! (anonymous) and, for the S3 run, the test S3 server (a fresh bucket,
//! deleted at the end).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmr_proto::v1 as pb;
use vmr_tests::Daemon;
use vmr_tests::fixtures::{raw, sha256_bytes, sha256_file};
use vmr_tests::registry::{service_env, unique_repo};
use vmr_tests::s3::S3Bucket;

const OPERATIONS: usize = 100;
/// The disk of an import that gets killed: large enough to be mid-write for
/// a while, and above the S3 part size (16 MiB) so a multipart upload is open.
const BIG_DISK: usize = 20 << 20;
/// A full `vmr system check` (every blob re-hashed, through S3 on S3) after
/// every this many kills, and at the end; acknowledged images are inspected
/// after every kill.
const CHECK_EVERY: usize = 3;

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Prints the seed again when the test fails, so the run can be replayed.
struct SeedReport(u64);

impl Drop for SeedReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("torture test failed with VMR_TORTURE_SEED={}", self.0);
        }
    }
}

fn seed() -> u64 {
    match std::env::var("VMR_TORTURE_SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("VMR_TORTURE_SEED={text}: not a number")),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        }
    }
}

fn vmfile(dir: &Path, name: &str, disk: &str) -> PathBuf {
    let path = dir.join(format!("{}.vmfile.yaml", name.replace('/', "_")));
    let text = format!(
        "apiVersion: vmregistry.io/v1alpha1\nmetadata:\n  name: \"{name}\"\n\
         spec:\n  diskImage: \"{disk}\"\n  diskFormat: raw\n  resources:\n    cpu: 1\n    memory: 64MiB\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// What must survive: reference -> (expected first layer digest or manifest
/// digest, which of the two).
#[derive(Default)]
struct Acknowledged(BTreeMap<String, Expect>);

#[derive(Clone)]
enum Expect {
    Layer(String),
    Manifest(String),
}

struct Torture {
    daemon: Daemon,
    work: tempfile::TempDir,
    temp_dir: PathBuf,
    rng: Rng,
    acknowledged: Acknowledged,
    /// Pushed images: (reference to pull, manifest digest).
    remote: Vec<(String, String)>,
    kills: usize,
    mid_write_kills: usize,
}

impl Torture {
    fn import_args(&self, file: &Path) -> Vec<String> {
        vec![
            "import".into(),
            "-f".into(),
            file.to_str().unwrap().into(),
            "-t".into(),
            "t".into(),
        ]
    }

    fn vmr_child(&self, args: &[String]) -> Child {
        Command::new(vmr_tests::bin("vmr"))
            .arg("--socket")
            .arg(&self.daemon.socket)
            .args(args)
            .env("XDG_CONFIG_HOME", self.daemon.dir.path().join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn has_temporaries(&self) -> bool {
        std::fs::read_dir(&self.temp_dir)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false)
    }

    /// Runs `args` while the daemon is killed: either after a random delay
    /// or once a temporary shows the write is under way. Returns whether the
    /// command was acknowledged (succeeded) before the kill.
    fn run_and_kill(&mut self, args: &[String]) -> bool {
        let mut child = self.vmr_child(args);
        if self.rng.below(2) == 0 {
            // Mid-write: wait for the spool temporary (or the end).
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline
                && !self.has_temporaries()
                && child.try_wait().unwrap().is_none()
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_millis(self.rng.below(50)));
            if child.try_wait().unwrap().is_none() {
                self.mid_write_kills += 1;
            }
        } else {
            std::thread::sleep(Duration::from_millis(self.rng.below(400)));
        }
        self.daemon.crash_and_restart();
        self.kills += 1;
        child.wait_with_output().unwrap().status.success()
    }

    fn import(&mut self, i: usize, kill: bool) {
        let name = format!("torture/imp-{i}");
        let len = if kill {
            BIG_DISK
        } else {
            (64 << 10) + self.rng.below(1 << 20) as usize
        };
        let disk = raw(self.work.path(), &format!("{i}.raw"), len, self.rng.next());
        let file = vmfile(self.work.path(), &name, &format!("{i}.raw"));
        let args = self.import_args(&file);
        let acknowledged = if kill {
            self.run_and_kill(&args)
        } else {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.daemon.vmr(&args).ok();
            true
        };
        if acknowledged {
            self.acknowledged
                .0
                .insert(format!("{name}:t"), Expect::Layer(sha256_file(&disk)));
        }
        std::fs::remove_file(disk).unwrap();
    }

    fn pull(&mut self, kill: bool) {
        let (reference, digest) =
            self.remote[self.rng.below(self.remote.len() as u64) as usize].clone();
        let args = vec!["pull".to_owned(), reference.clone()];
        let acknowledged = if kill {
            self.run_and_kill(&args)
        } else {
            self.daemon.vmr(&["pull", &reference]).ok();
            true
        };
        if acknowledged {
            self.acknowledged
                .0
                .insert(reference, Expect::Manifest(digest));
        }
    }

    /// Removes a pulled image and prunes, so later pulls download again.
    fn remove_pulled(&mut self) {
        let (reference, _) = self.remote[self.rng.below(self.remote.len() as u64) as usize].clone();
        if self.acknowledged.0.remove(&reference).is_some() {
            self.daemon.vmr(&["rmi", &reference]).ok();
        }
        // Untagged images and unreferenced blobs only: imports stay.
        self.daemon.vmr(&["image", "prune"]).ok();
    }

    /// `vmr system check` is clean (when `full`) and every acknowledged
    /// image is intact.
    async fn verify(&self, after: &str, full: bool) {
        if full {
            self.check(after);
        }
        self.acknowledged_are_intact(after).await;
    }

    fn check(&self, after: &str) {
        let check = self.daemon.vmr(&["system", "check", "-o", "json"]);
        assert!(
            check.success(),
            "{after}: system check failed:\n{}\n{}\ndaemon log:\n{}",
            check.stdout(),
            check.stderr(),
            tail(&self.daemon.log_text())
        );
        let json: serde_json::Value = serde_json::from_str(&check.stdout()).unwrap();
        assert_eq!(json["clean"], true, "{after}: {json}");
        assert_eq!(json["problems"], serde_json::json!([]), "{after}: {json}");
    }

    async fn acknowledged_are_intact(&self, after: &str) {
        let mut client = self.daemon.client().await;
        for (reference, expect) in &self.acknowledged.0 {
            let inspected = client
                .inspect_image(pb::InspectImageRequest {
                    reference: reference.clone(),
                })
                .await
                .unwrap_or_else(|e| panic!("{after}: acknowledged {reference} is gone: {e}"))
                .into_inner();
            match expect {
                Expect::Layer(digest) => {
                    let manifest: serde_json::Value =
                        serde_json::from_slice(&inspected.manifest).unwrap();
                    assert_eq!(
                        manifest["layers"][0]["digest"],
                        digest.as_str(),
                        "{after}: {reference}"
                    );
                }
                Expect::Manifest(digest) => {
                    assert_eq!(
                        &sha256_bytes(&inspected.manifest),
                        digest,
                        "{after}: {reference}"
                    );
                }
            }
        }
    }
}

fn tail(log: &str) -> &str {
    let start = log.len().saturating_sub(4000);
    let start = (start..log.len())
        .find(|&i| log.is_char_boundary(i))
        .unwrap_or(0);
    &log[start..]
}

async fn torture(backend_flags: &[String], temp_dir: &str) {
    let Some(registry) = service_env("VMR_TEST_REGISTRY") else {
        return;
    };
    let seed = seed();
    let _report = SeedReport(seed);
    eprintln!("torture: VMR_TORTURE_SEED={seed}");
    let registry_url = format!("http://{registry}");
    let mut flags: Vec<&str> = backend_flags.iter().map(String::as_str).collect();
    flags.extend(["--registry-url", &registry_url]);
    let daemon = Daemon::start_with(&flags);
    let temp_dir = daemon.store.join(temp_dir);
    let mut t = Torture {
        daemon,
        work: tempfile::tempdir().unwrap(),
        temp_dir,
        rng: Rng(seed),
        acknowledged: Acknowledged::default(),
        remote: Vec::new(),
        kills: 0,
        mid_write_kills: 0,
    };

    // Images to pull: pushed, then removed locally.
    let repo = unique_repo("torture");
    for i in 0..3 {
        let name = format!("{repo}-{i}");
        let len = (1 << 20) + t.rng.below(3 << 20) as usize;
        raw(t.work.path(), &format!("push{i}.raw"), len, t.rng.next());
        let file = vmfile(t.work.path(), &name, &format!("push{i}.raw"));
        let args = t.import_args(&file);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        t.daemon.vmr(&args).ok();
        let pushed = t
            .daemon
            .vmr(&["push", "-o", "json", &format!("{name}:t")])
            .json();
        let digest = pushed["digest"].as_str().unwrap().to_owned();
        t.daemon.vmr(&["rmi", &format!("{name}:t")]).ok();
        t.remote.push((format!("{name}:t"), digest));
    }
    t.daemon.vmr(&["image", "prune", "--all"]).ok();

    for i in 0..OPERATIONS {
        // At least every tenth operation, and some more at random, is killed.
        let kill = i % 10 == 5 || t.rng.below(25) == 0;
        let op = t.rng.below(100);
        let what = if op < 60 {
            t.import(i, kill);
            "import"
        } else if op < 85 || kill {
            // A removal is not one of the killed operations: a scheduled
            // kill makes it a pull, so every tenth operation really is killed.
            t.pull(kill);
            "pull"
        } else {
            t.remove_pulled();
            "remove"
        };
        if kill {
            let full = t.kills.is_multiple_of(CHECK_EVERY);
            t.verify(&format!("operation {i} ({what}) killed"), full)
                .await;
        }
    }
    t.daemon.crash_and_restart();
    t.verify("the end", true).await;
    eprintln!(
        "torture: {OPERATIONS} operations, {} kills ({} mid-write), {} images acknowledged",
        t.kills,
        t.mid_write_kills,
        t.acknowledged.0.len()
    );
    assert!(t.kills >= 10);
    assert!(!t.acknowledged.0.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_filesystem_store_survives_kill_9_at_random_points() {
    let flags = ["--hypervisor", "fake"].map(String::from);
    torture(&flags, "tmp").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_s3_store_survives_kill_9_at_random_points() {
    let Some(bucket) = S3Bucket::fresh("vmr-torture") else {
        return;
    };
    let mut flags = bucket.daemon_flags();
    // Every unfinished upload is this daemon's own: abort them all at start.
    flags.extend(["--s3-upload-expiry", "0"].map(String::from));
    torture(&flags, "cache/tmp").await;
}
