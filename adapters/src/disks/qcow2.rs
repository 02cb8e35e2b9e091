//! Just enough of the qcow2 format (docs/interop/qcow2.txt in QEMU) to write
//! an empty version-3 overlay over a backing file and to read an image's
//! virtual size, without spawning `qemu-img` (two processes per VM).
//!
//! The overlay is what `qemu-img create -f qcow2 -u -F FMT -b BASE` writes:
//! 64 KiB clusters; cluster 0 holds the header, the backing-format extension
//! and the backing file name; cluster 1 the refcount table; cluster 2 its one
//! refcount block; then the (all zero) L1 table. Every cluster in use has a
//! refcount of 1 and no data cluster is allocated, so every read falls
//! through to the backing file.

const MAGIC: u32 = 0x5146_49fb;
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// Bytes of guest data one L2 table maps: (cluster / 8 entries) × cluster.
const L2_COVERS: u64 = (CLUSTER / 8) * CLUSTER;
const HEADER_LEN: u32 = 104;
const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
/// QEMU's limit on the backing file name.
const MAX_BACKING_NAME: usize = 1023;
/// 16-bit refcounts: one refcount block counts this many clusters.
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER / 2;

/// The bytes of an empty overlay of `size` virtual bytes over `backing`
/// (an absolute path) in `backing_format` ("raw" or "qcow2"). The L1 table
/// is left as a hole: the returned length is the file's full length, of
/// which only the returned bytes are non-zero.
pub(crate) fn overlay(
    backing: &str,
    backing_format: &str,
    size: u64,
) -> Result<(Vec<u8>, u64), String> {
    if backing.is_empty() || backing.len() > MAX_BACKING_NAME {
        return Err(format!(
            "the backing file name must be 1 to {MAX_BACKING_NAME} bytes, not {}",
            backing.len()
        ));
    }
    if size == 0 {
        return Err("the virtual size must be larger than 0 bytes".into());
    }
    let l1_entries = size.div_ceil(L2_COVERS);
    let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER);
    let clusters = 3 + l1_clusters;
    if clusters > REFCOUNTS_PER_BLOCK || l1_entries > u64::from(u32::MAX) {
        return Err(format!("a virtual size of {size} bytes is too large"));
    }
    let refcount_table = CLUSTER;
    let refcount_block = 2 * CLUSTER;
    let l1_table = 3 * CLUSTER;

    let mut extensions = Vec::new();
    put_u32(&mut extensions, EXT_BACKING_FORMAT);
    put_u32(&mut extensions, backing_format.len() as u32);
    extensions.extend_from_slice(backing_format.as_bytes());
    extensions.resize(extensions.len().next_multiple_of(8), 0);
    extensions.extend_from_slice(&[0; 8]); // end of extensions
    let backing_offset = u64::from(HEADER_LEN) + extensions.len() as u64;

    let mut out = Vec::with_capacity((refcount_block + 2 * clusters) as usize);
    put_u32(&mut out, MAGIC);
    put_u32(&mut out, 3); // version
    put_u64(&mut out, backing_offset);
    put_u32(&mut out, backing.len() as u32);
    put_u32(&mut out, CLUSTER_BITS);
    put_u64(&mut out, size);
    put_u32(&mut out, 0); // no encryption
    put_u32(&mut out, l1_entries as u32);
    put_u64(&mut out, l1_table);
    put_u64(&mut out, refcount_table);
    put_u32(&mut out, 1); // refcount table clusters
    put_u32(&mut out, 0); // snapshots
    put_u64(&mut out, 0); // snapshots offset
    put_u64(&mut out, 0); // incompatible features
    put_u64(&mut out, 0); // compatible features
    put_u64(&mut out, 0); // autoclear features
    put_u32(&mut out, 4); // refcount order: 16-bit refcounts
    put_u32(&mut out, HEADER_LEN);
    debug_assert_eq!(out.len(), HEADER_LEN as usize);
    out.extend_from_slice(&extensions);
    out.extend_from_slice(backing.as_bytes());

    out.resize(refcount_table as usize, 0);
    put_u64(&mut out, refcount_block);
    out.resize(refcount_block as usize, 0);
    for _ in 0..clusters {
        out.extend_from_slice(&1u16.to_be_bytes());
    }
    Ok((out, clusters * CLUSTER))
}

/// The virtual size in a qcow2 header (its first 32 bytes).
pub(crate) fn virtual_size(header: &[u8]) -> Result<u64, String> {
    if header.len() < 32 || header[..4] != MAGIC.to_be_bytes() {
        return Err("not a qcow2 image (no qcow2 magic)".into());
    }
    let version = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
    if !(2..=3).contains(&version) {
        return Err(format!("unsupported qcow2 version {version}"));
    }
    Ok(u64::from_be_bytes(
        header[24..32].try_into().expect("8 bytes"),
    ))
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_and_refcounts() {
        let (bytes, len) = overlay("/base.raw", "raw", 3 << 30).unwrap();
        // 3 GiB: 6 L1 entries in one cluster; header, refcounts, L1.
        assert_eq!(len, 4 * CLUSTER);
        assert_eq!(virtual_size(&bytes).unwrap(), 3 << 30);
        assert_eq!(&bytes[36..40], &6u32.to_be_bytes());
        let block = &bytes[2 * CLUSTER as usize..];
        assert_eq!(block.len(), 8);
        assert!(block.chunks(2).all(|c| c == [0, 1]));
        let name_at = u64::from_be_bytes(bytes[8..16].try_into().unwrap()) as usize;
        assert_eq!(&bytes[name_at..name_at + 9], b"/base.raw");
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(overlay("", "raw", 1).is_err());
        assert!(overlay(&"a".repeat(1024), "raw", 1).is_err());
        assert!(overlay("/b", "raw", 0).is_err());
        assert!(overlay("/b", "raw", u64::MAX).is_err());
        assert!(virtual_size(b"QFI").is_err());
        assert!(virtual_size(&[0; 32]).is_err());
    }
}
