//! Assembly: picks the adapters the configuration names and wires the use
//! cases over them. The only place that knows every concrete type.

use std::sync::Arc;

use anyhow::Context;
use futures::future::BoxFuture;
use vmr_adapters::auth::HttpAuthConnector;
use vmr_adapters::blobstore::{IndexedManifests, LeaseSettings, OpendalStore, S3Settings};
use vmr_adapters::cloudinit::CidataIso;
use vmr_adapters::disks::QemuDisks;
use vmr_adapters::fake::hypervisor::FakeHypervisor;
use vmr_adapters::grpc::Core;
use vmr_adapters::metrics::PrometheusMetrics;
use vmr_adapters::registry::{OciRegistryConnector, RegistryOptions, RetryPolicy, TrustedRoots};
use vmr_ports::blobstore::{BlobStore, Manifests, StoreCache, StoreParts, StoreUpkeep as _};
use vmr_ports::driving::MetricsSnapshotUseCases;
use vmr_ports::leases::{NoSharedLeases, SharedLeases};
use vmr_ports::{AuthConnector, AuthTarget, RegistryConnector, RegistryError, RegistryTarget};
use vmr_ports::{GuestAgent, Hypervisor, SerialConsole, VmDriver};
use vmr_ports::{MetricsRecorder, NoMetrics};

use crate::config::{DaemonConfig, HypervisorKind, StorageKind};
use crate::service::TransferService;
use crate::service::events::{EventBus, LifecycleRelay, Publisher};
use crate::service::health::{Component, Probe};
use crate::service::images::Heartbeat;
use crate::service::transfer::ChunkSettings;
use crate::service::{AuthService, ContextService, HealthService, ImageService};
use crate::service::{ComposeService, ComposeSettings};
use crate::service::{GuestService, MetricsSnapshotService};
use crate::service::{
    NetworkService, RestartSupervisor, RestartTask, RuntimeDirs, VmImages, VmMedia, VmService,
};

/// The assembled daemon core.
pub struct Assembled {
    pub grpc: Core,
    pub store_description: String,
    pub hypervisor_description: String,
    /// Enforces restart policies while it lives.
    pub restart_policies: RestartTask,
    /// Renews this host's leases in a shared store while it lives.
    pub heartbeat: Heartbeat,
    /// The image use cases, for withdrawing the leases at a clean stop.
    pub images: Arc<ImageService>,
    /// Publishes the hypervisor's VM lifecycle events while it lives.
    pub vm_events: LifecycleRelay,
    /// The metrics endpoint's counters and snapshot, when it is asked for.
    pub metrics: Option<MetricsEndpoint>,
}

/// What `--metrics-listen` serves.
pub struct MetricsEndpoint {
    pub counters: Arc<PrometheusMetrics>,
    pub snapshot: Arc<dyn MetricsSnapshotUseCases>,
}

/// What a hypervisor backend gives the core: its VMs, networks and
/// lifecycle events (the three [`Hypervisor`] ports, which each use case
/// takes apart: `Arc<dyn Hypervisor>` upcasts to `Arc<dyn VmDriver>` and
/// the others), the ways into a guest (its agent, its serial console), and
/// a description for the logs and the health check. One backend usually
/// implements them all.
pub struct OpenedHypervisor {
    pub hypervisor: Arc<dyn Hypervisor>,
    pub agent: Arc<dyn GuestAgent>,
    pub console: Arc<dyn SerialConsole>,
    pub description: String,
}

impl OpenedHypervisor {
    /// A backend that is its own agent and console.
    pub fn of<H>(backend: Arc<H>, description: String) -> Self
    where
        H: Hypervisor + GuestAgent + SerialConsole + 'static,
    {
        Self {
            hypervisor: backend.clone(),
            agent: backend.clone(),
            console: backend,
            description,
        }
    }
}

/// Connects to libvirt for `--hypervisor libvirt`.
///
/// Only the `vmrd-libvirt` binary has one. This library never links libvirt,
/// so `vmrd` with the fake hypervisor, the `vmr` CLI and programs embedding
/// the core map none of libvirt's ~55 libraries (docs/decisions.md, "Idle
/// memory").
pub type OpenLibvirt =
    for<'a> fn(&'a DaemonConfig) -> BoxFuture<'a, anyhow::Result<OpenedHypervisor>>;

/// Connects to the hypervisor the configuration names; `libvirt` opens
/// libvirt, when this program can.
pub async fn open_hypervisor(
    config: &DaemonConfig,
    libvirt: Option<OpenLibvirt>,
) -> anyhow::Result<OpenedHypervisor> {
    match (config.hypervisor, libvirt) {
        (HypervisorKind::Fake, _) => Ok(OpenedHypervisor::of(
            Arc::new(FakeHypervisor::new().without_call_log()),
            "fake (in memory; VMs do not outlive the daemon)".to_string(),
        )),
        (HypervisorKind::Libvirt, Some(open)) => open(config).await,
        (HypervisorKind::Libvirt, None) => anyhow::bail!(
            "--hypervisor libvirt: this program has no libvirt adapter (run vmrd-libvirt, or use --hypervisor fake)"
        ),
    }
}

