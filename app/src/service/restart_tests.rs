//! Restart policies against the fake hypervisor, on tokio's paused clock so
//! back-off delays are exact and the tests take no real time.

use std::path::PathBuf;
use vmr_ports::VmDriver;

use vmr_adapters::fake::hypervisor::{FakeCall, FakeHypervisor};
use vmr_domain::units::ByteSize;
use vmr_domain::vm::{Bootloader, VmLabels, VmSpec};
use vmr_ports::{StopMode, VmDefinition};

use super::*;

fn definition(name: &str, policy: RestartPolicy) -> VmDefinition {
    VmDefinition {
        spec: VmSpec {
            name: name.parse().unwrap(),
            cpu: 1,
            memory: ByteSize::mib(64),
            disk_size: None,
            bootloader: Bootloader::Bios,
            networks: Vec::new(),
            restart_policy: policy,
            labels: VmLabels::default(),
        },
        disk: None,
        cdroms: Vec::new(),
        boot_from_cdrom: false,
        console_log: PathBuf::from("/nonexistent/console.log"),
        spec_hash: "h".into(),
    }
}

struct World {
    fake: Arc<FakeHypervisor>,
    runtime: RuntimeDirs,
    _tmp: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        Self {
            fake: Arc::new(FakeHypervisor::new()),
            runtime: RuntimeDirs::new(tmp.path().join("runtime")),
            _tmp: tmp,
        }
    }

    async fn vm(&self, name: &str, policy: RestartPolicy, start: bool) -> VmName {
        let def = definition(name, policy);
        self.fake.define_vm(&def).await.unwrap();
        self.runtime.create(&def.spec.name).await.unwrap();
        if start {
            self.fake.start_vm(&def.spec.name).await.unwrap();
        }
        def.spec.name
    }

    fn supervise(&self) -> RestartTask {
        RestartSupervisor::new(self.fake.clone(), self.fake.clone(), self.runtime.clone()).spawn()
    }

    async fn state(&self, name: &VmName) -> VmState {
        self.fake.inspect_vm(name).await.unwrap().record.state
    }

    /// When each successful start of `name` happened.
    fn starts(&self, name: &VmName) -> Vec<Instant> {
        self.fake
            .calls()
            .into_iter()
            .filter(|c| c.call == FakeCall::StartVm && c.target == name.as_str() && c.ok)
            .map(|c| c.started)
            .collect()
    }
}

