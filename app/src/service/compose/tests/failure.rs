//! Invalid projects, failures half-way, cleanup, and the project lock.

use super::*;
use vmr_ports::NetworkDriver;

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_stops_later_levels_and_down_cleans_up() {
    let world = World::new().await;
    world.fake.fail_next(
        FakeCall::StartVm,
        Some("dia-b"),
        HypervisorError::Backend("qemu: could not open disk".into()),
    );
    let (events, result) = world.up(source(DIAMOND, &[])).await;
    let error = result.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Internal);
    assert!(
        error.message.contains("service b failed") && error.message.contains("could not open disk"),
        "{}",
        error.message
    );
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.kind == ComposeEventKind::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].service.as_deref(), Some("b"));
    assert!(failed[0].message.contains("could not open disk"));
    assert!(events.iter().all(|e| e.kind != ComposeEventKind::Done));
    // a (same level) finished; c and d (next level) were never begun.
    assert_eq!(world.vm_names().await, ["dia-a", "dia-b"]);
    assert!(kinds_of(&events, "c").is_empty() && kinds_of(&events, "d").is_empty());
    assert_eq!(world.state("dia-b").await, VmState::Created);

    // A second up picks up where the first stopped.
    let events = world.up_ok(source(DIAMOND, &[])).await;
    use ComposeEventKind::*;
    assert_eq!(kinds_of(&events, "a"), [Unchanged]);
    assert_eq!(kinds_of(&events, "b"), [Starting, Started]);
    assert_eq!(kinds_of(&events, "c"), [Creating, Starting, Started]);

    let outcome = world.compose.down(source(DIAMOND, &[])).await.unwrap();
    assert_eq!(outcome.removed_vms, ["dia-a", "dia-b", "dia-c", "dia-d"]);
    assert!(world.vm_names().await.is_empty());
    assert!(world.runtime_entries().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_creation_leaves_nothing_and_down_after_half_an_up_is_exact() {
    let world = World::new().await;
    world.fake.fail_next(
        FakeCall::DefineVm,
        Some("dia-a"),
        HypervisorError::Backend("no space".into()),
    );
    let (_, result) = world.up(source(DIAMOND, &[])).await;
    assert!(result.unwrap_err().message.contains("service a failed"));
    assert_eq!(world.vm_names().await, ["dia-b"]);
    assert_eq!(world.runtime_entries(), ["dia-b"]);
    // A leftover directory of a service (a crash mid-creation) goes too.
    std::fs::create_dir_all(world.tmp.path().join("runtime/dia-c")).unwrap();
    let outcome = world.compose.down(source(DIAMOND, &[])).await.unwrap();
    assert_eq!(outcome.removed_vms, ["dia-b"]);
    assert!(world.runtime_entries().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_created_for_an_invalid_project() {
    let world = World::new().await;
    let before = world.fake.calls().len();
    // A file error.
    let cycle = "services:\n  a: {image: tests/tiny:1, dependsOn: [b]}\n  b: {image: tests/tiny:1, dependsOn: [a]}\n";
    let e = world.compose.up(source(cycle, &[])).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("a -> b -> a"), "{}", e.message);
    // A missing image, after a network that would have been created.
    let missing = "name: p\nnetworks:\n  n: {mode: isolated, subnet: 10.9.0.0/24}\nservices:\n  a: {image: tests/tiny:1, networks: [n]}\n  b: {image: nope/nothing:1}\n";
    let e = world.compose.up(source(missing, &[])).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(e.field.as_deref(), Some("services.b.image"));
    assert!(
        e.message.contains("services.b.image") && e.message.contains("nope/nothing:1"),
        "{}",
        e.message
    );
    // A missing external network.
    let external = "name: p\nnetworks:\n  shared: {external: true}\nservices:\n  a: {image: tests/tiny:1, networks: [shared]}\n";
    let e = world.compose.up(source(external, &[])).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("networks.shared"), "{}", e.message);
    // A network of the same name that belongs to no project.
    world
        .fake
        .define_network(&NetworkDefinition {
            spec: vmr_domain::network::NetworkSpec::from_parts(
                "p-n",
                "isolated",
                Some("10.9.0.0/24"),
                None,
                None,
                None,
                false,
                None,
                None,
            )
            .unwrap(),
            project: None,
        })
        .await
        .unwrap();
    let calls_with_network = world.fake.calls().len();
    let e = world
        .compose
        .up(source(
            missing
                .replace("  b: {image: nope/nothing:1}\n", "")
                .as_str(),
            &[],
        ))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(e.message.contains("not part of project p"), "{}", e.message);
    assert_eq!(world.changes_since(calls_with_network), []);
    let changes: Vec<_> = world
        .changes_since(before)
        .into_iter()
        .filter(|(call, _)| *call != FakeCall::DefineNetwork)
        .collect();
    assert_eq!(changes, []);
    assert!(world.vm_names().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn down_and_ps_work_without_the_named_files() {
    let world = World::new().await;
    world.up_ok(ziti()).await;
    // The user-data file is gone: the client sends what it could read.
    let without = source(ZITI, &[]);
    assert!(world.compose.config(without.clone()).await.is_err());
    let status = world.compose.ps(without.clone()).await.unwrap();
    assert_eq!(status.project, "ziti");
    assert_eq!(status.services.len(), 2);
    let outcome = world.compose.down(without).await.unwrap();
    assert_eq!(outcome.removed_vms.len(), 2);
    assert!(world.vm_names().await.is_empty());
    assert!(world.network_names().await.is_empty());
    // A file that is not YAML names no project: nothing is guessed.
    let e = world
        .compose
        .down(source("name: [", &[]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_up_or_down_per_project_at_a_time() {
    let world = World::new().await;
    world
        .fake
        .set_delay(FakeCall::StartVm, Duration::from_millis(400));
    let first = world.compose.up(source(DIAMOND, &[])).await.unwrap();
    let second = world.compose.up(source(DIAMOND, &[])).await.err().unwrap();
    assert_eq!(second.kind, ErrorKind::FailedPrecondition);
    assert!(second.message.contains("project dia"), "{}", second.message);
    let down = world.compose.down(source(DIAMOND, &[])).await.unwrap_err();
    assert_eq!(down.kind, ErrorKind::FailedPrecondition);
    // Another project is not held up.
    world
        .up_ok(source(
            READY
                .replace("condition: ready", "condition: started")
                .as_str(),
            &[],
        ))
        .await;
    // Once the first finishes, the lock is free again.
    let events: Vec<_> = first.collect().await;
    assert!(events.iter().all(Result::is_ok));
    world.compose.down(source(DIAMOND, &[])).await.unwrap();
}
