//! A project as it exists: its name (from the file when it validates, else
//! found leniently, since `down` and `ps` must work after the files it
//! names are gone or the file no longer validates), `ps` and `down`. The
//! project's VMs and networks are found by the project label vmr keeps with
//! each of them, so nothing of another owner is ever touched.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;
use vmr_domain::cloudinit::{merge_ssh_keys, parse_ssh_keys};
use vmr_domain::compose::{ComposeInput, ComposePlan, plan};
use vmr_ports::VmRecord;
use vmr_ports::driving::{
    ComposeDownOutcome, ComposeServiceStatus, ComposeSource, ComposeStatus, ErrorKind, UseCaseError,
};

use super::deps::Deps;

/// Most files a compose source may carry (three per service at most).
const MAX_SOURCE_FILES: usize = 3 * 1024;
/// Most bytes those files may hold together.
const MAX_SOURCE_FILE_BYTES: usize = 64 * 1024 * 1024;

/// Bounds what a client may send; each file and the YAML are bounded again
/// where they are parsed.
fn check_source(source: &ComposeSource) -> Result<(), UseCaseError> {
    let total: usize = source.files.values().map(Vec::len).sum();
    if source.files.len() > MAX_SOURCE_FILES || total > MAX_SOURCE_FILE_BYTES {
        return Err(UseCaseError::new(
            ErrorKind::ResourceExhausted,
            format!(
                "files: {} files of {total} bytes is more than the {MAX_SOURCE_FILES} files of at most {MAX_SOURCE_FILE_BYTES} bytes a compose project may send",
                source.files.len()
            ),
        ));
    }
    Ok(())
}

/// Validates the whole project.
pub fn plan_of(source: &ComposeSource) -> Result<ComposePlan, UseCaseError> {
    check_source(source)?;
    Ok(plan(&ComposeInput {
        yaml: &source.yaml,
        files: &source.files,
        project_flag: source.project.as_deref(),
        directory_name: &source.directory_name,
    })?)
}

/// Merges the user's ssh keys into every service's user-data, as `vmr
/// run` does, so that the seed, its hash and `up`'s comparison all see the
/// merged document.
pub fn add_ssh_keys(plan: &mut ComposePlan, keys: &[String]) -> Result<(), UseCaseError> {
    let keys = parse_ssh_keys(keys)?;
    if keys.is_empty() {
        return Ok(());
    }
    for service in plan.levels.iter_mut().flatten() {
        let field = format!("services.{}.cloudInit.userData", service.service);
        if let Some(merged) = merge_ssh_keys(&field, Some(&service.user_data), &keys)? {
            service.user_data = merged;
        }
    }
    Ok(())
}

/// The project's name, and its plan when the file validates. A file that
/// is YAML but no longer a valid project (a named file missing, an edit
/// gone wrong) still names its project by the same rules: `name`, else
/// `-p`, else the directory. A file that is not YAML names nothing: a guess
/// could tear down another project.
pub fn project_of(source: &ComposeSource) -> Result<(String, Option<ComposePlan>), UseCaseError> {
    check_source(source)?;
    let error = match plan_of(source) {
        Ok(plan) => return Ok((plan.project.clone(), Some(plan))),
        Err(error) => error,
    };
    let Ok(document @ Value::Mapping(_)) = serde_yaml::from_str::<Value>(&source.yaml) else {
        return Err(error);
    };
    let name = document.get("name").and_then(Value::as_str);
    // The domain's own rules decide the name, through a file that has
    // nothing else to fail on.
    let probe = ComposeInput {
        yaml: "apiVersion: v1\nservices:\n  p:\n    image: p\n",
        files: &BTreeMap::new(),
        project_flag: name.or(source.project.as_deref()),
        directory_name: &source.directory_name,
    };
    match plan(&probe) {
        Ok(probe) => Ok((probe.project, None)),
        Err(_) => Err(error),
    }
}

fn in_project<'a>(vms: &'a [VmRecord], project: &str) -> Vec<&'a VmRecord> {
    vms.iter()
        .filter(|vm| vm.spec.labels.project.as_deref() == Some(project))
        .collect()
}

