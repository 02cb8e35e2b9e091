//! Every compose rule of FORMATS.md, each asserting the exact field path.

mod networks;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::*;
use crate::network::{MacAddr, NetworkMode};
use crate::vm::RestartPolicy;

const MINIMAL: &str = include_str!("../../../tests/fixtures/compose-minimal.yaml");
const FULL: &str = include_str!("../../../tests/fixtures/compose-full.yaml");
const ALL_MODES: &str = include_str!("../../../tests/fixtures/compose-all-modes.yaml");
const SERVER_A_2: &str = include_str!("../../../tests/fixtures/cloud-init/server-a-2.yaml");

const BASE: &str = "apiVersion: v1
name: p
networks:
  net:
    mode: nat
    subnet: 192.168.70.0/24
services:
  web:
    image: ns/web
    networks:
      - name: net
        staticIp: 192.168.70.10
  db:
    image: ns/db
";

fn plan_with(
    yaml: &str,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<ComposePlan, ValidationError> {
    plan(&ComposeInput {
        yaml,
        files,
        project_flag: None,
        directory_name: "my-dir",
    })
}

fn ok(yaml: &str) -> ComposePlan {
    plan_with(yaml, &BTreeMap::new()).unwrap()
}

fn err(yaml: &str) -> ValidationError {
    plan_with(yaml, &BTreeMap::new()).unwrap_err()
}

/// BASE with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1)
}

