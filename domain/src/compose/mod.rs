//! VMCompose projects: the YAML schema, every validation rule of FORMATS.md
//! (unknown references, dependency cycles named `a -> b -> a`, address
//! clashes, overlapping subnets, mode-specific network fields, cloud-init
//! sources), and the resulting [`ComposePlan`]: the networks to create and the
//! services in dependency levels, every name already namespaced by project.

mod files;
mod graph;
mod raw;
mod render;
mod service;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::image::Reference;
use crate::network::{NetworkName, NetworkSpec};
use crate::units::ByteSize;
use crate::validation::ValidationError;
use crate::vm::{NetworkAttachment, RestartPolicy, VmName};

pub use files::{FileReference, path_stays_inside, referenced_files};

/// What `vmr compose` sends: the file's text and the contents of the files it
/// names (read by the client), plus the `-p` flag and the directory name.
#[derive(Debug, Clone, Copy)]
pub struct ComposeInput<'a> {
    pub yaml: &'a str,
    /// File path as written in the compose file -> contents.
    pub files: &'a BTreeMap<String, Vec<u8>>,
    pub project_flag: Option<&'a str>,
    /// Name of the compose file's directory, the last default project name.
    pub directory_name: &'a str,
}

/// A validated project, ready to be brought up.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposePlan {
    pub project: String,
    /// Sorted by key.
    pub networks: Vec<PlannedNetwork>,
    /// Services by dependency level: level 0 depends on nothing, level n only
    /// on levels before it. Sorted by service name within a level.
    pub levels: Vec<Vec<PlannedService>>,
}

/// A network of the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedNetwork {
    /// The key in the file's `networks`.
    pub key: String,
    /// `<project>-<key>`, or the existing network's name when external.
    pub name: NetworkName,
    /// `None` for an external network (used, never created or removed) and
    /// for the implicit default network, whose subnet `up` picks.
    pub spec: Option<NetworkSpec>,
    pub external: bool,
    /// The project's `<project>-default`, which the file does not define:
    /// its services that name no network join it. `up` makes it (NAT, DHCP,
    /// a free /24, as `vmr run` makes `vmr-default`); `down` removes it.
    pub implicit: bool,
}

/// A service (one VM) of the project.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedService {
    /// The key in the file's `services`.
    pub service: String,
    /// `<project>-<service>`.
    pub vm_name: VmName,
    pub image: Reference,
    /// Overrides of the image's values.
    pub cpu: Option<u32>,
    pub memory: Option<ByteSize>,
    pub disk_size: Option<ByteSize>,
    /// NICs with namespaced network names and their MACs (given or derived).
    pub networks: Vec<NetworkAttachment>,
    /// The user-data (inline, from the file, or the default `#cloud-config`).
    pub user_data: Vec<u8>,
    /// Extra meta-data keys.
    pub extra_meta_data: BTreeMap<String, serde_yaml::Value>,
    /// A network-config that replaces the generated one.
    pub network_config: Option<String>,
    pub depends_on: Vec<Dependency>,
    pub restart_policy: RestartPolicy,
}

/// An edge of the dependency graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub service: String,
    pub condition: DependencyCondition,
}

/// What a dependency must have reached before its dependent starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DependencyCondition {
    /// The VM is running.
    #[default]
    Started,
    /// The VM is running and reachable (the guest agent answers or it has an
    /// address).
    Ready,
}

impl DependencyCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Ready => "ready",
        }
    }
}

impl FromStr for DependencyCondition {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "started" => Ok(Self::Started),
            "ready" => Ok(Self::Ready),
            _ => Err(ValidationError::new(
                "condition",
                format!(
                    "`{}` is not a condition; use started or ready",
                    s.escape_debug()
                ),
            )),
        }
    }
}

impl fmt::Display for DependencyCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DependencyCondition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DependencyCondition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse()
            .map_err(|e: ValidationError| serde::de::Error::custom(e.reason))
    }
}

/// Parses and validates a compose file into a plan (nothing is created
/// before this succeeds).
pub fn plan(input: &ComposeInput<'_>) -> Result<ComposePlan, ValidationError> {
    ComposePlan::parse(input)
}

impl ComposePlan {
    /// See [`plan`].
    pub fn parse(input: &ComposeInput<'_>) -> Result<Self, ValidationError> {
        validate::plan(input)
    }

    /// Every service, level by level.
    pub fn services(&self) -> impl Iterator<Item = &PlannedService> {
        self.levels.iter().flatten()
    }

    /// The service named `service`.
    pub fn service(&self, service: &str) -> Option<&PlannedService> {
        self.services().find(|s| s.service == service)
    }

    /// The networks vmr creates (not the external ones).
    pub fn managed_networks(&self) -> impl Iterator<Item = &NetworkSpec> {
        self.networks.iter().filter_map(|n| n.spec.as_ref())
    }

    /// The normalised plan as YAML, for `vmr compose config`.
    pub fn to_yaml(&self) -> String {
        render::to_yaml(self)
    }
}