/// `ps`: the file's services in dependency order (absent ones without a
/// VM), then VMs of the project the file no longer names.
pub async fn status(deps: &Deps, source: &ComposeSource) -> Result<ComposeStatus, UseCaseError> {
    let (project, plan) = project_of(source)?;
    let vms = deps.all_vms().await?;
    let mut ours: BTreeMap<String, &VmRecord> = in_project(&vms, &project)
        .into_iter()
        .map(|vm| (vm.spec.name.to_string(), vm))
        .collect();
    let mut services = Vec::new();
    for service in plan.iter().flat_map(ComposePlan::services) {
        services.push(ComposeServiceStatus {
            service: service.service.clone(),
            vm: ours.remove(service.vm_name.as_str()).cloned(),
        });
    }
    let mut rest: Vec<&VmRecord> = ours.into_values().collect();
    rest.sort_by_key(|vm| (vm.spec.labels.service.clone(), vm.spec.name.clone()));
    services.extend(rest.into_iter().map(|vm| {
        ComposeServiceStatus {
            service: vm
                .spec
                .labels
                .service
                .clone()
                .unwrap_or_else(|| vm.spec.name.to_string()),
            vm: Some(vm.clone()),
        }
    }));
    Ok(ComposeStatus { project, services })
}

/// `down`: every VM labelled with the project (powered off, undefined,
/// runtime files deleted), the runtime files a failed creation of one of the
/// file's services left, then every network labelled with the project.
/// What is already gone is skipped, so a second `down` removes nothing.
pub async fn down(
    deps: &Deps,
    project: &str,
    plan: Option<&ComposePlan>,
) -> Result<ComposeDownOutcome, UseCaseError> {
    let vms = deps.all_vms().await?;
    let mut outcome = ComposeDownOutcome {
        project: project.to_owned(),
        ..ComposeDownOutcome::default()
    };
    let mut failures = Vec::new();
    let mut ours = in_project(&vms, project);
    ours.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    for vm in ours {
        let name = &vm.spec.name;
        match deps.remove_vm(name).await {
            Ok(()) => outcome.removed_vms.push(name.to_string()),
            Err(e) => failures.push((e.kind, format!("VM {name}: {}", e.message))),
        }
    }
    let defined: BTreeSet<String> = vms.iter().map(|vm| vm.spec.name.to_string()).collect();
    for service in plan.iter().flat_map(|p| p.services()) {
        if !defined.contains(service.vm_name.as_str()) {
            match deps.remove_runtime_files(&service.vm_name).await {
                Ok(true) => tracing::info!(vm = %service.vm_name, "removed leftover runtime files"),
                Ok(false) => {}
                Err(e) => failures.push((e.kind, format!("VM {}: {}", service.vm_name, e.message))),
            }
        }
    }
    if failures.is_empty() {
        let mut networks: Vec<_> = deps
            .all_networks()
            .await?
            .into_iter()
            .filter(|n| n.project.as_deref() == Some(project))
            .map(|n| n.spec.name)
            .collect();
        networks.sort();
        for name in networks {
            match deps.remove_network(&name).await {
                Ok(()) => outcome.removed_networks.push(name.to_string()),
                Err(e) => failures.push((e.kind, format!("network {name}: {}", e.message))),
            }
        }
    }
    let Some((kind, _)) = failures.first() else {
        return Ok(outcome);
    };
    {
        let removed: Vec<&str> = outcome
            .removed_vms
            .iter()
            .chain(&outcome.removed_networks)
            .map(String::as_str)
            .collect();
        let reasons: Vec<&str> = failures.iter().map(|(_, m)| m.as_str()).collect();
        Err(UseCaseError::new(
            *kind,
            format!(
                "project {project}: could not remove {}{}; run `vmr compose down` again once the cause is fixed",
                reasons.join("; "),
                if removed.is_empty() {
                    String::new()
                } else {
                    format!(" (removed {})", removed.join(", "))
                }
            ),
        ))
    }
}
