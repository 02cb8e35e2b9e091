//! Conversions between proto messages and the driving ports' types.

use tonic::Status;
use vmr_domain::image::{Descriptor, Reference, Tag};
use vmr_ports::driving::{
    ComponentHealth, HealthReport, ImageDetails, ImageInfo, PruneOutcome, RemoveOutcome,
    ServingStatus,
};
use vmr_proto::v1 as pb;

/// Parses a reference field, naming the field on failure.
pub fn reference(field: &str, raw: &str) -> Result<Reference, Status> {
    if raw.is_empty() {
        return Err(Status::invalid_argument(format!("{field}: is required")));
    }
    raw.parse()
        .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// Takes the summary by value: a listing of 200 images moves its strings
/// instead of copying them.
pub fn image_summary(info: ImageInfo) -> pb::ImageSummary {
    pb::ImageSummary {
        repository: info.repository.into_string(),
        tags: info.tags.into_iter().map(Tag::into_string).collect(),
        digest: info.digest.prefixed(),
        size: info.size,
        disk_format: info.disk_format.as_str().to_owned(),
        created: info.created,
        cpu: info.cpu,
        memory_bytes: info.memory_bytes,
        description: info.description,
    }
}

fn descriptor(d: &Descriptor) -> pb::Descriptor {
    pb::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: d.size,
        annotations: d.annotations.clone().into_iter().collect(),
    }
}

pub fn image_details(details: &ImageDetails) -> pb::InspectImageResponse {
    pb::InspectImageResponse {
        image: Some(image_summary(details.info.clone())),
        manifest: details.manifest_bytes.to_vec(),
        config: details.config_bytes.to_vec(),
        layers: details.manifest.layers.iter().map(descriptor).collect(),
    }
}

pub fn remove_outcome(outcome: RemoveOutcome) -> pb::RemoveImageResponse {
    pb::RemoveImageResponse {
        untagged: outcome.untagged,
        deleted: outcome.deleted.iter().map(ToString::to_string).collect(),
    }
}

pub fn prune_outcome(outcome: PruneOutcome) -> pb::PruneImagesResponse {
    pb::PruneImagesResponse {
        untagged: outcome.untagged,
        deleted: outcome.deleted.iter().map(ToString::to_string).collect(),
        reclaimed_bytes: outcome.reclaimed_bytes,
    }
}

fn component(c: &ComponentHealth) -> pb::ComponentHealth {
    let status = match c.status {
        ServingStatus::Serving => pb::ServingStatus::Serving,
        ServingStatus::NotServing => pb::ServingStatus::NotServing,
        ServingStatus::NotConfigured => pb::ServingStatus::NotConfigured,
    };
    pb::ComponentHealth {
        name: c.name.clone(),
        status: status as i32,
        message: c.message.clone(),
    }
}

pub fn health(report: &HealthReport) -> pb::HealthCheckResponse {
    pb::HealthCheckResponse {
        components: report.components.iter().map(component).collect(),
        version: report.version.clone(),
    }
}
