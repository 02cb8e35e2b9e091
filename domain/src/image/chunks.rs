//! Chunked disks: the transport form of a large disk in a registry. The disk
//! is cut into fixed-size chunks, each a layer of its own (compressed with
//! zstd when that pays), annotated with its offset and its uncompressed size
//! and digest; the manifest's annotations name the whole disk. The local
//! store always keeps the single-layer form, which [`Manifest::unchunked`]
//! rebuilds byte for byte from the chunked one.

use std::collections::BTreeMap;
use std::ops::Range;

use super::{Descriptor, Digest, DiskFormat, Manifest, annotations};
use crate::validation::ValidationError;

/// Prefix of the chunk layer media types; `<format>[+zstd]` follows.
pub const CHUNK_MEDIA_TYPE_PREFIX: &str = "application/vnd.vmregistry.disk.chunk.v1.";
/// Suffix of a zstd-compressed chunk's media type.
pub const ZSTD_SUFFIX: &str = "+zstd";
/// Chunk layer annotation: the chunk's offset in the disk.
pub const CHUNK_OFFSET: &str = "vnd.vmregistry.chunk.offset";
/// Chunk layer annotation: the chunk's uncompressed size.
pub const CHUNK_SIZE: &str = "vnd.vmregistry.chunk.size";
/// Chunk layer annotation: the digest of the chunk's uncompressed bytes.
pub const CHUNK_DIGEST: &str = "vnd.vmregistry.chunk.digest";
/// Manifest annotation of a chunked image: the whole disk's digest.
pub const DISK_DIGEST: &str = "vnd.vmregistry.disk.digest";
/// Manifest annotation of a chunked image: the whole disk's size.
pub const DISK_SIZE: &str = "vnd.vmregistry.disk.size";
/// Manifest annotation of a chunked image: the disk layer's title.
pub const DISK_TITLE: &str = "vnd.vmregistry.disk.title";

/// The media type of a chunk of a `format` disk.
pub fn chunk_media_type(format: DiskFormat, zstd: bool) -> String {
    let suffix = if zstd { ZSTD_SUFFIX } else { "" };
    format!("{CHUNK_MEDIA_TYPE_PREFIX}{format}{suffix}")
}

/// The disk format and compression of a chunk media type.
pub fn parse_chunk_media_type(media_type: &str) -> Option<(DiskFormat, bool)> {
    let rest = media_type.strip_prefix(CHUNK_MEDIA_TYPE_PREFIX)?;
    let (format, zstd) = match rest.strip_suffix(ZSTD_SUFFIX) {
        Some(format) => (format, true),
        None => (rest, false),
    };
    let format =
        super::disk_format_of_media_type(&format!("{}{format}", super::DISK_MEDIA_TYPE_PREFIX))?;
    Some((format, zstd))
}

/// The byte ranges of a `size`-byte disk cut in `chunk`-byte pieces (the
/// last one shorter). None for an empty disk.
pub fn plan_chunks(size: u64, chunk: u64) -> Vec<Range<u64>> {
    let chunk = chunk.max(1);
    (0..size.div_ceil(chunk))
        .map(|i| i * chunk..((i + 1) * chunk).min(size))
        .collect()
}

/// One chunk of a chunked disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The layer as the registry stores it.
    pub layer: Descriptor,
    pub offset: u64,
    /// Uncompressed size and digest.
    pub size: u64,
    pub digest: Digest,
    pub zstd: bool,
}

impl Chunk {
    /// The layer descriptor of a chunk; `stored` is what the registry keeps
    /// (compressed or not), `digest` and `range` the plain bytes.
    pub fn layer(
        format: DiskFormat,
        zstd: bool,
        stored: (Digest, u64),
        range: &Range<u64>,
        digest: &Digest,
    ) -> Descriptor {
        Descriptor {
            media_type: chunk_media_type(format, zstd),
            digest: stored.0,
            size: stored.1,
            annotations: BTreeMap::from([
                (CHUNK_OFFSET.to_owned(), range.start.to_string()),
                (CHUNK_SIZE.to_owned(), (range.end - range.start).to_string()),
                (CHUNK_DIGEST.to_owned(), digest.to_string()),
            ]),
        }
    }

    /// The byte range of the disk this chunk holds.
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.size
    }
}

/// The chunks of a chunked manifest and the disk they make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDisk {
    /// The single disk layer the chunks rebuild.
    pub disk: Descriptor,
    pub format: DiskFormat,
    pub chunks: Vec<Chunk>,
}

fn field(i: usize, key: &str) -> String {
    format!("manifest.layers[{i}].annotations.{key}")
}

fn number(map: &BTreeMap<String, String>, key: &str, at: String) -> Result<u64, ValidationError> {
    map.get(key)
        .ok_or_else(|| ValidationError::new(at.clone(), "is missing"))?
        .parse()
        .map_err(|_| ValidationError::new(at, "is not a byte count"))
}

