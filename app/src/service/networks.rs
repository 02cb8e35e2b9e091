//! Network use cases over the hypervisor: create (define, then start, so
//! the network is usable at once, like `docker network create`), start,
//! stop, remove, list and inspect. The checks the hypervisor cannot make
//! alone live here: overlapping subnets named with the other network, and
//! no network taken away from VMs that use it.

use crate::service::events::{Publisher, no_events};
use std::sync::Arc;
use vmr_ports::driving::events::{EventType, NewEvent};

use async_trait::async_trait;
use tracing::{info, instrument};
use vmr_domain::network::{NetworkName, NetworkSpec, check_no_overlap};
use vmr_domain::validation::ValidationError;
use vmr_ports::driving::{ErrorKind, NetworkUseCases, UseCaseError};
use vmr_ports::{
    NetworkDefinition, NetworkDetails, NetworkDriver, NetworkRecord, VmDriver, VmRecord,
};

/// The network use cases.
pub struct NetworkService {
    networks: Arc<dyn NetworkDriver>,
    /// Only read, to tell which VMs a network is taken away from.
    vms: Arc<dyn VmDriver>,
    events: Publisher,
}

impl NetworkService {
    pub fn new(networks: Arc<dyn NetworkDriver>, vms: Arc<dyn VmDriver>) -> Self {
        Self {
            networks,
            vms,
            events: no_events(),
        }
    }

    /// Publishes what happens to networks to `events`.
    #[must_use]
    pub fn with_events(mut self, events: Publisher) -> Self {
        self.events = events;
        self
    }

    fn publish(&self, action: &'static str, name: &NetworkName, project: Option<&str>) {
        let mut event = NewEvent::new(EventType::Network, action, name.as_str());
        if let Some(project) = project {
            event = event.with("project", project);
        }
        self.events.publish(event);
    }

    async fn record(&self, name: &NetworkName) -> Result<NetworkRecord, UseCaseError> {
        Ok(self.networks.inspect_network(name).await?.record)
    }

    /// The VMs attached to `name` (only the running ones with `running`).
    async fn users(&self, name: &NetworkName, running: bool) -> Result<Vec<String>, UseCaseError> {
        let vms: Vec<VmRecord> = self.vms.list_vms().await?;
        Ok(vms
            .iter()
            .filter(|vm| !running || vm.state.is_active())
            .filter(|vm| vm.spec.networks.iter().any(|n| &n.network == name))
            .map(|vm| vm.spec.name.to_string())
            .collect())
    }
}

#[async_trait]
impl NetworkUseCases for NetworkService {
    #[instrument(skip_all, fields(network = %spec.name, mode = %spec.mode))]
    async fn create(
        &self,
        spec: NetworkSpec,
        project: Option<String>,
    ) -> Result<NetworkRecord, UseCaseError> {
        let existing = self.networks.list_networks().await?;
        if existing.iter().any(|n| n.spec.name == spec.name) {
            return Err(UseCaseError::new(
                ErrorKind::AlreadyExists,
                format!("network {} already exists", spec.name),
            ));
        }
        check_no_overlap(&spec, existing.iter().map(|n| &n.spec)).map_err(ValidationError::from)?;
        let name = spec.name.clone();
        let owner = project.clone();
        self.networks
            .define_network(&NetworkDefinition { spec, project })
            .await?;
        if let Err(error) = self.networks.start_network(&name).await {
            // A network that cannot start (a bridge name clash, a missing
            // host interface) is not left behind half made.
            if let Err(e) = self.networks.remove_network(&name).await {
                tracing::warn!(network = %name, error = %e, "rollback: cannot remove the network");
            }
            return Err(error.into());
        }
        info!(network = %name, "network created");
        self.publish("create", &name, owner.as_deref());
        self.record(&name).await
    }

    #[instrument(skip(self))]
    async fn start(&self, name: &NetworkName) -> Result<NetworkRecord, UseCaseError> {
        self.networks.start_network(name).await?;
        self.publish("start", name, None);
        self.record(name).await
    }

    #[instrument(skip(self))]
    async fn stop(&self, name: &NetworkName) -> Result<NetworkRecord, UseCaseError> {
        self.networks.inspect_network(name).await?;
        let users = self.users(name, true).await?;
        if !users.is_empty() {
            return Err(UseCaseError::precondition(format!(
                "network {name} is used by running VM {}; stop them first",
                users.join(", ")
            )));
        }
        self.networks.stop_network(name).await?;
        self.publish("stop", name, None);
        self.record(name).await
    }

    #[instrument(skip(self))]
    async fn remove(&self, name: &NetworkName) -> Result<(), UseCaseError> {
        let record = self.record(name).await?;
        // Checked before stopping it: a refused removal must not have taken
        // the network away from its VMs.
        let users = self.users(name, false).await?;
        if !users.is_empty() {
            return Err(UseCaseError::precondition(format!(
                "network {name} is used by VM {}; remove them first",
                users.join(", ")
            )));
        }
        if record.active {
            self.networks.stop_network(name).await?;
        }
        self.networks.remove_network(name).await?;
        info!(network = %name, "network removed");
        self.publish("remove", name, record.project.as_deref());
        Ok(())
    }

