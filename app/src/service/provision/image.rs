//! The image a VM is made from, read from the local store with a lease on
//! its blobs: its manifest's digest, its disk (the first disk layer, whose
//! media type gives the format) and its config.

use vmr_domain::image::{Digest, ImageConfig, Manifest, Reference};
use vmr_domain::provision::{RunnableImage, disk_layer};
use vmr_ports::driving::UseCaseError;

use super::with_field;
use crate::service::ImageService;
use crate::service::images::Lease;

/// Resolves `reference` in the local store; the lease keeps the image's
/// blobs from garbage collection while it lives.
pub(super) async fn load(
    images: &ImageService,
    reference: &Reference,
) -> Result<(RunnableImage, Lease), UseCaseError> {
    let (_, manifest_bytes, lease) = images
        .resolve_leased(reference)
        .await
        .map_err(|e| with_field(e, "image"))?;
    let unusable = |reason: String| {
        UseCaseError::precondition(format!("image {reference} cannot be run: {reason}"))
    };
    let manifest = Manifest::from_json(&manifest_bytes).map_err(|e| unusable(e.to_string()))?;
    let (disk_digest, disk_format) = disk_layer(&manifest).map_err(|e| unusable(e.to_string()))?;
    let config_bytes = images.store().read_blob(&manifest.config.digest).await?;
    let config = ImageConfig::from_json(&config_bytes).map_err(|e| unusable(e.to_string()))?;
    let image = RunnableImage {
        manifest_digest: Digest::of(&manifest_bytes),
        disk_digest,
        disk_format,
        config,
    };
    Ok((image, lease))
}
