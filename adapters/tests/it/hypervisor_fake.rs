//! The hypervisor contract against the in-memory fake, plus what only the
//! fake offers: scripted failures, delays, call timestamps, and guests that
//! crash, power off or ignore ACPI.

use std::sync::Arc;
use std::time::Duration;

use vmr_adapters::fake::hypervisor::{FakeCall, FakeHypervisor};
use vmr_domain::network::NetworkMode;
use vmr_domain::vm::VmState;
use vmr_ports::{
    Hypervisor, HypervisorError, LifecycleKind, NetworkDefinition, StopMode, StopReason,
};
use vmr_tests::hypervisor_contract::{Fixture, expect_event, nic};

async fn fake(prefix: &str, octet: u8) -> Option<(Arc<dyn Hypervisor>, Fixture)> {
    Some((
        Arc::new(FakeHypervisor::new()),
        Fixture::new(&format!("ct-{prefix}"), octet, "br0", "eth0"),
    ))
}

vmr_tests::hypervisor_contract_tests!(fake);

#[tokio::test]
async fn the_fakes_scripted_disks_keep_the_overlay_rules() {
    let fx = Fixture::new("ct-disk", 207, "br0", "eth0");
    vmr_tests::hypervisor_contract::overlay_rules(Arc::new(FakeHypervisor::new()), &fx).await;
}

#[tokio::test]
async fn scripted_failure_hits_once() {
    let fake = Arc::new(FakeHypervisor::new());
    let hv: Arc<dyn Hypervisor> = fake.clone();
    let fx = Fixture::new("fk", 210, "br0", "eth0");
    let def = fx.definition("web", Vec::new()).await;
    hv.define_vm(&def).await.unwrap();
    fake.fail_next(
        FakeCall::StartVm,
        Some(def.spec.name.as_str()),
        HypervisorError::Backend("no more memory".into()),
    );
    assert_eq!(
        hv.start_vm(&def.spec.name).await,
        Err(HypervisorError::Backend("no more memory".into()))
    );
    // The failed call changed nothing, and the next one goes through.
    let state = hv.inspect_vm(&def.spec.name).await.unwrap().record.state;
    assert_eq!(state, VmState::Created);
    hv.start_vm(&def.spec.name).await.unwrap();
    let calls = fake.calls();
    let starts: Vec<_> = calls
        .iter()
        .filter(|c| c.call == FakeCall::StartVm)
        .collect();
    assert_eq!(starts.len(), 2);
    assert!(!starts[0].ok && starts[1].ok);
}

