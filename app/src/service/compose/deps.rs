//! What compose is made of: the VM use cases (whose provisioner makes a
//! service's VM exactly as `vmr create` makes one, whose start and remove
//! keep the stop marker restart policies read and the per-VM exclusion)
//! and the network use cases (whose checks apply to compose too). What
//! compose adds is here: a planned service as a VM blueprint, and the
//! removals `down` needs to tolerate what is gone already.

use std::collections::BTreeMap;
use std::sync::Arc;

use vmr_domain::compose::PlannedService;
use vmr_domain::network::{NetworkName, NetworkSpec};
use vmr_domain::provision::Nic;
use vmr_domain::vm::{VmName, VmState};
use vmr_ports::driving::{
    CreateVm, ErrorKind, NetworkUseCases, UseCaseError, VmFilter, VmUseCases,
};
use vmr_ports::{NetworkRecord, VmRecord};

use crate::service::VmService;
use crate::service::provision::{Nics, Provision, VmBlueprint};

/// The use cases compose drives.
pub struct Deps {
    pub vms: Arc<VmService>,
    pub networks: Arc<dyn NetworkUseCases>,
}

/// A service's VM as `vmr create` would be asked for it: the plan's NICs
/// (checked by the domain against the file), the service's cloud-init.
pub fn blueprint(
    project: &str,
    service: &PlannedService,
    networks: &BTreeMap<NetworkName, Option<NetworkSpec>>,
) -> VmBlueprint {
    let nics = service
        .networks
        .iter()
        .map(|attachment| {
            let spec = networks.get(&attachment.network).and_then(Option::as_ref);
            let ipv4 = spec.and_then(|s| s.ipv4);
            let mut attachment = attachment.clone();
            // The file cannot know an external network's gateway: the host's
            // network gives a static card its route, as `vmr create` does.
            if attachment.static_ip.is_some()
                && attachment.gateway.is_none()
                && let Some(spec) = spec
            {
                attachment.gateway = spec.mode.static_route(ipv4.as_ref());
            }
            Nic { attachment, ipv4 }
        })
        .collect();
    VmBlueprint {
        request: CreateVm {
            name: service.vm_name.clone(),
            image: service.image.clone(),
            cpu: service.cpu,
            memory: service.memory,
            disk_size: service.disk_size,
            networks: Vec::new(),
            user_data: Some(service.user_data.clone()),
            restart_policy: service.restart_policy,
            project: Some(project.to_owned()),
            service: Some(service.service.clone()),
            start: false,
            // Compose plans its networks itself (none is none) and does
            // not carry the user's ssh key yet.
            ssh_authorized_keys: Vec::new(),
            no_network: false,
        },
        nics: Nics::Planned(nics),
        extra_meta_data: service.extra_meta_data.clone(),
        network_config: service.network_config.clone(),
    }
}

fn io_error(what: &str, path: &std::path::Path, e: std::io::Error) -> UseCaseError {
    UseCaseError::internal(format!("cannot {what} {}: {e}", path.display())).with_source(e)
}

impl Deps {
    /// Every VM vmr defined.
    pub async fn all_vms(&self) -> Result<Vec<VmRecord>, UseCaseError> {
        self.vms
            .list(VmFilter {
                all: true,
                project: None,
            })
            .await
    }

    /// Every network, vmr's and the host's.
    pub async fn all_networks(&self) -> Result<Vec<NetworkRecord>, UseCaseError> {
        self.networks.list().await
    }

    /// A service's VM, resolved and built, nothing created. Cloud-init
    /// errors name the service's field.
    pub async fn prepare(
        &self,
        project: &str,
        service: &PlannedService,
        networks: &BTreeMap<NetworkName, Option<NetworkSpec>>,
    ) -> Result<Provision, UseCaseError> {
        let blueprint = blueprint(project, service, networks);
        self.vms
            .provisioner()
            .prepare(&blueprint)
            .await
            .map_err(|e| match e.field.as_deref() {
                Some(field) if field.starts_with("cloudInit.") => UseCaseError {
                    field: Some(format!("services.{}.{field}", service.service)),
                    message: format!("services.{}.{}", service.service, e.message),
                    ..e
                },
                _ => e,
            })
    }

    /// The VM's state, `None` when it does not exist.
    pub async fn vm_state(&self, name: &VmName) -> Result<Option<VmState>, UseCaseError> {
        match self.vms.inspect(name).await {
            Ok(details) => Ok(Some(details.record.state)),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Powers the VM off if it runs, undefines it and deletes its runtime
    /// files; a VM gone already may have left its files.
    pub async fn remove_vm(&self, name: &VmName) -> Result<(), UseCaseError> {
        match self.vms.remove(name, true).await {
            Err(e) if e.kind == ErrorKind::NotFound => {
                let dirs = self.vms.runtime();
                dirs.remove(name)
                    .await
                    .map_err(|e| io_error("remove", &dirs.dir(name), e))
            }
            other => other,
        }
    }

    /// Deletes the runtime files of a VM that is not defined (what a crash
    /// in the middle of a creation left); whether there were any.
    pub async fn remove_runtime_files(&self, name: &VmName) -> Result<bool, UseCaseError> {
        let dirs = self.vms.runtime();
        if !dirs.exists(name).await {
            return Ok(false);
        }
        dirs.remove(name)
            .await
            .map_err(|e| io_error("remove", &dirs.dir(name), e))?;
        Ok(true)
    }

    /// Stops the network if it is active and removes it; gone is fine.
    pub async fn remove_network(&self, name: &NetworkName) -> Result<(), UseCaseError> {
        match self.networks.remove(name).await {
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}
