//! The default network, `no_network` and ssh keys of a create request.

use vmr_domain::network::DEFAULT_NETWORK;
use vmr_ports::NetworkDriver;

use super::*;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIvmrtestkeyvmrtestkey vmr";

#[tokio::test]
async fn no_network_named_joins_the_default_network_made_once() {
    let world = World::new().await;
    let (a, b) = tokio::join!(
        world.vms.create(request("a", "tests/raw:1")),
        world.vms.create(request("b", "tests/raw:1"))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.spec.networks[0].network.as_str(), DEFAULT_NETWORK);
    assert_eq!(b.spec.networks[0].network.as_str(), DEFAULT_NETWORK);
    let networks = world.fake.list_networks().await.unwrap();
    let defaults: Vec<_> = networks
        .iter()
        .filter(|n| n.spec.name.as_str() == DEFAULT_NETWORK)
        .collect();
    assert_eq!(defaults.len(), 1);
    assert!(defaults[0].active);
    // It overlaps neither of the world's networks (10.10/24, 10.20/24).
    assert_eq!(
        defaults[0].spec.ipv4.unwrap().subnet.to_string(),
        "10.89.0.0/24"
    );
    assert_eq!(
        a.interfaces[0].source,
        Some(vmr_domain::network::AddressSource::Dhcp)
    );
}

#[tokio::test]
async fn no_network_gives_no_card_and_excludes_networks() {
    let world = World::new().await;
    let mut req = request("bare", "tests/raw:1");
    req.no_network = true;
    let vm = world.vms.create(req).await.unwrap();
    assert!(vm.spec.networks.is_empty());
    assert!(
        !world
            .fake
            .list_networks()
            .await
            .unwrap()
            .iter()
            .any(|n| n.spec.name.as_str() == DEFAULT_NETWORK)
    );
    let mut req = request("both", "tests/raw:1");
    req.no_network = true;
    req.networks = vec![nic("lan", None)];
    let e = world.vms.create(req).await.unwrap_err();
    assert_eq!(e.field.as_deref(), Some("networks"));
    assert_eq!(world.names().await, ["bare"]);
}

#[tokio::test]
async fn ssh_keys_reach_the_seed_with_the_users_user_data() {
    let world = World::new().await;
    let mut req = request("web", "tests/raw:1");
    req.user_data = Some(b"#cloud-config\nhostname: own\n".to_vec());
    req.ssh_authorized_keys = vec![KEY.to_owned()];
    world.vms.create(req).await.unwrap();
    let iso = std::fs::read(world.tmp.path().join("runtime/web/cidata.iso")).unwrap();
    let text = String::from_utf8_lossy(&iso);
    assert!(text.contains(KEY), "the key is in the seed");
    assert!(
        text.contains("hostname: own"),
        "the user's settings are kept"
    );

    let mut req = request("bad", "tests/raw:1");
    req.ssh_authorized_keys = vec!["not a key".to_owned()];
    let e = world.vms.create(req).await.unwrap_err();
    assert_eq!(e.field.as_deref(), Some("ssh_authorized_keys[0]"));
    assert_eq!(world.names().await, ["web"]);
}