    async fn list(&self) -> Result<Vec<NetworkRecord>, UseCaseError> {
        let mut networks = self.networks.list_networks().await?;
        networks.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(networks)
    }

    async fn inspect(&self, name: &NetworkName) -> Result<NetworkDetails, UseCaseError> {
        Ok(self.networks.inspect_network(name).await?)
    }
}

#[cfg(test)]
mod tests {
    use vmr_adapters::fake::hypervisor::FakeHypervisor;

    use super::*;
    use vmr_ports::VmDriver;

    fn spec(name: &str, mode: &str, subnet: Option<&str>) -> NetworkSpec {
        NetworkSpec::from_parts(name, mode, subnet, None, None, None, false, None, None).unwrap()
    }

    fn service() -> (Arc<FakeHypervisor>, NetworkService) {
        let fake = Arc::new(FakeHypervisor::new());
        (fake.clone(), NetworkService::new(fake.clone(), fake))
    }

    #[tokio::test]
    async fn create_starts_and_refuses_duplicates_and_overlaps() {
        let (_, networks) = service();
        let lan = networks
            .create(spec("lan", "nat", Some("10.10.0.0/24")), None)
            .await
            .unwrap();
        assert!(lan.active);
        assert_eq!(lan.spec.name.as_str(), "lan");

        let dup = networks
            .create(spec("lan", "isolated", Some("10.20.0.0/24")), None)
            .await
            .unwrap_err();
        assert_eq!(dup.kind, ErrorKind::AlreadyExists);

        let overlap = networks
            .create(spec("wide", "isolated", Some("10.10.0.0/16")), None)
            .await
            .unwrap_err();
        assert_eq!(overlap.kind, ErrorKind::InvalidArgument);
        assert_eq!(overlap.field.as_deref(), Some("subnet"));
        assert!(
            overlap.message.contains("network lan"),
            "{}",
            overlap.message
        );
        let names: Vec<_> = networks
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.spec.name.to_string())
            .collect();
        assert_eq!(names, ["lan"]);
    }

    #[tokio::test]
    async fn a_network_that_cannot_start_is_not_left_behind() {
        let (fake, networks) = service();
        fake.fail_next(
            vmr_adapters::fake::hypervisor::FakeCall::StartNetwork,
            Some("lan"),
            vmr_ports::HypervisorError::Backend("bridge busy".into()),
        );
        let err = networks
            .create(spec("lan", "nat", Some("10.10.0.0/24")), None)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Internal);
        assert!(networks.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn stop_start_remove_and_state_errors() {
        let (_, networks) = service();
        let name: NetworkName = "lan".parse().unwrap();
        networks
            .create(spec("lan", "isolated", Some("10.10.0.0/24")), None)
            .await
            .unwrap();
        assert!(!networks.stop(&name).await.unwrap().active);
        let again = networks.stop(&name).await.unwrap_err();
        assert_eq!(again.kind, ErrorKind::FailedPrecondition);
        assert!(networks.start(&name).await.unwrap().active);
        // Removing an active network stops it first.
        networks.remove(&name).await.unwrap();
        let gone = networks.inspect(&name).await.unwrap_err();
        assert_eq!(gone.kind, ErrorKind::NotFound);
        assert_eq!(
            networks.remove(&name).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn networks_used_by_vms_are_not_taken_away() {
        use vmr_domain::units::ByteSize;
        use vmr_domain::vm::{Bootloader, NetworkAttachment, RestartPolicy, VmLabels, VmSpec};
        use vmr_ports::VmDefinition;

        let (fake, networks) = service();
        let lan: NetworkName = "lan".parse().unwrap();
        networks
            .create(spec("lan", "nat", Some("10.10.0.0/24")), None)
            .await
            .unwrap();
        let vm = VmDefinition {
            spec: VmSpec {
                name: "web".parse().unwrap(),
                cpu: 1,
                memory: ByteSize::mib(64),
                disk_size: None,
                bootloader: Bootloader::Bios,
                networks: vec![NetworkAttachment {
                    network: lan.clone(),
                    mac: "52:54:00:00:00:01".parse().unwrap(),
                    static_ip: None,
                    gateway: None,
                }],
                restart_policy: RestartPolicy::No,
                labels: VmLabels::default(),
            },
            disk: None,
            cdroms: Vec::new(),
            boot_from_cdrom: false,
            console_log: "/nonexistent/console.log".into(),
            spec_hash: "h".into(),
        };
        fake.define_vm(&vm).await.unwrap();
        fake.start_vm(&vm.spec.name).await.unwrap();

        let err = networks.stop(&lan).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::FailedPrecondition);
        assert!(err.message.contains("web"), "{err}");
        let err = networks.remove(&lan).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::FailedPrecondition);
        // Refused before anything happened: the network still runs.
        assert!(networks.inspect(&lan).await.unwrap().record.active);

        fake.stop_vm(&vm.spec.name, vmr_ports::StopMode::Force)
            .await
            .unwrap();
        assert!(!networks.stop(&lan).await.unwrap().active);
        assert_eq!(
            networks.remove(&lan).await.unwrap_err().kind,
            ErrorKind::FailedPrecondition,
            "a defined VM still attaches to it"
        );
        fake.undefine_vm(&vm.spec.name).await.unwrap();
        networks.remove(&lan).await.unwrap();
    }
}
