//! Contexts through the real CLI: create, ls, use, inspect, rm; persisted by
//! the daemon across restarts; `default` from the daemon's flags.

use vmr_tests::Daemon;

#[test]
fn contexts_are_created_used_listed_persisted_and_removed() {
    let mut daemon = Daemon::start_with(&[
        "--hypervisor",
        "fake",
        "--registry-url",
        "http://127.0.0.1:5000",
    ]);
    let default = daemon
        .vmr(&["context", "inspect", "-o", "json"])
        .json()
        .to_string();
    assert!(default.contains("http://127.0.0.1:5000"), "{default}");

    daemon
        .vmr(&[
            "context",
            "create",
            "lab",
            "--registry-url",
            "http://127.0.0.1:5001",
            "--insecure",
        ])
        .ok();
    daemon.vmr(&["context", "use", "lab"]).ok();
    let table = daemon.vmr(&["context", "ls"]).ok();
    assert!(
        table.contains("lab") && table.contains("default"),
        "{table}"
    );

    daemon.restart();
    let current = daemon
        .vmr(&["context", "inspect", "-o", "json"])
        .json()
        .to_string();
    assert!(
        current.contains("\"lab\"") && current.contains("5001"),
        "{current}"
    );

    let err = daemon
        .vmr(&[
            "context",
            "create",
            "lab",
            "--registry-url",
            "http://x.example",
        ])
        .err();
    assert!(err.contains("already exists"), "{err}");
    let err = daemon
        .vmr(&[
            "context",
            "create",
            "bad/name",
            "--registry-url",
            "http://x.example",
        ])
        .err();
    assert!(err.contains("name"), "{err}");
    let err = daemon.vmr(&["context", "rm", "default"]).err();
    assert!(err.contains("cannot be removed"), "{err}");

    daemon.vmr(&["context", "rm", "lab"]).ok();
    let current = daemon
        .vmr(&["context", "inspect", "-o", "json"])
        .json()
        .to_string();
    assert!(current.contains("\"default\""), "{current}");
    let err = daemon.vmr(&["context", "use", "lab"]).err();
    assert!(err.contains("not found"), "{err}");
}
