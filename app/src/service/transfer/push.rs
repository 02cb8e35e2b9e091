//! Push: every blob the registry lacks (asked with HEAD; mounted from
//! another repository of the same registry when one is known to hold it;
//! uploaded from the store otherwise), then the manifest with its exact local
//! bytes, so the registry's digest is the local one.

use std::sync::Arc;

use bytes::Bytes;
use tracing::{debug, info};
use vmr_domain::image::{Descriptor, Digest, Manifest, Repository};
use vmr_ports::driving::{
    BlobProgress, ErrorKind, TransferDone, TransferEvent, TransferRequest, UseCaseError,
};
use vmr_ports::{BlobStore, ManifestReference, RegistryClient, RegistryTarget};

use super::{KnownBlobs, Progress, TransferService, registry_target};

/// A push checked and ready to run.
pub(super) struct PushJob {
    store: Arc<dyn BlobStore>,
    client: Arc<dyn RegistryClient>,
    known: Arc<KnownBlobs>,
    repository: Repository,
    remote: ManifestReference,
    manifest: Manifest,
    manifest_bytes: Bytes,
    reference: String,
}

/// What can be checked before anything travels: the context, the registry
/// URL, and the local image.
pub(super) async fn prepare(
    service: &TransferService,
    request: TransferRequest,
) -> Result<PushJob, UseCaseError> {
    let TransferRequest {
        reference,
        context,
        credential,
    } = request;
    let context = service.contexts.resolve(&context).await?;
    let target: RegistryTarget =
        registry_target(&context, reference.registry.as_deref(), credential)?;
    let (repository, manifest_bytes) = service.images.resolve(&reference).await?;
    let manifest = Manifest::from_json(&manifest_bytes)?;
    // A digest alone pushes the manifest untagged; with a tag, it is tagged.
    let remote = match (&reference.tag, &reference.digest) {
        (None, Some(digest)) => ManifestReference::Digest(digest.clone()),
        _ => ManifestReference::Tag(reference.tag_or_latest()),
    };
    let client = service.registries.connect(&target)?;
    Ok(PushJob {
        store: service.images.store().clone(),
        client,
        known: service.known.clone(),
        repository,
        remote,
        manifest,
        manifest_bytes,
        reference: reference.to_string(),
    })
}

fn blob_event(descriptor: &Descriptor, done: u64, skipped: bool) -> TransferEvent {
    TransferEvent::Blob(BlobProgress {
        digest: descriptor.digest.clone(),
        media_type: descriptor.media_type.clone(),
        done,
        total: descriptor.size,
        skipped,
    })
}

impl PushJob {
    pub(super) async fn run(self, progress: Progress) -> Result<TransferDone, UseCaseError> {
        let registry = self.client.describe();
        let mut transferred = 0;
        for descriptor in self.manifest.blobs() {
            if self.already_there(&registry, descriptor).await? {
                progress
                    .send(blob_event(descriptor, descriptor.size, true))
                    .await?;
            } else {
                progress.send(blob_event(descriptor, 0, false)).await?;
                self.upload(descriptor, &progress).await?;
                transferred += descriptor.size;
                progress
                    .send(blob_event(descriptor, descriptor.size, false))
                    .await?;
            }
            self.known
                .remember(&registry, &descriptor.digest, &self.repository);
        }
        let digest = self
            .client
            .put_manifest(
                &self.repository,
                &self.remote,
                self.manifest_bytes.clone(),
                &self.manifest.media_type,
            )
            .await?;
        let local = Digest::of(&self.manifest_bytes);
        if digest != local {
            return Err(UseCaseError::new(
                ErrorKind::DataLoss,
                format!(
                    "registry {registry} stored the manifest of {} as {digest}, but its bytes hash to {local}",
                    self.reference
                ),
            ));
        }
        info!(registry = %registry, digest = %digest, bytes = transferred, "pushed");
        Ok(TransferDone {
            reference: self.reference,
            digest,
            bytes_transferred: transferred,
        })
    }

    /// Whether the repository has the blob, or got it by a mount.
    async fn already_there(
        &self,
        registry: &str,
        descriptor: &Descriptor,
    ) -> Result<bool, UseCaseError> {
        let digest = &descriptor.digest;
        if self
            .client
            .blob_exists(&self.repository, digest)
            .await?
            .is_some()
        {
            debug!(%digest, "the registry has the blob");
            return Ok(true);
        }
        if let Some(from) = self.known.elsewhere(registry, digest, &self.repository) {
            if self
                .client
                .mount_blob(&self.repository, digest, &from)
                .await?
            {
                debug!(%digest, from = %from, "mounted");
                return Ok(true);
            }
            debug!(%digest, from = %from, "the registry declined the mount");
        }
        Ok(false)
    }

    async fn upload(
        &self,
        descriptor: &Descriptor,
        progress: &Progress,
    ) -> Result<(), UseCaseError> {
        // A full read verifies the local blob: a corrupt one fails the
        // upload (DATA_LOSS) instead of reaching the registry.
        let data = self.store.open_blob(&descriptor.digest, None).await?;
        let reporter = progress.clone();
        let described = descriptor.clone();
        let on_progress = Arc::new(move |done: u64| {
            reporter.offer(blob_event(&described, done, false));
        });
        self.client
            .upload_blob(
                &self.repository,
                &descriptor.digest,
                descriptor.size,
                data,
                Some(on_progress),
            )
            .await?;
        Ok(())
    }
}
