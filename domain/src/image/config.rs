//! The image config blob (`application/vnd.vmregistry.vm.config.v1+json`):
//! what a VMFile says about the VM (metadata, disk format, resources) without
//! the local disk path, plus the disk's virtual size. Serialised
//! deterministically so that one import always yields the same digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::manifest::annotations;
use super::{DiskFormat, Repository};
use crate::validation::ValidationError;
use crate::vm::Bootloader;

/// Largest config blob accepted.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;
const MAX_LABEL_KEY_LEN: usize = 63;
const MAX_LABEL_VALUE_LEN: usize = 255;
/// CPU count bounds of an image or VM.
pub const CPU_RANGE: std::ops::RangeInclusive<u64> = 1..=256;
/// Smallest memory of an image or VM.
pub const MIN_MEMORY_BYTES: u64 = 16 * 1024 * 1024;

/// Image metadata, as in the VMFile's `metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageMetadata {
    pub name: Repository,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Resources recorded in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageResources {
    pub cpu: u32,
    /// Memory in bytes.
    pub memory: u64,
    pub bootloader: Bootloader,
}

/// The VM part of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    pub disk_format: DiskFormat,
    pub resources: ImageResources,
}

/// Facts about the disk layer measured at import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageDiskInfo {
    /// Size the guest sees, in bytes (the qcow2 virtual size, or the file
    /// size for raw and iso).
    pub virtual_size: u64,
}

/// The config blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    pub metadata: ImageMetadata,
    pub spec: ImageSpec,
    pub disk: ImageDiskInfo,
}

impl ImageConfig {
    /// The canonical JSON bytes: struct fields in declaration order, maps
    /// sorted, no whitespace. Same config, same bytes, same digest.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an ImageConfig always serialises to JSON")
    }

    /// Parses and validates a config blob.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ValidationError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ValidationError::new(
                "config",
                format!(
                    "is {} bytes, larger than the limit of {MAX_CONFIG_BYTES}",
                    bytes.len()
                ),
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let config: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            ValidationError::new(format!("config.{path}"), e.inner().to_string())
        })?;
        let cpu = u64::from(config.spec.resources.cpu);
        if !CPU_RANGE.contains(&cpu) {
            return Err(ValidationError::new(
                "config.spec.resources.cpu",
                format!("{cpu} is outside 1..=256"),
            ));
        }
        for (key, value) in &config.metadata.labels {
            check_label(key, value)
                .map_err(|reason| ValidationError::new("config.metadata.labels", reason))?;
        }
        Ok(config)
    }

    /// The manifest annotations this config implies; `created` is an RFC 3339
    /// timestamp chosen by the caller. Labels come first so that they can
    /// never override the standard keys.
    pub fn annotations(&self, created: &str) -> BTreeMap<String, String> {
        let mut out = self.metadata.labels.clone();
        out.insert(annotations::CREATED.to_owned(), created.to_owned());
        let meta = &self.metadata;
        for (key, value) in [
            (annotations::DESCRIPTION, &meta.description),
            (annotations::AUTHORS, &meta.author),
            (annotations::SOURCE, &meta.source),
        ] {
            match value {
                Some(v) => out.insert(key.to_owned(), v.clone()),
                None => out.remove(key),
            };
        }
        out
    }
}

/// Checks one label: key of at most 63 letters, digits, `-`, `_`, `.`;
/// value of at most 255 characters. Returns the reason on failure.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    check_label_key(key)?;
    check_label_value(key, value)
}

/// Checks a label key (at most 63 letters, digits, `-`, `_`, `.`).
pub fn check_label_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a label key must not be empty".to_owned());
    }
    if key.len() > MAX_LABEL_KEY_LEN {
        return Err(format!(
            "label key `{key}` is {} characters long, at most {MAX_LABEL_KEY_LEN} are allowed",
            key.len()
        ));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "label key `{}` contains {c:?}; only letters, digits, `-`, `_` and `.` are allowed",
            key.escape_debug()
        ));
    }
    Ok(())
}

/// Checks the value of label `key` (at most 255 characters).
pub fn check_label_value(key: &str, value: &str) -> Result<(), String> {
    let chars = value.chars().count();
    if chars > MAX_LABEL_VALUE_LEN {
        return Err(format!(
            "label `{key}` has a value of {chars} characters, at most {MAX_LABEL_VALUE_LEN} are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> ImageConfig {
        ImageConfig {
            metadata: ImageMetadata {
                name: "myuser/my-vm".parse().unwrap(),
                description: Some("A base server image".into()),
                author: Some("Felipe350".into()),
                source: None,
                labels: [("os", "nixos"), ("role", "k3s-node")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            },
            spec: ImageSpec {
                disk_format: DiskFormat::Qcow2,
                resources: ImageResources {
                    cpu: 2,
                    memory: 4 << 30,
                    bootloader: Bootloader::Bios,
                },
            },
            disk: ImageDiskInfo {
                virtual_size: 10 << 30,
            },
        }
    }

    #[test]
    fn json_shape_and_round_trip() {
        let config = sample();
        let bytes = config.to_json_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            r#"{"metadata":{"name":"myuser/my-vm","description":"A base server image","author":"Felipe350","labels":{"os":"nixos","role":"k3s-node"}},"spec":{"diskFormat":"qcow2","resources":{"cpu":2,"memory":4294967296,"bootloader":"BIOS"}},"disk":{"virtualSize":10737418240}}"#
        );
        assert_eq!(ImageConfig::from_json(&bytes).unwrap(), config);
        assert_eq!(config.clone().to_json_bytes(), bytes);
    }

    #[test]
    fn from_json_validates() {
        let mut config = sample();
        config.spec.resources.cpu = 0;
        let err = ImageConfig::from_json(&config.to_json_bytes()).unwrap_err();
        assert_eq!(err.field, "config.spec.resources.cpu");
        let bad_name = String::from_utf8(sample().to_json_bytes())
            .unwrap()
            .replace("myuser/my-vm", "My VM");
        let err = ImageConfig::from_json(bad_name.as_bytes()).unwrap_err();
        assert_eq!(err.field, "config.metadata.name");
        assert!(ImageConfig::from_json(&vec![b' '; MAX_CONFIG_BYTES + 1]).is_err());
    }

    #[test]
    fn annotations_from_config() {
        let mut config = sample();
        config
            .metadata
            .labels
            .insert(annotations::CREATED.into(), "evil".into());
        let a = config.annotations("2024-01-02T03:04:05Z");
        assert_eq!(a[annotations::CREATED], "2024-01-02T03:04:05Z");
        assert_eq!(a[annotations::DESCRIPTION], "A base server image");
        assert_eq!(a[annotations::AUTHORS], "Felipe350");
        assert!(!a.contains_key(annotations::SOURCE));
        assert_eq!(a["os"], "nixos");
    }

    #[test]
    fn labels() {
        assert!(check_label("os", "nixos").is_ok());
        assert!(check_label("a.b-c_D9", "").is_ok());
        assert!(check_label(&"k".repeat(63), &"v".repeat(255)).is_ok());
        assert!(check_label(&"k".repeat(64), "v").is_err());
        assert!(check_label("k", &"v".repeat(256)).is_err());
        assert!(check_label("a/b", "v").is_err());
        assert!(check_label("a b", "v").is_err());
        assert!(check_label("", "v").is_err());
    }
}
