//! `vmr exec`, `vmr logs` and `vmr console` on the real Debian guest under
//! real libvirt, with no network card at all: the guest agent (started by
//! udev when its virtio-serial channel appears) and the serial console are
//! the only ways in. One TCG boot shared by every assertion.

use std::process::Stdio;

use vmr_tests::Daemon;
use vmr_tests::guest;
use vmr_tests::libvirt::{Cleanup, unique_suffix};

use super::ways_in::{Console, read_until, reader, vmr, vmr_with_stdin, wait_exit};

#[test]
fn real_guest_exec_logs_and_console_without_a_network() {
    let Some(uri) = vmr_tests::libvirt::uri() else {
        return;
    };
    let sfx = unique_suffix();
    let mut cleanup = Cleanup::new(&uri);
    let vm = cleanup.domain(&format!("vmr-e2e-gexec-{sfx}"));
    let daemon = Daemon::on_libvirt(&uri);
    let image = guest::import(&daemon, "1");
    daemon
        .vmr(&["run", &image, "--name", &vm, "--network", "none"])
        .ok();

    // Until the guest's agent is up, exec says so, naming the VM; then it
    // answers.
    let refusals = guest::wait_for_agent(&daemon, &["exec", &vm, "--", "true"], &vm);
    assert!(!refusals.is_empty(), "the agent cannot answer before boot");

    // Output apart, and the exit code as vmr's.
    let out = daemon.vmr(&[
        "exec",
        &vm,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(out.0.status.code(), Some(7), "{}", out.stderr());
    assert_eq!(out.stdout(), "out\n");
    assert_eq!(out.stderr(), "err\n");
    let kernel = daemon.vmr(&["exec", &vm, "--", "uname", "-s"]).ok();
    assert_eq!(kernel, "Linux\n");
    let out = vmr_with_stdin(
        &daemon,
        &["exec", "-i", &vm, "--", "cat"],
        b"through the agent\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"through the agent\n");
    let out = daemon.vmr(&["exec", &vm, "--", "/no/such/program"]);
    assert_eq!(out.0.status.code(), Some(127), "{}", out.stderr());

    // The console log holds the guest's real boot, cloud-init's lines too.
    let console = guest::console_log(&daemon, &vm);
    let boot = guest::wait_cloud_init_finished(&console);
    let finished = guest::finished_line(&boot).unwrap().to_owned();
    // Real cloud-init applied vmr's seed: the hostname is the VM's name.
    let hostname = daemon
        .vmr(&["exec", &vm, "--", "cat", "/etc/hostname"])
        .ok();
    assert_eq!(hostname, format!("{vm}\n"));
    let log = daemon.vmr(&["logs", &vm]).ok();
    assert!(
        log.contains("Linux version"),
        "no kernel banner in vmr logs"
    );
    assert!(log.contains(&finished), "no `{finished}` in vmr logs");
    let last = daemon.vmr(&["logs", "--tail", "3", &vm]).ok();
    assert_eq!(last.lines().count(), 3, "{last:?}");

    // -f: a line the guest writes after the call began.
    let mut follow = vmr(&daemon, &["logs", "-f", "--tail", "0", &vm])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = reader(follow.stdout.take().unwrap());
    let mark = format!("vmr-mark-{sfx}");
    daemon
        .vmr(&[
            "exec",
            &vm,
            "--",
            "sh",
            "-c",
            &format!("echo {mark} > /dev/ttyS0"),
        ])
        .ok();
    let mut seen = String::new();
    read_until(&rx, &mut seen, &mark);

    // The console through a pty: a return reaches the getty, which prompts
    // again; Ctrl-] detaches.
    let mut console = Console::attach(&daemon, &vm);
    console.types(b"\r");
    console.shows("login:");
    console.detach();

    daemon.vmr(&["rm", "--force", &vm]).ok();
    let status = wait_exit(&mut follow);
    assert!(status.success(), "{status}");
}

#[test]
fn real_guest_compose_exec_and_logs() {
    let Some(uri) = vmr_tests::libvirt::uri() else {
        return;
    };
    let sfx = unique_suffix();
    let project = format!("gx{sfx}");
    let mut cleanup = Cleanup::new(&uri);
    let vm = cleanup.domain(&format!("{project}-box"));
    cleanup.network(&format!("{project}-default"));
    let daemon = Daemon::on_libvirt(&uri);
    let image = guest::import(&daemon, "1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vmcompose.yaml");
    // No `networks`: the service joins the project's default network, which
    // the host reaches, so `compose ssh` can log in.
    std::fs::write(
        &file,
        format!("apiVersion: v1\nname: {project}\nservices:\n  box: {{image: {image}}}\n"),
    )
    .unwrap();
    let compose = |args: &[&str]| {
        let mut all = vec!["compose", "-f", file.to_str().unwrap()];
        all.extend_from_slice(args);
        all.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    let run = |args: &[&str]| {
        let all = compose(args);
        daemon.vmr(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    run(&["up"]).ok();

    let exec = compose(&["exec", "box", "--", "cat", "/etc/hostname"]);
    let exec: Vec<&str> = exec.iter().map(String::as_str).collect();
    guest::wait_for_agent(&daemon, &exec, &vm);
    assert_eq!(daemon.vmr(&exec).ok(), format!("{vm}\n"));
    let out = run(&["exec", "box", "--", "sh", "-c", "exit 5"]);
    assert_eq!(out.0.status.code(), Some(5), "{}", out.stderr());

    let boot = guest::wait_cloud_init_finished(&guest::console_log(&daemon, &vm));
    let finished = guest::finished_line(&boot).unwrap().trim_end_matches('\r');
    let logs = run(&["logs", "box"]).ok();
    assert!(
        logs.lines()
            .any(|l| l.starts_with("box | ") && l.contains(finished)),
        "no `box | {finished}` in compose logs"
    );

    // compose ssh: the service's VM, as the image's user, with the key
    // `compose up` put in its seed; the remote exit code is vmr's.
    let hostname = run(&["ssh", "--wait", "300", "box", "--", "hostname"]).ok();
    assert_eq!(hostname.trim(), vm);
    let out = run(&["ssh", "box", "--", "sh", "-c", "exit 6"]);
    assert_eq!(out.0.status.code(), Some(6), "{}", out.stderr());

    run(&["down"]).ok();
    assert!(!vmr_tests::libvirt::domain_exists(&uri, &vm));
    let networks = daemon.vmr(&["-o", "json", "network", "ls"]).json();
    assert!(
        !networks.to_string().contains(&format!("{project}-default")),
        "down removes the project's default network: {networks}"
    );
}
