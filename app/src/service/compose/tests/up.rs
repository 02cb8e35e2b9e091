//! `up` and what it leaves: the steps, idempotency, concurrency, `ps`.

use super::*;
use vmr_ports::{NetworkDriver, VmDriver};

#[tokio::test(flavor = "multi_thread")]
async fn ziti_goes_up_idempotently_and_down_completely() {
    let world = World::new().await;
    let events = world.up_ok(ziti()).await;
    use ComposeEventKind::*;
    assert_eq!(
        kinds_of(&events, "ziti-server-a-1"),
        [Creating, Starting, Started]
    );
    assert_eq!(
        kinds_of(&events, "ziti-server-a-2"),
        [Creating, Starting, Started]
    );
    let created: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == NetworkCreated)
        .filter_map(|e| e.network.as_deref())
        .collect();
    assert_eq!(created, ["ziti-ziti-private-a", "ziti-ziti-public"]);
    assert_eq!(events.last().unwrap().kind, Done);
    // a-2 depends on a-1: it is created only after a-1 started.
    let at = |service: &str, kind| {
        events
            .iter()
            .find(|e| e.service.as_deref() == Some(service) && e.kind == kind)
            .unwrap()
            .at
    };
    assert!(at("ziti-server-a-2", Creating) >= at("ziti-server-a-1", Started));

    assert_eq!(
        world.vm_names().await,
        ["ziti-ziti-server-a-1", "ziti-ziti-server-a-2"]
    );
    let a2 = world
        .fake
        .inspect_vm(&"ziti-ziti-server-a-2".parse().unwrap())
        .await
        .unwrap()
        .record;
    assert_eq!(a2.state, VmState::Running);
    assert_eq!(a2.spec.memory.bytes(), 8 << 30);
    assert_eq!(a2.spec.cpu, 2);
    assert_eq!(a2.spec.labels.project.as_deref(), Some("ziti"));
    assert_eq!(a2.spec.labels.service.as_deref(), Some("ziti-server-a-2"));
    assert_eq!(a2.spec.restart_policy.as_str(), "on-failure");
    assert_eq!(
        a2.interfaces[0].ip.map(|ip| ip.to_string()).as_deref(),
        Some("192.168.70.11")
    );
    assert!(
        world
            .tmp
            .path()
            .join("runtime/ziti-ziti-server-a-2/cidata.iso")
            .is_file()
    );

    let status = world.compose.ps(ziti()).await.unwrap();
    assert_eq!(status.project, "ziti");
    let services: Vec<(&str, Option<VmState>)> = status
        .services
        .iter()
        .map(|s| (s.service.as_str(), s.vm.as_ref().map(|vm| vm.state)))
        .collect();
    assert_eq!(
        services,
        [
            ("ziti-server-a-1", Some(VmState::Running)),
            ("ziti-server-a-2", Some(VmState::Running))
        ]
    );

    // A second `up` changes nothing at all.
    let before = world.fake.calls().len();
    let events = world.up_ok(ziti()).await;
    assert_eq!(world.changes_since(before), []);
    assert_eq!(kinds_of(&events, "ziti-server-a-1"), [Unchanged]);
    assert_eq!(kinds_of(&events, "ziti-server-a-2"), [Unchanged]);
    assert!(
        events
            .iter()
            .filter(|e| e.network.is_some())
            .all(|e| e.kind == NetworkExists)
    );

    // down removes exactly the project, and a second down removes nothing.
    let outcome = world.compose.down(ziti()).await.unwrap();
    assert_eq!(
        outcome.removed_vms,
        ["ziti-ziti-server-a-1", "ziti-ziti-server-a-2"]
    );
    assert_eq!(
        outcome.removed_networks,
        ["ziti-ziti-private-a", "ziti-ziti-public"]
    );
    assert!(world.vm_names().await.is_empty());
    assert!(world.network_names().await.is_empty());
    assert!(world.runtime_entries().is_empty());
    let again = world.compose.down(ziti()).await.unwrap();
    assert!(again.removed_vms.is_empty() && again.removed_networks.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_service_is_recreated_and_a_stopped_one_started() {
    let world = World::new().await;
    world.up_ok(ziti()).await;
    let changed = ZITI.replacen("memory: \"8GiB\"", "memory: \"4GiB\"", 1);
    assert_ne!(changed, ZITI);
    let before = world.fake.calls().len();
    let events = world
        .up_ok(source(
            &changed,
            &[("./cloud-init/server-a-2.yaml", ZITI_USER_DATA)],
        ))
        .await;
    use ComposeEventKind::*;
    assert_eq!(
        kinds_of(&events, "ziti-server-a-1"),
        [Recreating, Starting, Started]
    );
    assert_eq!(kinds_of(&events, "ziti-server-a-2"), [Unchanged]);
    let touched: Vec<String> = world
        .changes_since(before)
        .into_iter()
        .filter(|(call, _)| {
            matches!(
                call,
                FakeCall::DefineVm | FakeCall::UndefineVm | FakeCall::StartVm | FakeCall::StopVm
            )
        })
        .map(|(call, target)| format!("{call:?} {target}"))
        .collect();
    assert_eq!(
        touched,
        [
            "StopVm ziti-ziti-server-a-1",
            "UndefineVm ziti-ziti-server-a-1",
            "DefineVm ziti-ziti-server-a-1",
            "StartVm ziti-ziti-server-a-1",
        ]
    );
    let a1 = world
        .fake
        .inspect_vm(&"ziti-ziti-server-a-1".parse().unwrap())
        .await
        .unwrap()
        .record;
    assert_eq!(a1.spec.memory.bytes(), 4 << 30);

    // A service whose guest powered off is started, not recreated; a
    // changed user-data file recreates its service.
    world
        .fake
        .simulate_guest_poweroff(&"ziti-ziti-server-a-1".parse().unwrap())
        .unwrap();
    let events = world
        .up_ok(source(
            &changed,
            &[(
                "./cloud-init/server-a-2.yaml",
                b"#cloud-config\nhostname: renamed\n".as_slice(),
            )],
        ))
        .await;
    assert_eq!(kinds_of(&events, "ziti-server-a-1"), [Starting, Started]);
    assert_eq!(
        kinds_of(&events, "ziti-server-a-2"),
        [Recreating, Starting, Started]
    );
    assert_eq!(world.state("ziti-ziti-server-a-1").await, VmState::Running);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_services_of_a_level_start_concurrently_and_levels_in_order() {
    let world = World::new().await;
    world
        .fake
        .set_delay(FakeCall::StartVm, Duration::from_millis(300));
    world.up_ok(source(DIAMOND, &[])).await;
    let starts = calls_of(&world.fake.calls(), FakeCall::StartVm);
    let start = |vm: &str| {
        starts
            .iter()
            .find(|c| c.target == format!("dia-{vm}"))
            .unwrap()
            .clone()
    };
    assert!(overlap(&start("a"), &start("b")), "{starts:#?}");
    assert!(overlap(&start("c"), &start("d")), "{starts:#?}");
    for later in ["c", "d"] {
        for earlier in ["a", "b"] {
            assert!(
                start(later).started >= start(earlier).finished,
                "{later} started before {earlier} was up: {starts:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn external_networks_are_used_and_never_removed() {
    let world = World::new().await;
    world
        .fake
        .define_network(&NetworkDefinition {
            spec: vmr_domain::network::NetworkSpec::from_parts(
                "shared",
                "nat",
                Some("10.77.0.0/24"),
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
    world
        .fake
        .start_network(&"shared".parse().unwrap())
        .await
        .unwrap();
    let yaml = "name: ext\nnetworks:\n  shared: {external: true}\nservices:\n  a: {image: tests/tiny:1, networks: [shared]}\n";
    let events = world.up_ok(source(yaml, &[])).await;
    assert!(events.iter().any(
        |e| e.network.as_deref() == Some("shared") && e.kind == ComposeEventKind::NetworkExists
    ));
    let outcome = world.compose.down(source(yaml, &[])).await.unwrap();
    assert_eq!(outcome.removed_vms, ["ext-a"]);
    assert!(outcome.removed_networks.is_empty());
    assert_eq!(world.network_names().await, ["shared"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn ps_lists_absent_services_and_project_vms_the_file_dropped() {
    let world = World::new().await;
    world.up_ok(source(DIAMOND, &[])).await;
    let smaller = "name: dia\nservices:\n  a: {image: tests/tiny:1}\n  e: {image: tests/tiny:1}\n";
    let status = world.compose.ps(source(smaller, &[])).await.unwrap();
    let services: Vec<(&str, bool)> = status
        .services
        .iter()
        .map(|s| (s.service.as_str(), s.vm.is_some()))
        .collect();
    assert_eq!(
        services,
        [
            ("a", true),
            ("e", false),
            ("b", true),
            ("c", true),
            ("d", true)
        ]
    );
}

#[tokio::test]
async fn config_returns_the_normalised_plan() {
    let world = World::new().await;
    let config = world.compose.config(ziti()).await.unwrap();
    assert_eq!(config.project, "ziti");
    assert!(
        config.normalized_yaml.contains("ziti-ziti-server-a-2"),
        "{}",
        config.normalized_yaml
    );
    let e = world
        .compose
        .config(source("services:\n  a: {image: x, memory: 1G}\n", &[]))
        .await
        .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("services.a.memory"));
}

#[tokio::test(flavor = "multi_thread")]
async fn services_naming_no_network_share_the_projects_default_network() {
    let world = World::new().await;
    // vmr-default's first subnet is taken: the project's default avoids it.
    world
        .fake
        .define_network(&NetworkDefinition {
            spec: vmr_domain::network::default_network_spec(
                "vmr-default",
                "10.89.0.0/24".parse().unwrap(),
            )
            .unwrap(),
            project: None,
        })
        .await
        .unwrap();
    let yaml = "name: dn\nservices:\n  a: {image: tests/tiny:1}\n  b: {image: tests/tiny:1}\n  c: {image: tests/tiny:1, networks: []}\n";
    let events = world.up_ok(source(yaml, &[])).await;
    assert!(
        events
            .iter()
            .any(|e| e.network.as_deref() == Some("dn-default")
                && e.kind == ComposeEventKind::NetworkCreated)
    );
    let default = world
        .fake
        .inspect_network(&"dn-default".parse().unwrap())
        .await
        .unwrap()
        .record;
    assert_eq!(default.project.as_deref(), Some("dn"));
    assert!(default.active);
    assert_eq!(default.spec.mode.to_string(), "nat");
    assert_eq!(
        default.spec.ipv4.unwrap().subnet.to_string(),
        "10.89.1.0/24"
    );
    for (vm, cards) in [("dn-a", 1), ("dn-b", 1), ("dn-c", 0)] {
        let record = world
            .fake
            .inspect_vm(&vm.parse().unwrap())
            .await
            .unwrap()
            .record;
        let networks: Vec<&str> = record
            .spec
            .networks
            .iter()
            .map(|n| n.network.as_str())
            .collect();
        assert_eq!(networks.len(), cards, "{vm}: {networks:?}");
        assert!(
            networks.iter().all(|n| *n == "dn-default"),
            "{vm}: {networks:?}"
        );
    }

    // A second up joins the network it made; nothing changes.
    let skip = world.fake.calls().len();
    let events = world.up_ok(source(yaml, &[])).await;
    assert!(
        events
            .iter()
            .any(|e| e.network.as_deref() == Some("dn-default")
                && e.kind == ComposeEventKind::NetworkExists)
    );
    assert!(
        world.changes_since(skip).is_empty(),
        "{:?}",
        world.changes_since(skip)
    );

    let outcome = world.compose.down(source(yaml, &[])).await.unwrap();
    assert_eq!(outcome.removed_networks, ["dn-default"]);
    assert_eq!(world.network_names().await, ["vmr-default"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_default_network_of_another_owner_is_not_joined() {
    let world = World::new().await;
    world
        .fake
        .define_network(&NetworkDefinition {
            spec: vmr_domain::network::default_network_spec(
                "dn-default",
                "10.89.5.0/24".parse().unwrap(),
            )
            .unwrap(),
            project: None,
        })
        .await
        .unwrap();
    let yaml = "name: dn\nservices:\n  a: {image: tests/tiny:1}\n";
    let Err(e) = world.compose.up(source(yaml, &[])).await else {
        panic!("up must refuse another owner's network");
    };
    assert!(e.message.contains("not part of project dn"), "{e:?}");
    assert!(world.vm_names().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_projects_brought_up_at_once_get_default_networks_of_their_own() {
    let world = World::new().await;
    // Both plans are observed before either network exists.
    world
        .fake
        .set_delay(FakeCall::DefineNetwork, Duration::from_millis(200));
    let one = "name: one\nservices:\n  a: {image: tests/tiny:1}\n";
    let two = "name: two\nservices:\n  a: {image: tests/tiny:1}\n";
    let (a, b) = tokio::join!(world.up(source(one, &[])), world.up(source(two, &[])));
    a.1.unwrap();
    b.1.unwrap();
    let mut subnets = Vec::new();
    for name in ["one-default", "two-default"] {
        let record = world
            .fake
            .inspect_network(&name.parse().unwrap())
            .await
            .unwrap()
            .record;
        subnets.push(record.spec.ipv4.unwrap().subnet.to_string());
    }
    subnets.sort();
    assert_eq!(subnets, ["10.89.0.0/24", "10.89.1.0/24"]);
}
