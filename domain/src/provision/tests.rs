use std::collections::BTreeMap;

use super::*;
use crate::image::{
    Descriptor, ImageDiskInfo, ImageMetadata, ImageResources, ImageSpec, disk_media_type,
};
use crate::network::{DhcpRange, MacAddr, NetworkName};
use crate::vm::Bootloader;

const GIB: u64 = 1 << 30;

fn image(format: DiskFormat) -> RunnableImage {
    RunnableImage {
        manifest_digest: Digest::of(b"manifest"),
        disk_digest: Digest::of(b"disk"),
        disk_format: format,
        config: ImageConfig {
            metadata: ImageMetadata {
                name: "team/web".parse().unwrap(),
                description: None,
                author: None,
                source: None,
                labels: BTreeMap::new(),
            },
            spec: ImageSpec {
                // Deliberately not the layer's format: the layer decides.
                disk_format: DiskFormat::Raw,
                resources: ImageResources {
                    cpu: 2,
                    memory: 2 * GIB,
                    bootloader: Bootloader::Uefi,
                },
            },
            disk: ImageDiskInfo {
                virtual_size: 10 * GIB,
            },
        },
    }
}

fn overrides() -> Overrides {
    Overrides {
        name: "web".parse().unwrap(),
        image: "team/web:1".parse().unwrap(),
        cpu: None,
        memory: None,
        disk_size: None,
        restart_policy: RestartPolicy::default(),
        project: None,
        service: None,
    }
}

fn ipv4() -> Ipv4Config {
    Ipv4Config {
        subnet: "10.7.0.0/24".parse().unwrap(),
        gateway: "10.7.0.1".parse().unwrap(),
        dhcp: Some(DhcpRange {
            start: "10.7.0.100".parse().unwrap(),
            end: "10.7.0.200".parse().unwrap(),
        }),
    }
}

fn nic(static_ip: Option<&str>, gateway: Option<&str>) -> Nic {
    Nic {
        attachment: NetworkAttachment {
            network: "lan".parse::<NetworkName>().unwrap(),
            mac: MacAddr::derive("web/lan"),
            static_ip: static_ip.map(|ip| ip.parse().unwrap()),
            gateway: gateway.map(|g| g.parse().unwrap()),
        },
        ipv4: Some(ipv4()),
    }
}

#[test]
fn an_overlay_is_never_smaller_than_the_image_disk() {
    assert_eq!(
        disk_size(DiskFormat::Qcow2, None, 10 * GIB),
        Some(ByteSize(10 * GIB))
    );
    assert_eq!(
        disk_size(DiskFormat::Raw, Some(ByteSize(GIB)), 10 * GIB),
        Some(ByteSize(10 * GIB)),
        "a smaller size cannot shrink the image's disk"
    );
    assert_eq!(
        disk_size(DiskFormat::Qcow2, Some(ByteSize(20 * GIB)), 10 * GIB),
        Some(ByteSize(20 * GIB))
    );
}

#[test]
fn an_iso_image_gets_a_blank_disk_only_when_asked() {
    assert_eq!(disk_size(DiskFormat::Iso, None, 10 * GIB), None);
    assert_eq!(
        disk_size(DiskFormat::Iso, Some(ByteSize(GIB)), 10 * GIB),
        Some(ByteSize(GIB))
    );
}

#[test]
fn the_image_values_apply_unless_overridden() {
    let spec = vm_spec(&image(DiskFormat::Qcow2), &overrides(), &[]);
    assert_eq!(spec.cpu, 2);
    assert_eq!(spec.memory, ByteSize(2 * GIB));
    assert_eq!(spec.bootloader, Bootloader::Uefi);
    assert_eq!(spec.disk_size, Some(ByteSize(10 * GIB)));

    let spec = vm_spec(
        &image(DiskFormat::Qcow2),
        &Overrides {
            cpu: Some(4),
            memory: Some(ByteSize(GIB)),
            disk_size: Some(ByteSize(30 * GIB)),
            ..overrides()
        },
        &[],
    );
    assert_eq!(spec.cpu, 4);
    assert_eq!(spec.memory, ByteSize(GIB));
    assert_eq!(spec.disk_size, Some(ByteSize(30 * GIB)));
}