/// The store the configuration names and the leases this daemon shares
/// through it with other daemons (none but for S3).
pub struct OpenedStore {
    pub store: Arc<dyn BlobStore>,
    /// The store's copy in memory, when it keeps one.
    pub cache: Option<Arc<dyn StoreCache>>,
    pub shared: Arc<dyn SharedLeases>,
    pub lease_settings: LeaseSettings,
}

/// Opens the store the configuration names, and sweeps what a crash left.
pub async fn open_store(config: &DaemonConfig) -> anyhow::Result<OpenedStore> {
    let mut shared: Arc<dyn SharedLeases> = Arc::new(NoSharedLeases);
    let mut lease_settings = LeaseSettings::default();
    let store = match config.storage {
        StorageKind::Filesystem => OpendalStore::filesystem(config.fs_path.clone())
            .with_context(|| format!("--fs-path {}", config.fs_path.display()))?,
        StorageKind::Memory => OpendalStore::memory().context("memory store")?,
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
                upload_expiry: s3.upload_expiry_secs.map(std::time::Duration::from_secs),
            };
            let store = OpendalStore::s3(settings, config.fs_path.clone())
                .await
                .with_context(|| format!("--s3-bucket {}", s3.bucket))?;
            lease_settings = LeaseSettings {
                ttl: std::time::Duration::from_secs(s3.lease_ttl_secs),
                grace: std::time::Duration::from_secs(s3.gc_grace_secs),
            };
            shared = store.shared_leases(lease_settings);
            store
        }
    };
    let swept = store
        .clean_temporaries()
        .await
        .context("cleaning the store's temporaries")?;
    if swept > 0 {
        tracing::info!(count = swept, "removed temporaries left by an earlier run");
    }
    // A store this daemon alone writes keeps its manifests in memory; a
    // shared bucket is read each time (another host may have changed it).
    let exclusive = store.is_exclusive();
    let store: Arc<dyn BlobStore> = Arc::new(store);
    let (store, cache): (Arc<dyn BlobStore>, _) = if exclusive {
        let index = Arc::new(IndexedManifests::new(
            Arc::clone(&store) as Arc<dyn Manifests>
        ));
        let joined = StoreParts::with_manifests(store, Arc::clone(&index) as Arc<dyn Manifests>);
        (Arc::new(joined), Some(index as Arc<dyn StoreCache>))
    } else {
        (store, None)
    };
    Ok(OpenedStore {
        store,
        cache,
        shared,
        lease_settings,
    })
}

