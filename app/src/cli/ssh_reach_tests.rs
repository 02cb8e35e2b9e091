use super::*;

use tokio::io::AsyncWriteExt as _;

fn card(network: &str, ip: &str, source: &str) -> pb::InterfaceInfo {
    pb::InterfaceInfo {
        network: network.into(),
        mac: String::new(),
        ip: ip.into(),
        ip_source: source.into(),
    }
}

fn network(name: &str, mode: &str, subnet: &str) -> pb::NetworkInfo {
    pb::NetworkInfo {
        name: name.into(),
        mode: mode.into(),
        subnet: subnet.into(),
        ..Default::default()
    }
}

fn order(found: &[Candidate]) -> Vec<String> {
    found.iter().map(|c| c.ip.to_string()).collect()
}

#[test]
fn a_host_network_card_comes_before_macvtap_open_and_bridged_ones() {
    let networks = [
        network("mv", "macvtap", ""),
        network("op", "open", "10.7.1.0/24"),
        network("br", "bridged", ""),
        network("iso", "isolated", "10.7.2.0/24"),
        network("vmr-default", "nat", "10.89.0.0/24"),
    ];
    let cards = [
        card("mv", "10.7.0.10", "static"),
        card("op", "10.7.1.10", "static"),
        card("br", "192.168.1.40", "agent"),
        card("vmr-default", "10.89.0.5", "dhcp"),
        card("iso", "10.7.2.10", "static"),
    ];
    let found = candidates(&cards, &networks);
    assert_eq!(
        order(&found),
        [
            "10.89.0.5",
            "10.7.2.10",
            "192.168.1.40",
            "10.7.1.10",
            "10.7.0.10"
        ]
    );
    assert_eq!(found[0].reach, Reach::HostNetwork);
    assert_eq!(found[1].reach, Reach::HostNetwork);
    assert_eq!(found[2].reach, Reach::Leased);
    assert_eq!(found[3].reach, Reach::Static);
    assert_eq!(found[4].reach, Reach::Macvtap);
    assert_eq!(
        found[0].to_string(),
        "10.89.0.5 (nat network vmr-default, dhcp)"
    );
}

#[test]
fn cards_of_one_reach_keep_their_order_and_blank_or_repeated_addresses_are_dropped() {
    let networks = [
        network("a", "routed", "10.7.3.0/24"),
        network("b", "nat", "10.7.4.0/24"),
    ];
    let cards = [
        card("a", "", ""),
        card("a", "10.7.3.20", "dhcp"),
        card("b", "10.7.4.20", "static"),
        card("b", "10.7.4.20", "static"),
        card("b", "not an address", "agent"),
    ];
    assert_eq!(
        order(&candidates(&cards, &networks)),
        ["10.7.3.20", "10.7.4.20"]
    );
    assert!(candidates(&[], &networks).is_empty());
}

#[test]
fn an_unlisted_network_ranks_by_the_address_source_and_a_foreign_address_is_no_host_network() {
    // ListNetworks failed or does not know the network: a lease beats a
    // static address; an address outside a nat network's subnet (an agent
    // reporting a VPN's address) is not one the host's bridge reaches.
    let networks = [network("n", "nat", "10.7.5.0/24")];
    let cards = [
        card("gone", "10.7.6.10", "static"),
        card("n", "172.16.0.9", "agent"),
        card("gone", "10.7.6.11", "dhcp"),
        card("n", "10.7.5.9", "dhcp"),
    ];
    let found = candidates(&cards, &networks);
    assert_eq!(
        order(&found),
        ["10.7.5.9", "172.16.0.9", "10.7.6.11", "10.7.6.10"]
    );
    assert_eq!(
        found[3].to_string(),
        "10.7.6.10 (unlisted network gone, static)"
    );
}

/// A listener on a free local port; `serve` runs for each connection.
async fn listener<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

const WITHIN: Duration = Duration::from_millis(500);

#[tokio::test]
async fn an_sshd_banner_passes_after_other_lines() {
    let addr = listener(|mut s| async move {
        s.write_all(b"hello from the preamble\r\nSSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
            .await
            .unwrap();
        // Held open, as sshd waits for the client's version.
        std::future::pending::<()>().await;
    })
    .await;
    assert_eq!(
        ssh_banner(addr, WITHIN).await.unwrap(),
        "SSH-2.0-OpenSSH_9.2p1 Debian-2"
    );
}

#[tokio::test]
async fn a_listener_that_never_sends_a_banner_fails_within_the_bound() {
    let addr = listener(|s| async move {
        let _open = s;
        std::future::pending::<()>().await;
    })
    .await;
    let err = ssh_banner(addr, WITHIN).await.unwrap_err();
    assert!(matches!(err, NoBanner::Silent(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "accepted the connection but sent no SSH banner within 500ms"
    );
}

#[tokio::test]
async fn a_closed_connection_another_protocol_and_a_refusal_are_told_apart() {
    let closes = listener(|s| async move { drop(s) }).await;
    let err = ssh_banner(closes, WITHIN).await.unwrap_err();
    assert!(matches!(err, NoBanner::Closed), "{err:?}");

    let http = listener(|mut s| async move {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        std::future::pending::<()>().await;
    })
    .await;
    // Not an sshd: its lines never reach a version line before it stops.
    let err = ssh_banner(http, WITHIN).await.unwrap_err();
    assert!(matches!(err, NoBanner::Silent(_)), "{err:?}");

    let old = listener(|mut s| async move {
        let _ = s.write_all(b"SSH-1.5-old\r\n").await;
    })
    .await;
    let err = ssh_banner(old, WITHIN).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "answered \"SSH-1.5-old\", not an SSH-2.0 banner"
    );

    // A port nobody listens on: the listener is bound then dropped.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let err = ssh_banner(addr, WITHIN).await.unwrap_err();
    assert!(matches!(err, NoBanner::Connect(_)), "{err:?}");
}

#[tokio::test]
async fn the_timeout_message_names_the_vm_each_address_and_why() {
    let silent = listener(|s| async move {
        let _open = s;
        std::future::pending::<()>().await;
    })
    .await;
    let networks = [network("vmr-default", "nat", "127.0.0.0/8")];
    let found = candidates(&[card("vmr-default", "127.0.0.1", "dhcp")], &networks);
    let why = ssh_banner(SocketAddr::new(found[0].ip.into(), silent.port()), WITHIN)
        .await
        .unwrap_err();
    let message = unreachable_message(
        "g1",
        22,
        Duration::from_secs(120),
        &[(found[0].clone(), why)],
    );
    assert_eq!(
        message,
        "VM g1: no address answered as an sshd on port 22 within 120s; tried 127.0.0.1 (nat network vmr-default, dhcp): accepted the connection but sent no SSH banner within 500ms; is the guest's sshd running and is one of its networks reachable from this host? see `vmr logs g1`"
    );
}
