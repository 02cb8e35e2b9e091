//! The guest use cases over the fake's scripted guest.

use std::time::Duration;
use vmr_ports::VmDriver;

use futures::StreamExt;
use vmr_adapters::fake::hypervisor::{FakeCall, FakeHypervisor};
use vmr_domain::units::ByteSize;
use vmr_domain::vm::{Bootloader, RestartPolicy, VmLabels, VmSpec};
use vmr_ports::driving::ErrorKind;
use vmr_ports::{ExecOutput, HypervisorError, VmDefinition};

use super::*;

struct World {
    fake: Arc<FakeHypervisor>,
    guest: GuestService,
    dir: tempfile::TempDir,
}

fn world() -> World {
    let fake = Arc::new(FakeHypervisor::new());
    let dir = tempfile::tempdir().unwrap();
    let guest = GuestService::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        RuntimeDirs::new(dir.path()),
    );
    World { fake, guest, dir }
}

impl World {
    async fn vm(&self, name: &str, start: bool) -> VmName {
        let name: VmName = name.parse().unwrap();
        let def = VmDefinition {
            spec: VmSpec {
                name: name.clone(),
                cpu: 1,
                memory: ByteSize::mib(128),
                disk_size: None,
                bootloader: Bootloader::Bios,
                networks: Vec::new(),
                restart_policy: RestartPolicy::No,
                labels: VmLabels {
                    image: "localhost/t:1".into(),
                    image_digest: None,
                    project: None,
                    service: None,
                },
            },
            disk: None,
            cdroms: Vec::new(),
            boot_from_cdrom: false,
            console_log: self.dir.path().join(format!("{name}.log")),
            spec_hash: "h".into(),
        };
        self.fake.define_vm(&def).await.unwrap();
        if start {
            self.fake.start_vm(&name).await.unwrap();
        }
        name
    }

    async fn exec(&self, name: &VmName, argv: &[&str]) -> Result<Vec<ExecOutput>, UseCaseError> {
        let argv = argv.iter().map(|s| s.to_string()).collect();
        let stream = self.guest.exec(name, argv, None).await?;
        stream.collect::<Vec<_>>().await.into_iter().collect()
    }

    async fn log(&self, name: &VmName, tail: Option<usize>) -> String {
        let request = LogsRequest {
            follow: false,
            tail,
        };
        let chunks: Vec<_> = self
            .guest
            .logs(name, request)
            .await
            .unwrap()
            .collect()
            .await;
        let bytes: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        String::from_utf8(bytes).unwrap()
    }
}

#[tokio::test]
async fn exec_returns_output_and_exit_code() {
    let w = world();
    let vm = w.vm("g1", true).await;
    assert_eq!(
        w.exec(&vm, &["cat", "/etc/hostname"]).await.unwrap(),
        vec![
            ExecOutput::Stdout(Bytes::from_static(b"g1\n")),
            ExecOutput::Exited(0)
        ]
    );
    assert_eq!(
        w.exec(&vm, &["sh", "-c", "exit 7"]).await.unwrap(),
        vec![ExecOutput::Exited(7)]
    );
    let stdin = Some(Bytes::from_static(b"piped\n"));
    let out: Vec<_> = w
        .guest
        .exec(&vm, vec!["cat".into()], stdin)
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(
        out[0].as_ref().unwrap(),
        &ExecOutput::Stdout(Bytes::from_static(b"piped\n"))
    );
}

