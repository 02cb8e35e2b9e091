//! Addressing and mode rules of network specs.
use super::*;

fn nat(subnet: &str) -> NetworkSpec {
    named("n", subnet)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[allow(clippy::too_many_arguments)]
fn err(
    mode: &str,
    subnet: Option<&str>,
    gateway: Option<&str>,
    start: Option<&str>,
    end: Option<&str>,
    no_dhcp: bool,
    bridge: Option<&str>,
    interface: Option<&str>,
) -> ValidationError {
    NetworkSpec::from_parts(
        "n", mode, subnet, gateway, start, end, no_dhcp, bridge, interface,
    )
    .unwrap_err()
}

#[test]
fn defaults_gateway_and_dhcp() {
    let spec = nat("192.168.70.0/24");
    let v4 = spec.ipv4.unwrap();
    assert_eq!(v4.gateway, ip("192.168.70.1"));
    let dhcp = v4.dhcp.unwrap();
    assert_eq!(
        (dhcp.start, dhcp.end),
        (ip("192.168.70.128"), ip("192.168.70.254"))
    );
    let small = nat("10.0.0.0/30").ipv4.unwrap();
    assert_eq!(small.gateway, ip("10.0.0.1"));
    assert_eq!(small.dhcp.unwrap().start, ip("10.0.0.2"));
    assert_eq!(small.dhcp.unwrap().end, ip("10.0.0.2"));
}

#[test]
fn explicit_values_and_dhcp_off() {
    let spec = NetworkSpec::from_parts(
        "n",
        "isolated",
        Some("192.168.70.0/24"),
        Some("192.168.70.254"),
        Some("192.168.70.100"),
        Some("192.168.70.200"),
        false,
        None,
        None,
    )
    .unwrap();
    let v4 = spec.ipv4.unwrap();
    assert_eq!(v4.gateway, ip("192.168.70.254"));
    assert_eq!(v4.dhcp.unwrap().start, ip("192.168.70.100"));
    let off = NetworkSpec::from_parts(
        "n",
        "routed",
        Some("10.1.0.0/16"),
        None,
        None,
        None,
        true,
        None,
        None,
    )
    .unwrap();
    assert_eq!(off.ipv4.unwrap().dhcp, None);
}

#[test]
fn subnet_rules() {
    assert_eq!(
        err("nat", None, None, None, None, false, None, None).field,
        "subnet"
    );
    for mode in ["isolated", "routed", "open"] {
        assert_eq!(
            err(mode, None, None, None, None, false, None, None).field,
            "subnet"
        );
    }
    let e = err(
        "nat",
        Some("192.168.70.5/24"),
        None,
        None,
        None,
        false,
        None,
        None,
    );
    assert!(e.reason.contains("192.168.70.0/24"), "{e}");
    assert_eq!(
        err(
            "nat",
            Some("10.0.0.0/31"),
            None,
            None,
            None,
            false,
            None,
            None
        )
        .field,
        "subnet"
    );
    assert_eq!(
        err(
            "nat",
            Some("10.0.0.0/4"),
            None,
            None,
            None,
            false,
            None,
            None
        )
        .field,
        "subnet"
    );
    assert_eq!(
        err("nat", Some("nope"), None, None, None, false, None, None).field,
        "subnet"
    );
    assert_eq!(
        err("nat", Some("::1/64"), None, None, None, false, None, None).field,
        "subnet"
    );
}

#[test]
fn gateway_rules() {
    let s = Some("192.168.70.0/24");
    for bad in [
        "192.168.71.1",
        "192.168.70.0",
        "192.168.70.255",
        "192.168.70.200",
        "x",
    ] {
        let e = err("nat", s, Some(bad), None, None, false, None, None);
        assert_eq!(e.field, "gateway", "{bad}: {e}");
    }
}

#[test]
fn dhcp_rules() {
    let s = Some("192.168.70.0/24");
    let f = |start, end, off| err("nat", s, None, start, end, off, None, None).field;
    assert_eq!(
        f(Some("192.168.71.10"), Some("192.168.70.20"), false),
        "dhcp.start"
    );
    assert_eq!(
        f(Some("192.168.70.10"), Some("192.168.70.255"), false),
        "dhcp.end"
    );
    assert_eq!(
        f(Some("192.168.70.30"), Some("192.168.70.20"), false),
        "dhcp.end"
    );
    assert_eq!(f(Some("192.168.70.10"), None, false), "dhcp.end");
    assert_eq!(f(None, Some("192.168.70.10"), false), "dhcp.start");
    assert_eq!(
        f(Some("192.168.70.10"), Some("192.168.70.20"), true),
        "dhcp"
    );
    // gateway inside an explicit range
    assert_eq!(
        f(Some("192.168.70.1"), Some("192.168.70.20"), false),
        "gateway"
    );
}

#[test]
fn mode_specific_fields() {
    let br = NetworkSpec::from_parts(
        "lan",
        "bridged",
        None,
        None,
        None,
        None,
        false,
        Some("br0"),
        None,
    )
    .unwrap();
    assert_eq!(br.bridge.as_deref(), Some("br0"));
    assert_eq!(br.ipv4, None);
    let mv = NetworkSpec::from_parts(
        "up",
        "macvtap",
        None,
        None,
        None,
        None,
        false,
        None,
        Some("eth0"),
    )
    .unwrap();
    assert_eq!(mv.interface.as_deref(), Some("eth0"));
    assert_eq!(
        err("bridged", None, None, None, None, false, None, None).field,
        "bridge"
    );
    assert_eq!(
        err("macvtap", None, None, None, None, false, None, None).field,
        "interface"
    );
    assert_eq!(
        err("bridged", None, None, None, None, false, Some("br/0"), None).field,
        "bridge"
    );
    assert_eq!(
        err(
            "bridged",
            None,
            None,
            None,
            None,
            false,
            Some("averyveryverylongbridge"),
            None
        )
        .field,
        "bridge"
    );
    assert_eq!(
        err(
            "macvtap",
            None,
            None,
            None,
            None,
            false,
            None,
            Some("eth 0")
        )
        .field,
        "interface"
    );
    assert_eq!(
        err(
            "bridged",
            Some("10.0.0.0/24"),
            None,
            None,
            None,
            false,
            Some("br0"),
            None
        )
        .field,
        "subnet"
    );
    assert_eq!(
        err(
            "macvtap",
            None,
            Some("10.0.0.1"),
            None,
            None,
            false,
            None,
            Some("eth0")
        )
        .field,
        "gateway"
    );
    assert_eq!(
        err("macvtap", None, None, None, None, true, None, Some("eth0")).field,
        "dhcp"
    );
    assert_eq!(
        err(
            "nat",
            Some("10.0.0.0/24"),
            None,
            None,
            None,
            false,
            Some("br0"),
            None
        )
        .field,
        "bridge"
    );
    assert_eq!(
        err(
            "nat",
            Some("10.0.0.0/24"),
            None,
            None,
            None,
            false,
            None,
            Some("eth0")
        )
        .field,
        "interface"
    );
    assert_eq!(
        err("bridge", None, None, None, None, false, None, None).field,
        "mode"
    );
    let e = NetworkSpec::from_parts(
        "a/b",
        "nat",
        Some("10.0.0.0/24"),
        None,
        None,
        None,
        false,
        None,
        None,
    )
    .unwrap_err();
    assert_eq!(e.field, "name");
}

#[test]
fn static_ip_rules() {
    let v4 = NetworkSpec::from_parts(
        "n",
        "nat",
        Some("192.168.70.0/24"),
        None,
        Some("192.168.70.100"),
        Some("192.168.70.200"),
        false,
        None,
        None,
    )
    .unwrap()
    .ipv4
    .unwrap();
    assert!(v4.check_static_ip(ip("192.168.70.10")).is_ok());
    assert!(v4.check_static_ip(ip("192.168.70.201")).is_ok());
    for (bad, word) in [
        ("192.168.71.10", "outside"),
        ("192.168.70.0", "network address"),
        ("192.168.70.255", "broadcast"),
        ("192.168.70.1", "gateway"),
        ("192.168.70.150", "DHCP range"),
        ("192.168.70.100", "DHCP range"),
    ] {
        let reason = v4.check_static_ip(ip(bad)).unwrap_err();
        assert!(reason.contains(word), "{bad}: {reason}");
    }
    assert_eq!(
        v4.with_prefix(ip("192.168.70.10")).to_string(),
        "192.168.70.10/24"
    );
}

fn named(name: &str, subnet: &str) -> NetworkSpec {
    NetworkSpec::from_parts(
        name,
        "nat",
        Some(subnet),
        None,
        None,
        None,
        false,
        None,
        None,
    )
    .unwrap()
}

#[test]
fn overlap() {
    let wide = named("wide", "10.0.0.0/16");
    let e = check_no_overlap(&named("new", "10.0.5.0/24"), [&wide]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "10.0.5.0/24 overlaps the subnet 10.0.0.0/16 of network wide"
    );
    assert_eq!(e.other.as_str(), "wide");
    let v: ValidationError = e.into();
    assert_eq!(v.field, "subnet");
    let narrow = named("narrow", "10.0.5.0/24");
    assert!(check_no_overlap(&named("new", "10.0.0.0/16"), [&narrow]).is_err());
    assert!(check_no_overlap(&named("new", "10.0.5.0/24"), [&narrow]).is_err());
    assert!(
        check_no_overlap(
            &named("new", "10.0.6.0/24"),
            [&narrow, &named("x", "10.1.0.0/16")]
        )
        .is_ok()
    );
    // The first overlapping network is named.
    let e = check_no_overlap(
        &named("new", "10.0.5.0/24"),
        [&named("x", "10.9.0.0/16"), &narrow, &wide],
    )
    .unwrap_err();
    assert_eq!(e.other.as_str(), "narrow");
    // A network is not compared with itself.
    assert!(check_no_overlap(&narrow, [&narrow]).is_ok());
    let br = NetworkSpec::from_parts(
        "lan",
        "bridged",
        None,
        None,
        None,
        None,
        false,
        Some("br0"),
        None,
    )
    .unwrap();
    assert!(check_no_overlap(&br, [&named("all", "10.0.0.0/8")]).is_ok());
    assert!(check_no_overlap(&named("all", "10.0.0.0/8"), [&br]).is_ok());
}
