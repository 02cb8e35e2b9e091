//! `vmr system check`'s store check: every blob re-hashed, every tag's
//! manifest parsed and its blobs looked up, leftover temporaries listed
//! (and, on a shared bucket, other hosts' expired leases: see
//! [`expired_lease_problem`]).
//! What it finds is reported, never repaired: repairs are `rmi`, `prune` and
//! a daemon restart (which sweeps temporaries).

use std::iter;

use tracing::{info, warn};
use vmr_domain::image::Manifest;
use vmr_ports::blobstore::{BlobStore, StoreError};
use vmr_ports::driving::{StoreCheck, StoreProblem, StoreProblemKind, UseCaseError};
use vmr_ports::leases::{ExpiredKind, ExpiredLease};

/// Checks the whole store. The caller keeps garbage collection off (the
/// image service's writer guard), so no blob disappears between a listing
/// and its check and no tag is reported dangling because of a prune.
pub async fn check_store(store: &dyn BlobStore) -> Result<StoreCheck, UseCaseError> {
    let mut check = StoreCheck::default();
    for (digest, _) in store.list_blobs().await? {
        check.blobs_checked += 1;
        match store.verify_blob(&digest).await {
            Ok(()) | Err(StoreError::BlobNotFound(_)) => {}
            Err(e @ (StoreError::Corrupt { .. } | StoreError::DigestMismatch { .. })) => {
                check.problems.push(StoreProblem {
                    kind: StoreProblemKind::CorruptBlob,
                    subject: digest.to_string(),
                    message: e.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    for (repository, tag) in store.list_manifests().await? {
        let bytes = match store.get_manifest(&repository, &tag).await {
            Ok(bytes) => bytes,
            Err(StoreError::ManifestNotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        check.manifests_checked += 1;
        let subject = format!("{repository}:{tag}");
        let manifest = match Manifest::from_json(&bytes) {
            Ok(manifest) => manifest,
            Err(e) => {
                check.problems.push(StoreProblem {
                    kind: StoreProblemKind::UnparsableManifest,
                    subject,
                    message: e.to_string(),
                });
                continue;
            }
        };
        for descriptor in iter::once(&manifest.config).chain(&manifest.layers) {
            if !store.blob_exists(&descriptor.digest).await?
                && still_tagged(store, &repository, &tag, &bytes).await?
            {
                check.problems.push(StoreProblem {
                    kind: StoreProblemKind::DanglingManifestBlob,
                    subject: subject.clone(),
                    message: format!(
                        "blob {} ({}) is missing from the store",
                        descriptor.digest, descriptor.media_type
                    ),
                });
            }
        }
    }
    for name in store.list_temporaries().await? {
        check.problems.push(StoreProblem {
            kind: StoreProblemKind::LeftoverTemporary,
            message: format!("temporary {name} is owned by no writer (left by a crash?)"),
            subject: name,
        });
    }
    if check.problems.is_empty() {
        info!(
            blobs = check.blobs_checked,
            manifests = check.manifests_checked,
            "store check: clean"
        );
    } else {
        warn!(
            problems = check.problems.len(),
            "store check found problems"
        );
    }
    Ok(check)
}

/// How `check` reports a lease its host stopped renewing: whose it is, and
/// that it pins nothing (so it is not a leftover to clean by hand).
pub fn expired_lease_problem(expired: ExpiredLease) -> StoreProblem {
    let what = match expired.kind {
        ExpiredKind::Record => "lease record",
        ExpiredKind::Collection => "collection announcement",
    };
    StoreProblem {
        kind: StoreProblemKind::ExpiredLease,
        message: format!(
            "expired lease of host {}: its {what} was last renewed {} s ago (by the store's \
             clock; the host died or lost the store), so it protects nothing; the next \
             collection on any host removes it",
            expired.host, expired.age_secs
        ),
        subject: expired.key,
    }
}

/// Whether `repository:tag` still holds `bytes`: another daemon sharing the
/// store may have removed the tag (then its blobs) since it was read.
async fn still_tagged(
    store: &dyn BlobStore,
    repository: &vmr_domain::image::Repository,
    tag: &vmr_domain::image::Tag,
    bytes: &bytes::Bytes,
) -> Result<bool, StoreError> {
    match store.get_manifest(repository, tag).await {
        Ok(now) => Ok(now == *bytes),
        Err(StoreError::ManifestNotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use bytes::Bytes;
    use vmr_adapters::blobstore::OpendalStore;
    use vmr_domain::image::{
        ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, Digest, DiskFormat, MANIFEST_MEDIA_TYPE, Repository, Tag,
        disk_media_type,
    };
    use vmr_ports::blobstore::{Blobs as _, Manifests as _};

    use super::*;

    fn kinds(check: &StoreCheck) -> Vec<(StoreProblemKind, String)> {
        let mut out: Vec<_> = check
            .problems
            .iter()
            .map(|p| (p.kind, p.subject.clone()))
            .collect();
        out.sort();
        out
    }

    async fn put_blob(store: &OpendalStore, bytes: &'static [u8]) -> Digest {
        let mut writer = store.begin_blob().await.unwrap();
        writer.write(Bytes::from_static(bytes)).await.unwrap();
        writer.commit(None).await.unwrap().0
    }

    fn manifest_json(config: &Digest, layer: &Digest) -> String {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config.to_string(), "size": 2},
            "layers": [{
                "mediaType": disk_media_type(DiskFormat::Raw),
                "digest": layer.to_string(),
                "size": 4,
            }],
        })
        .to_string()
    }

    #[tokio::test]
    async fn reports_corrupt_blobs_dangling_and_unparsable_manifests_and_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = OpendalStore::filesystem(dir.path()).unwrap();
        let config = put_blob(&store, b"{}").await;
        let layer = put_blob(&store, b"disk").await;
        let repository: Repository = "a/b".parse().unwrap();
        let good: Tag = "good".parse().unwrap();
        let manifest = manifest_json(&config, &layer);
        Manifest::from_json(manifest.as_bytes()).expect("a valid manifest");
        store
            .put_manifest(&repository, &good, Bytes::from(manifest))
            .await
            .unwrap();
        let clean = check_store(&store).await.unwrap();
        assert_eq!(clean.problems, []);
        assert_eq!((clean.blobs_checked, clean.manifests_checked), (2, 1));

        let missing = Digest::of(b"gone");
        store
            .put_manifest(
                &repository,
                &"dangling".parse().unwrap(),
                Bytes::from(manifest_json(&config, &missing)),
            )
            .await
            .unwrap();
        store
            .put_manifest(&repository, &"junk".parse().unwrap(), Bytes::from("{"))
            .await
            .unwrap();
        std::fs::write(dir.path().join("blobs/sha256").join(layer.hex()), b"DISK").unwrap();
        std::fs::write(store.temporaries_dir().join("tmp-leftover"), b"x").unwrap();

        let found = check_store(&store).await.unwrap();
        assert_eq!(
            kinds(&found),
            [
                (StoreProblemKind::CorruptBlob, layer.to_string()),
                (
                    StoreProblemKind::DanglingManifestBlob,
                    "a/b:dangling".into()
                ),
                (StoreProblemKind::UnparsableManifest, "a/b:junk".into()),
                (StoreProblemKind::LeftoverTemporary, "tmp-leftover".into()),
            ]
        );
        assert_eq!(found.manifests_checked, 3);
    }

    #[test]
    fn an_expired_lease_is_reported_as_one_naming_its_host() {
        let problem = expired_lease_problem(ExpiredLease {
            key: "leases/box-1a2b.json".into(),
            host: "box-1a2b".into(),
            kind: ExpiredKind::Record,
            age_secs: 9,
        });
        assert_eq!(problem.kind, StoreProblemKind::ExpiredLease);
        assert_eq!(problem.subject, "leases/box-1a2b.json");
        assert!(
            problem.message.starts_with(
                "expired lease of host box-1a2b: its lease record was last renewed 9 s ago"
            ),
            "{}",
            problem.message
        );
    }
}
