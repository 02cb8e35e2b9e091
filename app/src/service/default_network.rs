//! The networks vmr makes on first use: `vmr-default` for VMs created
//! without `--network`, a compose project's `<project>-default` for its
//! services that name no network. [`DefaultNetworks::ensure`] creates one
//! (NAT, DHCP, a /24 that overlaps no other vmr network) or starts it when
//! it exists but is down; callers are serialised, so two VMs created at once
//! on a fresh host end on one network.

use tokio::sync::Mutex;
use tracing::info;
use vmr_domain::network::{NetworkName, default_network_spec, free_default_subnet};
use vmr_ports::driving::{ErrorKind, NetworkUseCases, UseCaseError};

use super::NetworkService;
use super::events::Publisher;

/// Creates and starts default networks, one caller at a time.
pub struct DefaultNetworks {
    networks: NetworkService,
    lock: Mutex<()>,
}

impl DefaultNetworks {
    pub fn new(networks: NetworkService) -> Self {
        Self {
            networks,
            lock: Mutex::new(()),
        }
    }

    /// Publishes the networks it creates, starts and finds to `events`.
    #[must_use]
    pub fn with_events(mut self, events: Publisher) -> Self {
        self.networks = self.networks.with_events(events);
        self
    }

    /// The network `name`, active, owned by `project` (`None`: vmr's own):
    /// created when missing, started when down. A network of that name with
    /// another owner is refused rather than joined.
    pub async fn ensure(
        &self,
        name: &str,
        project: Option<&str>,
    ) -> Result<NetworkName, UseCaseError> {
        Ok(self.ensure_reporting(name, project).await?.0)
    }

    /// [`Self::ensure`], also saying whether it created the network. The
    /// subnet is chosen here, under the lock, so that two projects brought
    /// up at once never pick the same one.
    pub async fn ensure_reporting(
        &self,
        name: &str,
        project: Option<&str>,
    ) -> Result<(NetworkName, bool), UseCaseError> {
        let _one_at_a_time = self.lock.lock().await;
        let existing = self.networks.list().await?;
        if let Some(record) = existing.iter().find(|n| n.spec.name.as_str() == name) {
            if record.project.as_deref() != project {
                let owner = record.project.as_ref().map_or_else(
                    || "not part of a compose project".to_owned(),
                    |p| format!("part of project {p}"),
                );
                return Err(UseCaseError::precondition(format!(
                    "network {name} exists and is {owner}; remove it or name a network explicitly"
                )));
            }
            if !record.active {
                self.networks.start(&record.spec.name).await?;
                info!(network = %name, "default network started");
            }
            return Ok((record.spec.name.clone(), false));
        }
        let taken: Vec<_> = existing
            .iter()
            .filter_map(|n| n.spec.ipv4.map(|c| c.subnet))
            .collect();
        let subnet = free_default_subnet(&taken).ok_or_else(|| {
            UseCaseError::precondition(format!(
                "no free /24 is left in 10.89.0.0/12 for network {name}; remove a network or create {name} yourself with `vmr network create {name} --mode nat --subnet CIDR`"
            ))
        })?;
        let spec = default_network_spec(name, subnet)?;
        match self.networks.create(spec, project.map(str::to_owned)).await {
            Ok(record) => {
                info!(network = %name, %subnet, "default network created");
                Ok((record.spec.name, true))
            }
            // Another daemon on the same libvirt made it meanwhile.
            Err(e) if e.kind == ErrorKind::AlreadyExists => self
                .networks
                .list()
                .await?
                .into_iter()
                .find(|n| n.spec.name.as_str() == name && n.project.as_deref() == project)
                .map(|n| (n.spec.name, false))
                .ok_or(e),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vmr_adapters::fake::hypervisor::FakeHypervisor;
    use vmr_domain::network::{DEFAULT_NETWORK, NetworkSpec};
    use vmr_ports::NetworkDefinition;

    use super::*;
    use vmr_ports::NetworkDriver;

    fn nat(name: &str, subnet: &str) -> NetworkSpec {
        default_network_spec(name, subnet.parse().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn concurrent_first_uses_end_on_one_network() {
        let fake = Arc::new(FakeHypervisor::new());
        let defaults = Arc::new(DefaultNetworks::new(NetworkService::new(
            fake.clone(),
            fake.clone(),
        )));
        let (a, b) = tokio::join!(
            defaults.ensure(DEFAULT_NETWORK, None),
            defaults.ensure(DEFAULT_NETWORK, None)
        );
        assert_eq!(a.unwrap(), b.unwrap());
        let networks = fake.list_networks().await.unwrap();
        assert_eq!(networks.len(), 1);
        assert!(networks[0].active);
    }

    #[tokio::test]
    async fn the_subnet_avoids_other_networks_and_a_stopped_one_is_started() {
        let fake = Arc::new(FakeHypervisor::new());
        fake.define_network(&NetworkDefinition {
            spec: nat("mine", "10.89.0.0/24"),
            project: None,
        })
        .await
        .unwrap();
        let defaults = DefaultNetworks::new(NetworkService::new(fake.clone(), fake.clone()));
        let name = defaults.ensure(DEFAULT_NETWORK, None).await.unwrap();
        let record = fake.inspect_network(&name).await.unwrap().record;
        assert_eq!(record.spec.ipv4.unwrap().subnet.to_string(), "10.89.1.0/24");
        fake.stop_network(&name).await.unwrap();
        defaults.ensure(DEFAULT_NETWORK, None).await.unwrap();
        assert!(fake.inspect_network(&name).await.unwrap().record.active);
    }

    #[tokio::test]
    async fn a_network_of_another_owner_is_not_joined() {
        let fake = Arc::new(FakeHypervisor::new());
        let defaults = DefaultNetworks::new(NetworkService::new(fake.clone(), fake.clone()));
        defaults.ensure("p-default", Some("p")).await.unwrap();
        let e = defaults.ensure("p-default", None).await.unwrap_err();
        assert!(e.message.contains("part of project p"), "{e:?}");
        let e = defaults.ensure("p-default", Some("q")).await.unwrap_err();
        assert!(e.message.contains("part of project p"), "{e:?}");
    }
}
