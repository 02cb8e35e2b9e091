//! What `up` and `down` publish to the daemon's event source: the
//! project's networks and its end, in the order they happened, the project's
//! event after its VMs' (relayed from the hypervisor on its own time).

use futures::FutureExt;
use vmr_ports::driving::events::{EventFilter, EventUseCases, Watched};

use super::*;

/// `type:action:name` of what the watch holds now, without waiting.
fn published(watch: &mut vmr_ports::driving::events::EventStream) -> Vec<String> {
    let mut seen = Vec::new();
    while let Some(Some(item)) = watch.next().now_or_never() {
        match item {
            Watched::Event(e) => seen.push(format!("{}:{}:{}", e.kind, e.action, e.name)),
            Watched::Dropped { count } => seen.push(format!("dropped {count}")),
        }
    }
    seen
}

/// The events that are neither a VM's nor the project's, and whether the
/// project's came after every one of `vm_action` of its VMs.
fn split(seen: &[String], vm_action: &str) -> (Vec<String>, bool) {
    let others = seen
        .iter()
        .filter(|e| !e.starts_with("vm:"))
        .cloned()
        .collect();
    let project = seen.iter().position(|e| e.starts_with("compose:")).unwrap();
    let vms_before = [
        format!("vm:{vm_action}:ziti-ziti-server-a-1"),
        format!("vm:{vm_action}:ziti-ziti-server-a-2"),
    ]
    .iter()
    .all(|vm| seen[..project].contains(vm));
    (others, vms_before)
}

#[tokio::test(flavor = "multi_thread")]
async fn up_and_down_are_published_after_their_networks_and_vms() {
    let world = World::new().await;
    let mut watch = world.bus.watch(EventFilter::default()).unwrap();
    world.up_ok(ziti()).await;
    let (others, vms_before) = split(&published(&mut watch), "start");
    assert_eq!(
        others,
        [
            "network:create:ziti-ziti-private-a",
            "network:create:ziti-ziti-public",
            "compose:up:ziti",
        ]
    );
    assert!(vms_before, "compose up before its VMs started");
    let down = world.compose.down(ziti()).await.unwrap();
    assert_eq!(down.removed_vms.len(), 2);
    let seen = published(&mut watch);
    let (others, vms_before) = split(&seen, "destroy");
    let others: Vec<&String> = others
        .iter()
        .filter(|e| !e.starts_with("network:stop"))
        .collect();
    assert_eq!(
        others,
        [
            "network:remove:ziti-ziti-private-a",
            "network:remove:ziti-ziti-public",
            "compose:down:ziti",
        ],
        "{seen:?}"
    );
    assert!(
        vms_before,
        "compose down before its VMs were destroyed: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_up_or_down_publishes_no_project_event() {
    let world = World::new().await;
    let mut watch = world.bus.watch(EventFilter::default()).unwrap();
    // The image does not exist: refused before anything is created.
    let missing = source("services:\n  web:\n    image: tests/absent:1\n", &[]);
    assert!(world.compose.up(missing).await.is_err());
    // Not YAML: down cannot name a project and removes nothing.
    let garbage = source("services: [", &[]);
    assert!(world.compose.down(garbage).await.is_err());
    assert_eq!(published(&mut watch), Vec::<String>::new());
}
