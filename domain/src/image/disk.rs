//! Disk formats (qcow2, raw, iso) and the header checks that catch a disk
//! whose real format is not the one its VMFile declares.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::validation::ValidationError;

const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
const ISO_SIGNATURE: &[u8; 5] = b"CD001";
/// Offset of the ISO9660 primary volume descriptor's "CD001" signature
/// (sector 16 of 2048 bytes, plus the one-byte descriptor type).
const ISO_SIGNATURE_OFFSET: usize = 16 * 2048 + 1;

/// The format of a disk image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DiskFormat {
    Qcow2,
    Raw,
    Iso,
}

impl DiskFormat {
    /// How many leading bytes of a disk [`DiskFormat::check_header`] needs
    /// (or the whole file if it is smaller).
    pub const HEADER_LEN: usize = ISO_SIGNATURE_OFFSET + ISO_SIGNATURE.len();

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qcow2 => "qcow2",
            Self::Raw => "raw",
            Self::Iso => "iso",
        }
    }

    /// Checks that `head` (the first [`DiskFormat::HEADER_LEN`] bytes of the
    /// disk, or all of it) is really in this format.
    pub fn check_header(&self, head: &[u8]) -> Result<(), ValidationError> {
        let is_qcow2 = head.starts_with(QCOW2_MAGIC);
        let fail = |reason: &str| Err(ValidationError::new("spec.diskFormat", reason));
        match self {
            Self::Qcow2 if !is_qcow2 => {
                fail("is qcow2 but the disk has no qcow2 header (magic QFI\\xfb)")
            }
            Self::Iso if !is_iso(head) => {
                fail("is iso but the disk has no ISO9660 signature (CD001 at offset 32769)")
            }
            Self::Raw if is_qcow2 => {
                fail("is raw but the disk is a qcow2 image; declare diskFormat: qcow2")
            }
            _ => Ok(()),
        }
    }
}

fn is_iso(head: &[u8]) -> bool {
    head.get(ISO_SIGNATURE_OFFSET..ISO_SIGNATURE_OFFSET + ISO_SIGNATURE.len())
        == Some(ISO_SIGNATURE.as_slice())
}

/// The virtual size recorded in a qcow2 header (big-endian u64 at offset 24),
/// or `None` when `head` is not a qcow2 header.
pub fn qcow2_virtual_size(head: &[u8]) -> Option<u64> {
    if !head.starts_with(QCOW2_MAGIC) {
        return None;
    }
    let bytes: [u8; 8] = head.get(24..32)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

impl FromStr for DiskFormat {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "qcow2" => Ok(Self::Qcow2),
            "raw" => Ok(Self::Raw),
            "iso" => Ok(Self::Iso),
            _ => Err(ValidationError::new(
                "diskFormat",
                format!(
                    "`{}` is not a disk format; use qcow2, raw or iso",
                    s.escape_debug()
                ),
            )),
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DiskFormat {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DiskFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse()
            .map_err(|e: ValidationError| serde::de::Error::custom(e.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qcow2_head(size: u64) -> Vec<u8> {
        let mut head = vec![0u8; 512];
        head[..4].copy_from_slice(QCOW2_MAGIC);
        head[4..8].copy_from_slice(&3u32.to_be_bytes());
        head[24..32].copy_from_slice(&size.to_be_bytes());
        head
    }

    fn iso_head() -> Vec<u8> {
        let mut head = vec![0u8; DiskFormat::HEADER_LEN + 100];
        head[32768] = 1;
        head[32769..32774].copy_from_slice(ISO_SIGNATURE);
        head
    }

    #[test]
    fn qcow2_header() {
        let head = qcow2_head(10 << 30);
        assert!(DiskFormat::Qcow2.check_header(&head).is_ok());
        assert_eq!(qcow2_virtual_size(&head), Some(10 << 30));
        let err = DiskFormat::Qcow2.check_header(&[0u8; 100]).unwrap_err();
        assert_eq!(err.field, "spec.diskFormat");
        assert!(DiskFormat::Qcow2.check_header(b"QF").is_err());
        assert_eq!(qcow2_virtual_size(&[0u8; 64]), None);
        assert_eq!(qcow2_virtual_size(&head[..20]), None);
    }

    #[test]
    fn iso_header() {
        assert_eq!(DiskFormat::HEADER_LEN, 32774);
        assert!(DiskFormat::Iso.check_header(&iso_head()).is_ok());
        assert!(DiskFormat::Iso.check_header(&iso_head()[..32773]).is_err());
        assert!(DiskFormat::Iso.check_header(&qcow2_head(1)).is_err());
    }

    #[test]
    fn raw_refuses_qcow2() {
        assert!(DiskFormat::Raw.check_header(&[0u8; 10]).is_ok());
        assert!(DiskFormat::Raw.check_header(&[]).is_ok());
        assert!(DiskFormat::Raw.check_header(&iso_head()).is_ok());
        let err = DiskFormat::Raw.check_header(&qcow2_head(1)).unwrap_err();
        assert!(err.reason.contains("qcow2"), "{err}");
    }

    #[test]
    fn parse_and_display() {
        assert_eq!("QCOW2".parse::<DiskFormat>().unwrap(), DiskFormat::Qcow2);
        assert_eq!("iso".parse::<DiskFormat>().unwrap().to_string(), "iso");
        let err = "vmdk".parse::<DiskFormat>().unwrap_err();
        assert!(err.reason.contains("qcow2, raw or iso"));
        assert_eq!(serde_json::to_string(&DiskFormat::Raw).unwrap(), "\"raw\"");
    }
}
