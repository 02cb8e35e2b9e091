//! The VMFile (one image's description, read by `vmr import`): its YAML
//! schema, every validation rule of FORMATS.md, the defaults (1 CPU, 1GiB,
//! BIOS), and its conversion to the image's config blob.

use std::collections::BTreeMap;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::image::{
    CPU_RANGE, DiskFormat, ImageConfig, ImageDiskInfo, ImageMetadata, ImageResources, ImageSpec,
    MIN_MEMORY_BYTES, Repository, check_label_key, check_label_value,
};
use crate::units::ByteSize;
use crate::validation::{ScalarString, ValidationError, check_api_version, locate_in, parse_yaml};
use crate::vm::Bootloader;

/// Memory of an image whose VMFile does not say.
pub const DEFAULT_MEMORY: ByteSize = ByteSize::gib(1);
/// CPUs of an image whose VMFile does not say.
pub const DEFAULT_CPU: u32 = 1;

/// A validated VMFile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFile {
    pub api_version: String,
    pub metadata: ImageMetadata,
    pub spec: VmFileSpec,
}

/// The VMFile's `spec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFileSpec {
    /// Path of the disk, absolute or relative to the VMFile (the client
    /// resolves it; the daemon never opens it).
    pub disk_image: String,
    pub disk_format: DiskFormat,
    pub resources: Resources,
}

/// The VMFile's `spec.resources`, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub cpu: u32,
    pub memory: ByteSize,
    pub bootloader: Bootloader,
}

impl VmFile {
    /// Parses and validates a VMFile.
    pub fn parse(yaml: &str) -> Result<Self, ValidationError> {
        let raw: RawVmFile = parse_yaml(yaml)?;
        raw.validate().map_err(|e| locate_in(e, yaml))
    }

