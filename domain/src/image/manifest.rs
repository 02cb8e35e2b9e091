//! The OCI image manifest of a VM image: one config blob and a list of disk
//! layers (today one; readers accept several), with OCI annotations. The JSON
//! written is deterministic, so the local store and every registry agree on
//! the manifest digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, Digest, DiskFormat, ImageConfig, MANIFEST_MEDIA_TYPE,
    disk_format_of_media_type, disk_media_type,
};
use crate::validation::ValidationError;

/// Largest manifest accepted, in bytes of JSON.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Largest size a blob, or all of an image's blobs together, may have: OCI
/// descriptor sizes are int64.
pub const MAX_BLOB_SIZE: u64 = i64::MAX as u64;

/// Standard OCI annotation keys.
pub mod annotations {
    pub const CREATED: &str = "org.opencontainers.image.created";
    pub const DESCRIPTION: &str = "org.opencontainers.image.description";
    pub const AUTHORS: &str = "org.opencontainers.image.authors";
    pub const SOURCE: &str = "org.opencontainers.image.source";
    pub const TITLE: &str = "org.opencontainers.image.title";
}

/// An OCI content descriptor. Fields of the OCI spec that vmr does not use
/// (`urls`, `platform`, ...) are ignored when read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// The descriptor of a config blob.
    pub fn config(digest: Digest, size: u64) -> Self {
        Self {
            media_type: CONFIG_MEDIA_TYPE.to_owned(),
            digest,
            size,
            annotations: BTreeMap::new(),
        }
    }

    /// The descriptor of a disk layer, titled `title` (a file name).
    pub fn disk(format: DiskFormat, digest: Digest, size: u64, title: &str) -> Self {
        Self {
            media_type: disk_media_type(format),
            digest,
            size,
            annotations: BTreeMap::from([(annotations::TITLE.to_owned(), title.to_owned())]),
        }
    }

    /// The disk format, when this is a disk layer.
    pub fn disk_format(&self) -> Option<DiskFormat> {
        disk_format_of_media_type(&self.media_type)
    }
}

fn default_manifest_media_type() -> String {
    MANIFEST_MEDIA_TYPE.to_owned()
}