async fn settle(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[test]
fn decisions() {
    use RestartPolicy::*;
    use StopReason::*;
    for reason in [Shutdown, Crashed, Destroyed, Requested] {
        assert!(!restarts_after_stop(No, reason, false));
    }
    assert!(restarts_after_stop(OnFailure, Crashed, false));
    assert!(!restarts_after_stop(OnFailure, Shutdown, false));
    assert!(!restarts_after_stop(OnFailure, Destroyed, false));
    for policy in [Always, UnlessStopped] {
        for reason in [Shutdown, Crashed, Destroyed] {
            assert!(restarts_after_stop(policy, reason, false));
            assert!(!restarts_after_stop(policy, reason, true));
        }
        assert!(!restarts_after_stop(policy, Requested, false));
    }

    assert!(!restarts_at_startup(Always, VmState::Created, false));
    assert!(!restarts_at_startup(Always, VmState::Running, false));
    assert!(restarts_at_startup(Always, VmState::Stopped, true));
    assert!(restarts_at_startup(UnlessStopped, VmState::Stopped, false));
    assert!(!restarts_at_startup(UnlessStopped, VmState::Stopped, true));
    assert!(restarts_at_startup(OnFailure, VmState::Crashed, false));
    assert!(!restarts_at_startup(OnFailure, VmState::Stopped, false));
    assert!(!restarts_at_startup(No, VmState::Crashed, false));
}

#[test]
fn backoff_doubles_to_a_cap() {
    let b = Backoff::default();
    let secs: Vec<u64> = (0..9).map(|n| b.delay(n).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn another_daemons_vm_is_left_to_that_daemon() {
    let world = World::new();
    // Defined on the shared hypervisor with an `always` policy, but its
    // runtime directory is in another daemon's store.
    let foreign_crashed = definition("foreign-crashed", RestartPolicy::Always);
    world.fake.define_vm(&foreign_crashed).await.unwrap();
    world
        .fake
        .start_vm(&foreign_crashed.spec.name)
        .await
        .unwrap();
    world
        .fake
        .simulate_crash(&foreign_crashed.spec.name)
        .unwrap();
    let foreign = definition("foreign", RestartPolicy::Always);
    world.fake.define_vm(&foreign).await.unwrap();
    world.fake.start_vm(&foreign.spec.name).await.unwrap();
    let own = world.vm("own", RestartPolicy::Always, true).await;
    let _task = world.supervise();
    settle(1).await;

    world.fake.simulate_crash(&foreign.spec.name).unwrap();
    world.fake.simulate_crash(&own).unwrap();
    settle(120).await;
    assert_eq!(world.state(&own).await, VmState::Running);
    // Neither the one down when the daemon started nor the one that
    // crashed while it watched was started by this daemon.
    assert_eq!(world.starts(&foreign_crashed.spec.name).len(), 1);
    assert_eq!(world.starts(&foreign.spec.name).len(), 1);
    assert_eq!(
        world.state(&foreign.spec.name).await,
        VmState::Crashed,
        "another daemon's VM was restarted"
    );
}

#[tokio::test(start_paused = true)]
async fn on_failure_restarts_a_crashed_vm_and_no_does_not() {
    let world = World::new();
    let failing = world.vm("failing", RestartPolicy::OnFailure, true).await;
    let plain = world.vm("plain", RestartPolicy::No, true).await;
    let _task = world.supervise();
    settle(1).await;

    world.fake.simulate_crash(&failing).unwrap();
    world.fake.simulate_crash(&plain).unwrap();
    let crashed_at = Instant::now();
    settle(5).await;
    assert_eq!(world.state(&failing).await, VmState::Running);
    assert_eq!(world.state(&plain).await, VmState::Crashed);
    let restarted = *world.starts(&failing).last().unwrap();
    assert_eq!(restarted - crashed_at, Duration::from_secs(1));

    // A guest that powers itself off is no failure.
    world.fake.simulate_guest_poweroff(&failing).unwrap();
    settle(120).await;
    assert_eq!(world.state(&failing).await, VmState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn always_restarts_after_any_stop_but_one_through_vmr() {
    let world = World::new();
    let web = world.vm("web", RestartPolicy::Always, true).await;
    let _task = world.supervise();
    settle(1).await;

    world.fake.simulate_guest_poweroff(&web).unwrap();
    settle(3).await;
    assert_eq!(world.state(&web).await, VmState::Running);

    world.fake.simulate_destroy(&web).unwrap();
    settle(10).await;
    assert_eq!(world.state(&web).await, VmState::Running);

    // A stop through the port is `Requested`.
    world.fake.stop_vm(&web, StopMode::Force).await.unwrap();
    settle(120).await;
    assert_eq!(world.state(&web).await, VmState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_stop_marked_through_vmr_is_not_undone() {
    let world = World::new();
    let web = world.vm("web", RestartPolicy::UnlessStopped, true).await;
    let _task = world.supervise();
    settle(1).await;
    // The VM service marks the stop before acting; whatever reason libvirt
    // then reports, the VM stays down.
    world.runtime.mark_stopped(&web).await;
    world.fake.simulate_destroy(&web).unwrap();
    settle(120).await;
    assert_eq!(world.state(&web).await, VmState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn restarts_back_off_and_start_over_after_a_long_run() {
    let world = World::new();
    let web = world.vm("web", RestartPolicy::OnFailure, true).await;
    let _task = world.supervise();
    settle(1).await;

    let mut gaps = Vec::new();
    for _ in 0..4 {
        world.fake.simulate_crash(&web).unwrap();
        let crashed = Instant::now();
        settle(20).await;
        assert_eq!(world.state(&web).await, VmState::Running);
        gaps.push((*world.starts(&web).last().unwrap() - crashed).as_secs());
    }
    assert_eq!(gaps, [1, 2, 4, 8]);

    // Five minutes of running: the next crash is treated as the first.
    settle(5 * 60).await;
    world.fake.simulate_crash(&web).unwrap();
    let crashed = Instant::now();
    settle(5).await;
    assert_eq!((*world.starts(&web).last().unwrap() - crashed).as_secs(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_restart_is_retried_with_back_off() {
    let world = World::new();
    let web = world.vm("web", RestartPolicy::Always, true).await;
    let _task = world.supervise();
    settle(1).await;
    world.fake.fail_next(
        FakeCall::StartVm,
        Some("web"),
        HypervisorError::Backend("qemu refused".into()),
    );
    world.fake.simulate_crash(&web).unwrap();
    let crashed = Instant::now();
    settle(10).await;
    assert_eq!(world.state(&web).await, VmState::Running);
    // 1 s to the failed attempt, 2 s more to the one that worked.
    assert_eq!((*world.starts(&web).last().unwrap() - crashed).as_secs(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_removed_vm_is_not_restarted() {
    let world = World::new();
    let web = world.vm("web", RestartPolicy::Always, true).await;
    let _task = world.supervise();
    settle(1).await;
    world.fake.simulate_crash(&web).unwrap();
    world.fake.undefine_vm(&web).await.unwrap();
    settle(10).await;
    assert!(world.fake.inspect_vm(&web).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn startup_reconciles_vms_that_went_down_while_the_daemon_was_away() {
    let world = World::new();
    let crashed = world.vm("crashed", RestartPolicy::OnFailure, true).await;
    let always = world.vm("always", RestartPolicy::Always, true).await;
    let unless = world.vm("unless", RestartPolicy::UnlessStopped, true).await;
    let fresh = world.vm("fresh", RestartPolicy::Always, false).await;
    let plain = world.vm("plain", RestartPolicy::No, true).await;
    world.fake.simulate_crash(&crashed).unwrap();
    world.runtime.mark_stopped(&always).await;
    world.fake.stop_vm(&always, StopMode::Force).await.unwrap();
    world.runtime.mark_stopped(&unless).await;
    world.fake.stop_vm(&unless, StopMode::Force).await.unwrap();
    world.fake.simulate_crash(&plain).unwrap();

    let _task = world.supervise();
    settle(2).await;
    assert_eq!(world.state(&crashed).await, VmState::Running);
    assert_eq!(world.state(&always).await, VmState::Running);
    assert!(!world.runtime.stopped_by_vmr(&always).await);
    assert_eq!(world.state(&unless).await, VmState::Stopped);
    assert_eq!(world.state(&fresh).await, VmState::Created);
    assert_eq!(world.state(&plain).await, VmState::Crashed);
}

#[tokio::test(start_paused = true)]
async fn the_hypervisor_down_at_start_is_reconciled_on_reconnect() {
    let world = World::new();
    let web = world.vm("web", RestartPolicy::Always, true).await;
    let kept = world.vm("kept", RestartPolicy::Always, true).await;
    world.fake.simulate_destroy(&web).unwrap();
    world.fake.stop_vm(&kept, StopMode::Force).await.unwrap();
    world.runtime.mark_stopped(&kept).await;
    world.fake.fail_next(
        FakeCall::ListVms,
        None,
        HypervisorError::Unavailable("libvirtd is down".into()),
    );
    let _task = world.supervise();
    settle(10).await;
    assert_eq!(world.state(&web).await, VmState::Stopped);

    // The first connect runs the start-up reconcile: `always` starts even
    // what was stopped through vmr.
    world.fake.simulate_reconnect();
    settle(2).await;
    assert_eq!(world.state(&web).await, VmState::Running);
    assert_eq!(world.state(&kept).await, VmState::Running);
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_reconciles_but_a_stop_through_vmr_still_stands() {
    let world = World::new();
    let web = world.vm("web", RestartPolicy::UnlessStopped, true).await;
    let kept = world.vm("kept", RestartPolicy::Always, true).await;
    let _task = world.supervise();
    settle(1).await;
    world.fake.stop_vm(&kept, StopMode::Force).await.unwrap();
    world.runtime.mark_stopped(&kept).await;
    settle(5).await;
    world.fake.simulate_destroy(&web).unwrap();
    world.fake.simulate_reconnect();
    settle(2).await;
    assert_eq!(world.state(&web).await, VmState::Running);
    // Not a daemon restart: the stop through vmr still stands.
    assert_eq!(world.state(&kept).await, VmState::Stopped);
}