#[tokio::test]
async fn bad_exec_requests_are_refused_before_the_guest() {
    let w = world();
    let running = w.vm("up", true).await;
    let stopped = w.vm("down", false).await;
    let empty = w.exec(&running, &[]).await.unwrap_err();
    assert_eq!(empty.kind, ErrorKind::InvalidArgument);
    assert_eq!(empty.field.as_deref(), Some("command"));
    let blank = w.exec(&running, &[" "]).await.unwrap_err();
    assert_eq!(blank.kind, ErrorKind::InvalidArgument);
    let big = Bytes::from(vec![0u8; MAX_EXEC_STDIN + 1]);
    let too_much = w
        .guest
        .exec(&running, vec!["cat".into()], Some(big))
        .await
        .err()
        .unwrap();
    assert_eq!(too_much.field.as_deref(), Some("stdin"));
    let down = w.exec(&stopped, &["true"]).await.unwrap_err();
    assert_eq!(down.kind, ErrorKind::FailedPrecondition);
    assert!(down.message.contains("down"), "{}", down.message);
    let missing = w
        .exec(&"nope".parse().unwrap(), &["true"])
        .await
        .unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound);
    // None of them reached the agent.
    let execs = w
        .fake
        .calls()
        .iter()
        .filter(|c| c.call == FakeCall::Exec && c.ok)
        .count();
    assert_eq!(execs, 0);
}

#[tokio::test]
async fn an_agent_that_does_not_answer_is_deadline_exceeded() {
    let w = world();
    let vm = w.vm("mute", true).await;
    w.fake.fail_next(
        FakeCall::Exec,
        Some("mute"),
        HypervisorError::Timeout {
            kind: "VM",
            name: "mute".into(),
            what: "answer through its guest agent",
            after: Duration::from_secs(10),
        },
    );
    let e = w.exec(&vm, &["true"]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::DeadlineExceeded);
    assert!(e.message.contains("guest agent"), "{}", e.message);
}

#[tokio::test]
async fn logs_show_the_boot_and_what_the_guest_wrote_to_its_console() {
    let w = world();
    let vm = w.vm("g1", true).await;
    w.exec(
        &vm,
        &["sh", "-c", "echo one > /dev/ttyS0; echo two > /dev/ttyS0"],
    )
    .await
    .unwrap();
    assert_eq!(
        w.log(&vm, None).await,
        "vmr fake guest g1: booted\none\ntwo\n"
    );
    assert_eq!(w.log(&vm, Some(1)).await, "two\n");
    assert_eq!(w.log(&vm, Some(2)).await, "one\ntwo\n");
    assert_eq!(w.log(&vm, Some(0)).await, "");
    assert_eq!(w.log(&vm, Some(99)).await.lines().count(), 3);
    // A VM never started has an empty log, not an error.
    let fresh = w.vm("fresh", false).await;
    assert_eq!(w.log(&fresh, None).await, "");
}

#[tokio::test(start_paused = true)]
async fn following_logs_sends_new_lines_and_ends_with_the_vm() {
    let w = world();
    let vm = w.vm("g1", true).await;
    let request = LogsRequest {
        follow: true,
        tail: Some(0),
    };
    let mut logs = w.guest.logs(&vm, request).await.unwrap();
    w.exec(&vm, &["sh", "-c", "echo MARK > /dev/ttyS0"])
        .await
        .unwrap();
    let chunk = logs.next().await.unwrap().unwrap();
    assert_eq!(chunk, Bytes::from_static(b"MARK\n"));
    w.fake
        .stop_vm(&vm, vmr_ports::StopMode::Force)
        .await
        .unwrap();
    w.fake.undefine_vm(&vm).await.unwrap();
    assert!(logs.next().await.is_none());
}

#[tokio::test]
async fn the_console_echoes_and_logs_what_is_typed() {
    let w = world();
    let vm = w.vm("g1", true).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let output = w
        .guest
        .console(&vm, tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
        .await
        .unwrap();
    tx.send(Bytes::from_static(b"hello\r")).await.unwrap();
    drop(tx);
    let echoed: Vec<Bytes> = output.collect().await;
    assert_eq!(echoed, vec![Bytes::from_static(b"hello\n")]);
    assert!(w.log(&vm, Some(1)).await.contains("hello"));
    let stopped = w.vm("down", false).await;
    let e = w
        .guest
        .console(&stopped, futures::stream::empty().boxed())
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
}