fn field(yaml: &str) -> String {
    err(yaml).field
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn original_minimal_example() {
    let p = ok(MINIMAL);
    assert_eq!(p.project, "my-dir");
    // A service that names no network joins the project's default one.
    assert_eq!(p.networks.len(), 1);
    assert!(p.networks[0].implicit);
    assert_eq!(p.networks[0].name.as_str(), "my-dir-default");
    assert_eq!(p.levels.len(), 1);
    let web = &p.levels[0][0];
    assert_eq!(web.vm_name.as_str(), "my-dir-web");
    assert_eq!(web.image.to_string(), "myuser/web-server:latest");
    assert_eq!(web.user_data, b"#cloud-config\n");
    assert_eq!(web.restart_policy, RestartPolicy::No);
    assert_eq!((web.cpu, web.memory, web.disk_size), (None, None, None));
}

#[test]
fn original_full_example() {
    let files = BTreeMap::from([(
        "./cloud-init/server-a-2.yaml".to_owned(),
        SERVER_A_2.as_bytes().to_vec(),
    )]);
    let p = plan_with(FULL, &files).unwrap();
    assert_eq!(p.project, "ziti");
    let names: Vec<&str> = p.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["ziti-ziti-private-a", "ziti-ziti-public"]);
    let private = p.networks[0].spec.as_ref().unwrap();
    assert_eq!(private.mode, NetworkMode::Isolated);
    assert_eq!(private.ipv4.unwrap().gateway, ip("192.168.70.1"));
    assert_eq!(p.levels.len(), 2);
    let a1 = &p.levels[0][0];
    assert_eq!(a1.service, "ziti-server-a-1");
    assert_eq!(a1.vm_name.as_str(), "ziti-ziti-server-a-1");
    assert_eq!(a1.cpu, Some(2));
    assert_eq!(a1.memory, Some(ByteSize::gib(8)));
    assert_eq!(a1.disk_size, Some(ByteSize::gib(20)));
    assert_eq!(a1.networks.len(), 2);
    assert_eq!(a1.networks[0].network.as_str(), "ziti-ziti-private-a");
    assert_eq!(
        a1.networks[0].static_ip.unwrap().to_string(),
        "192.168.70.10/24"
    );
    assert_eq!(a1.networks[1].gateway, Some(ip("10.170.0.1")));
    assert!(String::from_utf8_lossy(&a1.user_data).contains("fqdn: ziti-server-a-1.ziti.local"));
    let a2 = &p.levels[1][0];
    assert_eq!(a2.service, "ziti-server-a-2");
    assert_eq!(a2.user_data, SERVER_A_2.as_bytes());
    assert_eq!(a2.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(
        a2.depends_on,
        [Dependency {
            service: "ziti-server-a-1".into(),
            condition: DependencyCondition::Started
        }]
    );
    assert_eq!(
        a1.networks[0].mac,
        MacAddr::derive("ziti/ziti-server-a-1/ziti-private-a")
    );
    assert_ne!(a1.networks[0].mac, a2.networks[0].mac);
}

#[test]
fn all_modes_example() {
    let files = BTreeMap::from([
        (
            "app-user-data.sh".to_owned(),
            b"#!/bin/sh\necho hi\n".to_vec(),
        ),
        ("meta/app.yaml".to_owned(), b"role: app\n".to_vec()),
        (
            "net/app.yaml".to_owned(),
            b"version: 2\nethernets: {}\n".to_vec(),
        ),
    ]);
    let p = plan_with(ALL_MODES, &files).unwrap();
    let shared = p.networks.iter().find(|n| n.key == "shared").unwrap();
    assert!(shared.external);
    assert_eq!(shared.name.as_str(), "shared");
    assert!(shared.spec.is_none());
    assert_eq!(p.managed_networks().count(), 6);
    let routed = p.networks.iter().find(|n| n.key == "routed").unwrap();
    assert_eq!(routed.spec.as_ref().unwrap().ipv4.unwrap().dhcp, None);
    let levels: Vec<Vec<&str>> = p
        .levels
        .iter()
        .map(|l| l.iter().map(|s| s.service.as_str()).collect())
        .collect();
    assert_eq!(levels, [vec!["db"], vec!["app"], vec!["proxy"]]);
    let app = p.service("app").unwrap();
    assert_eq!(app.depends_on[0].condition, DependencyCondition::Ready);
    assert_eq!(app.user_data, b"#!/bin/sh\necho hi\n");
    assert_eq!(app.extra_meta_data["role"], serde_yaml::Value::from("app"));
    assert_eq!(
        app.network_config.as_deref(),
        Some("version: 2\nethernets: {}\n")
    );
    assert_eq!(app.networks[0].mac.to_string(), "52:54:00:aa:bb:cc");
    assert_eq!(
        app.networks[0].gateway, None,
        "isolated networks give no default route"
    );
    assert_eq!(app.networks[1].static_ip, None);
    assert_eq!(
        app.networks[2].static_ip.unwrap().to_string(),
        "192.168.1.50/24"
    );
    assert_eq!(app.networks[4].network.as_str(), "shared");
    assert_eq!(app.disk_size, Some(ByteSize::gib(40)));
    assert_eq!(app.restart_policy, RestartPolicy::Always);
    let db = p.service("db").unwrap();
    assert_eq!(db.extra_meta_data["zone"], serde_yaml::Value::from("eu-1"));
    assert!(db.network_config.as_deref().unwrap().contains("version: 2"));
    let proxy = p.service("proxy").unwrap();
    assert!(proxy.image.digest.is_some());
    assert_eq!(
        proxy.networks[0].gateway,
        Some(ip("10.170.0.1")),
        "nat gives its gateway"
    );
    assert_eq!(proxy.restart_policy, RestartPolicy::UnlessStopped);
    let db_image = &db.image;
    assert_eq!(
        db_image.registry.as_deref(),
        Some("registry.example.com:5000")
    );
}

#[test]
fn api_version_and_kind() {
    assert_eq!(field(&edit("apiVersion: v1\n", "")), "apiVersion");
    assert_eq!(
        field(&edit("apiVersion: v1", "apiVersion: v9")),
        "apiVersion"
    );
    assert!(
        plan_with(
            &edit("apiVersion: v1", "apiVersion: vmregistry.io/v1alpha1"),
            &BTreeMap::new()
        )
        .is_ok()
    );
    assert!(
        plan_with(
            &edit("name: p", "name: p\nkind: VMCompose"),
            &BTreeMap::new()
        )
        .is_ok()
    );
    assert_eq!(field(&edit("name: p", "name: p\nkind: Compose")), "kind");
    let e = err(&edit("name: p", "name: p\nversion: 3"));
    assert_eq!((e.field.as_str(), e.line), ("version", Some(3)));
}

#[test]
fn project_name_precedence_and_rules() {
    let files = BTreeMap::new();
    let with = |yaml: &str, flag: Option<&str>, dir: &str| {
        plan(&ComposeInput {
            yaml,
            files: &files,
            project_flag: flag,
            directory_name: dir,
        })
    };
    assert_eq!(with(BASE, Some("flag"), "dir").unwrap().project, "p");
    let unnamed = BASE.replace("name: p\n", "");
    assert_eq!(with(&unnamed, Some("flag"), "dir").unwrap().project, "flag");
    assert_eq!(with(&unnamed, None, "dir").unwrap().project, "dir");
    assert_eq!(
        with(&unnamed, None, "My Project!").unwrap().project,
        "my-project"
    );
    assert_eq!(with(&unnamed, None, "__..__").unwrap().project, "default");
    assert_eq!(
        with(&unnamed, Some("Bad Name"), "dir").unwrap_err().field,
        "project"
    );
    assert_eq!(field(&edit("name: p", "name: Ziti")), "name");
    assert_eq!(field(&edit("name: p", "name: -x")), "name");
    let p = with(&unnamed, None, "dir").unwrap();
    assert_eq!(
        p.networks
            .iter()
            .find(|n| n.key == "net")
            .unwrap()
            .name
            .as_str(),
        "dir-net"
    );
    assert_eq!(p.service("web").unwrap().vm_name.as_str(), "dir-web");
    assert_eq!(validate::sanitize_project_name(&"a".repeat(100)).len(), 40);
}

#[test]
fn service_rules() {
    assert_eq!(field("apiVersion: v1\n"), "services");
    assert_eq!(field("apiVersion: v1\nservices: {}\n"), "services");
    assert_eq!(
        field(&edit("    image: ns/db\n", "    restartPolicy: no\n")),
        "services.db.image"
    );
    let e = err(&edit("image: ns/db", "image: NS/DB"));
    assert_eq!((e.field.as_str(), e.line), ("services.db.image", Some(14)));
    assert_eq!(
        field(&edit("image: ns/db", "image: ns/db:bad/tag")),
        "services.db.image"
    );
    assert_eq!(
        field(&edit("image: ns/db", "image: ns/db\n    diskSize: 20Gb")),
        "services.db.diskSize"
    );
    assert_eq!(
        field(&edit("image: ns/db", "image: ns/db\n    diskSize: 0")),
        "services.db.diskSize"
    );
    assert_eq!(
        field(&edit(
            "image: ns/db",
            "image: ns/db\n    resources: {cpu: 0}"
        )),
        "services.db.resources.cpu"
    );
    assert_eq!(
        field(&edit(
            "image: ns/db",
            "image: ns/db\n    resources: {cpu: 300}"
        )),
        "services.db.resources.cpu"
    );
    assert_eq!(
        field(&edit(
            "image: ns/db",
            "image: ns/db\n    resources: {memory: 1MiB}"
        )),
        "services.db.resources.memory"
    );
    assert_eq!(
        field(&edit(
            "image: ns/db",
            "image: ns/db\n    resources: {bootloader: {type: UEFI}}"
        )),
        "services.db.resources.bootloader"
    );
    assert_eq!(
        field(&edit(
            "image: ns/db",
            "image: ns/db\n    restartPolicy: sometimes"
        )),
        "services.db.restartPolicy"
    );
    assert_eq!(
        field(&edit(
            "image: ns/db",
            "image: ns/db\n    restartPolicy: false"
        )),
        "services.db.restartPolicy"
    );
    let p = ok(&edit("image: ns/db", "image: ns/db\n    restartPolicy: no"));
    assert_eq!(p.service("db").unwrap().restart_policy, RestartPolicy::No);
    assert_eq!(
        field(&edit("image: ns/db", "image: ns/db\n    ports: [80]")),
        "services.db.ports"
    );
    let e = err(&edit(
        "  db:\n    image: ns/db\n",
        "  db:\n    image: ns/db\n  db:\n    image: ns/db2\n",
    ));
    assert!(e.reason.contains("duplicate key `db`"), "{e}");
    assert_eq!(field(&edit("  db:", "  \"d b\":")), "services.d b");
    let long = "x".repeat(62);
    assert_eq!(
        field(&edit("  db:", &format!("  {long}:"))),
        format!("services.{long}")
    );
}

#[test]
fn cloud_init_rules() {
    let ci = |body: &str| {
        edit(
            "image: ns/db",
            &format!("image: ns/db\n    cloudInit:\n{body}"),
        )
    };
    assert_eq!(
        field(&ci(
            "      userData: \"#cloud-config\\n\"\n      userDataFile: u.yaml\n"
        )),
        "services.db.cloudInit.userDataFile"
    );
    assert_eq!(
        field(&ci("      metaData: {a: 1}\n      metaDataFile: m.yaml\n")),
        "services.db.cloudInit.metaDataFile"
    );
    assert_eq!(
        field(&ci(
            "      networkConfig: {version: 2}\n      networkConfigFile: n.yaml\n"
        )),
        "services.db.cloudInit.networkConfigFile"
    );
    let e = err(&ci("      userDataFile: ./missing.yaml\n"));
    assert_eq!(e.field, "services.db.cloudInit.userDataFile");
    assert!(e.reason.contains("./missing.yaml"), "{e}");
    assert_eq!(
        field(&ci("      metaDataFile: m.yaml\n")),
        "services.db.cloudInit.metaDataFile"
    );
    assert_eq!(
        field(&ci("      networkConfigFile: n.yaml\n")),
        "services.db.cloudInit.networkConfigFile"
    );
    assert_eq!(
        field(&ci("      metaData: [1]\n")),
        "services.db.cloudInit.metaData"
    );
    assert_eq!(
        field(&ci("      networkConfig: 2\n")),
        "services.db.cloudInit.networkConfig"
    );
    assert_eq!(
        field(&ci("      userData: \"#cloud-config\\nx: [\"\n")),
        "services.db.cloudInit.userData"
    );
    assert_eq!(
        field(&ci("      vendorData: x\n")),
        "services.db.cloudInit.vendorData"
    );
    let files = BTreeMap::from([
        (
            "big".to_owned(),
            vec![b'a'; crate::cloudinit::MAX_USER_DATA_BYTES + 1],
        ),
        ("bad.yaml".to_owned(), b"a: [\n".to_vec()),
        ("list.yaml".to_owned(), b"- 1\n".to_vec()),
    ]);
    let e = plan_with(&ci("      userDataFile: big\n"), &files).unwrap_err();
    assert_eq!(e.field, "services.db.cloudInit.userDataFile");
    let e = plan_with(&ci("      metaDataFile: bad.yaml\n"), &files).unwrap_err();
    assert_eq!(e.field, "services.db.cloudInit.metaDataFile");
    assert!(e.line.is_some() && e.reason.contains("bad.yaml"), "{e}");
    let e = plan_with(&ci("      networkConfigFile: list.yaml\n"), &files).unwrap_err();
    assert_eq!(e.field, "services.db.cloudInit.networkConfigFile");
}

#[test]
fn depends_on_rules() {
    let dep = |spec: &str| {
        edit(
            "image: ns/db",
            &format!("image: ns/db\n    dependsOn: {spec}"),
        )
    };
    let e = err(&dep("[cache]"));
    assert_eq!(e.field, "services.db.dependsOn[0]");
    assert!(e.reason.contains("unknown service `cache`"));
    assert_eq!(
        field(&dep("{cache: {condition: started}}")),
        "services.db.dependsOn.cache"
    );
    assert_eq!(
        field(&dep("{web: {condition: healthy}}")),
        "services.db.dependsOn.web.condition"
    );
    assert_eq!(
        field(&dep("{web: {when: ready}}")),
        "services.db.dependsOn.web.when"
    );
    assert_eq!(field(&dep("[web, web]")), "services.db.dependsOn[1]");
    assert_eq!(field(&dep("web")), "services.db.dependsOn");
    let p = ok(&dep("{web: }"));
    assert_eq!(
        p.service("db").unwrap().depends_on[0].condition,
        DependencyCondition::Started
    );
    let p = ok(&dep("{web: {condition: ready}}"));
    assert_eq!(
        p.service("db").unwrap().depends_on[0].condition,
        DependencyCondition::Ready
    );
    assert_eq!(p.levels[0][0].service, "web");
}

#[test]
fn cycles_are_named() {
    let two = "apiVersion: v1\nservices:\n  a: {image: x, dependsOn: [b]}\n  b: {image: x, dependsOn: [a]}\n";
    let e = err(two);
    assert_eq!(e.field, "services.a.dependsOn");
    assert_eq!(e.line, Some(3));
    assert_eq!(e.reason, "dependency cycle: a -> b -> a");
    let own = "apiVersion: v1\nservices:\n  a: {image: x, dependsOn: [a]}\n";
    assert_eq!(err(own).reason, "dependency cycle: a -> a");
    let three = "apiVersion: v1\nservices:\n  s: {image: x}\n  a: {image: x, dependsOn: [s, b]}\n  b: {image: x, dependsOn: [c]}\n  c: {image: x, dependsOn: [a]}\n";
    assert_eq!(err(three).reason, "dependency cycle: a -> b -> c -> a");
}

#[test]
fn levels_are_sorted_and_deterministic() {
    let yaml = "apiVersion: v1\nservices:\n  z: {image: x}\n  m: {image: x, dependsOn: [z, a]}\n  a: {image: x}\n  b: {image: x, dependsOn: [a]}\n  top: {image: x, dependsOn: [m]}\n";
    let p = ok(yaml);
    let levels: Vec<Vec<&str>> = p
        .levels
        .iter()
        .map(|l| l.iter().map(|s| s.service.as_str()).collect())
        .collect();
    assert_eq!(levels, [vec!["a", "z"], vec!["b", "m"], vec!["top"]]);
    assert_eq!(p, ok(yaml));
}

#[test]
fn to_yaml_is_normalised_and_stable() {
    let files = BTreeMap::from([(
        "./cloud-init/server-a-2.yaml".to_owned(),
        SERVER_A_2.as_bytes().to_vec(),
    )]);
    let p = plan_with(FULL, &files).unwrap();
    let text = p.to_yaml();
    assert_eq!(text, plan_with(FULL, &files).unwrap().to_yaml());
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["project"], serde_yaml::Value::from("ziti"));
    assert_eq!(
        doc["networks"][0]["name"],
        serde_yaml::Value::from("ziti-ziti-private-a")
    );
    assert_eq!(
        doc["networks"][0]["dhcp"]["start"],
        serde_yaml::Value::from("192.168.70.128")
    );
    let svc = &doc["services"][1];
    assert_eq!(
        svc["vmName"],
        serde_yaml::Value::from("ziti-ziti-server-a-2")
    );
    assert_eq!(svc["level"], serde_yaml::Value::from(1));
    assert_eq!(svc["memory"], serde_yaml::Value::from("8GiB"));
    assert_eq!(svc["diskSize"], serde_yaml::Value::from("20GiB"));
    assert_eq!(svc["restartPolicy"], serde_yaml::Value::from("on-failure"));
    assert_eq!(
        svc["dependsOn"][0]["condition"],
        serde_yaml::Value::from("started")
    );
    assert_eq!(
        svc["networks"][0]["staticIp"],
        serde_yaml::Value::from("192.168.70.11/24")
    );
}
