//! Several `vmrd` on one S3 bucket (docs/shared-bucket.md), on both test S3
//! servers (SeaweedFS and moto): a collection on one host never deletes
//! what another imports, pulls or runs; a killed host's leases expire and
//! a later collection reclaims what nothing references; and a seeded random
//! mix of imports, pulls, tags, removals and prunes over two and three hosts,
//! with `kill -9` of random daemons, leaves every acknowledged image whole
//! and runnable on every host and `vmr system check` clean everywhere.
//!
//! Seeded: `VMR_SHARED_SEED=<n>` replays a mixed run (printed at the start).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmr_tests::Daemon;
use vmr_tests::fixtures::{raw, sha256_file, vmfile};
use vmr_tests::registry::{service_env, unique_repo};
use vmr_tests::s3::{S3Bucket, S3Server};

/// The lease TTL of the tests that wait for a lease to expire: short, but
/// several renewals (every quarter) long, so a busy machine does not expire
/// a live daemon's record.
const SHORT_TTL: &str = "8";

/// The re-imports `prune_loop_with_no_grace_during_imports` races with
/// collections.
const ROUNDS: u64 = 4;

fn bucket(server: S3Server, prefix: &str) -> S3Bucket {
    S3Bucket::fresh_on(server, prefix).expect("an S3 test server")
}

fn host(bucket: &S3Bucket, extra: &[&str]) -> Daemon {
    let mut flags = bucket.daemon_flags();
    flags.extend(extra.iter().map(ToString::to_string));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Daemon::start_with(&flags)
}

fn import(daemon: &Daemon, dir: &Path, name: &str, len: usize, seed: u64) -> String {
    let disk = format!("{}.raw", name.replace(['/', ':'], "_"));
    let path = raw(dir, &disk, len, seed);
    let file = vmfile(dir, name, &disk, "raw");
    daemon
        .vmr(&["import", "-f", file.to_str().unwrap(), "-t", "t"])
        .ok();
    let digest = sha256_file(&path);
    std::fs::remove_file(path).unwrap();
    digest
}

