//! The snapshot the metrics endpoint shows beside its counters: VMs by
//! state (from the hypervisor), images and store bytes (from the store),
//! and whether each configured component answers (the health probes, so
//! that `vmr system health` and the metrics never disagree).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use vmr_domain::vm::VmState;
use vmr_ports::VmDriver;
use vmr_ports::blobstore::Blobs;
use vmr_ports::driving::{
    HealthUseCases, ImageUseCases, MetricsSnapshot, MetricsSnapshotUseCases, ServingStatus,
};

/// Every state a VM can be in, each shown even at 0, so a series does not
/// vanish when its last VM changes state.
const STATES: [VmState; 6] = [
    VmState::Created,
    VmState::Running,
    VmState::Paused,
    VmState::Stopping,
    VmState::Stopped,
    VmState::Crashed,
];

/// Samples the core for the metrics endpoint.
pub struct MetricsSnapshotService {
    hypervisor: Arc<dyn VmDriver>,
    images: Arc<dyn ImageUseCases>,
    store: Arc<dyn Blobs>,
    health: Arc<dyn HealthUseCases>,
}

impl MetricsSnapshotService {
    pub fn new(
        hypervisor: Arc<dyn VmDriver>,
        images: Arc<dyn ImageUseCases>,
        store: Arc<dyn Blobs>,
        health: Arc<dyn HealthUseCases>,
    ) -> Self {
        Self {
            hypervisor,
            images,
            store,
            health,
        }
    }
}

#[async_trait]
impl MetricsSnapshotUseCases for MetricsSnapshotService {
    async fn snapshot(&self) -> MetricsSnapshot {
        let (vms, images, blobs, health) = tokio::join!(
            self.hypervisor.list_vms(),
            self.images.list(None),
            self.store.list_blobs(),
            self.health.check(),
        );
        let vms_by_state = match vms {
            Ok(vms) => {
                let mut counts: BTreeMap<String, u64> =
                    STATES.iter().map(|s| (s.as_str().to_string(), 0)).collect();
                for vm in vms {
                    *counts.entry(vm.state.as_str().to_string()).or_default() += 1;
                }
                counts
            }
            Err(e) => {
                tracing::debug!(error = %e, "metrics: cannot list VMs");
                BTreeMap::new()
            }
        };
        let reachable = health
            .components
            .into_iter()
            // The daemon answers by definition; unconfigured parts are no
            // outage.
            .filter(|c| c.name != "daemon" && c.status != ServingStatus::NotConfigured)
            .map(|c| (c.name, c.status == ServingStatus::Serving))
            .collect();
        MetricsSnapshot {
            vms_by_state,
            images: images.ok().map(|list| list.len() as u64),
            store_bytes: blobs
                .ok()
                .map(|blobs| blobs.iter().map(|(_, size)| size).sum()),
            reachable,
        }
    }
}
