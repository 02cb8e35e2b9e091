//! Assembly: picks the adapters the configuration names and wires the use
//! cases over them. The only place that knows every concrete type.

use std::sync::Arc;

use anyhow::Context;
use vmr_adapters::blobstore::{OpendalStore, S3Settings};
use vmr_adapters::grpc::Core;
use vmr_ports::blobstore::BlobStore;

use crate::config::{DaemonConfig, StorageKind};
use crate::service::health::{Component, Probe};
use crate::service::{ContextService, HealthService, ImageService, NoVms};

/// The assembled daemon core.
pub struct Assembled {
    pub grpc: Core,
    pub store_description: String,
    pub hypervisor_description: String,
}

/// Opens the store the configuration names, and sweeps what a crash left.
pub async fn open_store(config: &DaemonConfig) -> anyhow::Result<Arc<dyn BlobStore>> {
    let store: Arc<dyn BlobStore> = match config.storage {
        StorageKind::Filesystem => Arc::new(
            OpendalStore::filesystem(config.fs_path.clone())
                .with_context(|| format!("--fs-path {}", config.fs_path.display()))?,
        ),
        StorageKind::Memory => Arc::new(OpendalStore::memory().context("memory store")?),
        StorageKind::S3 => {
            let s3 = config
                .s3
                .as_ref()
                .context("--s3-bucket: is required with --storage s3")?;
            let settings = S3Settings {
                bucket: s3.bucket.clone(),
                region: s3.region.clone(),
                endpoint: s3.endpoint.clone(),
                access_key: s3.access_key.clone(),
                secret_key: s3.secret_key.clone(),
                skip_bucket_creation: s3.skip_bucket_creation,
            };
            Arc::new(
                OpendalStore::s3(settings, config.fs_path.clone())
                    .await
                    .with_context(|| format!("--s3-bucket {}", s3.bucket))?,
            )
        }
    };
    let swept = store
        .clean_temporaries()
        .await
        .context("cleaning the store's temporaries")?;
    if swept > 0 {
        tracing::info!(count = swept, "removed temporaries left by an earlier run");
    }
    Ok(store)
}

fn store_probe(store: Arc<dyn BlobStore>) -> Probe {
    Arc::new(move || {
        let store = store.clone();
        Box::pin(async move {
            store
                .list_manifests()
                .await
                .map(|tags| format!("{} ({} tags)", store.describe(), tags.len()))
                .map_err(|e| format!("{}: {e}", store.describe()))
        })
    })
}

/// Builds the whole core from the configuration.
pub async fn assemble(config: &DaemonConfig) -> anyhow::Result<Assembled> {
    let store = open_store(config).await?;
    let images = Arc::new(ImageService::new(store.clone(), Arc::new(NoVms)));
    let health = Arc::new(HealthService::new(vec![Component {
        name: "store",
        probe: Some(store_probe(store.clone())),
    }]));
    let contexts = Arc::new(ContextService::new(
        config.fs_path.join("contexts.json"),
        config.registry_url.clone(),
        config.auth_url.clone(),
    ));
    Ok(Assembled {
        grpc: Core {
            images,
            health,
            contexts,
        },
        store_description: store.describe(),
        hypervisor_description: "none".to_string(),
    })
}