fn manifest_digest(daemon: &Daemon, reference: &str) -> String {
    let inspected = daemon.vmr(&["inspect", "-o", "json", reference]).json();
    inspected["image"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no digest in {inspected}"))
        .to_owned()
}

fn assert_clean(daemon: &Daemon, after: &str) {
    let check = daemon.vmr(&["system", "check", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_str(&check.stdout()).unwrap_or_else(|e| {
        panic!(
            "{after}: no JSON ({e}): {} {}",
            check.stdout(),
            check.stderr()
        )
    });
    assert_eq!(json["problems"], serde_json::json!([]), "{after}: {json}");
    assert!(check.success(), "{after}: {json}");
}

/// Waits (bounded) until `what` holds.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether some host's lease record names `digest` as an image a VM uses.
fn recorded_image(bucket: &S3Bucket, digest: &str) -> bool {
    recorded(bucket, "images", digest)
}

/// Whether some host's lease record names `digest` in its list `field`.
fn recorded(bucket: &S3Bucket, field: &str, digest: &str) -> bool {
    bucket.objects("leases/").iter().any(|(_, bytes)| {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|r| r[field].as_array().cloned())
            .is_some_and(|listed| listed.iter().any(|i| i == digest))
    })
}

fn vmr_child(daemon: &Daemon, args: &[String]) -> Child {
    Command::new(vmr_tests::bin("vmr"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(args)
        .env("XDG_CONFIG_HOME", daemon.dir.path().join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

// ---------------------------------------------------------------- the exact case

/// Host B prunes in a loop while host A imports a 512 MiB disk: the import
/// is acknowledged, whole on both hosts, runnable on B, and the bucket clean.
fn prune_loop_during_a_large_import(server: S3Server) {
    let bucket = bucket(server, "vmr-shared-big");
    let a = host(&bucket, &[]);
    let b = host(&bucket, &[]);
    let work = tempfile::tempdir().unwrap();
    let disk = raw(work.path(), "big.raw", 512 << 20, 7);
    let file = vmfile(work.path(), "shared/big", "big.raw", "raw");
    let expected = sha256_file(&disk);
    let mut importing = vmr_child(
        &a,
        &["import", "-f", file.to_str().unwrap(), "-t", "v1"].map(String::from),
    );
    let mut prunes = 0;
    while importing.try_wait().unwrap().is_none() {
        b.vmr(&["image", "prune"]).ok();
        prunes += 1;
    }
    let out = importing.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(prunes > 0);
    for (name, daemon) in [("A", &a), ("B", &b)] {
        let inspected = daemon
            .vmr(&["inspect", "-o", "json", "shared/big:v1"])
            .json();
        assert!(
            inspected.to_string().contains(&expected),
            "{name}: {inspected}"
        );
        assert_clean(daemon, name);
    }
    b.vmr(&["run", "shared/big:v1", "--name", "big"]).ok();
    b.vmr(&["image", "prune"]).ok();
    assert_clean(&b, "after a last prune");
}

#[test]
fn a_prune_loop_on_one_host_spares_a_512_mib_import_on_another_on_seaweedfs() {
    prune_loop_during_a_large_import(S3Server::Seaweed);
}

#[test]
fn a_prune_loop_on_one_host_spares_a_512_mib_import_on_another_on_moto() {
    prune_loop_during_a_large_import(S3Server::Moto);
}

/// Keeps two `vmr image prune` in flight on `daemon` (the GC mutex runs them
/// one after the other: always a collection in progress), reaping finished
/// ones; every prune must succeed. Returns how many finished.
fn keep_pruning(daemon: &Daemon, prunes: &mut Vec<Child>) -> usize {
    let mut finished = 0;
    let mut running = Vec::new();
    for mut prune in prunes.drain(..) {
        if prune.try_wait().unwrap().is_none() {
            running.push(prune);
            continue;
        }
        let out = prune.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "prune failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        finished += 1;
    }
    while running.len() < 2 {
        running.push(vmr_child(daemon, &["image".into(), "prune".into()]));
    }
    *prunes = running;
    finished
}

/// With no grace window on host B, only leases protect a blob: host A leases
/// a disk before its upload becomes visible, so none of B's collections finds
/// it unleased. The hard case: the disk is already in the bucket,
/// unreferenced and old (A removed its image, A's grace window spared the
/// blob, A's record no longer names it), and A imports it again while B's
/// collection that listed it as old is still reading the tags (many, so that
/// takes a while). A lease published only after the upload came too late for
/// that collection, which deleted the disk A had just uploaded.
fn prune_loop_with_no_grace_during_imports(server: S3Server, many_tags: usize) {
    let bucket = bucket(server, "vmr-shared-nograce");
    // A TTL of 20 s renews A's record every 5 s: a released digest leaves
    // it soon, and a slow server does not expire it.
    let a = host(&bucket, &["--s3-lease-ttl", "20"]);
    let b = host(&bucket, &["--s3-gc-grace", "0"]);
    let work = tempfile::tempdir().unwrap();
    // Many tags (of one small image, written as tags are) for B to read.
    import(&a, work.path(), "shared/many", 64 << 10, 99);
    let manifest = bucket
        .objects("manifests/shared/many/t/")
        .pop()
        .expect("the tag's manifest")
        .1;
    bucket.write_objects(
        (0..many_tags)
            .map(|n| {
                let key = format!("manifests/shared/many/t{n:03}/manifest.json");
                (key, Some(manifest.clone()))
            })
            .collect(),
    );
    let mut pruned = 0;
    let mut imported = Vec::new();
    for i in 0..ROUNDS {
        let name = format!("shared/nograce-{i}");
        let disk = format!("nograce-{i}.raw");
        // Small: its import ends well within one of B's collections.
        let path = raw(work.path(), &disk, (256 << 10) + (i as usize) * 4096, i);
        let file = vmfile(work.path(), &name, &disk, "raw");
        let file = file.to_str().unwrap();
        let expected = sha256_file(&path);
        a.vmr(&["import", "-f", file, "-t", "first"]).ok();
        a.vmr(&["rmi", &format!("{name}:first")]).ok();
        let uploaded = bucket
            .last_modified(&format!("blobs/sha256/{}", &expected["sha256:".len()..]))
            .expect("the disk, spared by A's grace window");
        // Old by the server's clock (ages are whole seconds there) and named
        // by no record: the next collection on B may delete it.
        wait_for(
            "the disk is old and unleased",
            Duration::from_secs(30),
            || {
                bucket.server_now() > uploaded + Duration::from_secs(1)
                    && !recorded(&bucket, "digests", &expected)
            },
        );
        let mut importing = vmr_child(&a, &["import", "-f", file, "-t", "t"].map(String::from));
        let mut prunes = Vec::new();
        while importing.try_wait().unwrap().is_none() {
            pruned += keep_pruning(&b, &mut prunes);
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = importing.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "import {i} on A failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for prune in prunes {
            assert!(prune.wait_with_output().unwrap().status.success());
            pruned += 1;
        }
        std::fs::remove_file(path).unwrap();
        imported.push((format!("{name}:t"), expected));
    }
    assert!(pruned > 0);
    for (name, daemon) in [("A", &a), ("B", &b)] {
        for (reference, disk) in &imported {
            let inspected = daemon.vmr(&["inspect", "-o", "json", reference]).json();
            assert!(
                inspected.to_string().contains(disk.as_str()),
                "{name}: {inspected}"
            );
        }
        assert_clean(daemon, name);
    }
    b.vmr(&["run", &imported[0].0, "--name", "fresh"]).ok();
}

#[test]
fn a_prune_loop_with_no_grace_window_spares_imports_on_another_host_on_seaweedfs() {
    prune_loop_with_no_grace_during_imports(S3Server::Seaweed, 300);
}

#[test]
fn a_prune_loop_with_no_grace_window_spares_imports_on_another_host_on_moto() {
    // Fewer tags: moto reads each more slowly.
    prune_loop_with_no_grace_during_imports(S3Server::Moto, 100);
}

// ---------------------------------------------------------------- VMs and dead hosts

/// A VM on host A keeps its image through `rmi` and `image prune --all` on
/// host B (whose grace window is zero, so only A's record protects it).
fn vm_image_survives_elsewhere(server: S3Server) {
    let bucket = bucket(server, "vmr-shared-vm");
    // A short TTL renews the record every two seconds: the wait below is short.
    let a = host(&bucket, &["--s3-lease-ttl", SHORT_TTL]);
    let b = host(&bucket, &["--s3-gc-grace", "0"]);
    let work = tempfile::tempdir().unwrap();
    let disk = import(&a, work.path(), "shared/vm", 256 << 10, 3);
    let digest = manifest_digest(&a, "shared/vm:t");
    a.vmr(&["run", "shared/vm:t", "--name", "keeper"]).ok();
    wait_for(
        "A's record names the VM's image",
        Duration::from_secs(30),
        || recorded_image(&bucket, &digest),
    );

    let refused = b.vmr(&["rmi", "shared/vm:t"]).err();
    assert!(refused.contains("used by a VM"), "{refused}");
    b.vmr(&["rmi", "-f", "shared/vm:t"]).ok();
    b.vmr(&["image", "prune", "--all"]).ok();

    let by_digest = format!("shared/vm@{digest}");
    let inspected = b.vmr(&["inspect", "-o", "json", &by_digest]).json();
    assert!(inspected.to_string().contains(&disk), "{inspected}");
    b.vmr(&["run", &by_digest, "--name", "again"]).ok();
    assert_clean(&a, "A");
    assert_clean(&b, "B");
}

#[test]
fn an_image_a_vm_uses_on_one_host_survives_rmi_and_prune_all_on_another_on_seaweedfs() {
    vm_image_survives_elsewhere(S3Server::Seaweed);
}

#[test]
fn an_image_a_vm_uses_on_one_host_survives_rmi_and_prune_all_on_another_on_moto() {
    vm_image_survives_elsewhere(S3Server::Moto);
}

/// Host A is killed while its record protects an untagged image (a VM's):
/// a collection on B keeps it while the record lives, and removes it and
/// the expired record once the record is older than the TTL.
fn dead_host_lease_expires(server: S3Server) {
    let bucket = bucket(server, "vmr-shared-dead");
    let mut a = host(&bucket, &["--s3-lease-ttl", SHORT_TTL]);
    let b = host(
        &bucket,
        &["--s3-gc-grace", "0", "--s3-lease-ttl", SHORT_TTL],
    );
    let work = tempfile::tempdir().unwrap();
    import(&a, work.path(), "shared/dead", 128 << 10, 5);
    let digest = manifest_digest(&a, "shared/dead:t");
    a.vmr(&["run", "shared/dead:t", "--name", "doomed"]).ok();
    wait_for(
        "A's record names the VM's image",
        Duration::from_secs(30),
        || recorded_image(&bucket, &digest),
    );
    b.vmr(&["rmi", "-f", "shared/dead:t"]).ok();
    a.kill();

    let by_digest = format!("shared/dead@{digest}");
    b.vmr(&["image", "prune"]).ok();
    b.vmr(&["inspect", &by_digest]).ok();

    wait_for(
        "B's check reports A's expired lease",
        Duration::from_secs(60),
        || b.vmr(&["system", "check"]).stdout().contains("expired"),
    );
    let pruned = b.vmr(&["image", "prune", "-o", "json"]).json();
    assert!(pruned.to_string().contains(&digest), "{pruned}");
    let gone = b.vmr(&["inspect", &by_digest]).err();
    assert!(gone.contains("no VM or image named"), "{gone}");
    assert!(
        bucket
            .objects("leases/")
            .iter()
            .all(|(_, r)| !String::from_utf8_lossy(r).contains(&digest))
    );
    assert_clean(&b, "after the collection");
}

#[test]
fn a_killed_hosts_lease_pins_its_blobs_until_it_expires_then_another_host_collects_them_on_seaweedfs()
 {
    dead_host_lease_expires(S3Server::Seaweed);
}

#[test]
fn a_killed_hosts_lease_pins_its_blobs_until_it_expires_then_another_host_collects_them_on_moto() {
    dead_host_lease_expires(S3Server::Moto);
}

// ---------------------------------------------------------------- the mixed run

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn seed() -> u64 {
    std::env::var("VMR_SHARED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        })
}

/// One operation in flight on one host, and what it acknowledges.
struct Running {
    host: usize,
    child: Child,
    /// Reference and disk digest it makes exist (import, pull, tag).
    adds: Option<(String, String)>,
    /// Reference it removes (rmi).
    removes: Option<String>,
}

fn mixed(hosts: usize, server: S3Server, rounds: usize) {
    let Some(registry) = service_env("VMR_TEST_REGISTRY") else {
        return;
    };
    let seed = seed();
    eprintln!("shared bucket: VMR_SHARED_SEED={seed}");
    let mut rng = Rng(seed);
    let bucket = bucket(server, "vmr-shared-mix");
    let registry_url = format!("http://{registry}");
    let flags = [
        "--registry-url",
        &registry_url,
        "--s3-gc-grace",
        "0",
        "--s3-lease-ttl",
        "20",
    ];
    let mut daemons: Vec<Daemon> = (0..hosts).map(|_| host(&bucket, &flags)).collect();
    let work = tempfile::tempdir().unwrap();

    // Images to pull: pushed from host 0, then removed from the bucket.
    let repo = unique_repo("shared");
    let mut remote = Vec::new();
    for i in 0..2 {
        let name = format!("{repo}-{i}");
        let disk = import(
            &daemons[0],
            work.path(),
            &name,
            300 << 10,
            rng.below(u64::MAX),
        );
        daemons[0].vmr(&["push", &format!("{name}:t")]).ok();
        daemons[0].vmr(&["rmi", &format!("{name}:t")]).ok();
        remote.push((format!("{name}:t"), disk));
    }

    // reference -> disk digest, of every acknowledged image.
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    let mut kills = 0;
    let mut failures = 0;
    for round in 0..rounds {
        let mut running = Vec::new();
        // A reference one operation of the round removes, no other adds
        // (the order of the two would be unknown).
        let mut removed_now: Vec<String> = Vec::new();
        let mut added_now: Vec<String> = Vec::new();
        for (h, daemon) in daemons.iter().enumerate() {
            let op = rng.below(100);
            let mut removes = None;
            let mut adds = None;
            let args: Vec<String> = if op < 40 || acknowledged.is_empty() {
                let name = format!("mix/r{round}-h{h}");
                let disk = format!("r{round}-h{h}.raw");
                let path = raw(
                    work.path(),
                    &disk,
                    (32 << 10) + rng.below(256 << 10) as usize,
                    rng.below(u64::MAX),
                );
                let file = vmfile(work.path(), &name, &disk, "raw");
                adds = Some((format!("{name}:t"), sha256_file(&path)));
                ["import", "-f", file.to_str().unwrap(), "-t", "t"]
                    .map(String::from)
                    .to_vec()
            } else if op < 55
                && let (reference, disk) = remote[rng.below(remote.len() as u64) as usize].clone()
                && !removed_now.contains(&reference)
            {
                added_now.push(reference.clone());
                adds = Some((reference.clone(), disk));
                vec!["pull".into(), reference]
            } else if op < 70 {
                let keys: Vec<_> = acknowledged.keys().cloned().collect();
                let source = keys[rng.below(keys.len() as u64) as usize].clone();
                let target = format!("mix/tag-r{round}-h{h}:t");
                adds = Some((target.clone(), acknowledged[&source].clone()));
                vec!["tag".into(), source, target]
            } else if op < 85
                && let keys = acknowledged.keys().cloned().collect::<Vec<_>>()
                && let victim = keys[rng.below(keys.len() as u64) as usize].clone()
                && !added_now.contains(&victim)
            {
                removed_now.push(victim.clone());
                removes = Some(victim.clone());
                vec!["rmi".into(), victim]
            } else {
                vec!["image".into(), "prune".into()]
            };
            let child = vmr_child(daemon, &args);
            running.push(Running {
                host: h,
                child,
                adds,
                removes,
            });
        }
        // Now and then one host is killed mid-operation.
        let victim =
            (round % 3 == 1 || rng.below(6) == 0).then(|| rng.below(hosts as u64) as usize);
        if let Some(v) = victim {
            std::thread::sleep(Duration::from_millis(rng.below(300)));
            daemons[v].crash_and_restart();
            kills += 1;
        }
        for run in running {
            let out = run.child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.success() {
                if let Some((reference, disk)) = run.adds {
                    acknowledged.insert(reference, disk);
                }
                if let Some(reference) = run.removes {
                    acknowledged.remove(&reference);
                }
            } else {
                failures += 1;
                if let Some(reference) = run.removes {
                    // A removal cut short may or may not have untagged.
                    acknowledged.remove(&reference);
                    daemons[run.host].vmr(&["rmi", &reference]);
                }
                let killed = victim == Some(run.host);
                assert!(
                    killed || (!stderr.trim().is_empty() && !stderr.contains("panick")),
                    "round {round}: an operation on host {} failed without a clear error: {stderr}",
                    run.host
                );
            }
        }
        // A tag removed on one host while another tagged it away: what a
        // tag names must still be whole, checked now on a random host.
        let checker = &daemons[rng.below(hosts as u64) as usize];
        for (reference, disk) in &acknowledged {
            let inspected = checker.vmr(&["inspect", "-o", "json", reference]).json();
            assert!(
                inspected.to_string().contains(disk.as_str()),
                "round {round} (seed {seed}): {reference}: {inspected}"
            );
        }
    }
    for (i, daemon) in daemons.iter().enumerate() {
        assert_clean(daemon, &format!("host {i} at the end (seed {seed})"));
    }
    // Every acknowledged image runs on every host.
    for (i, daemon) in daemons.iter().enumerate() {
        for (n, reference) in acknowledged.keys().enumerate() {
            daemon
                .vmr(&["run", reference, "--name", &format!("run-{i}-{n}")])
                .ok();
        }
    }
    daemons.iter_mut().for_each(Daemon::stop);
    eprintln!(
        "shared bucket: {hosts} hosts, {rounds} rounds, {kills} kills, {failures} failed operations, {} images acknowledged",
        acknowledged.len()
    );
    assert!(kills > 0, "seed {seed}: no daemon was killed");
}

#[test]
fn two_hosts_on_one_bucket_keep_every_acknowledged_image_through_kill_9_on_seaweedfs() {
    mixed(2, S3Server::Seaweed, 24);
}

#[test]
fn three_hosts_on_one_bucket_keep_every_acknowledged_image_through_kill_9_on_moto() {
    mixed(3, S3Server::Moto, 16);
}
