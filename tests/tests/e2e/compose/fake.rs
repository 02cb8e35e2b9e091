//! Compose against the fake hypervisor.

use std::time::{Duration, Instant};

use vmr_tests::Daemon;

use super::support::*;

#[test]
fn ziti_example_goes_up_shows_in_ps_and_goes_down_leaving_nothing() {
    let daemon = Daemon::start();
    import(&daemon, ZITI_IMAGE, "ziti", "64M");
    let project = Project::ziti();

    let text = compose(&daemon, &project, &["up"]).ok();
    for line in [
        "network ziti-ziti-private-a: network created",
        "network ziti-ziti-public: network created",
        "service ziti-server-a-1: started",
        "service ziti-server-a-2: started",
        "project ziti: done",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }

    assert_eq!(
        ps(&daemon, &project),
        [
            (
                "ziti-server-a-1".to_owned(),
                "running".to_owned(),
                vec!["192.168.70.10".to_owned(), "10.170.0.10".to_owned()]
            ),
            (
                "ziti-server-a-2".to_owned(),
                "running".to_owned(),
                vec!["192.168.70.11".to_owned()]
            ),
        ]
    );
    // The networks exist, active and labelled with the project.
    let networks = daemon.vmr(&["-o", "json", "network", "ls"]).json();
    let mut ours: Vec<(String, bool)> = networks["networks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["project"] == "ziti")
        .map(|n| (n["name"].as_str().unwrap().to_owned(), n["active"] == true))
        .collect();
    ours.sort();
    assert_eq!(
        ours,
        [
            ("ziti-ziti-private-a".to_owned(), true),
            ("ziti-ziti-public".to_owned(), true)
        ]
    );
    let table = compose(&daemon, &project, &["ps"]).ok();
    assert!(
        table.contains("ziti-ziti-server-a-2") && table.contains("192.168.70.11"),
        "{table}"
    );
    let json = compose_json(&daemon, &project, &["ps"]);
    let a2 = &json["services"][1]["vm"];
    assert_eq!(a2["memoryBytes"], 8u64 << 30);
    assert_eq!(a2["cpu"], 2);
    assert_eq!(a2["restartPolicy"], "on-failure");
    assert_eq!(a2["project"], "ziti");
    // The file's user-data reached the seed.
    let seed = std::fs::read(daemon.store.join("runtime/ziti-ziti-server-a-2/cidata.iso")).unwrap();
    let needle = b"hostname: ziti-server-a-2";
    assert!(seed.windows(needle.len()).any(|w| w == needle));

    assert_down_removes_everything(
        &daemon,
        &project,
        &["ziti-ziti-server-a-1", "ziti-ziti-server-a-2"],
        &["ziti-ziti-private-a", "ziti-ziti-public"],
    );
}

#[test]
fn compose_config_names_the_field_of_every_validation_error() {
    let daemon = Daemon::start();
    let ok = "apiVersion: vmregistry.io/v1alpha1\nservices:\n  a: {image: x/y:1}\n";
    let out = compose(&daemon, &Project::new(ok, &[]), &["config"]).ok();
    assert!(out.contains("x/y:1"), "{out}");

    let net = "networks:\n  n: {mode: nat, subnet: 10.1.0.0/24, dhcp: {start: 10.1.0.100, end: 10.1.0.200}}\n";
    let cases: Vec<(String, &str)> = vec![
        ("services:\n  a: {image: x}\n".into(), "apiVersion"),
        ("apiVersion: v1\nkind: Compose\nservices:\n  a: {image: x}\n".into(), "kind"),
        ("apiVersion: v1\nservices:\n  a: {cpu: 1}\n".into(), "services.a"),
        ("apiVersion: v1\nservices:\n  a: {}\n".into(), "services.a.image"),
        ("apiVersion: v1\nservices:\n  a: {image: x, dependsOn: [b]}\n".into(), "services.a.dependsOn[0]"),
        ("apiVersion: v1\nservices:\n  a: {image: x, networks: [lan]}\n".into(), "services.a.networks[0]"),
        (
            "apiVersion: v1\nservices:\n  a: {image: x, dependsOn: [b]}\n  b: {image: x, dependsOn: [a]}\n".into(),
            "a -> b -> a",
        ),
        (
            "apiVersion: v1\nservices:\n  a: {image: x, resources: {memory: 4 parsecs}}\n".into(),
            "services.a.resources.memory",
        ),
        (
            "apiVersion: v1\nservices:\n  a: {image: x, restartPolicy: sometimes}\n".into(),
            "services.a.restartPolicy",
        ),
        (
            "apiVersion: v1\nservices:\n  a: {image: x, cloudInit: {userData: '#cloud-config', userDataFile: u.yaml}}\n".into(),
            "services.a.cloudInit.userDataFile",
        ),
        (
            "apiVersion: v1\nnetworks:\n  n: {subnet: 10.1.0.0/24}\nservices:\n  a: {image: x}\n".into(),
            "networks.n.mode",
        ),
        (
            "apiVersion: v1\nnetworks:\n  n: {mode: nat}\nservices:\n  a: {image: x}\n".into(),
            "networks.n.subnet",
        ),
        (
            "apiVersion: v1\nnetworks:\n  n: {mode: nat, subnet: 10.1.0.0/24, gateway: 10.2.0.1}\nservices:\n  a: {image: x}\n".into(),
            "networks.n.gateway",
        ),
        (
            "apiVersion: v1\nnetworks:\n  n: {mode: bridged}\nservices:\n  a: {image: x}\n".into(),
            "networks.n.bridge",
        ),
        (
            "apiVersion: v1\nnetworks:\n  n: {mode: nat, subnet: 10.1.0.0/16}\n  m: {mode: isolated, subnet: 10.1.2.0/24}\nservices:\n  a: {image: x}\n".into(),
            "networks.n.subnet",
        ),
        (
            format!("apiVersion: v1\n{net}services:\n  a: {{image: x, networks: [{{name: n, staticIp: 10.9.0.5}}]}}\n"),
            "services.a.networks[0].staticIp",
        ),
        (
            format!("apiVersion: v1\n{net}services:\n  a: {{image: x, networks: [{{name: n, staticIp: 10.1.0.1}}]}}\n"),
            "services.a.networks[0].staticIp",
        ),
        (
            format!("apiVersion: v1\n{net}services:\n  a: {{image: x, networks: [{{name: n, staticIp: 10.1.0.255}}]}}\n"),
            "services.a.networks[0].staticIp",
        ),
        (
            format!("apiVersion: v1\n{net}services:\n  a: {{image: x, networks: [{{name: n, staticIp: 10.1.0.150}}]}}\n"),
            "services.a.networks[0].staticIp",
        ),
        (
            format!("apiVersion: v1\n{net}services:\n  a: {{image: x, networks: [{{name: n, staticIp: 10.1.0.5}}]}}\n  b: {{image: x, networks: [{{name: n, staticIp: 10.1.0.5}}]}}\n"),
            "services.b.networks[0].staticIp",
        ),
        (
            format!("apiVersion: v1\n{net}services:\n  a: {{image: x, networks: [{{name: n, mac: 'zz:00'}}]}}\n"),
            "services.a.networks[0].mac",
        ),
    ];
    for (yaml, field) in cases {
        let err = compose(&daemon, &Project::new(&yaml, &[]), &["config"]).err();
        assert!(
            err.contains(field),
            "the error for\n{yaml}\ndoes not name {field:?}: {err}"
        );
    }

    // A named file outside the compose file's directory is refused by the
    // client unless allowed; inside, it must exist.
    let outside = Project::new(
        "apiVersion: v1\nservices:\n  a: {image: x, cloudInit: {userDataFile: ../u.yaml}}\n",
        &[],
    );
    std::fs::write(outside.dir.path().join("../u.yaml"), "#cloud-config\n").ok();
    let err = compose(&daemon, &outside, &["config"]).err();
    assert!(
        err.contains("services.a.cloudInit.userDataFile") && err.contains("--allow-outside-files"),
        "{err}"
    );
    let missing = Project::new(
        "apiVersion: v1\nservices:\n  a: {image: x, cloudInit: {userDataFile: ./gone.yaml}}\n",
        &[],
    );
    let err = compose(&daemon, &missing, &["config"]).err();
    assert!(err.contains("services.a.cloudInit.userDataFile"), "{err}");
    // And up creates nothing for an invalid file.
    let err = compose(
        &daemon,
        &Project::new(
            "apiVersion: v1\nservices:\n  a: {image: x, dependsOn: [a]}\n",
            &[],
        ),
        &["up"],
    )
    .err();
    assert!(err.contains("a -> a"), "{err}");
    assert!(runtime_entries(&daemon).is_empty());
}

#[test]
fn up_twice_changes_nothing_and_a_memory_change_recreates_only_that_service() {
    let daemon = Daemon::start();
    import(&daemon, ZITI_IMAGE, "ziti", "64M");
    let project = Project::ziti();
    up(&daemon, &project);
    let a1 = vm_files(&daemon, "ziti-ziti-server-a-1");
    let a2 = vm_files(&daemon, "ziti-ziti-server-a-2");

    let events = up(&daemon, &project);
    assert_eq!(kinds(&events, "ziti-server-a-1"), ["unchanged"]);
    assert_eq!(kinds(&events, "ziti-server-a-2"), ["unchanged"]);
    let nets: Vec<&str> = events
        .iter()
        .filter(|e| !e.network.is_empty())
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(nets, ["network-exists", "network-exists"]);
    assert_eq!(
        vm_files(&daemon, "ziti-ziti-server-a-1"),
        a1,
        "a-1 was touched"
    );
    assert_eq!(
        vm_files(&daemon, "ziti-ziti-server-a-2"),
        a2,
        "a-2 was touched"
    );

    // Only a-1's memory changes: only a-1 is recreated.
    let changed = ZITI.replacen("memory: \"8GiB\"", "memory: \"2GiB\"", 1);
    assert_ne!(changed, ZITI);
    project.write(&changed);
    let events = up(&daemon, &project);
    assert_eq!(
        kinds(&events, "ziti-server-a-1"),
        ["recreating", "starting", "started"]
    );
    assert_eq!(kinds(&events, "ziti-server-a-2"), ["unchanged"]);
    assert_eq!(
        vm_files(&daemon, "ziti-ziti-server-a-2"),
        a2,
        "a-2 was touched"
    );
    assert_ne!(vm_files(&daemon, "ziti-ziti-server-a-1"), a1);
    let json = compose_json(&daemon, &project, &["ps"]);
    assert_eq!(json["services"][0]["vm"]["memoryBytes"], 2u64 << 30);
    assert_eq!(json["services"][1]["vm"]["memoryBytes"], 8u64 << 30);
}

const TWO_PER_LEVEL: &str = "apiVersion: v1
name: par
services:
  a: {image: tests/tiny:1}
  b: {image: tests/tiny:1}
  c: {image: tests/tiny:1, dependsOn: [a, b]}
  d: {image: tests/tiny:1, dependsOn: [a]}
";

#[test]
fn the_services_of_one_level_are_brought_up_concurrently() {
    let daemon = Daemon::start();
    import(&daemon, "tests/tiny", "1", "16M");
    let project = Project::new(TWO_PER_LEVEL, &[]);
    let events = up(&daemon, &project);
    // Each service's creation-to-start interval overlaps its level peer's.
    let span = |s: &str| (at(&events, s, "creating"), at(&events, s, "started"));
    for (x, y) in [("a", "b"), ("c", "d")] {
        let (x0, x1) = span(x);
        let (y0, y1) = span(y);
        assert!(
            x0 < y1 && y0 < x1,
            "{x} [{x0}, {x1}] and {y} [{y0}, {y1}] do not overlap: {events:#?}"
        );
    }
    // The next level begins only when the level before it is up.
    for later in ["c", "d"] {
        for earlier in ["a", "b"] {
            assert!(
                span(later).0 >= span(earlier).1,
                "{later} began before {earlier} started"
            );
        }
    }
}

#[test]
fn a_failing_service_stops_later_levels_and_down_cleans_up() {
    let daemon = Daemon::start();
    import(&daemon, "tests/tiny", "1", "16M");
    let broken_disk = import(&daemon, "tests/broken", "1", "24M");
    // The image's disk disappears from the store after `up` checked the
    // image: creating its VM fails half-way through the project.
    let project = Project::new(
        &TWO_PER_LEVEL.replace("  b: {image: tests/tiny:1}", "  b: {image: tests/broken:1}"),
        &[],
    );
    std::fs::remove_file(
        daemon
            .store
            .join("blobs/sha256")
            .join(broken_disk.trim_start_matches("sha256:")),
    )
    .unwrap();
    let out = up_output(&daemon, &project);
    let err = out.err();
    assert!(
        err.contains("service b failed") && err.contains("not found"),
        "{err}"
    );
    let events = parse_events(&out.stdout());
    let failed: Vec<&Event> = events.iter().filter(|e| e.kind == "failed").collect();
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert_eq!(failed[0].service, "b");
    assert!(
        failed[0].message.contains("not found"),
        "{}",
        failed[0].message
    );
    assert!(kinds(&events, "c").is_empty() && kinds(&events, "d").is_empty());
    let states: Vec<(String, String)> = ps(&daemon, &project)
        .into_iter()
        .map(|(s, state, _)| (s, state))
        .collect();
    assert_eq!(
        states,
        [
            ("a".to_owned(), "running".to_owned()),
            ("b".to_owned(), "absent".to_owned()),
            ("c".to_owned(), "absent".to_owned()),
            ("d".to_owned(), "absent".to_owned()),
        ]
    );
    assert_eq!(runtime_entries(&daemon), ["par-a"]);
    assert_down_removes_everything(&daemon, &project, &["par-a"], &["par-default"]);
}

const READY: &str = "apiVersion: v1
name: rdy
networks:
  lan: {mode: isolated, subnet: 10.201.0.0/24}
services:
  db: {image: tests/tiny:1, networks: [lan]}
  app:
    image: tests/tiny:1
    networks: [lan]
    dependsOn:
      db: {condition: ready}
";

fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ready_waits_for_cloud_init_on_the_console_and_holds_the_project() {
    let daemon = Daemon::start();
    import(&daemon, "tests/tiny", "1", "16M");
    let project = Project::new(READY, &[]);
    let log = daemon.store.join("runtime/rdy-db/console.log");
    std::thread::scope(|scope| {
        let first = scope.spawn(|| up_output(&daemon, &project));
        wait_for("db running", Duration::from_secs(20), || {
            ps(&daemon, &project)
                .iter()
                .any(|(s, state, _)| s == "db" && state == "running")
        });
        // While db boots: another up or down of the project is refused,
        // and app is not created.
        let err = compose(&daemon, &project, &["up"]).err();
        assert!(
            err.contains("another `compose up` or `compose down`"),
            "{err}"
        );
        let err = compose(&daemon, &project, &["down"]).err();
        assert!(
            err.contains("another `compose up` or `compose down`"),
            "{err}"
        );
        // The up waits on db's console (the daemon says so): app is not
        // created meanwhile.
        daemon.wait_for_log_line(&["waiting for cloud-init to finish", "vm=rdy-db"]);
        assert!(
            ps(&daemon, &project)
                .iter()
                .any(|(s, state, _)| s == "app" && state == "absent")
        );
        // The guest boots: cloud-init prints its last line.
        let written = now_nanos();
        std::fs::write(
            &log,
            format!("SeaBIOS (version 1.16)\r\nBooting from Hard Disk...\r\n[    3.1] cloud-init[301]: {FINISHED_LINE}\r\n"),
        )
        .unwrap();
        let events = parse_events(&first.join().unwrap().ok());
        assert_eq!(
            kinds(&events, "db"),
            ["creating", "starting", "started", "ready"]
        );
        assert_eq!(kinds(&events, "app"), ["creating", "starting", "started"]);
        assert!(at(&events, "db", "ready") >= written);
        assert!(at(&events, "app", "creating") >= at(&events, "db", "ready"));
    });
    // Still booted: the next up finds it ready at once.
    let events = up(&daemon, &project);
    assert_eq!(kinds(&events, "db"), ["unchanged", "ready"]);
    assert_down_removes_everything(&daemon, &project, &["rdy-app", "rdy-db"], &["rdy-lan"]);
}

#[test]
fn down_and_ps_work_after_the_named_files_are_gone() {
    let daemon = Daemon::start();
    import(&daemon, ZITI_IMAGE, "ziti", "64M");
    let project = Project::ziti();
    up(&daemon, &project);
    std::fs::remove_file(project.dir.path().join("cloud-init/server-a-2.yaml")).unwrap();
    let err = compose(&daemon, &project, &["up"]).err();
    assert!(err.contains("userDataFile"), "{err}");
    assert_eq!(ps(&daemon, &project).len(), 2);
    assert_down_removes_everything(
        &daemon,
        &project,
        &["ziti-ziti-server-a-1", "ziti-ziti-server-a-2"],
        &["ziti-ziti-private-a", "ziti-ziti-public"],
    );
}
