//! Health: the daemon itself, the store, the hypervisor, the registry and the
//! auth server, each probed with a bound on how long it may take.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use vmr_ports::driving::{ComponentHealth, HealthReport, HealthUseCases, ServingStatus};

/// A probe: Ok(message) when serving, Err(message) when not.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

/// One component to report: either a probe or "not configured".
pub struct Component {
    pub name: &'static str,
    pub probe: Option<Probe>,
}

pub struct HealthService {
    components: Vec<Component>,
    timeout: Duration,
}

impl HealthService {
    pub fn new(components: Vec<Component>) -> Self {
        Self {
            components,
            timeout: Duration::from_secs(3),
        }
    }
}

#[async_trait]
impl HealthUseCases for HealthService {
    async fn check(&self) -> HealthReport {
        let mut components = vec![ComponentHealth {
            name: "daemon".into(),
            status: ServingStatus::Serving,
            message: format!("vmrd {}", env!("CARGO_PKG_VERSION")),
        }];
        let probes = self.components.iter().map(|c| async move {
            let (status, message) = match &c.probe {
                None => (ServingStatus::NotConfigured, "not configured".to_string()),
                Some(probe) => match tokio::time::timeout(self.timeout, probe()).await {
                    Ok(Ok(msg)) => (ServingStatus::Serving, msg),
                    Ok(Err(msg)) => (ServingStatus::NotServing, msg),
                    Err(_) => (
                        ServingStatus::NotServing,
                        format!("no answer within {}s", self.timeout.as_secs()),
                    ),
                },
            };
            ComponentHealth {
                name: c.name.to_string(),
                status,
                message,
            }
        });
        components.extend(futures::future::join_all(probes).await);
        HealthReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            components,
        }
    }
}
