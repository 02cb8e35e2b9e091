//! What `up` and `down` publish to the daemon's event source: the
//! project's networks and its end, in the order they happened.

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

#[tokio::test(flavor = "multi_thread")]
async fn up_and_down_are_published_after_their_networks() {
    let world = World::new().await;
    let mut watch = world.bus.watch(EventFilter::default()).unwrap();
    world.up_ok(ziti()).await;
    assert_eq!(
        published(&mut watch),
        [
            "network:create:ziti-ziti-private-a",
            "network:create:ziti-ziti-public",
            "compose:up:ziti",
        ]
    );
    let down = world.compose.down(ziti()).await.unwrap();
    assert_eq!(down.removed_vms.len(), 2);
    assert_eq!(
        published(&mut watch),
        [
            "network:remove:ziti-ziti-private-a",
            "network:remove:ziti-ziti-public",
            "compose:down:ziti",
        ]
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