fn hypervisor_probe(hypervisor: Arc<dyn VmDriver>) -> Probe {
    Arc::new(move || {
        let hypervisor = hypervisor.clone();
        Box::pin(async move {
            hypervisor
                .ping()
                .await
                .map(|info| {
                    format!(
                        "{} {} ({}, {})",
                        info.backend, info.uri, info.version, info.virt_type
                    )
                })
                .map_err(|e| e.to_string())
        })
    })
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

/// Whether the default context's registry answers `/v2/`. A registry that
/// wants a login is up: the probe has no credential to offer.
fn registry_probe(registries: Arc<dyn RegistryConnector>, url: String) -> Probe {
    Arc::new(move || {
        let (registries, url) = (registries.clone(), url.clone());
        Box::pin(async move {
            let target = RegistryTarget {
                base_url: url.clone(),
                insecure: false,
                credential: None,
            };
            let client = registries.connect(&target).map_err(|e| e.to_string())?;
            match client.ping().await {
                Ok(()) => Ok(format!("{url} answers")),
                Err(RegistryError::Unauthorized { .. } | RegistryError::Denied { .. }) => {
                    Ok(format!("{url} answers (login required)"))
                }
                Err(e) => Err(e.to_string()),
            }
        })
    })
}

/// Whether the default context's auth server answers HTTP.
fn auth_probe(auth: Arc<dyn AuthConnector>, url: String) -> Probe {
    Arc::new(move || {
        let (auth, url) = (auth.clone(), url.clone());
        Box::pin(async move {
            let target = AuthTarget {
                base_url: url.clone(),
                insecure: false,
            };
            let client = auth.connect(&target).map_err(|e| e.to_string())?;
            client
                .ping()
                .await
                .map(|()| format!("{url} answers"))
                .map_err(|e| e.to_string())
        })
    })
}

/// Builds the whole core from the configuration.
pub async fn assemble(
    config: &DaemonConfig,
    libvirt: Option<OpenLibvirt>,
) -> anyhow::Result<Assembled> {
    let OpenedStore {
        store,
        cache,
        shared,
        lease_settings,
    } = open_store(config).await?;
    let OpenedHypervisor {
        hypervisor,
        agent,
        console,
        description: hypervisor_description,
    } = open_hypervisor(config, libvirt).await?;
    // Libvirt resolves paths in its own process: they must be absolute.
    let runtime_root = std::path::absolute(config.fs_path.join("runtime"))
        .with_context(|| format!("--fs-path {}", config.fs_path.display()))?;
    tokio::fs::create_dir_all(&runtime_root)
        .await
        .with_context(|| format!("creating {}", runtime_root.display()))?;
    let runtime = RuntimeDirs::new(runtime_root);
    let usage = Arc::new(VmImages::new(hypervisor.clone()));
    // The one event source: the use cases publish to it, WatchEvents reads it.
    let bus = EventBus::new();
    let events: Publisher = bus.clone();
    // Counted only when served: otherwise nobody could read them.
    let counters = config
        .metrics_listen
        .map(|_| Arc::new(PrometheusMetrics::new()));
    let metrics: Arc<dyn MetricsRecorder> = match &counters {
        Some(counters) => counters.clone(),
        None => Arc::new(NoMetrics),
    };
    let vm_events = LifecycleRelay::spawn(hypervisor.as_ref(), events.clone());
    let mut images = ImageService::new(store.clone(), usage.clone());
    if let Some(cache) = cache {
        images = images.with_cache(cache);
    }
    let images = Arc::new(
        images
            .with_shared_leases(shared, lease_settings.renew_every())
            .with_events(events.clone())
            .with_metrics(metrics.clone()),
    );
    let heartbeat = images.spawn_heartbeat(lease_settings.renew_every());
    // VM files are plain files: the same adapters for every backend.
    let media = VmMedia {
        disks: Arc::new(QemuDisks),
        seeds: Arc::new(CidataIso),
    };
    let vms = Arc::new(VmService::new(
        hypervisor.clone(),
        hypervisor.clone(),
        media,
        images.clone(),
        runtime.clone(),
        usage,
    ));
    let networks = Arc::new(
        NetworkService::new(hypervisor.clone(), hypervisor.clone()).with_events(events.clone()),
    );
    let compose = Arc::new(
        ComposeService::new(
            vms.clone(),
            networks.clone(),
            ComposeSettings::from_env().map_err(anyhow::Error::msg)?,
        )
        .with_events(events.clone(), bus.clone()),
    );
    let guest = Arc::new(GuestService::new(
        hypervisor.clone(),
        agent,
        console,
        runtime.clone(),
    ));
    let restart_policies = RestartSupervisor::new(hypervisor.clone(), hypervisor.clone(), runtime)
        .with_events(events.clone())
        .spawn();
    let roots = match &config.registry_ca_file {
        Some(path) => TrustedRoots::from_pem_file(path).context("--registry-ca-file")?,
        None => TrustedRoots::default(),
    };
    let registries: Arc<dyn RegistryConnector> = Arc::new(
        OciRegistryConnector::with_roots(RegistryOptions::default(), &roots)
            .context("registry HTTP client")?,
    );
    let auth_servers: Arc<dyn AuthConnector> = Arc::new(
        HttpAuthConnector::with_roots(RetryPolicy::default(), &roots)
            .context("auth server HTTP client")?,
    );
    // Probes answer within the health check's bound: no retries.
    let probe_registries: Arc<dyn RegistryConnector> = Arc::new(
        OciRegistryConnector::with_roots(
            RegistryOptions {
                retry: RetryPolicy::none(),
                ..RegistryOptions::default()
            },
            &roots,
        )
        .context("registry HTTP client")?,
    );
    let probe_auth: Arc<dyn AuthConnector> = Arc::new(
        HttpAuthConnector::with_roots(RetryPolicy::none(), &roots)
            .context("auth server HTTP client")?,
    );
    let health = Arc::new(HealthService::new(vec![
        Component {
            name: "hypervisor",
            probe: Some(hypervisor_probe(hypervisor.clone())),
        },
        Component {
            name: "store",
            probe: Some(store_probe(store.clone())),
        },
        Component {
            name: "registry",
            probe: config
                .registry_url
                .clone()
                .map(|url| registry_probe(probe_registries, url)),
        },
        Component {
            name: "auth",
            probe: config
                .auth_url
                .clone()
                .map(|url| auth_probe(probe_auth, url)),
        },
    ]));
    let contexts = Arc::new(ContextService::new(
        config.fs_path.join("contexts.json"),
        config.registry_url.clone(),
        config.auth_url.clone(),
    ));
    let transfers = Arc::new(
        TransferService::new(images.clone(), contexts.clone(), registries.clone()).with_chunking(
            ChunkSettings {
                chunk_bytes: config.push_chunk_bytes,
                parallel: config.transfer_parallel,
                staging: config.fs_path.join("chunks"),
            },
        ),
    );
    let auth = Arc::new(AuthService::new(contexts.clone(), registries, auth_servers));
    let metrics_endpoint = counters.map(|counters| MetricsEndpoint {
        counters,
        snapshot: Arc::new(MetricsSnapshotService::new(
            hypervisor.clone(),
            images.clone(),
            store.clone(),
            health.clone(),
        )),
    });
    Ok(Assembled {
        grpc: Core {
            images: images.clone(),
            health,
            contexts,
            vms,
            networks,
            compose,
            guest,
            transfers,
            auth,
            events: bus,
            metrics,
        },
        store_description: store.describe(),
        hypervisor_description,
        restart_policies,
        heartbeat,
        images,
        vm_events,
        metrics: metrics_endpoint,
    })
}
