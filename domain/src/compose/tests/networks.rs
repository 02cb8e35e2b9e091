//! Compose network rules: modes, subnets, attachments, addresses, MACs.

use super::*;

#[test]
fn network_rules() {
    let e = err(&edit("mode: nat", "mode: bridge"));
    assert_eq!((e.field.as_str(), e.line), ("networks.net.mode", Some(5)));
    assert_eq!(field(&edit("    mode: nat\n", "")), "networks.net.mode");
    assert_eq!(
        field(&edit("    subnet: 192.168.70.0/24\n", "")),
        "networks.net.subnet"
    );
    for mode in ["isolated", "routed", "open"] {
        let yaml = edit(
            "mode: nat\n    subnet: 192.168.70.0/24",
            &format!("mode: {mode}"),
        );
        assert_eq!(field(&yaml), "networks.net.subnet", "{mode}");
    }
    assert_eq!(
        field(&edit("subnet: 192.168.70.0/24", "subnet: 192.168.70.0")),
        "networks.net.subnet"
    );
    assert_eq!(
        field(&edit(
            "subnet: 192.168.70.0/24",
            "subnet: 192.168.70.0/24\n    gateway: 10.0.0.1"
        )),
        "networks.net.gateway"
    );
    assert_eq!(
        field(&edit(
            "subnet: 192.168.70.0/24",
            "subnet: 192.168.70.0/24\n    dhcp: {start: 10.0.0.1, end: 192.168.70.20}"
        )),
        "networks.net.dhcp.start"
    );
    assert_eq!(
        field(&edit(
            "subnet: 192.168.70.0/24",
            "subnet: 192.168.70.0/24\n    dhcp: {start: 192.168.70.100}"
        )),
        "networks.net.dhcp.end"
    );
    assert_eq!(
        field(&edit(
            "subnet: 192.168.70.0/24",
            "subnet: 192.168.70.0/24\n    dhcp: {begin: 192.168.70.100}"
        )),
        "networks.net.dhcp.begin"
    );
    assert_eq!(
        field(&edit(
            "subnet: 192.168.70.0/24",
            "subnet: 192.168.70.0/24\n    subnets: x"
        )),
        "networks.net.subnets"
    );
    assert_eq!(
        field(&edit(
            "subnet: 192.168.70.0/24",
            "subnet: 192.168.70.0/24\n    name: other"
        )),
        "networks.net.name"
    );
    assert_eq!(
        field(&edit(
            "subnet: 192.168.70.0/24",
            "subnet: 192.168.70.0/24\n    bridge: br0"
        )),
        "networks.net.bridge"
    );
    let off = ok(&edit(
        "subnet: 192.168.70.0/24",
        "subnet: 192.168.70.0/24\n    dhcp: false",
    ));
    assert_eq!(
        off.networks
            .iter()
            .find(|n| n.key == "net")
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .ipv4
            .unwrap()
            .dhcp,
        None
    );
    assert_eq!(
        field(&edit("networks:\n  net:", "networks:\n  bad/key:")),
        "networks.bad/key"
    );
}

#[test]
fn bridged_macvtap_and_external_networks() {
    let extra = |net: &str| edit("services:", &format!("  {net}\nservices:"));
    assert_eq!(field(&extra("lan: {mode: bridged}")), "networks.lan.bridge");
    assert_eq!(
        field(&extra("lan: {mode: bridged, bridge: \"br 0\"}")),
        "networks.lan.bridge"
    );
    assert_eq!(
        field(&extra(
            "lan: {mode: bridged, bridge: br0, subnet: 10.9.0.0/24}"
        )),
        "networks.lan.subnet"
    );
    assert_eq!(
        field(&extra("up: {mode: macvtap}")),
        "networks.up.interface"
    );
    assert_eq!(
        field(&extra(
            "up: {mode: macvtap, interface: averyveryverylongifname}"
        )),
        "networks.up.interface"
    );
    assert_eq!(
        field(&extra("ext: {external: true, mode: nat}")),
        "networks.ext.mode"
    );
    assert_eq!(
        field(&extra("ext: {external: true, subnet: 10.9.0.0/24}")),
        "networks.ext.subnet"
    );
    assert_eq!(
        field(&extra("ext: {external: true, name: \"a b\"}")),
        "networks.ext.name"
    );
    let p = ok(&extra("ext: {external: true, name: default}"));
    let ext = p.networks.iter().find(|n| n.key == "ext").unwrap();
    assert_eq!((ext.name.as_str(), ext.external), ("default", true));
    let p = ok(&extra(
        "ext: {external: false, mode: isolated, subnet: 10.9.0.0/24}",
    ));
    assert!(!p.networks.iter().find(|n| n.key == "ext").unwrap().external);
}

