//! Images as OCI artifacts: content digests, repository names, tags and
//! references, the manifest and config documents with their media types, and
//! the disk formats with their header checks. Everything here is what a VM
//! image *is*, independent of where its bytes are stored.

mod chunks;
mod config;
mod digest;
mod disk;
mod manifest;
mod reference;

pub use chunks::{
    CHUNK_DIGEST, CHUNK_MEDIA_TYPE_PREFIX, CHUNK_OFFSET, CHUNK_SIZE, Chunk, ChunkedDisk,
    DISK_DIGEST, DISK_SIZE, DISK_TITLE, chunk_media_type, parse_chunk_media_type, plan_chunks,
};
pub use config::{
    CPU_RANGE, ImageConfig, ImageDiskInfo, ImageMetadata, ImageResources, ImageSpec,
    MAX_CONFIG_BYTES, MIN_MEMORY_BYTES, check_label, check_label_key, check_label_value,
};
pub use digest::Digest;
pub use disk::{DiskFormat, qcow2_virtual_size};
pub use manifest::{Descriptor, MAX_BLOB_SIZE, MAX_MANIFEST_BYTES, Manifest, annotations};
pub use reference::{Reference, Repository, Tag};

/// Media type of the image manifest (OCI image manifest v1).
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// `artifactType` of a vmr VM image.
pub const ARTIFACT_TYPE: &str = "application/vnd.vmregistry.vm.v1";
/// Media type of the config blob (an [`ImageConfig`] as JSON).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.vmregistry.vm.config.v1+json";
/// Prefix of the disk layer media types; the disk format follows.
pub const DISK_MEDIA_TYPE_PREFIX: &str = "application/vnd.vmregistry.disk.v1.";

/// Media type of a disk layer in `format`.
pub fn disk_media_type(format: DiskFormat) -> String {
    format!("{DISK_MEDIA_TYPE_PREFIX}{format}")
}

/// The disk format of a disk layer media type, or `None` if it is not one.
pub fn disk_format_of_media_type(media_type: &str) -> Option<DiskFormat> {
    media_type
        .strip_prefix(DISK_MEDIA_TYPE_PREFIX)
        .and_then(|format| match format {
            "qcow2" => Some(DiskFormat::Qcow2),
            "raw" => Some(DiskFormat::Raw),
            "iso" => Some(DiskFormat::Iso),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_media_types_round_trip() {
        for format in [DiskFormat::Qcow2, DiskFormat::Raw, DiskFormat::Iso] {
            let mt = disk_media_type(format);
            assert_eq!(disk_format_of_media_type(&mt), Some(format));
        }
        assert_eq!(
            disk_media_type(DiskFormat::Qcow2),
            "application/vnd.vmregistry.disk.v1.qcow2"
        );
        assert_eq!(
            disk_format_of_media_type("application/vnd.vmregistry.disk.v1.QCOW2"),
            None
        );
        assert_eq!(disk_format_of_media_type(CONFIG_MEDIA_TYPE), None);
    }
}