impl Manifest {
    /// Whether the layers are disk chunks.
    pub fn is_chunked(&self) -> bool {
        self.layers
            .first()
            .is_some_and(|l| parse_chunk_media_type(&l.media_type).is_some())
    }

    /// The chunked form of this single-layer manifest, with `layers` the
    /// chunk layers in disk order. `None` when the manifest is not one
    /// [`Manifest::unchunked`] can rebuild exactly (several layers, or a
    /// layer with annotations other than its title).
    pub fn chunked(&self, layers: Vec<Descriptor>) -> Option<Manifest> {
        let [disk] = self.layers.as_slice() else {
            return None;
        };
        let title = disk.annotations.get(annotations::TITLE)?;
        if disk.annotations.len() != 1 || disk.disk_format().is_none() {
            return None;
        }
        let mut chunked = self.clone();
        chunked.layers = layers;
        chunked
            .annotations
            .insert(DISK_DIGEST.to_owned(), disk.digest.to_string());
        chunked
            .annotations
            .insert(DISK_SIZE.to_owned(), disk.size.to_string());
        chunked
            .annotations
            .insert(DISK_TITLE.to_owned(), title.clone());
        let back = chunked.unchunked().ok()?;
        (back.to_json_bytes() == self.to_json_bytes()).then_some(chunked)
    }

    /// The chunks of a chunked manifest, checked: every layer a chunk of the
    /// same format, offsets contiguous from 0, sizes adding up to the disk.
    pub fn chunked_disk(&self) -> Result<ChunkedDisk, ValidationError> {
        let at = |key: &str| format!("manifest.annotations.{key}");
        let digest: Digest = self
            .annotations
            .get(DISK_DIGEST)
            .ok_or_else(|| ValidationError::new(at(DISK_DIGEST), "is missing"))?
            .parse()
            .map_err(|e| ValidationError::new(at(DISK_DIGEST), format!("{e}")))?;
        let size = number(&self.annotations, DISK_SIZE, at(DISK_SIZE))?;
        let title = self
            .annotations
            .get(DISK_TITLE)
            .ok_or_else(|| ValidationError::new(at(DISK_TITLE), "is missing"))?;
        let mut chunks = Vec::with_capacity(self.layers.len());
        let mut format = None;
        let mut offset = 0;
        for (i, layer) in self.layers.iter().enumerate() {
            let (this, zstd) = parse_chunk_media_type(&layer.media_type).ok_or_else(|| {
                ValidationError::new(
                    format!("manifest.layers[{i}].mediaType"),
                    format!("`{}` is not a vmr disk chunk media type", layer.media_type),
                )
            })?;
            if *format.get_or_insert(this) != this {
                return Err(ValidationError::new(
                    format!("manifest.layers[{i}].mediaType"),
                    "all chunks must have the same disk format",
                ));
            }
            let start = number(&layer.annotations, CHUNK_OFFSET, field(i, CHUNK_OFFSET))?;
            if start != offset {
                return Err(ValidationError::new(
                    field(i, CHUNK_OFFSET),
                    format!("is {start}, the previous chunks end at {offset}"),
                ));
            }
            let len = number(&layer.annotations, CHUNK_SIZE, field(i, CHUNK_SIZE))?;
            let chunk_digest: Digest = layer
                .annotations
                .get(CHUNK_DIGEST)
                .ok_or_else(|| ValidationError::new(field(i, CHUNK_DIGEST), "is missing"))?
                .parse()
                .map_err(|e| ValidationError::new(field(i, CHUNK_DIGEST), format!("{e}")))?;
            if !zstd && layer.size != len {
                return Err(ValidationError::new(
                    format!("manifest.layers[{i}].size"),
                    format!("is {}, the uncompressed chunk has {len}", layer.size),
                ));
            }
            offset = offset
                .checked_add(len)
                .ok_or_else(|| ValidationError::new(field(i, CHUNK_SIZE), "overflows"))?;
            chunks.push(Chunk {
                layer: layer.clone(),
                offset: start,
                size: len,
                digest: chunk_digest,
                zstd,
            });
        }
        let format =
            format.ok_or_else(|| ValidationError::new("manifest.layers", "must hold a chunk"))?;
        if offset != size {
            return Err(ValidationError::new(
                at(DISK_SIZE),
                format!("is {size}, the chunks add up to {offset}"),
            ));
        }
        Ok(ChunkedDisk {
            disk: Descriptor::disk(format, digest, size, title),
            format,
            chunks,
        })
    }

    /// The single-layer manifest a chunked one stands for (the one the
    /// local store keeps).
    pub fn unchunked(&self) -> Result<Manifest, ValidationError> {
        let disk = self.chunked_disk()?;
        let mut plain = self.clone();
        for key in [DISK_DIGEST, DISK_SIZE, DISK_TITLE] {
            plain.annotations.remove(key);
        }
        plain.layers = vec![disk.disk];
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageConfig, ImageDiskInfo, ImageMetadata, ImageResources, ImageSpec};
    use crate::vm::Bootloader;

