//! The disks port's adapter against real files, read back with qemu-img:
//! the contract's rules, and overlays sized to the VM's disk size but never
//! below their base, whose bytes are never written.

use std::sync::Arc;

use vmr_adapters::disks::QemuDisks;
use vmr_domain::image::DiskFormat;
use vmr_ports::OverlayDisks;
use vmr_tests::hypervisor_contract::{Fixture, overlay_rules};

#[tokio::test]
async fn the_disk_adapter_keeps_the_overlay_rules() {
    let fx = Fixture::new("disk", 207, "br0", "eth0");
    overlay_rules(Arc::new(QemuDisks), &fx).await;
}

fn qemu_img_info(path: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn overlays_grow_to_the_disk_size_but_never_below_the_base() {
    let disks = QemuDisks;
    let fx = Fixture::new("ovsize", 221, "br0", "eth0");
    let base = fx.base_disk("base.qcow2");
    let before = vmr_tests::hypervisor_contract::sha256_file(&base);

    let small = fx.path("small.qcow2");
    disks
        .create_overlay(&base, DiskFormat::Qcow2, &small, Some(32 << 20))
        .await
        .unwrap();
    assert_eq!(qemu_img_info(&small)["virtual-size"], 64 << 20);

    let big = fx.path("big.qcow2");
    disks
        .create_overlay(&base, DiskFormat::Qcow2, &big, Some(1 << 30))
        .await
        .unwrap();
    let info = qemu_img_info(&big);
    assert_eq!(info["virtual-size"], 1 << 30);
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["backing-filename"], base.display().to_string());
    assert_eq!(info["backing-filename-format"], "qcow2");

    let raw = fx.path("base.raw");
    std::fs::write(&raw, vec![0u8; 16 << 20]).unwrap();
    let over_raw = fx.path("over-raw.qcow2");
    disks
        .create_overlay(&raw, DiskFormat::Raw, &over_raw, None)
        .await
        .unwrap();
    let info = qemu_img_info(&over_raw);
    assert_eq!(info["virtual-size"], 16 << 20);
    assert_eq!(info["backing-filename-format"], "raw");

    let blank = fx.path("blank.qcow2");
    disks.create_blank_disk(&blank, 2 << 30).await.unwrap();
    assert_eq!(qemu_img_info(&blank)["virtual-size"], 2u64 << 30);
    assert!(qemu_img_info(&blank).get("backing-filename").is_none());

    assert_eq!(vmr_tests::hypervisor_contract::sha256_file(&base), before);
}
