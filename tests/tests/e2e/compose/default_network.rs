//! A compose service that names no network joins `<project>-default` (made
//! by `up`, removed by `down`, as docker compose does), `networks: []` gives
//! no card, and `up` sends the user's ssh key as `run` does. Fake
//! hypervisor, the real `vmr` against a real `vmrd`.

use vmr_tests::Daemon;

use super::support::*;

const YAML: &str = "apiVersion: v1
name: dn
services:
  web:
    image: dn/base:1
  db:
    image: dn/base:1
    cloudInit:
      userData: |
        #cloud-config
        write_files:
          - path: /etc/mine
            content: kept
  bare:
    image: dn/base:1
    networks: []
";

fn project_networks(daemon: &Daemon) -> Vec<(String, String, String)> {
    let listing = daemon.vmr(&["-o", "json", "network", "ls"]).json();
    let mut ours: Vec<(String, String, String)> = listing["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_owned(),
                n["project"].as_str().unwrap_or("").to_owned(),
                n["subnet"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    ours.sort();
    ours
}

#[test]
fn services_without_networks_share_the_projects_default_network_and_carry_the_users_key() {
    let daemon = Daemon::start();
    import(&daemon, "dn/base", "1", "64M");
    // vmr-default takes the first subnet of vmr's range first.
    daemon.vmr(&["run", "dn/base:1", "--name", "solo"]).ok();
    let project = Project::new(YAML, &[]);

    let text = compose(&daemon, &project, &["up"]).ok();
    assert!(
        text.contains("network dn-default: network created"),
        "{text}"
    );
    assert_eq!(
        project_networks(&daemon),
        [
            (
                "dn-default".to_owned(),
                "dn".to_owned(),
                "10.89.1.0/24".to_owned()
            ),
            (
                "vmr-default".to_owned(),
                String::new(),
                "10.89.0.0/24".to_owned()
            ),
        ]
    );
    for (vm, networks) in [
        ("dn-web", vec!["dn-default"]),
        ("dn-db", vec!["dn-default"]),
        ("dn-bare", vec![]),
    ] {
        let record = daemon.vmr(&["inspect", "--type", "vm", vm]).json();
        let cards: Vec<&str> = record["vm"]["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["network"].as_str().unwrap())
            .collect();
        assert_eq!(cards, networks, "{vm}");
    }

    // The key `vmr ssh` logs in with is in every seed, the user's own
    // user-data kept beside it.
    let public =
        std::fs::read_to_string(daemon.dir.path().join("config/vmr/ssh/id_ed25519.pub")).unwrap();
    let key = public.split_whitespace().nth(1).unwrap().to_owned();
    for vm in ["dn-web", "dn-db", "dn-bare"] {
        let iso = std::fs::read(daemon.store.join(format!("runtime/{vm}/cidata.iso"))).unwrap();
        let iso = String::from_utf8_lossy(&iso);
        assert!(iso.contains(&key), "{vm}: the public key is in the seed");
        if vm == "dn-db" {
            assert!(iso.contains("/etc/mine"), "the user's write_files is kept");
        }
    }

    // A second up joins the network it made and changes nothing.
    let again = compose(&daemon, &project, &["up"]).ok();
    assert!(!again.contains("network created"), "{again}");
    assert!(!again.contains("recreat"), "{again}");

    // down removes the project's network, not vmr-default.
    let down = compose(&daemon, &project, &["down"]).ok();
    assert!(down.contains("dn-default"), "{down}");
    assert_eq!(
        project_networks(&daemon),
        [(
            "vmr-default".to_owned(),
            String::new(),
            "10.89.0.0/24".to_owned()
        )]
    );
}

#[test]
fn a_default_network_of_another_owner_is_refused_before_anything_is_made() {
    let daemon = Daemon::start();
    import(&daemon, "dn/base", "1", "64M");
    daemon
        .vmr(&[
            "network",
            "create",
            "dn-default",
            "--mode",
            "nat",
            "--subnet",
            "10.60.0.0/24",
        ])
        .ok();
    let project = Project::new(YAML, &[]);
    let err = compose(&daemon, &project, &["up"]).err();
    assert!(err.contains("dn-default"), "{err}");
    assert!(err.contains("not part of project dn"), "{err}");
    let vms = daemon.vmr(&["ps", "-a", "-o", "json"]).json();
    assert_eq!(vms["vms"], serde_json::json!([]), "{vms}");
}