    #[test]
    fn plans_cover_the_disk_exactly() {
        assert!(plan_chunks(0, 10).is_empty());
        assert_eq!(plan_chunks(10, 10).len(), 1);
        assert_eq!(plan_chunks(10, 10)[0], 0..10);
        assert_eq!(plan_chunks(25, 10), vec![0..10, 10..20, 20..25]);
        assert_eq!(plan_chunks(3, 0), vec![0..1, 1..2, 2..3]);
        let plan = plan_chunks(4 << 30, 32 << 20);
        assert_eq!(plan.len(), 128);
        assert!(plan.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(plan.last().unwrap().end, 4 << 30);
    }

    #[test]
    fn media_types_round_trip() {
        for format in [DiskFormat::Qcow2, DiskFormat::Raw, DiskFormat::Iso] {
            for zstd in [false, true] {
                let mt = chunk_media_type(format, zstd);
                assert_eq!(parse_chunk_media_type(&mt), Some((format, zstd)));
            }
        }
        assert_eq!(
            chunk_media_type(DiskFormat::Raw, true),
            "application/vnd.vmregistry.disk.chunk.v1.raw+zstd"
        );
        assert_eq!(
            parse_chunk_media_type("application/vnd.vmregistry.disk.v1.raw"),
            None
        );
        assert_eq!(
            parse_chunk_media_type("application/vnd.vmregistry.disk.chunk.v1.vmdk"),
            None
        );
    }

    fn plain() -> Manifest {
        let config = ImageConfig {
            metadata: ImageMetadata {
                name: "ns/vm".parse().unwrap(),
                description: None,
                author: None,
                source: None,
                labels: BTreeMap::new(),
            },
            spec: ImageSpec {
                disk_format: DiskFormat::Raw,
                resources: ImageResources {
                    cpu: 1,
                    memory: 1 << 30,
                    bootloader: Bootloader::Uefi,
                },
            },
            disk: ImageDiskInfo { virtual_size: 25 },
        };
        let bytes = config.to_json_bytes();
        let disk = Descriptor::disk(DiskFormat::Raw, Digest::of(b"disk"), 25, "vm.raw");
        Manifest::for_image(&config, &bytes, disk, "2024-05-06T07:08:09Z")
    }

    fn layers(zstd_first: bool) -> Vec<Descriptor> {
        plan_chunks(25, 10)
            .iter()
            .enumerate()
            .map(|(i, range)| {
                let plain = Digest::of(format!("chunk{i}").as_bytes());
                let zstd = zstd_first && i == 0;
                let stored = if zstd {
                    (Digest::of(b"z"), 3)
                } else {
                    (plain.clone(), range.end - range.start)
                };
                Chunk::layer(DiskFormat::Raw, zstd, stored, range, &plain)
            })
            .collect()
    }

    #[test]
    fn chunked_manifests_rebuild_the_plain_one() {
        let plain = plain();
        let chunked = plain.chunked(layers(true)).unwrap();
        assert!(chunked.is_chunked() && !plain.is_chunked());
        let bytes = chunked.to_json_bytes();
        let parsed = Manifest::from_json(&bytes).unwrap();
        let disk = parsed.chunked_disk().unwrap();
        assert_eq!(disk.chunks.len(), 3);
        assert!(disk.chunks[0].zstd && !disk.chunks[1].zstd);
        assert_eq!(disk.chunks[2].range(), 20..25);
        assert_eq!(disk.disk, plain.layers[0]);
        assert_eq!(
            parsed.unchunked().unwrap().to_json_bytes(),
            plain.to_json_bytes()
        );
    }

    #[test]
    fn broken_chunk_lists_name_the_field() {
        let plain = plain();
        let mut gap = plain.chunked(layers(false)).unwrap();
        gap.layers.remove(1);
        assert_eq!(
            gap.chunked_disk().unwrap_err().field,
            "manifest.layers[1].annotations.vnd.vmregistry.chunk.offset"
        );
        let mut short = plain.chunked(layers(false)).unwrap();
        short.layers.pop();
        assert_eq!(
            short.chunked_disk().unwrap_err().field,
            "manifest.annotations.vnd.vmregistry.disk.size"
        );
        let mut lying = plain.chunked(layers(false)).unwrap();
        lying.layers[0].size = 9;
        assert_eq!(
            lying.chunked_disk().unwrap_err().field,
            "manifest.layers[0].size"
        );
        let mut mixed = plain.chunked(layers(false)).unwrap();
        mixed.layers[2].media_type = chunk_media_type(DiskFormat::Qcow2, false);
        assert!(Manifest::from_json(&mixed.to_json_bytes()).is_err());
        // A disk layer with more than its title cannot be rebuilt: no chunks.
        let mut annotated = plain.clone();
        annotated.layers[0]
            .annotations
            .insert("x".into(), "y".into());
        assert!(annotated.chunked(layers(false)).is_none());
    }
}
