//! `up` as a plan of idempotent steps. [`UpSteps::observe`] compares the
//! validated [`ComposePlan`] with what exists and decides, for each network
//! and service, what still needs doing (a step that needs nothing is
//! reported, not run): that is also where everything that can be checked
//! before creating anything is checked (images, external networks, name
//! clashes with VMs and networks of other owners, overlapping subnets).
//! [`UpSteps::run`] then creates the missing networks and brings the
//! services up level by level, the services of one level concurrently.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span};
use vmr_domain::compose::{ComposePlan, DependencyCondition};
use vmr_domain::network::{NetworkName, NetworkSpec, SubnetOverlap, check_no_overlap};
use vmr_ports::driving::{ComposeEvent, ComposeEventKind, ErrorKind, UseCaseError, VmUseCases};
use vmr_ports::{NetworkRecord, VmRecord};

use super::deps::Deps;
use super::readiness::{log_len, wait_ready};
use crate::service::provision::Provision;

/// Timing of the readiness gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadySettings {
    /// How long a `condition: ready` dependency may take to report that
    /// cloud-init finished.
    pub timeout: Duration,
    /// How often the console log is read.
    pub poll: Duration,
}

/// What a network of the project still needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkStep {
    /// Absent: define and start it.
    Create(NetworkSpec),
    /// Defined by the project but inactive: start it.
    Start(NetworkName),
    /// Active (or external and present): nothing.
    Present(NetworkName),
    /// The project's implicit default network, absent: made by the
    /// daemon's default networks, which pick its subnet under their lock.
    CreateDefault(NetworkName),
}

/// What a service still needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAction {
    /// No VM: create and start it.
    Create,
    /// The VM differs from the file: remove it, create and start it anew.
    Recreate,
    /// The VM matches but does not run: start it.
    Start,
    /// The VM matches and runs: nothing.
    Unchanged,
}

/// One service's step.
#[derive(Debug)]
pub struct ServiceStep {
    /// The service's key in the file.
    pub service: String,
    /// Its VM, prepared as `vmr create` prepares one (the image leased).
    pub vm: Provision,
    pub action: ServiceAction,
    /// A later service waits until this one's guest is ready.
    pub wait_ready: bool,
}

/// Everything `up` will do, decided before anything is done.
#[derive(Debug)]
pub struct UpSteps {
    pub project: String,
    pub networks: Vec<NetworkStep>,
    pub levels: Vec<Vec<ServiceStep>>,
}