#[test]
fn subnets_must_not_overlap() {
    let yaml = edit(
        "services:",
        "  other:\n    mode: isolated\n    subnet: 192.168.0.0/16\nservices:",
    );
    let e = err(&yaml);
    assert_eq!(e.field, "networks.other.subnet");
    assert!(
        e.reason.contains("overlaps") && e.reason.contains("`net`"),
        "{e}"
    );
    assert!(
        plan_with(
            &yaml.replace("192.168.0.0/16", "192.169.0.0/16"),
            &BTreeMap::new()
        )
        .is_ok()
    );
}

#[test]
fn service_network_references() {
    let e = err(&edit(
        "image: ns/db",
        "image: ns/db\n    networks: [net, nope]",
    ));
    assert_eq!(e.field, "services.db.networks[1]");
    assert!(e.reason.contains("unknown network `nope`"), "{e}");
    assert_eq!(
        field(&edit("- name: net", "- name: nope")),
        "services.web.networks[0].name"
    );
    assert_eq!(
        field(&edit(
            "- name: net\n",
            "- staticIp: 192.168.70.9\n        x: 1\n"
        )),
        "services.web.networks[0].x"
    );
    assert_eq!(
        field(&edit(
            "- name: net\n        staticIp: 192.168.70.10",
            "- staticIp: 192.168.70.10"
        )),
        "services.web.networks[0].name"
    );
    assert_eq!(
        field(&edit(
            "image: ns/db",
            "image: ns/db\n    networks: [net, net]"
        )),
        "services.db.networks[1]"
    );
    assert_eq!(
        field(&edit("image: ns/db", "image: ns/db\n    networks: [[net]]")),
        "services.db.networks[0]"
    );
    let none = "apiVersion: v1\nservices:\n  a:\n    image: x\n    networks: [n]\n";
    assert!(err(none).reason.contains("defines no networks"));
}

#[test]
fn static_ip_rules() {
    let at = |addr: &str| {
        field(&edit(
            "staticIp: 192.168.70.10",
            &format!("staticIp: {addr}"),
        ))
    };
    for bad in [
        "192.168.71.10",
        "192.168.70.0",
        "192.168.70.255",
        "192.168.70.1",
        "192.168.70.200",
        "x",
        "192.168.70.10/16",
    ] {
        assert_eq!(at(bad), "services.web.networks[0].staticIp", "{bad}");
    }
    let p = ok(&edit(
        "staticIp: 192.168.70.10",
        "staticIp: 192.168.70.10/24",
    ));
    let nic = &p.service("web").unwrap().networks[0];
    assert_eq!(nic.static_ip.unwrap().to_string(), "192.168.70.10/24");
    assert_eq!(nic.gateway, Some(ip("192.168.70.1")));
    // unique per network, reported at the later service (db < web)
    let dup = edit(
        "image: ns/db",
        "image: ns/db\n    networks:\n      - name: net\n        staticIp: 192.168.70.10",
    );
    let e = err(&dup);
    assert_eq!(e.field, "services.web.networks[0].staticIp");
    assert_eq!((e.line, e.column), (Some(12), Some(19)), "{e}");
    assert!(e.reason.contains("services.db.networks[0].staticIp"), "{e}");
    // the example path of FORMATS.md
    let second = edit(
        "        staticIp: 192.168.70.10\n",
        "        staticIp: 192.168.70.10\n      - name: lan\n        staticIp: 10.1.1.1\n",
    )
    .replace(
        "services:",
        "  lan: {mode: bridged, bridge: br0}\nservices:",
    );
    let e = err(&second);
    assert_eq!(e.field, "services.web.networks[1].staticIp");
    assert!(e.reason.contains("prefix length"), "{e}");
}

