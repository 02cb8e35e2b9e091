//! The readiness gate: the console line, the timeout, a guest that stops.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn ready_waits_for_cloud_init_on_the_console() {
    let world = World::new().await;
    let log = world.console_log("rdy-db");
    let writer = tokio::spawn(async move {
        // Wait until the VM exists and runs, then "boot" it.
        for _ in 0..200 {
            if log.parent().unwrap().join("cidata.iso").exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let finished_at = std::time::SystemTime::now();
        tokio::fs::write(&log, format!("SeaBIOS\nLinux version 6.1\n{FINISHED}"))
            .await
            .unwrap();
        finished_at
    });
    let events = world.up_ok(source(READY, &[])).await;
    let finished_at = writer.await.unwrap();
    use ComposeEventKind::*;
    assert_eq!(
        kinds_of(&events, "db"),
        [Creating, Starting, Started, Ready]
    );
    let app_created = events
        .iter()
        .find(|e| e.service.as_deref() == Some("app") && e.kind == Creating)
        .unwrap()
        .at;
    assert!(
        app_created >= finished_at,
        "app was created before db was ready"
    );

    // Unchanged and already booted: ready at once.
    let events = world.up_ok(source(READY, &[])).await;
    assert_eq!(kinds_of(&events, "db"), [Unchanged, Ready]);

    // Restarted: the earlier boot's line does not count.
    world
        .fake
        .simulate_guest_poweroff(&"rdy-db".parse().unwrap())
        .unwrap();
    let log = world.console_log("rdy-db");
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut text = tokio::fs::read(&log).await.unwrap();
        text.extend_from_slice(FINISHED.as_bytes());
        tokio::fs::write(&log, text).await.unwrap();
        std::time::SystemTime::now()
    });
    let events = world.up_ok(source(READY, &[])).await;
    let finished_at = writer.await.unwrap();
    let ready_at = events
        .iter()
        .find(|e| e.service.as_deref() == Some("db") && e.kind == Ready)
        .unwrap()
        .at;
    assert!(ready_at >= finished_at);
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_times_out_clearly_and_stops_the_dependents() {
    let world = World::with_ready(Duration::from_millis(300)).await;
    let (events, result) = world.up(source(READY, &[])).await;
    let error = result.unwrap_err();
    assert!(
        error.message.contains("service db failed")
            && error.message.contains("not ready after")
            && error.message.contains("Cloud-init v."),
        "{}",
        error.message
    );
    assert!(kinds_of(&events, "app").is_empty());
    assert_eq!(world.vm_names().await, ["rdy-db"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_stops_before_it_is_ready_fails_at_once() {
    let world = World::new().await;
    let fake = world.fake.clone();
    let stopper = tokio::spawn(async move {
        let vm: VmName = "rdy-db".parse().unwrap();
        for _ in 0..200 {
            if fake.simulate_crash(&vm).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let (_, result) = world.up(source(READY, &[])).await;
    stopper.await.unwrap();
    let error = result.unwrap_err();
    assert!(
        error.message.contains("crashed before cloud-init finished"),
        "{}",
        error.message
    );
}