impl UpSteps {
    /// Decides each step from what exists, checking on the way everything
    /// that would otherwise fail half-way.
    pub async fn observe(deps: &Deps, plan: &ComposePlan) -> Result<Self, UseCaseError> {
        let project = plan.project.as_str();
        let existing_networks: BTreeMap<String, NetworkRecord> = deps
            .all_networks()
            .await?
            .into_iter()
            .map(|n| (n.spec.name.to_string(), n))
            .collect();
        let mut networks = Vec::new();
        for planned in &plan.networks {
            let field = format!("networks.{}", planned.key);
            let existing = existing_networks.get(planned.name.as_str());
            let step = match (&planned.spec, existing) {
                (None, Some(record)) if planned.implicit => {
                    existing_network_step(project, &field, &record.spec, record)?
                }
                (None, None) if planned.implicit => {
                    NetworkStep::CreateDefault(planned.name.clone())
                }
                (None, Some(_)) => NetworkStep::Present(planned.name.clone()),
                (None, None) => {
                    return Err(with_field(
                        UseCaseError::new(
                            ErrorKind::NotFound,
                            format!(
                                "{field}: the external network {} does not exist",
                                planned.name
                            ),
                        ),
                        field,
                    ));
                }
                (Some(spec), Some(record)) => existing_network_step(project, &field, spec, record)?,
                (Some(spec), None) => {
                    check_no_overlap(spec, existing_networks.values().map(|n| &n.spec)).map_err(
                        |e| {
                            UseCaseError::invalid(
                                format!("{field}.{}", SubnetOverlap::FIELD),
                                e.to_string(),
                            )
                        },
                    )?;
                    NetworkStep::Create(spec.clone())
                }
            };
            networks.push(step);
        }

        // Each network as it will be once `up` ran: the file's for the
        // networks it creates, the host's for the others (none yet for a
        // default network to make: its cards use DHCP).
        let specs: BTreeMap<NetworkName, Option<NetworkSpec>> = plan
            .networks
            .iter()
            .map(|planned| {
                let spec = match &planned.spec {
                    Some(spec) => Some(spec.clone()),
                    None => existing_networks
                        .get(planned.name.as_str())
                        .map(|n| n.spec.clone()),
                };
                (planned.name.clone(), spec)
            })
            .collect();
        let existing_vms: BTreeMap<String, VmRecord> = deps
            .all_vms()
            .await?
            .into_iter()
            .map(|vm| (vm.spec.name.to_string(), vm))
            .collect();
        let awaited: BTreeSet<&str> = plan
            .services()
            .flat_map(|s| &s.depends_on)
            .filter(|d| d.condition == DependencyCondition::Ready)
            .map(|d| d.service.as_str())
            .collect();
        let mut levels = Vec::new();
        for level in &plan.levels {
            let mut steps = Vec::new();
            for service in level {
                let field = format!("services.{}", service.service);
                let vm = deps
                    .prepare(project, service, &specs)
                    .await
                    .map_err(|e| within_service(e, &service.service, "image"))?;
                let action = match existing_vms.get(service.vm_name.as_str()) {
                    None => ServiceAction::Create,
                    Some(record) => {
                        if record.spec.labels.project.as_deref() != Some(project) {
                            return Err(with_field(
                                UseCaseError::precondition(format!(
                                    "{field}: a VM named {} already exists and is not part of project {project}; remove it or rename the service",
                                    service.vm_name
                                )),
                                field,
                            ));
                        }
                        if record.spec_hash.as_deref() != Some(vm.vm.spec_hash.as_str()) {
                            ServiceAction::Recreate
                        } else if record.state.is_active() {
                            ServiceAction::Unchanged
                        } else {
                            ServiceAction::Start
                        }
                    }
                };
                steps.push(ServiceStep {
                    service: service.service.clone(),
                    wait_ready: awaited.contains(service.service.as_str()),
                    vm,
                    action,
                });
            }
            levels.push(steps);
        }
        Ok(Self {
            project: project.to_owned(),
            networks,
            levels,
        })
    }

    /// The VMs this run starts (every service not left unchanged).
    pub fn started_vms(&self) -> Vec<String> {
        self.levels
            .iter()
            .flatten()
            .filter(|step| step.action != ServiceAction::Unchanged)
            .map(|step| step.vm.vm.name().to_string())
            .collect()
    }

    /// The most events [`Self::run`] can send: one per network, per service
    /// at most creating or recreating, starting, started, ready and failed,
    /// then the project's end (done, or a failure and its error).
    pub fn most_events(&self) -> usize {
        let services: usize = self.levels.iter().map(Vec::len).sum();
        self.networks.len() + 5 * services + 2
    }