#[test]
fn the_labels_keep_the_reference_digest_project_and_service() {
    let spec = vm_spec(
        &image(DiskFormat::Qcow2),
        &Overrides {
            project: Some("shop".into()),
            service: Some("web".into()),
            ..overrides()
        },
        &[nic(None, None)],
    );
    assert_eq!(
        spec.labels,
        VmLabels {
            image: "team/web:1".into(),
            image_digest: Some(Digest::of(b"manifest")),
            project: Some("shop".into()),
            service: Some("web".into()),
        }
    );
    assert_eq!(spec.networks, vec![nic(None, None).attachment]);
}

#[test]
fn the_instance_id_names_the_vm_and_changes_with_its_spec() {
    let a = vm_spec(&image(DiskFormat::Qcow2), &overrides(), &[]);
    let id = instance_id(&a);
    let hash = id.strip_prefix("vmr-web-").expect(&id);
    assert_eq!(hash.len(), 12);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(hash, &a.spec_hash()[..12]);

    let b = vm_spec(
        &image(DiskFormat::Qcow2),
        &Overrides {
            cpu: Some(8),
            ..overrides()
        },
        &[],
    );
    assert_ne!(instance_id(&a), instance_id(&b));
}

#[test]
fn the_seed_names_the_host_and_gives_static_nics_their_dns_server() {
    let mut extra = BTreeMap::new();
    extra.insert("role".to_owned(), serde_yaml::Value::from("frontend"));
    let nics = [nic(Some("10.7.0.5/24"), Some("10.7.0.1")), nic(None, None)];
    let made = provision(
        &image(DiskFormat::Qcow2),
        &overrides(),
        &nics,
        SeedInput {
            user_data: Some(b"#cloud-config\n".to_vec()),
            extra_meta_data: extra,
            network_config: None,
        },
    )
    .unwrap();
    let meta = &made.seed.meta_data;
    assert!(
        meta.contains(&format!("instance-id: {}", instance_id(&made.spec))),
        "{meta}"
    );
    assert!(meta.contains("local-hostname: web"), "{meta}");
    assert!(meta.contains("role: frontend"), "{meta}");
    assert_eq!(nics[0].config().nameservers, vec![ipv4().gateway]);
    assert!(
        nics[1].config().nameservers.is_empty(),
        "DHCP tells the guest itself"
    );
    assert_eq!(
        made.spec_hash,
        made.spec.spec_hash_with_seed(Some(&made.seed))
    );
}

#[test]
fn a_static_nic_on_an_unknown_subnet_gets_no_dns_server() {
    let nic = Nic {
        ipv4: None,
        ..nic(Some("192.168.5.9/24"), None)
    };
    assert!(nic.config().nameservers.is_empty());
}

#[test]
fn a_bad_seed_names_its_cloud_init_field() {
    let error = provision(
        &image(DiskFormat::Qcow2),
        &overrides(),
        &[],
        SeedInput {
            user_data: Some(b"#cloud-config\nusers: [".to_vec()),
            ..SeedInput::default()
        },
    )
    .unwrap_err();
    assert_eq!(error.field, "cloudInit.userData");
}

#[test]
fn the_disk_comes_from_the_first_disk_layer_media_type() {
    let config = image(DiskFormat::Qcow2).config;
    let bytes = config.to_json_bytes();
    let layer = Descriptor {
        media_type: disk_media_type(DiskFormat::Qcow2),
        digest: Digest::of(b"disk"),
        size: 4,
        annotations: BTreeMap::new(),
    };
    let manifest = Manifest::for_image(&config, &bytes, layer, "2024-01-01T00:00:00Z");
    assert_eq!(
        disk_layer(&manifest),
        Ok((Digest::of(b"disk"), DiskFormat::Qcow2))
    );
    let none = Manifest {
        layers: Vec::new(),
        ..manifest
    };
    assert_eq!(disk_layer(&none), Err(UnusableImage::NoDiskLayer));
}
