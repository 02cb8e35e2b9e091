use futures::{FutureExt, StreamExt};
use vmr_ports::driving::ErrorKind;
use vmr_ports::driving::events::EventType;

use super::*;

fn image(action: &'static str, name: &str) -> NewEvent {
    NewEvent::new(EventType::Image, action, name)
}

/// What a watch holds right now, without waiting for more.
fn ready(stream: &mut EventStream) -> Vec<Watched> {
    let mut out = Vec::new();
    while let Some(Some(item)) = stream.next().now_or_never() {
        out.push(item);
    }
    out
}

fn names(items: &[Watched]) -> Vec<String> {
    items
        .iter()
        .map(|w| match w {
            Watched::Event(e) => format!("{}:{}:{}", e.sequence, e.action, e.name),
            Watched::Dropped { count } => format!("dropped {count}"),
        })
        .collect()
}

#[tokio::test]
async fn watchers_see_events_in_order_filtered_by_type_and_name() {
    let bus = EventBus::new();
    let mut all = bus.watch(EventFilter::default()).unwrap();
    let mut web = bus
        .watch(EventFilter {
            types: vec![EventType::Vm],
            names: vec!["web".into()],
            ..EventFilter::default()
        })
        .unwrap();
    bus.publish(image("import", "demo:1"));
    bus.publish(NewEvent::new(EventType::Vm, "start", "web").with("cause", "requested"));
    bus.publish(NewEvent::new(EventType::Vm, "start", "db"));
    bus.publish(NewEvent::new(EventType::Network, "create", "web"));
    assert_eq!(
        names(&ready(&mut all)),
        [
            "1:import:demo:1",
            "2:start:web",
            "3:start:db",
            "4:create:web"
        ]
    );
    let seen = ready(&mut web);
    assert_eq!(names(&seen), ["2:start:web"]);
    let Watched::Event(event) = &seen[0] else {
        panic!("{seen:?}")
    };
    assert_eq!(event.attributes["cause"], "requested");
}

#[tokio::test]
async fn a_watch_resumes_after_a_cursor_and_says_what_it_can_no_longer_replay() {
    let bus = EventBus::with_capacity(3, 16);
    for n in 1..=5 {
        bus.publish(image("tag", &format!("demo:{n}")));
    }
    let resume = |after| {
        bus.watch(EventFilter {
            since: Since::Sequence(after),
            ..EventFilter::default()
        })
    };
    let mut from_3 = resume(3).unwrap();
    assert_eq!(names(&ready(&mut from_3)), ["4:tag:demo:4", "5:tag:demo:5"]);
    // Event 2 is forgotten (the source keeps 3): a marker says so.
    let mut from_1 = resume(1).unwrap();
    assert_eq!(
        names(&ready(&mut from_1)),
        ["dropped 1", "3:tag:demo:3", "4:tag:demo:4", "5:tag:demo:5"]
    );
    bus.publish(image("tag", "demo:6"));
    assert_eq!(names(&ready(&mut from_1)), ["6:tag:demo:6"]);
    let Err(err) = resume(9) else {
        panic!("a cursor from the future was accepted")
    };
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("since"), "{err}");
}

#[tokio::test]
async fn a_watch_since_a_time_replays_what_happened_from_then() {
    let bus = EventBus::new();
    bus.publish(image("import", "old:1"));
    let from = SystemTime::now();
    bus.publish(image("import", "new:1"));
    let mut watch = bus
        .watch(EventFilter {
            since: Since::Time(from),
            ..EventFilter::default()
        })
        .unwrap();
    assert_eq!(names(&ready(&mut watch)), ["2:import:new:1"]);
}

#[tokio::test]
async fn a_watcher_that_does_not_read_loses_the_oldest_events_with_a_marker() {
    let bus = EventBus::with_capacity(16, 8);
    let mut slow = bus.watch(EventFilter::default()).unwrap();
    for n in 1..=100 {
        bus.publish(image("tag", &format!("demo:{n}")));
    }
    // What waits for the watcher is bounded by the backlog, not by how much
    // was published.
    assert_eq!(bus.live.len(), 8);
    let seen = names(&ready(&mut slow));
    assert_eq!(seen[0], "dropped 92");
    assert_eq!(
        seen[1..],
        (93..=100)
            .map(|n| format!("{n}:tag:demo:{n}"))
            .collect::<Vec<_>>()[..]
    );
}

#[test]
fn lifecycle_events_become_vm_events_with_their_cause() {
    let name: vmr_domain::vm::VmName = "web".parse().unwrap();
    let of = |kind| {
        vm_event(&LifecycleEvent {
            vm: name.clone(),
            kind,
            at: SystemTime::now(),
        })
    };
    let crashed = of(LifecycleKind::Stopped(StopReason::Crashed));
    assert_eq!((crashed.action, crashed.name.as_str()), ("die", "web"));
    assert_eq!(crashed.attributes["cause"], "crashed");
    let stopped = of(LifecycleKind::Stopped(StopReason::Requested));
    assert_eq!(stopped.action, "stop");
    assert_eq!(stopped.attributes["cause"], "requested");
    assert_eq!(of(LifecycleKind::Started).action, "start");
    assert_eq!(of(LifecycleKind::Defined).action, "create");
    assert_eq!(of(LifecycleKind::Undefined).action, "destroy");
}
