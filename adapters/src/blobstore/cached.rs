//! The local copies of S3 (and memory) blobs the hypervisor reads. Beside
//! each `<hex>` copy, `<hex>.verified` records the file's identity (device,
//! inode, length, change time) as it was when its bytes last hashed to its
//! name. A copy whose identity still matches is used as it is; one changed
//! since (written to, truncated, replaced) is hashed again before use and
//! fetched again when it no longer matches its digest. Writing a file always
//! moves its change time, which no user can set back.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use vmr_domain::image::Digest;

fn sidecar(copy: &Path) -> PathBuf {
    copy.with_extension("verified")
}

fn identity(copy: &Path) -> io::Result<String> {
    let meta = std::fs::metadata(copy)?;
    Ok(format!(
        "{} {} {} {}.{:09}\n",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.ctime(),
        meta.ctime_nsec()
    ))
}

/// Records that `copy`'s bytes, as they are now, were verified.
pub(crate) fn record(copy: &Path) -> io::Result<()> {
    // A torn record only fails to match: the copy is then hashed again.
    std::fs::write(sidecar(copy), identity(copy)?)
}

/// Whether `copy` is still the file whose bytes were verified.
pub(crate) fn unchanged(copy: &Path) -> io::Result<bool> {
    match std::fs::read_to_string(sidecar(copy)) {
        Ok(recorded) => Ok(recorded == identity(copy)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The digest of `copy`'s bytes (a blocking read: call through `spawn_io`).
pub(crate) fn hash(copy: &Path) -> io::Result<Digest> {
    let mut file = File::open(copy)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(Digest::from_hasher(hasher));
        }
        hasher.update(&buffer[..n]);
    }
}

/// Removes a copy and its record.
pub(crate) fn remove(copy: &Path) -> io::Result<()> {
    for path in [copy.to_owned(), sidecar(copy)] {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_written_to_after_its_record_is_no_longer_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("abc");
        std::fs::write(&copy, b"verified bytes").unwrap();
        assert!(!unchanged(&copy).unwrap(), "never recorded");
        record(&copy).unwrap();
        assert!(unchanged(&copy).unwrap());
        assert_eq!(hash(&copy).unwrap(), Digest::of(b"verified bytes"));

        std::fs::write(&copy, b"verified bytez").unwrap();
        assert!(!unchanged(&copy).unwrap(), "written to since");
        remove(&copy).unwrap();
        assert!(!copy.exists() && !sidecar(&copy).exists());
    }
}
