//! Where things live in the store: the object keys shared by every backend
//! (`blobs/sha256/<hex>`, `manifests/<repository>/<tag>/manifest.json`) and
//! the names of local temporaries.

use vmr_domain::image::{Digest, Repository, Tag};

/// Directory (key prefix) of committed blobs.
pub(crate) const BLOBS_DIR: &str = "blobs/sha256";
/// Directory (key prefix) of manifests.
pub(crate) const MANIFESTS_DIR: &str = "manifests";
/// File name of a tag's manifest.
const MANIFEST_FILE: &str = "manifest.json";
/// Prefix of a resumable temporary: `partial-<hex>` is named after the digest
/// its bytes are expected to hash to, so a later pull of that digest finds it.
pub(crate) const PARTIAL_PREFIX: &str = "partial-";
/// Prefix of every other temporary.
pub(crate) const TEMP_PREFIX: &str = "tmp-";

pub(crate) fn blob_key(digest: &Digest) -> String {
    format!("{BLOBS_DIR}/{}", digest.hex())
}

pub(crate) fn manifest_key(repository: &Repository, tag: &Tag) -> String {
    format!("{MANIFESTS_DIR}/{repository}/{tag}/{MANIFEST_FILE}")
}

pub(crate) fn partial_name(digest: &Digest) -> String {
    format!("{PARTIAL_PREFIX}{}", digest.hex())
}

/// `partial-<hex>-placed`: a blob written by position (kept as long as a
/// partial download).
pub(crate) fn placed_name(digest: &Digest) -> String {
    format!("{PARTIAL_PREFIX}{}-placed", digest.hex())
}

/// The repository and tag a manifest key names, or `None` for any other key
/// (directories, stray files, names that are not valid repositories or tags).
pub(crate) fn parse_manifest_key(key: &str) -> Option<(Repository, Tag)> {
    let rest = key
        .strip_prefix(MANIFESTS_DIR)?
        .strip_prefix('/')?
        .strip_suffix(MANIFEST_FILE)?
        .strip_suffix('/')?;
    let (repository, tag) = rest.rsplit_once('/')?;
    Some((repository.parse().ok()?, tag.parse().ok()?))
}

/// The digest a blob key (or its last path segment) names.
pub(crate) fn parse_blob_name(name: &str) -> Option<Digest> {
    let name = name.rsplit('/').next()?;
    Digest::from_hex(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_keys_round_trip_with_nested_repositories() {
        let repository: Repository = "a/b/c".parse().unwrap();
        let tag: Tag = "v1.0".parse().unwrap();
        let key = manifest_key(&repository, &tag);
        assert_eq!(key, "manifests/a/b/c/v1.0/manifest.json");
        assert_eq!(parse_manifest_key(&key), Some((repository, tag)));
    }

    #[test]
    fn other_keys_are_not_manifests() {
        for key in [
            "manifests/",
            "manifests/a/",
            "manifests/manifest.json",
            "manifests/a/manifest.json",
            "manifests/a/t/other.json",
            "blobs/sha256/00",
            "manifests/A/t/manifest.json",
        ] {
            assert_eq!(parse_manifest_key(key), None, "{key}");
        }
    }

    #[test]
    fn blob_names() {
        let digest = Digest::of(b"x");
        assert_eq!(blob_key(&digest), format!("blobs/sha256/{}", digest.hex()));
        assert_eq!(parse_blob_name(&blob_key(&digest)), Some(digest.clone()));
        assert_eq!(parse_blob_name(digest.hex()), Some(digest));
        assert_eq!(parse_blob_name("blobs/sha256/"), None);
        assert_eq!(parse_blob_name("tmp-123"), None);
    }
}
