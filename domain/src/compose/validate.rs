//! Turns the raw compose file into a plan: the document's own rules
//! (apiVersion, kind, project name), the networks (modes and their fields,
//! overlapping subnets), then each service (see `service`) and the levels.

use std::collections::{BTreeMap, BTreeSet};

use super::raw::{RawCompose, RawDhcp, RawNetwork};
use super::service::{AddressBook, ServiceContext};
use super::{ComposeInput, ComposePlan, PlannedNetwork, graph};
use crate::network::{
    NetworkName, NetworkParams, NetworkSpec, PROJECT_DEFAULT_NETWORK, subnets_overlap,
};
use crate::validation::{
    ValidationError, check_api_version, check_simple_name, locate_in, parse_yaml,
};

const KIND: &str = "VMCompose";
/// Longest project name taken from a directory name.
const MAX_DERIVED_PROJECT_LEN: usize = 40;

pub(super) fn plan(input: &ComposeInput<'_>) -> Result<ComposePlan, ValidationError> {
    plan_raw(input).map_err(|e| locate_in(e, input.yaml))
}

fn plan_raw(input: &ComposeInput<'_>) -> Result<ComposePlan, ValidationError> {
    let raw: RawCompose = parse_yaml(input.yaml)?;
    check_api_version(raw.api_version.as_deref())?;
    if let Some(kind) = &raw.kind
        && kind != KIND
    {
        return Err(ValidationError::new(
            "kind",
            format!(
                "is `{}`; a compose file's kind must be {KIND}",
                kind.escape_debug()
            ),
        ));
    }
    let project = project_name(
        raw.name.as_deref(),
        input.project_flag,
        input.directory_name,
    )?;
    let mut networks = plan_networks(&project, raw.networks.unwrap_or_default().0)?;
    let raw_services = raw
        .services
        .ok_or_else(|| ValidationError::new("services", "is required"))?
        .0;
    // As docker compose: a service that names no network joins the
    // project's `default` network, the file's own if it defines one.
    let wants_default = raw_services.values().any(|s| s.networks.is_none());
    if wants_default && !networks.iter().any(|n| n.key == PROJECT_DEFAULT_NETWORK) {
        networks.push(PlannedNetwork {
            key: PROJECT_DEFAULT_NETWORK.to_owned(),
            name: namespaced("networks", &project, PROJECT_DEFAULT_NETWORK)?,
            spec: None,
            external: false,
            implicit: true,
        });
        networks.sort_by(|a, b| a.key.cmp(&b.key));
    }
    if raw_services.is_empty() {
        return Err(ValidationError::new(
            "services",
            "must define at least one service",
        ));
    }
    let keys: BTreeSet<String> = raw_services.keys().cloned().collect();
    let mut book = AddressBook::default();
    let mut services = BTreeMap::new();
    for (key, raw) in raw_services {
        let ctx = ServiceContext {
            project: &project,
            key: &key,
            field: format!("services.{key}"),
            networks: &networks,
            files: input.files,
            services: &keys,
        };
        let service = ctx.plan(raw, &mut book)?;
        services.insert(key, service);
    }
    let levels = graph::levels(services)?;
    Ok(ComposePlan {
        project,
        networks,
        levels,
    })
}

/// The project name: the file's `name`, else `-p`, else the directory name
/// made valid. The first two are checked, not rewritten: a typo there should
/// not silently name another project.
fn project_name(
    name: Option<&str>,
    flag: Option<&str>,
    directory: &str,
) -> Result<String, ValidationError> {
    match (name, flag) {
        (Some(name), _) => check_project_name("name", name),
        (None, Some(flag)) => check_project_name("project", flag),
        (None, None) => Ok(sanitize_project_name(directory)),
    }
}

fn check_project_name(field: &str, name: &str) -> Result<String, ValidationError> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
    if !valid {
        return Err(ValidationError::new(
            field,
            format!(
                "`{}` is not a project name: use lowercase letters, digits, `-` and `_`, starting with a letter or digit",
                name.escape_debug()
            ),
        ));
    }
    if name.len() > 62 {
        return Err(ValidationError::new(field, format!("`{name}` is too long")));
    }
    Ok(name.to_owned())
}

