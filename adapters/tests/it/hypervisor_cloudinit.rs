//! The cidata ISO as cloud-init and the usual tools see it: volume id
//! `cidata`, and `user-data`, `meta-data`, `network-config` under their
//! own names (read back with genisoimage's `isoinfo`).

use std::path::Path;
use std::process::Command;

use vmr_adapters::cloudinit::{MAX_SEED_FILE_BYTES, build_cidata_iso, write_cidata_iso};
use vmr_domain::cloudinit::{CloudInitSeed, MetaData, NetworkConfigV2};
use vmr_ports::SeedError;

fn isoinfo(args: &[&str], iso: &Path) -> String {
    let out = Command::new("isoinfo")
        .args(args)
        .arg("-i")
        .arg(iso)
        .output()
        .expect("isoinfo (genisoimage) is installed");
    assert!(
        out.status.success(),
        "isoinfo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn seed() -> CloudInitSeed {
    CloudInitSeed {
        user_data: b"#cloud-config\nhostname: web\nruncmd:\n  - echo '<&>\"'\n".to_vec(),
        meta_data: MetaData::new("iid-web-1", "web").to_yaml(),
        network_config: "version: 2\nethernets: {}\n".into(),
    }
}

#[tokio::test]
async fn cidata_iso_is_labelled_and_holds_the_three_documents() {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("cidata.iso");
    let seed = seed();
    write_cidata_iso(&seed, &iso).await.unwrap();

    let descriptor = isoinfo(&["-d"], &iso);
    assert!(descriptor.contains("Volume id: cidata"), "{descriptor}");
    assert!(descriptor.contains("Joliet"), "{descriptor}");
    assert!(descriptor.contains("Rock Ridge"), "{descriptor}");

    assert_eq!(
        isoinfo(&["-J", "-x", "/user-data"], &iso).as_bytes(),
        seed.user_data
    );
    assert_eq!(isoinfo(&["-J", "-x", "/meta-data"], &iso), seed.meta_data);
    assert_eq!(
        isoinfo(&["-R", "-x", "/network-config"], &iso),
        seed.network_config
    );
    let listing = isoinfo(&["-R", "-l"], &iso);
    for name in ["user-data", "meta-data", "network-config"] {
        assert!(listing.contains(name), "{listing}");
    }
    assert!(!dir.path().join("cidata.iso.tmp").exists());
}

#[test]
fn empty_network_config_is_left_out() {
    let mut seed = seed();
    seed.network_config = String::new();
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("seed.iso");
    std::fs::write(&iso, build_cidata_iso(&seed).unwrap()).unwrap();
    let listing = isoinfo(&["-R", "-l"], &iso);
    assert!(listing.contains("user-data"), "{listing}");
    assert!(!listing.contains("network-config"), "{listing}");
}

#[test]
fn generated_network_config_survives_the_round_trip() {
    let meta = MetaData::new("iid", "host");
    let seed = CloudInitSeed::build(
        None,
        &meta,
        &NetworkConfigV2::from_attachments(&[], &[]),
        None,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("seed.iso");
    std::fs::write(&iso, build_cidata_iso(&seed).unwrap()).unwrap();
    assert_eq!(isoinfo(&["-J", "-x", "/meta-data"], &iso), seed.meta_data);
}

#[test]
fn oversized_documents_are_refused() {
    let mut seed = seed();
    seed.user_data = vec![b'#'; MAX_SEED_FILE_BYTES + 1];
    match build_cidata_iso(&seed) {
        Err(SeedError::TooLarge { file, .. }) => assert_eq!(file, "user-data"),
        other => panic!("expected TooLarge, got {:?}", other.map(|b| b.len())),
    }
}