/// An OCI image manifest holding a VM image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default = "default_manifest_media_type")]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// The manifest of a VM image: `config_bytes` is the serialised config
    /// (`config.to_json_bytes()`), `disk` the disk layer's descriptor, and
    /// `created` an RFC 3339 timestamp.
    pub fn for_image(
        config: &ImageConfig,
        config_bytes: &[u8],
        disk: Descriptor,
        created: &str,
    ) -> Self {
        Self {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE.to_owned(),
            artifact_type: Some(ARTIFACT_TYPE.to_owned()),
            config: Descriptor::config(Digest::of(config_bytes), config_bytes.len() as u64),
            layers: vec![disk],
            annotations: config.annotations(created),
        }
    }

    /// The canonical JSON bytes (deterministic: same manifest, same bytes).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Manifest always serialises to JSON")
    }

    /// The digest of [`Manifest::to_json_bytes`].
    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_json_bytes())
    }

    /// Parses and validates a manifest: schemaVersion 2, the OCI manifest
    /// media type, a vmr config, and at least one disk layer.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ValidationError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ValidationError::new(
                "manifest",
                format!(
                    "is {} bytes, larger than the limit of {MAX_MANIFEST_BYTES}",
                    bytes.len()
                ),
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let manifest: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "manifest".to_owned()
            } else {
                format!("manifest.{path}")
            };
            ValidationError::new(field, e.inner().to_string())
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), ValidationError> {
        if self.schema_version != 2 {
            return Err(ValidationError::new(
                "manifest.schemaVersion",
                format!("is {}, only 2 is supported", self.schema_version),
            ));
        }
        if self.media_type != MANIFEST_MEDIA_TYPE {
            return Err(ValidationError::new(
                "manifest.mediaType",
                format!("is `{}`, expected `{MANIFEST_MEDIA_TYPE}`", self.media_type),
            ));
        }
        if let Some(artifact) = &self.artifact_type
            && artifact != ARTIFACT_TYPE
        {
            return Err(ValidationError::new(
                "manifest.artifactType",
                format!("is `{artifact}`, not a vmr VM image (`{ARTIFACT_TYPE}`)"),
            ));
        }
        if self.config.media_type != CONFIG_MEDIA_TYPE {
            return Err(ValidationError::new(
                "manifest.config.mediaType",
                format!(
                    "is `{}`, not a vmr VM config (`{CONFIG_MEDIA_TYPE}`)",
                    self.config.media_type
                ),
            ));
        }
        if self.layers.is_empty() {
            return Err(ValidationError::new(
                "manifest.layers",
                "must hold at least one disk layer",
            ));
        }
        // OCI sizes are int64; and the blobs together must fit one, so
        // that no sum of them overflows.
        let mut total: u64 = 0;
        for (field, descriptor) in
            std::iter::once(("manifest.config.size".to_owned(), &self.config)).chain(
                self.layers
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (format!("manifest.layers[{i}].size"), l)),
            )
        {
            total = total
                .checked_add(descriptor.size)
                .filter(|t| *t <= MAX_BLOB_SIZE)
                .ok_or_else(|| {
                    ValidationError::new(
                        field,
                        format!(
                            "is {} bytes: the image's blobs would add up to more than {MAX_BLOB_SIZE} bytes (OCI sizes are int64)",
                            descriptor.size
                        ),
                    )
                })?;
        }
        if self.is_chunked() {
            self.chunked_disk()?;
            return Ok(());
        }
        let first = self.layers[0].disk_format();
        for (i, layer) in self.layers.iter().enumerate() {
            match layer.disk_format() {
                None => {
                    return Err(ValidationError::new(
                        format!("manifest.layers[{i}].mediaType"),
                        format!("`{}` is not a vmr disk media type", layer.media_type),
                    ));
                }
                format if format != first => {
                    return Err(ValidationError::new(
                        format!("manifest.layers[{i}].mediaType"),
                        "all disk layers must have the same format",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The disk layers, in order.
    pub fn disk_layers(&self) -> Vec<&Descriptor> {
        self.layers
            .iter()
            .filter(|l| l.disk_format().is_some())
            .collect()
    }

    /// The disk format of the image (of its first disk layer).
    pub fn disk_format(&self) -> Option<DiskFormat> {
        self.layers.first().and_then(Descriptor::disk_format)
    }

    /// Total size of the disk layers.
    pub fn disk_size(&self) -> u64 {
        // Validated manifests cannot overflow; built ones saturate.
        self.disk_layers()
            .iter()
            .fold(0_u64, |total, l| total.saturating_add(l.size))
    }

    /// Every blob the manifest references: the config, then the layers.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        std::iter::once(&self.config).chain(&self.layers).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageDiskInfo, ImageMetadata, ImageResources, ImageSpec};
    use crate::vm::Bootloader;

    fn config() -> ImageConfig {
        ImageConfig {
            metadata: ImageMetadata {
                name: "ns/vm".parse().unwrap(),
                description: Some("desc".into()),
                author: None,
                source: Some("https://example.org".into()),
                labels: BTreeMap::from([("os".into(), "nixos".into())]),
            },
            spec: ImageSpec {
                disk_format: DiskFormat::Qcow2,
                resources: ImageResources {
                    cpu: 1,
                    memory: 1 << 30,
                    bootloader: Bootloader::Uefi,
                },
            },
            disk: ImageDiskInfo {
                virtual_size: 1 << 30,
            },
        }
    }

    fn manifest() -> Manifest {
        let config = config();
        let bytes = config.to_json_bytes();
        let disk = Descriptor::disk(DiskFormat::Qcow2, Digest::of(b"disk"), 4, "vm.qcow2");
        Manifest::for_image(&config, &bytes, disk, "2024-05-06T07:08:09Z")
    }

    #[test]
    fn for_image_fills_everything() {
        let m = manifest();
        assert_eq!(m.schema_version, 2);
        assert_eq!(m.artifact_type.as_deref(), Some(ARTIFACT_TYPE));
        assert_eq!(m.config.media_type, CONFIG_MEDIA_TYPE);
        assert_eq!(m.config.digest, Digest::of(&config().to_json_bytes()));
        assert_eq!(
            m.layers[0].media_type,
            "application/vnd.vmregistry.disk.v1.qcow2"
        );
        assert_eq!(m.layers[0].annotations[annotations::TITLE], "vm.qcow2");
        assert_eq!(m.annotations[annotations::CREATED], "2024-05-06T07:08:09Z");
        assert_eq!(m.annotations[annotations::DESCRIPTION], "desc");
        assert_eq!(m.annotations[annotations::SOURCE], "https://example.org");
        assert_eq!(m.annotations["os"], "nixos");
        assert_eq!(m.disk_format(), Some(DiskFormat::Qcow2));
        assert_eq!(m.disk_layers().len(), 1);
        assert_eq!(m.blobs().len(), 2);
    }

    #[test]
    fn sizes_beyond_int64_or_adding_up_beyond_it_are_refused() {
        let with = |sizes: &[u64]| {
            let mut m = manifest();
            let layer = m.layers[0].clone();
            m.layers = sizes
                .iter()
                .map(|&size| Descriptor {
                    size,
                    ..layer.clone()
                })
                .collect();
            Manifest::from_json(&serde_json::to_vec(&m).unwrap())
        };
        assert!(with(&[MAX_BLOB_SIZE - 1000]).is_ok());
        let err = with(&[u64::MAX]).unwrap_err();
        assert_eq!(err.field, "manifest.layers[0].size", "{err}");
        // Each fits int64, together they do not (nor u64): an error, no
        // overflow, naming the layer that tips it over.
        let err = with(&[1 << 61, 1 << 61, MAX_BLOB_SIZE]).unwrap_err();
        assert_eq!(err.field, "manifest.layers[2].size", "{err}");
    }

    #[test]
    fn json_round_trip_is_deterministic() {
        let m = manifest();
        let bytes = m.to_json_bytes();
        assert_eq!(manifest().to_json_bytes(), bytes);
        let back = Manifest::from_json(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.to_json_bytes(), bytes);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.vmregistry.vm.v1","config":{"mediaType":"application/vnd.vmregistry.vm.config.v1+json","digest":"sha256:"#
        ));
    }

    #[test]
    fn accepts_unknown_fields_and_several_layers() {
        let mut value: serde_json::Value =
            serde_json::from_slice(&manifest().to_json_bytes()).unwrap();
        value["subject"] = serde_json::json!({"x": 1});
        let layer = value["layers"][0].clone();
        value["layers"].as_array_mut().unwrap().push(layer);
        let m = Manifest::from_json(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(m.disk_layers().len(), 2);
        assert_eq!(m.disk_size(), 8);
    }

    fn with(edit: impl FnOnce(&mut serde_json::Value)) -> ValidationError {
        let mut value: serde_json::Value =
            serde_json::from_slice(&manifest().to_json_bytes()).unwrap();
        edit(&mut value);
        Manifest::from_json(&serde_json::to_vec(&value).unwrap()).unwrap_err()
    }

    #[test]
    fn rejects_invalid_manifests() {
        assert_eq!(
            with(|v| v["schemaVersion"] = 1.into()).field,
            "manifest.schemaVersion"
        );
        assert_eq!(
            with(|v| v["mediaType"] = "x".into()).field,
            "manifest.mediaType"
        );
        assert_eq!(
            with(|v| v["artifactType"] = "x".into()).field,
            "manifest.artifactType"
        );
        assert_eq!(
            with(|v| v["config"]["mediaType"] = "x".into()).field,
            "manifest.config.mediaType"
        );
        assert_eq!(
            with(|v| v["layers"] = serde_json::json!([])).field,
            "manifest.layers"
        );
        assert_eq!(
            with(|v| v["layers"][0]["mediaType"] = "application/octet-stream".into()).field,
            "manifest.layers[0].mediaType"
        );
        assert_eq!(
            with(|v| v["layers"][0]["digest"] = "sha256:xyz".into()).field,
            "manifest.layers[0].digest"
        );
        assert_eq!(
            with(|v| v["config"] = serde_json::Value::Null).field,
            "manifest.config"
        );
        assert!(Manifest::from_json(b"not json").is_err());
        assert!(Manifest::from_json(&vec![b' '; MAX_MANIFEST_BYTES + 1]).is_err());
    }
}