    /// Runs the steps, sending events as they happen; the first level with
    /// a failed service is the last one run. Returns the first failure (the
    /// caller ends the stream with it, or with `Done`).
    pub async fn run(
        self,
        deps: Arc<Deps>,
        events: Events,
        ready: ReadySettings,
    ) -> Result<(), UseCaseError> {
        for step in &self.networks {
            run_network_step(&deps, &self.project, step, &events).await?;
        }
        for (index, level) in self.levels.into_iter().enumerate() {
            let span = info_span!("compose level", project = %self.project, level = index);
            let mut tasks = JoinSet::new();
            for step in level {
                let deps = deps.clone();
                let events = events.clone();
                let span = info_span!(parent: &span, "service", service = %step.service);
                tasks.spawn(
                    async move { run_service_step(&deps, step, &events, ready).await }
                        .instrument(span),
                );
            }
            // The whole level finishes (a half-created VM is worse than a
            // late error); its first failure stops the levels after it.
            let mut first_error = None;
            while let Some(joined) = tasks.join_next().await {
                let result = joined.unwrap_or_else(|e| {
                    Err(UseCaseError::internal(format!(
                        "a service task failed: {e}"
                    )))
                });
                if let Err(e) = result
                    && first_error.is_none()
                {
                    first_error = Some(e);
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        Ok(())
    }
}

fn existing_network_step(
    project: &str,
    field: &str,
    spec: &NetworkSpec,
    record: &NetworkRecord,
) -> Result<NetworkStep, UseCaseError> {
    if record.project.as_deref() != Some(project) {
        return Err(with_field(
            UseCaseError::precondition(format!(
                "{field}: a network named {} already exists and is not part of project {project}; remove it, rename the network, or mark it `external: true`",
                spec.name
            )),
            field,
        ));
    }
    let subnet = |s: &NetworkSpec| s.ipv4.map(|v| v.subnet);
    if record.spec.mode != spec.mode || subnet(&record.spec) != subnet(spec) {
        let describe = |s: &NetworkSpec| match subnet(s) {
            Some(net) => format!("{} {net}", s.mode),
            None => s.mode.to_string(),
        };
        return Err(with_field(
            UseCaseError::precondition(format!(
                "{field}: network {} exists as {} but the file asks for {}; run `vmr compose down` first to recreate it",
                spec.name,
                describe(&record.spec),
                describe(spec)
            )),
            field,
        ));
    }
    Ok(if record.active {
        NetworkStep::Present(spec.name.clone())
    } else {
        NetworkStep::Start(spec.name.clone())
    })
}

async fn run_network_step(
    deps: &Deps,
    project: &str,
    step: &NetworkStep,
    events: &Events,
) -> Result<(), UseCaseError> {
    let (name, result) = match step {
        NetworkStep::Present(name) => {
            events.network(name, ComposeEventKind::NetworkExists, "");
            return Ok(());
        }
        NetworkStep::Start(name) => (name, deps.networks.start(name).await.map(drop)),
        NetworkStep::CreateDefault(name) => {
            let made = deps
                .vms
                .default_networks()
                .ensure_reporting(name.as_str(), Some(project))
                .await;
            match made {
                Ok((_, true)) => {
                    info!(network = %name, "default network created");
                    events.network(name, ComposeEventKind::NetworkCreated, "");
                    return Ok(());
                }
                Ok((_, false)) => (name, Ok(())),
                Err(e) => (name, Err(e)),
            }
        }
        NetworkStep::Create(spec) => (
            &spec.name,
            deps.networks
                .create(spec.clone(), Some(project.to_owned()))
                .await
                .map(drop),
        ),
    };
    match (step, result) {
        (NetworkStep::Create(_), Ok(())) => {
            info!(network = %name, "network created");
            events.network(name, ComposeEventKind::NetworkCreated, "");
            Ok(())
        }
        (_, Ok(())) => {
            events.network(name, ComposeEventKind::NetworkExists, "started");
            Ok(())
        }
        (_, Err(e)) => {
            events.network(name, ComposeEventKind::Failed, &e.message);
            Err(UseCaseError {
                message: format!("network {name} failed: {}", e.message),
                ..e
            })
        }
    }
}

async fn run_service_step(
    deps: &Deps,
    step: ServiceStep,
    events: &Events,
    ready: ReadySettings,
) -> Result<(), UseCaseError> {
    let service = step.service.clone();
    let result = bring_up(deps, step, events, ready).await;
    if let Err(e) = &result {
        events.service(&service, ComposeEventKind::Failed, &e.message);
    }
    result.map_err(|e| UseCaseError {
        message: format!("service {service} failed: {}", e.message),
        ..e
    })
}

async fn bring_up(
    deps: &Deps,
    step: ServiceStep,
    events: &Events,
    ready: ReadySettings,
) -> Result<(), UseCaseError> {
    let ServiceStep {
        service,
        vm,
        action,
        wait_ready: awaited,
    } = step;
    let name = vm.vm.name().clone();
    let name = &name;
    let service = service.as_str();
    // Where this boot's console output starts: a restarted VM appends to
    // the log of its earlier boots, a new VM starts a new log.
    let mut boot_offset = 0;
    match action {
        ServiceAction::Unchanged => {
            events.service(service, ComposeEventKind::Unchanged, name.as_str());
        }
        ServiceAction::Start => {
            boot_offset = log_len(&deps.vms.runtime().console_log(name)).await;
            events.service(service, ComposeEventKind::Starting, name.as_str());
            deps.vms.start(name).await?;
            events.service(service, ComposeEventKind::Started, name.as_str());
        }
        ServiceAction::Create | ServiceAction::Recreate => {
            if action == ServiceAction::Recreate {
                events.service(service, ComposeEventKind::Recreating, name.as_str());
                deps.remove_vm(name).await?;
            } else {
                events.service(service, ComposeEventKind::Creating, name.as_str());
            }
            deps.vms.create_prepared(vm).await?;
            events.service(service, ComposeEventKind::Starting, name.as_str());
            deps.vms.start(name).await?;
            info!(vm = %name, "service started");
            events.service(service, ComposeEventKind::Started, name.as_str());
        }
    }
    if awaited {
        wait_ready(deps, name, boot_offset, ready.timeout, ready.poll).await?;
        events.service(service, ComposeEventKind::Ready, name.as_str());
    }
    Ok(())
}

/// Sends `up`'s events; sending never waits, and a client that went away
/// does not stop the run (half-done steps would be worse). The channel is
/// bounded by what the plan can produce ([`UpSteps::most_events`]), so it
/// never fills and a client that does not read costs at most that much.
#[derive(Clone)]
pub struct Events {
    project: String,
    tx: mpsc::Sender<Result<ComposeEvent, UseCaseError>>,
}

impl Events {
    pub fn new(
        project: &str,
        capacity: usize,
    ) -> (Self, mpsc::Receiver<Result<ComposeEvent, UseCaseError>>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                project: project.to_owned(),
                tx,
            },
            rx,
        )
    }

    fn send(
        &self,
        service: Option<&str>,
        network: Option<&str>,
        kind: ComposeEventKind,
        message: &str,
    ) {
        self.deliver(Ok(ComposeEvent {
            project: self.project.clone(),
            service: service.map(str::to_owned),
            network: network.map(str::to_owned),
            kind,
            message: message.to_owned(),
            at: SystemTime::now(),
        }));
    }

    fn deliver(&self, event: Result<ComposeEvent, UseCaseError>) {
        match self.tx.try_send(event) {
            // A client that left is no reason to stop.
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(project = %self.project, "compose up: more events than its plan allows; one was not delivered");
            }
        }
    }

    pub fn service(&self, service: &str, kind: ComposeEventKind, message: &str) {
        self.send(Some(service), None, kind, message);
    }

    pub fn network(&self, network: &NetworkName, kind: ComposeEventKind, message: &str) {
        self.send(None, Some(network.as_str()), kind, message);
    }

    pub fn project(&self, kind: ComposeEventKind, message: &str) {
        self.send(None, None, kind, message);
    }

    /// Ends the stream with the run's failure.
    pub fn fail(&self, error: UseCaseError) {
        self.deliver(Err(error));
    }
}

/// Names the service (and, unless the error names one, its field `sub`) in
/// an error's message and field.
fn within_service(error: UseCaseError, service: &str, sub: &str) -> UseCaseError {
    let field = match &error.field {
        Some(field) if field.starts_with("services.") => field.clone(),
        _ => format!("services.{service}.{sub}"),
    };
    let message = if error.message.starts_with("services.") {
        error.message.clone()
    } else {
        format!("{field}: {}", error.message)
    };
    UseCaseError {
        message,
        field: Some(field),
        ..error
    }
}

/// Sets the field of an error whose message already names it.
fn with_field(mut error: UseCaseError, field: impl Into<String>) -> UseCaseError {
    error.field = Some(field.into());
    error
}