    /// The config blob of an image built from this VMFile and a disk of
    /// `virtual_size` bytes.
    pub fn image_config(&self, virtual_size: u64) -> ImageConfig {
        ImageConfig {
            metadata: self.metadata.clone(),
            spec: ImageSpec {
                disk_format: self.spec.disk_format,
                resources: ImageResources {
                    cpu: self.spec.resources.cpu,
                    memory: self.spec.resources.memory.bytes(),
                    bootloader: self.spec.resources.bootloader,
                },
            },
            disk: ImageDiskInfo { virtual_size },
        }
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a VMFile mapping"
)]
struct RawVmFile {
    api_version: Option<String>,
    metadata: Option<RawMetadata>,
    spec: Option<RawSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
struct RawMetadata {
    name: Option<Repository>,
    description: Option<String>,
    author: Option<String>,
    source: Option<String>,
    labels: Option<Labels>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
struct RawSpec {
    disk_image: Option<String>,
    disk_format: Option<DiskFormat>,
    resources: Option<RawResources>,
}

/// Resource fields shared by the VMFile and compose service overrides.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a mapping")]
pub(crate) struct RawResources {
    pub cpu: Option<u64>,
    pub memory: Option<ByteSize>,
    pub bootloader: Option<RawBootloader>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawBootloader {
    #[serde(rename = "type")]
    pub kind: Option<Bootloader>,
}

/// Checks a CPU count (1..=256) found at `field`.
pub(crate) fn check_cpu(field: &str, cpu: u64) -> Result<u32, ValidationError> {
    if CPU_RANGE.contains(&cpu) {
        Ok(u32::try_from(cpu).unwrap_or(u32::MAX))
    } else {
        Err(ValidationError::new(
            field,
            format!("{cpu} is outside the allowed range 1..=256"),
        ))
    }
}

/// Checks a memory size (at least 16MiB) found at `field`.
pub(crate) fn check_memory(field: &str, memory: ByteSize) -> Result<ByteSize, ValidationError> {
    if memory.bytes() < MIN_MEMORY_BYTES {
        Err(ValidationError::new(
            field,
            format!("{memory} is less than the minimum of 16MiB"),
        ))
    } else {
        Ok(memory)
    }
}

impl RawVmFile {
    fn validate(self) -> Result<VmFile, ValidationError> {
        let api_version = check_api_version(self.api_version.as_deref())?;
        let metadata = self
            .metadata
            .ok_or_else(|| ValidationError::new("metadata", "is required"))?;
        let name = metadata
            .name
            .ok_or_else(|| ValidationError::new("metadata.name", "is required"))?;
        let spec = self
            .spec
            .ok_or_else(|| ValidationError::new("spec", "is required"))?;
        let disk_image = spec
            .disk_image
            .ok_or_else(|| ValidationError::new("spec.diskImage", "is required"))?;
        if disk_image.trim().is_empty() || disk_image.contains('\0') {
            return Err(ValidationError::new(
                "spec.diskImage",
                "must be a non-empty file path",
            ));
        }
        let disk_format = spec.disk_format.ok_or_else(|| {
            ValidationError::new("spec.diskFormat", "is required (qcow2, raw or iso)")
        })?;
        let resources = spec
            .resources
            .ok_or_else(|| ValidationError::new("spec.resources", "is required"))?;
        let cpu = match resources.cpu {
            Some(cpu) => check_cpu("spec.resources.cpu", cpu)?,
            None => DEFAULT_CPU,
        };
        let memory = match resources.memory {
            Some(memory) => check_memory("spec.resources.memory", memory)?,
            None => DEFAULT_MEMORY,
        };
        let bootloader = resources
            .bootloader
            .and_then(|b| b.kind)
            .unwrap_or_default();
        Ok(VmFile {
            api_version,
            metadata: ImageMetadata {
                name,
                description: metadata.description,
                author: metadata.author,
                source: metadata.source,
                labels: metadata.labels.map(|l| l.0).unwrap_or_default(),
            },
            spec: VmFileSpec {
                disk_image,
                disk_format,
                resources: Resources {
                    cpu,
                    memory,
                    bootloader,
                },
            },
        })
    }
}

/// Labels, validated while read so that an error carries the label's path
/// and line.
pub(crate) struct Labels(pub BTreeMap<String, String>);

struct LabelKey(String);

impl<'de> Deserialize<'de> for LabelKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = ScalarString::deserialize(deserializer)?.0;
        check_label_key(&key).map_err(de::Error::custom)?;
        Ok(Self(key))
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Labels are for people and filters, not storage: a bound keeps the
        /// image config far below its size limit.
        const MAX_LABELS: usize = 256;

        struct LabelsVisitor;

        impl<'de> Visitor<'de> for LabelsVisitor {
            type Value = Labels;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of label keys to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
                let mut labels = BTreeMap::new();
                while let Some(LabelKey(key)) = map.next_key()? {
                    if labels.len() == MAX_LABELS {
                        return Err(de::Error::custom(format!("more than {MAX_LABELS} labels")));
                    }
                    let ScalarString(value) = map.next_value()?;
                    check_label_value(&key, &value).map_err(de::Error::custom)?;
                    if labels.insert(key.clone(), value).is_some() {
                        return Err(de::Error::custom(format!("duplicate label `{key}`")));
                    }
                }
                Ok(Labels(labels))
            }
        }