/// Makes a directory name a valid project name (`My Project!` -> `my-project`).
pub(super) fn sanitize_project_name(directory: &str) -> String {
    let mapped: String = directory
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = String::new();
    for c in mapped.trim_matches(|c| c == '-' || c == '_').chars() {
        if !(c == '-' && name.ends_with('-')) {
            name.push(c);
        }
    }
    name.truncate(MAX_DERIVED_PROJECT_LEN);
    let name = name.trim_end_matches(['-', '_']).to_owned();
    if name.is_empty() {
        "default".to_owned()
    } else {
        name
    }
}

fn plan_networks(
    project: &str,
    raw: BTreeMap<String, RawNetwork>,
) -> Result<Vec<PlannedNetwork>, ValidationError> {
    let mut planned: Vec<PlannedNetwork> = Vec::new();
    for (key, net) in raw {
        let field = format!("networks.{key}");
        check_simple_name(&field, &key)?;
        let network = if net.external.unwrap_or(false) {
            external_network(&field, &key, net)?
        } else {
            managed_network(project, &field, &key, net)?
        };
        if let Some(new) = network.spec.as_ref().and_then(|s| s.ipv4)
            && let Some((other, subnet)) = planned.iter().find_map(|p| {
                let old = p.spec.as_ref()?.ipv4?;
                subnets_overlap(old.subnet, new.subnet).then(|| (p.key.clone(), old.subnet))
            })
        {
            return Err(ValidationError::new(
                format!("{field}.subnet"),
                format!(
                    "{} overlaps the subnet {subnet} of network `{other}`",
                    new.subnet
                ),
            ));
        }
        planned.push(network);
    }
    Ok(planned)
}

fn external_network(
    field: &str,
    key: &str,
    net: RawNetwork,
) -> Result<PlannedNetwork, ValidationError> {
    for (name, present) in [
        ("mode", net.mode.is_some()),
        ("subnet", net.subnet.is_some()),
        ("gateway", net.gateway.is_some()),
        ("dhcp", net.dhcp.is_some()),
        ("bridge", net.bridge.is_some()),
        ("interface", net.interface.is_some()),
    ] {
        if present {
            return Err(ValidationError::new(
                format!("{field}.{name}"),
                "is not used by an external network (it exists already and is used as it is)",
            ));
        }
    }
    let name = net.name.unwrap_or_else(|| key.to_owned());
    let name = name
        .parse::<NetworkName>()
        .map_err(|e| e.with_field(format!("{field}.name")))?;
    Ok(PlannedNetwork {
        key: key.to_owned(),
        name,
        spec: None,
        external: true,
        implicit: false,
    })
}

fn managed_network(
    project: &str,
    field: &str,
    key: &str,
    net: RawNetwork,
) -> Result<PlannedNetwork, ValidationError> {
    if net.name.is_some() {
        return Err(ValidationError::new(
            format!("{field}.name"),
            format!("only external networks take a name; this one is named {project}-{key}"),
        ));
    }
    let mode = net.mode.ok_or_else(|| {
        ValidationError::new(
            format!("{field}.mode"),
            "is required: nat, isolated, routed, open, bridged or macvtap (or external: true)",
        )
    })?;
    let name: NetworkName = namespaced(field, project, key)?;
    let (no_dhcp, dhcp_start, dhcp_end) = match net.dhcp {
        None | Some(RawDhcp::Enabled(true)) => (false, None, None),
        Some(RawDhcp::Enabled(false)) => (true, None, None),
        Some(RawDhcp::Range(range)) => (false, range.start, range.end),
    };
    let params = NetworkParams {
        subnet: net.subnet.map(|s| s.0),
        gateway: net.gateway,
        dhcp_start,
        dhcp_end,
        no_dhcp,
        bridge: net.bridge,
        interface: net.interface,
    };
    let spec = NetworkSpec::new(name.clone(), mode, params).map_err(|e| e.within(field))?;
    Ok(PlannedNetwork {
        key: key.to_owned(),
        name,
        spec: Some(spec),
        external: false,
        implicit: false,
    })
}

pub(super) fn namespaced<T: std::str::FromStr<Err = ValidationError>>(
    field: &str,
    project: &str,
    key: &str,
) -> Result<T, ValidationError> {
    let name = format!("{project}-{key}");
    name.parse::<T>().map_err(|e| {
        ValidationError::new(
            field,
            format!("the namespaced name is invalid: {}", e.reason),
        )
    })
}