#[tokio::test]
async fn failure_for_another_target_waits() {
    let fake = Arc::new(FakeHypervisor::new());
    let hv: Arc<dyn Hypervisor> = fake.clone();
    let fx = Fixture::new("fk", 211, "br0", "eth0");
    let a = fx.definition("a", Vec::new()).await;
    let b = fx.definition("b", Vec::new()).await;
    hv.define_vm(&a).await.unwrap();
    hv.define_vm(&b).await.unwrap();
    fake.fail_next(
        FakeCall::StartVm,
        Some(b.spec.name.as_str()),
        HypervisorError::Unavailable("down".into()),
    );
    hv.start_vm(&a.spec.name).await.unwrap();
    assert!(matches!(
        hv.start_vm(&b.spec.name).await,
        Err(HypervisorError::Unavailable(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn delayed_calls_overlap_when_run_concurrently() {
    let fake = Arc::new(FakeHypervisor::new());
    let hv: Arc<dyn Hypervisor> = fake.clone();
    let fx = Fixture::new("fk", 212, "br0", "eth0");
    let a = fx.definition("a", Vec::new()).await;
    let b = fx.definition("b", Vec::new()).await;
    hv.define_vm(&a).await.unwrap();
    hv.define_vm(&b).await.unwrap();
    fake.set_delay(FakeCall::StartVm, Duration::from_secs(5));
    let (ra, rb) = tokio::join!(hv.start_vm(&a.spec.name), hv.start_vm(&b.spec.name));
    ra.unwrap();
    rb.unwrap();
    let starts: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| c.call == FakeCall::StartVm)
        .collect();
    assert_eq!(starts.len(), 2);
    assert!(starts[0].finished - starts[0].started >= Duration::from_secs(5));
    // Concurrent: the second started before the first finished.
    assert!(starts[1].started < starts[0].finished);
}

#[tokio::test]
async fn guest_side_stops_are_reported_with_their_reason() {
    let fake = Arc::new(FakeHypervisor::new());
    let hv: Arc<dyn Hypervisor> = fake.clone();
    let fx = Fixture::new("fk", 213, "br0", "eth0");
    let def = fx.definition("g", Vec::new()).await;
    let name = def.spec.name.clone();
    let mut events = hv.events();
    hv.define_vm(&def).await.unwrap();
    expect_event(&mut events, &name, LifecycleKind::Defined).await;

    hv.start_vm(&name).await.unwrap();
    expect_event(&mut events, &name, LifecycleKind::Started).await;
    fake.simulate_crash(&name).unwrap();
    expect_event(
        &mut events,
        &name,
        LifecycleKind::Stopped(StopReason::Crashed),
    )
    .await;
    assert_eq!(
        hv.inspect_vm(&name).await.unwrap().record.state,
        VmState::Crashed
    );
    // A crashed VM can be started again, not stopped.
    assert!(matches!(
        hv.stop_vm(&name, StopMode::Force).await,
        Err(HypervisorError::InvalidState { .. })
    ));

    hv.start_vm(&name).await.unwrap();
    expect_event(&mut events, &name, LifecycleKind::Started).await;
    fake.simulate_guest_poweroff(&name).unwrap();
    expect_event(
        &mut events,
        &name,
        LifecycleKind::Stopped(StopReason::Shutdown),
    )
    .await;

    hv.start_vm(&name).await.unwrap();
    expect_event(&mut events, &name, LifecycleKind::Started).await;
    fake.simulate_destroy(&name).unwrap();
    expect_event(
        &mut events,
        &name,
        LifecycleKind::Stopped(StopReason::Destroyed),
    )
    .await;
    assert!(fake.simulate_destroy(&name).is_err());
}

#[tokio::test(start_paused = true)]
async fn guest_ignoring_acpi_times_out_or_is_forced() {
    let fake = Arc::new(FakeHypervisor::new());
    let hv: Arc<dyn Hypervisor> = fake.clone();
    let fx = Fixture::new("fk", 214, "br0", "eth0");
    let def = fx.definition("deaf", Vec::new()).await;
    let name = def.spec.name.clone();
    hv.define_vm(&def).await.unwrap();
    hv.start_vm(&name).await.unwrap();
    fake.ignore_acpi(&name, true);

    let timeout = Duration::from_secs(30);
    match hv.stop_vm(&name, StopMode::Graceful { timeout }).await {
        Err(HypervisorError::Timeout { after, .. }) => assert_eq!(after, timeout),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(
        hv.inspect_vm(&name).await.unwrap().record.state,
        VmState::Running
    );

    let before = tokio::time::Instant::now();
    hv.stop_vm(&name, StopMode::GracefulThenForce { timeout })
        .await
        .unwrap();
    assert!(before.elapsed() >= timeout);
    assert_eq!(
        hv.inspect_vm(&name).await.unwrap().record.state,
        VmState::Stopped
    );
}

#[tokio::test]
async fn running_vms_get_dhcp_leases_from_the_range() {
    let hv: Arc<dyn Hypervisor> = Arc::new(FakeHypervisor::new());
    let fx = Fixture::new("fk", 215, "br0", "eth0");
    let spec = fx.nat_network("lan", 1);
    let range = spec.ipv4.unwrap().dhcp.unwrap();
    hv.define_network(&NetworkDefinition {
        spec: spec.clone(),
        project: None,
    })
    .await
    .unwrap();
    hv.start_network(&spec.name).await.unwrap();
    let a = fx
        .definition("a", vec![nic(&spec.name, "52:54:00:00:00:0a")])
        .await;
    let b = fx
        .definition("b", vec![nic(&spec.name, "52:54:00:00:00:0b")])
        .await;
    for def in [&a, &b] {
        hv.define_vm(def).await.unwrap();
        assert_eq!(
            hv.inspect_vm(&def.spec.name)
                .await
                .unwrap()
                .record
                .interfaces[0]
                .ip,
            None
        );
        hv.start_vm(&def.spec.name).await.unwrap();
    }
    let ip_a = hv.inspect_vm(&a.spec.name).await.unwrap().record.interfaces[0]
        .ip
        .unwrap();
    let ip_b = hv.inspect_vm(&b.spec.name).await.unwrap().record.interfaces[0]
        .ip
        .unwrap();
    assert_ne!(ip_a, ip_b);
    assert!(range.contains(ip_a) && range.contains(ip_b));
    hv.stop_vm(&a.spec.name, StopMode::Force).await.unwrap();
    assert_eq!(
        hv.inspect_vm(&a.spec.name).await.unwrap().record.interfaces[0].ip,
        None
    );
}

#[tokio::test]
async fn host_devices_are_checked_when_configured() {
    let hv: Arc<dyn Hypervisor> = Arc::new(FakeHypervisor::with_host_interfaces(["br0", "eth0"]));
    let good = Fixture::new("fk", 216, "br0", "eth0");
    let bad = Fixture::new("fk2", 216, "br9", "eth9");
    for mode in [NetworkMode::Bridged, NetworkMode::Macvtap] {
        let spec = good.network(&format!("ok-{mode}"), mode, 1);
        hv.define_network(&NetworkDefinition {
            spec,
            project: None,
        })
        .await
        .unwrap();
        let spec = bad.network(&format!("bad-{mode}"), mode, 1);
        match hv
            .define_network(&NetworkDefinition {
                spec,
                project: None,
            })
            .await
        {
            Err(HypervisorError::NotFound { kind, name }) => {
                assert!(kind.starts_with("host "), "{kind}");
                assert!(name.ends_with('9'), "{name}");
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn without_call_log_still_scripts_failures_but_logs_nothing() {
    let fake = Arc::new(FakeHypervisor::new().without_call_log());
    let hv: Arc<dyn Hypervisor> = fake.clone();
    let fx = Fixture::new("nl", 211, "br0", "eth0");
    let def = fx.definition("web", Vec::new()).await;
    hv.define_vm(&def).await.unwrap();
    fake.fail_next(
        FakeCall::StartVm,
        None,
        HypervisorError::Backend("scripted".into()),
    );
    assert!(hv.start_vm(&def.spec.name).await.is_err());
    hv.start_vm(&def.spec.name).await.unwrap();
    assert_eq!(hv.list_vms().await.unwrap().len(), 1);
    assert!(fake.calls().is_empty());
}