        deserializer.deserialize_map(LabelsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = include_str!("../tests/fixtures/vmfile-minimal.yaml");
    const FULL: &str = include_str!("../tests/fixtures/vmfile-full.yaml");

    const BASE: &str = "apiVersion: v1
metadata:
  name: ns/vm
spec:
  diskImage: disk.qcow2
  diskFormat: qcow2
  resources: {}
";

    fn err(yaml: &str) -> ValidationError {
        VmFile::parse(yaml).unwrap_err()
    }

    #[test]
    fn original_minimal_example() {
        let f = VmFile::parse(MINIMAL).unwrap();
        assert_eq!(f.api_version, "vmregistry.io/v1alpha1");
        assert_eq!(f.metadata.name.as_str(), "myuser/my-vm");
        assert_eq!(f.spec.disk_image, "disk.qcow2");
        assert_eq!(f.spec.disk_format, DiskFormat::Qcow2);
        assert_eq!(f.spec.resources.cpu, 2);
        assert_eq!(f.spec.resources.memory, ByteSize::gib(4));
        assert_eq!(f.spec.resources.bootloader, Bootloader::Bios);
    }

    #[test]
    fn original_full_example() {
        let f = VmFile::parse(FULL).unwrap();
        assert_eq!(f.metadata.name.as_str(), "nixos-server/nixos-k3s-vm");
        assert_eq!(f.metadata.author.as_deref(), Some("Felipe350"));
        assert_eq!(
            f.metadata.source.as_deref(),
            Some("https://github.com/FelipeVasquez350/vm-registry-examples")
        );
        assert_eq!(f.metadata.labels.len(), 3);
        assert_eq!(f.metadata.labels["arch"], "x86_64");
        assert_eq!(f.spec.disk_image, "oci-nixos-vm-image.qcow2");
        let config = f.image_config(20 << 30);
        assert_eq!(config.spec.resources.memory, 4 << 30);
        assert_eq!(config.disk.virtual_size, 20 << 30);
        assert_eq!(config.metadata, f.metadata);
    }

    #[test]
    fn defaults() {
        let f = VmFile::parse(BASE).unwrap();
        assert_eq!(f.spec.resources.cpu, 1);
        assert_eq!(f.spec.resources.memory, ByteSize::gib(1));
        assert_eq!(f.spec.resources.bootloader, Bootloader::Bios);
        assert!(f.metadata.labels.is_empty());
    }

    #[test]
    fn bootloader_any_case() {
        let y = BASE.replace("resources: {}", "resources: {bootloader: {type: uefi}}");
        assert_eq!(
            VmFile::parse(&y).unwrap().spec.resources.bootloader,
            Bootloader::Uefi
        );
        let y = BASE.replace("resources: {}", "resources: {bootloader: {type: Bios}}");
        assert_eq!(
            VmFile::parse(&y).unwrap().spec.resources.bootloader,
            Bootloader::Bios
        );
        let e = err(&BASE.replace("resources: {}", "resources: {bootloader: {type: grub}}"));
        assert_eq!(e.field, "spec.resources.bootloader.type");
        assert!(e.reason.contains("BIOS or UEFI"));
    }

    #[test]
    fn api_version_rules() {
        assert!(VmFile::parse(&BASE.replace("v1", "vmregistry.io/v1alpha1")).is_ok());
        assert_eq!(
            err(&BASE.replace("apiVersion: v1", "apiVersion: v2")).field,
            "apiVersion"
        );
        assert_eq!(
            err(&BASE.replace("apiVersion: v1\n", "")).field,
            "apiVersion"
        );
    }

    #[test]
    fn semantic_errors_carry_the_position() {
        let e = err(&BASE.replace("resources: {}", "resources:\n    cpu: 0"));
        assert_eq!(
            (e.field.as_str(), e.line, e.column),
            ("spec.resources.cpu", Some(8), Some(10))
        );
        let e = err(&BASE.replace("  diskImage: disk.qcow2\n", ""));
        assert_eq!((e.field.as_str(), e.line), ("spec.diskImage", Some(5)));
    }

    #[test]
    fn required_fields() {
        assert_eq!(err("apiVersion: v1\nspec: {}\n").field, "metadata");
        assert_eq!(
            err(&BASE.replace("  name: ns/vm\n", "  author: x\n")).field,
            "metadata.name"
        );
        assert_eq!(err("apiVersion: v1\nmetadata: {name: a}\n").field, "spec");
        assert_eq!(
            err(&BASE.replace("  diskImage: disk.qcow2\n", "")).field,
            "spec.diskImage"
        );
        assert_eq!(
            err(&BASE.replace("diskImage: disk.qcow2", "diskImage: ''")).field,
            "spec.diskImage"
        );
        assert_eq!(
            err(&BASE.replace("  diskFormat: qcow2\n", "")).field,
            "spec.diskFormat"
        );
        assert_eq!(
            err(&BASE.replace("  resources: {}\n", "")).field,
            "spec.resources"
        );
    }

    #[test]
    fn name_rules() {
        let e = err(&BASE.replace("name: ns/vm", "name: NS/VM"));
        assert_eq!(e.field, "metadata.name");
        assert_eq!(e.line, Some(3));
        assert!(
            err(&BASE.replace("name: ns/vm", "name: ns/vm:tag"))
                .reason
                .contains(':')
        );
        assert!(VmFile::parse(&BASE.replace("name: ns/vm", "name: a/b/c")).is_ok());
        let long = format!("name: {}", "a".repeat(256));
        assert_eq!(
            err(&BASE.replace("name: ns/vm", &long)).field,
            "metadata.name"
        );
        assert_eq!(
            err(&BASE.replace("name: ns/vm", "name: ns/-vm")).field,
            "metadata.name"
        );
    }

    #[test]
    fn label_rules() {
        let with = |labels: &str| {
            BASE.replace(
                "  name: ns/vm\n",
                &format!("  name: ns/vm\n  labels: {labels}\n"),
            )
        };
        let f = VmFile::parse(&with("{version: 2, ok: true}")).unwrap();
        assert_eq!(f.metadata.labels["version"], "2");
        let e = err(&with("{\"bad key\": x}"));
        assert_eq!(e.field, "metadata.labels.bad key");
        assert_eq!(e.line, Some(4));
        let e = err(&with(&format!("{{{}: x}}", "k".repeat(64))));
        assert!(e.reason.contains("at most 63"), "{e}");
        let e = err(&with(&format!("{{k: {}}}", "v".repeat(256))));
        assert_eq!(e.field, "metadata.labels");
        assert!(e.reason.contains("at most 255"), "{e}");
    }

    #[test]
    fn disk_format_rules() {
        let e = err(&BASE.replace("diskFormat: qcow2", "diskFormat: vmdk"));
        assert_eq!(e.field, "spec.diskFormat");
        assert!(e.reason.contains("qcow2, raw or iso"));
        for f in ["raw", "iso", "qcow2"] {
            assert!(
                VmFile::parse(&BASE.replace("diskFormat: qcow2", &format!("diskFormat: {f}")))
                    .is_ok()
            );
        }
    }

    #[test]
    fn resource_rules() {
        let with = |r: &str| BASE.replace("resources: {}", &format!("resources: {r}"));
        assert_eq!(err(&with("{cpu: 0}")).field, "spec.resources.cpu");
        assert_eq!(err(&with("{cpu: 257}")).field, "spec.resources.cpu");
        assert_eq!(
            VmFile::parse(&with("{cpu: 256}"))
                .unwrap()
                .spec
                .resources
                .cpu,
            256
        );
        assert_eq!(err(&with("{cpu: -1}")).field, "spec.resources.cpu");
        assert_eq!(err(&with("{cpu: two}")).field, "spec.resources.cpu");
        assert_eq!(err(&with("{memory: 8MiB}")).field, "spec.resources.memory");
        let e = err(&with("{memory: 4gb}"));
        assert_eq!(e.field, "spec.resources.memory");
        assert!(e.reason.contains("KiB"), "{e}");
        assert_eq!(
            VmFile::parse(&with("{memory: 16MiB}"))
                .unwrap()
                .spec
                .resources
                .memory,
            ByteSize::mib(16)
        );
        assert_eq!(
            VmFile::parse(&with("{memory: 2147483648}"))
                .unwrap()
                .spec
                .resources
                .memory,
            ByteSize::gib(2)
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_path_and_line() {
        let e = err(&BASE.replace("resources: {}", "resources:\n    cpus: 2"));
        assert_eq!(e.field, "spec.resources.cpus");
        assert_eq!(e.line, Some(8));
        assert!(e.reason.contains("unknown field `cpus`"), "{e}");
        let e = err(&format!("{BASE}kind: VMFile\n"));
        assert_eq!(e.field, "kind");
        let e = err(&BASE.replace("  name: ns/vm\n", "  name: ns/vm\n  tag: x\n"));
        assert_eq!(e.field, "metadata.tag");
    }
}