#[test]
fn gateway_and_mac_rules() {
    let base = "staticIp: 192.168.70.10";
    assert_eq!(
        field(&edit(base, &format!("{base}\n        gateway: 10.0.0.1"))),
        "services.web.networks[0].gateway"
    );
    assert_eq!(
        field(&edit(
            base,
            &format!("{base}\n        gateway: 192.168.70.10")
        )),
        "services.web.networks[0].gateway"
    );
    assert_eq!(
        field(&edit(base, "gateway: 192.168.70.1")),
        "services.web.networks[0].gateway"
    );
    let p = ok(&edit(
        base,
        &format!("{base}\n        gateway: 192.168.70.2"),
    ));
    assert_eq!(
        p.service("web").unwrap().networks[0].gateway,
        Some(ip("192.168.70.2"))
    );
    assert_eq!(
        field(&edit(
            base,
            &format!("{base}\n        mac: 52:54:00:zz:00:01")
        )),
        "services.web.networks[0].mac"
    );
    assert_eq!(
        field(&edit(
            base,
            &format!("{base}\n        mac: \"01:00:5e:00:00:01\"")
        )),
        "services.web.networks[0].mac"
    );
    let mac = "\n        mac: \"52:54:00:00:00:01\"";
    let dup = edit(base, &format!("{base}{mac}")).replace(
        "image: ns/db",
        &format!("image: ns/db\n    networks:\n      - name: net{mac}"),
    );
    assert_eq!(field(&dup), "services.web.networks[0].mac");
}

#[test]
fn a_service_naming_no_network_joins_the_projects_default_network() {
    let p = ok("apiVersion: v1
services:
  web:
    image: ns/web
  db:
    image: ns/db
    networks: []
");
    let names: Vec<(&str, bool)> = p
        .networks
        .iter()
        .map(|n| (n.name.as_str(), n.implicit))
        .collect();
    assert_eq!(names, [("my-dir-default", true)]);
    assert_eq!(p.networks[0].spec, None);
    assert!(!p.networks[0].external);
    let web = p.service("web").unwrap();
    assert_eq!(web.networks.len(), 1);
    assert_eq!(web.networks[0].network.as_str(), "my-dir-default");
    assert_eq!(web.networks[0].static_ip, None);
    // `networks: []` asks for no card at all.
    assert!(p.service("db").unwrap().networks.is_empty());
    assert!(p.to_yaml().contains("implicit: true"), "{}", p.to_yaml());
}

#[test]
fn no_default_network_when_every_service_names_its_networks_or_none() {
    let p = ok("apiVersion: v1
networks:
  net:
    mode: isolated
    subnet: 10.1.0.0/24
services:
  web:
    image: ns/web
    networks: [net]
  db:
    image: ns/db
    networks: []
");
    let names: Vec<&str> = p.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["my-dir-net"]);
}

#[test]
fn the_files_own_default_network_is_the_one_services_join() {
    let p = ok("apiVersion: v1
networks:
  default:
    mode: isolated
    subnet: 10.2.0.0/24
services:
  web:
    image: ns/web
");
    assert_eq!(p.networks.len(), 1);
    let default = &p.networks[0];
    assert!(!default.implicit);
    assert_eq!(default.name.as_str(), "my-dir-default");
    assert_eq!(
        default
            .spec
            .as_ref()
            .unwrap()
            .ipv4
            .unwrap()
            .subnet
            .to_string(),
        "10.2.0.0/24"
    );
    assert_eq!(
        p.service("web").unwrap().networks[0].network.as_str(),
        "my-dir-default"
    );
}
