//! `vmr compose`: find the compose file, read it and every file its
//! `cloudInit` sections name (`userDataFile`, `metaDataFile`,
//! `networkConfigFile`, relative to the compose file and kept inside its
//! directory tree unless `--allow-outside-files`), send them as a
//! `ComposeSource`, and show what the daemon reports.
//!
//! Without `-f`, the first of `vmcompose.yaml`, `vmcompose.yml` and
//! `compose.yaml` in the current directory is used: vmr's own names first,
//! then the name docker compose users already have.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
use serde_yaml::Value;
use vmr_proto::v1 as pb;

use super::args::{ComposeArgs, ComposeCommand};
use super::connect::{Reply, RpcError};
use super::json::{ToJson, print_json, print_json_line, vm_state_word};
use super::output::{print_table, table};
use super::progress::ComposeView;
use super::vms::ips;
use super::{Session, compose_guest, ssh};

/// The compose files looked for in the current directory, in this order.
pub const DEFAULT_FILE_NAMES: [&str; 3] = ["vmcompose.yaml", "vmcompose.yml", "compose.yaml"];

/// The `cloudInit` keys whose value is a path to read.
const FILE_KEYS: [&str; 3] = ["userDataFile", "metaDataFile", "networkConfigFile"];

#[derive(Debug, thiserror::Error)]
pub enum ComposeFileError {
    #[error("no compose file in {}: create vmcompose.yaml or pass -f FILE", dir.display())]
    NotFound { dir: PathBuf },
    #[error("cannot read the compose file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: cannot read {written}: {source}")]
    ReadReferenced {
        field: String,
        written: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{field}: {written} lies outside the compose file's directory {}; pass --allow-outside-files to allow it",
        dir.display()
    )]
    Outside {
        field: String,
        written: String,
        dir: PathBuf,
    },
}

/// `-f FILE`, else the first default name present in `cwd`.
pub fn find_compose_file(explicit: Option<&Path>, cwd: &Path) -> Result<PathBuf, ComposeFileError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    DEFAULT_FILE_NAMES
        .iter()
        .map(|name| cwd.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| ComposeFileError::NotFound {
            dir: cwd.to_path_buf(),
        })
}

/// How strictly the named files are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilePolicy {
    /// `up` and `config`: every file must be readable and, unless allowed,
    /// inside the compose file's directory tree.
    Required { allow_outside: bool },
    /// `down` and `ps` only need the project: send what can be read, so a
    /// deleted user-data file never blocks tearing a project down.
    BestEffort { allow_outside: bool },
}

/// The compose file and the files it names, as the daemon receives them.
#[derive(Debug)]
pub struct ComposeFiles {
    pub yaml: String,
    /// Path as written in the file -> contents.
    pub files: HashMap<String, Vec<u8>>,
    /// The compose file's directory name: the project name's last fallback.
    pub directory_name: String,
}

impl ComposeFiles {
    /// Reads the compose file and the files it names (blocking I/O).
    pub fn load(path: &Path, policy: FilePolicy) -> Result<Self, ComposeFileError> {
        let read_error = |source| ComposeFileError::Read {
            path: path.to_path_buf(),
            source,
        };
        let yaml = std::fs::read_to_string(path).map_err(read_error)?;
        let canonical = path.canonicalize().map_err(read_error)?;
        let dir = canonical
            .parent()
            .unwrap_or_else(|| Path::new("/"))
            .to_path_buf();
        let directory_name = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A file that does not parse is sent as is: the daemon's parser
        // reports the error with its line and column.
        let files = match serde_yaml::from_str::<Value>(&yaml) {
            Ok(document) => read_referenced(&document, &dir, policy)?,
            Err(_) => HashMap::new(),
        };
        Ok(Self {
            yaml,
            files,
            directory_name,
        })
    }

    pub fn source(self, project: Option<String>) -> pb::ComposeSource {
        pb::ComposeSource {
            yaml: self.yaml,
            files: self.files,
            project: project.unwrap_or_default(),
            directory_name: self.directory_name,
        }
    }
}

/// Every `services.<name>.cloudInit.<key>File` string, with its field path,
/// in the file's order.
pub fn referenced_paths(document: &Value) -> Vec<(String, String)> {
    let Some(services) = document.get("services").and_then(Value::as_mapping) else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    for (name, service) in services {
        let Some(cloud_init) = service.get("cloudInit") else {
            continue;
        };
        let name = name.as_str().unwrap_or_default();
        for key in FILE_KEYS {
            if let Some(written) = cloud_init.get(key).and_then(Value::as_str) {
                paths.push((
                    format!("services.{name}.cloudInit.{key}"),
                    written.to_owned(),
                ));
            }
        }
    }
    paths
}

fn read_referenced(
    document: &Value,
    dir: &Path,
    policy: FilePolicy,
) -> Result<HashMap<String, Vec<u8>>, ComposeFileError> {
    let (allow_outside, best_effort) = match policy {
        FilePolicy::Required { allow_outside } => (allow_outside, false),
        FilePolicy::BestEffort { allow_outside } => (allow_outside, true),
    };
    let mut files = HashMap::new();
    for (field, written) in referenced_paths(document) {
        if files.contains_key(&written) {
            continue;
        }
        match read_one(&field, &written, dir, allow_outside) {
            Ok(contents) => {
                files.insert(written, contents);
            }
            Err(_) if best_effort => {}
            Err(err) => return Err(err),
        }
    }
    Ok(files)
}

/// Resolves against the compose file's directory; the containment check is
/// made on canonical paths, so neither `..` nor a symlink gets out.
fn read_one(
    field: &str,
    written: &str,
    dir: &Path,
    allow_outside: bool,
) -> Result<Vec<u8>, ComposeFileError> {
    let read_error = |source| ComposeFileError::ReadReferenced {
        field: field.to_owned(),
        written: written.to_owned(),
        source,
    };
    let resolved = dir.join(written).canonicalize().map_err(read_error)?;
    if !allow_outside && !resolved.starts_with(dir) {
        return Err(ComposeFileError::Outside {
            field: field.to_owned(),
            written: written.to_owned(),
            dir: dir.to_path_buf(),
        });
    }
    std::fs::read(&resolved).map_err(read_error)
}

pub async fn run(session: &Session, args: ComposeArgs) -> anyhow::Result<()> {
    let allow_outside = args.allow_outside_files;
    let policy = match args.command {
        ComposeCommand::Up | ComposeCommand::Config => FilePolicy::Required { allow_outside },
        ComposeCommand::Down
        | ComposeCommand::Ps
        | ComposeCommand::Logs(_)
        | ComposeCommand::Exec(_)
        | ComposeCommand::Ssh(_) => FilePolicy::BestEffort { allow_outside },
    };
    let file = args.file.clone();
    let source = tokio::task::spawn_blocking(move || -> anyhow::Result<pb::ComposeSource> {
        let cwd = std::env::current_dir()?;
        let path = find_compose_file(file.as_deref(), &cwd)?;
        Ok(ComposeFiles::load(&path, policy)?.source(args.project))
    })
    .await??;
    let mut client = session.client().await?;
    let json = session.output.is_json();
    match args.command {
        ComposeCommand::Logs(logs) => return compose_guest::logs(session, source, logs).await,
        ComposeCommand::Exec(exec) => return compose_guest::exec(session, source, exec).await,
        ComposeCommand::Ssh(ssh) => return compose_guest::ssh(session, source, ssh).await,
        ComposeCommand::Up => {
            let stream = client
                .compose_up(pb::ComposeUpRequest {
                    source: Some(source),
                    ssh_authorized_keys: vec![ssh::public_key(&ssh::IdentityArg::default())?],
                })
                .await
                .reply()?;
            follow_up(session, stream).await?;
        }
        ComposeCommand::Down => {
            let response = client
                .compose_down(pb::ComposeDownRequest {
                    source: Some(source),
                })
                .await
                .reply()?;
            if json {
                print_json(&response.to_json());
            } else {
                for vm in &response.removed_vms {
                    println!("Removed VM {vm}");
                }
                for network in &response.removed_networks {
                    println!("Removed network {network}");
                }
            }
        }
        ComposeCommand::Ps => {
            let response = client
                .compose_ps(pb::ComposePsRequest {
                    source: Some(source),
                })
                .await
                .reply()?;
            if json {
                print_json(&response.to_json());
            } else {
                print_table(&services_table(&response.services));
            }
        }
        ComposeCommand::Config => {
            let response = client
                .compose_config(pb::ComposeConfigRequest {
                    source: Some(source),
                })
                .await
                .reply()?;
            if json {
                print_json(&response.to_json());
            } else {
                print!("{}", response.normalized_yaml);
                if !response.normalized_yaml.ends_with('\n') {
                    println!();
                }
            }
        }
    }
    Ok(())
}

/// Shows each event as it comes (a JSON line each under `-o json`); fails
/// when the stream fails or a service failed.
async fn follow_up(
    session: &Session,
    mut stream: impl Stream<Item = Result<pb::ComposeEvent, tonic::Status>> + Unpin,
) -> anyhow::Result<()> {
    let json = session.output.is_json();
    let mut view = ComposeView::new(session.output.shows_progress());
    let mut failed = Vec::new();
    let outcome = loop {
        match stream.next().await {
            Some(Ok(event)) => {
                if event.kind == pb::ComposeEventKind::Failed as i32 {
                    failed.push(event.clone());
                }
                if json {
                    print_json_line(&event.to_json());
                } else {
                    view.event(&event);
                }
            }
            None => break Ok(()),
            Some(Err(status)) => break Err(RpcError(status)),
        }
    };
    view.finish();
    outcome?;
    match failed.as_slice() {
        [] => Ok(()),
        [event] if event.service.is_empty() => {
            anyhow::bail!("compose up failed: {}", event.message)
        }
        [event] => anyhow::bail!("service {} failed: {}", event.service, event.message),
        events => {
            let names: Vec<&str> = events.iter().map(|event| event.service.as_str()).collect();
            anyhow::bail!("{} services failed: {}", names.len(), names.join(", "))
        }
    }
}

fn services_table(services: &[pb::ComposeServiceStatus]) -> comfy_table::Table {
    let mut rows = table(["SERVICE", "NAME", "STATE", "IMAGE", "IPS"]);
    for status in services {
        let row = match &status.vm {
            Some(vm) => [
                status.service.clone(),
                vm.name.clone(),
                vm_state_word(vm.state),
                vm.image.clone(),
                ips(vm),
            ],
            None => [
                status.service.clone(),
                "-".to_owned(),
                "absent".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
            ],
        };
        rows.add_row(row);
    }
    rows
}

#[cfg(test)]
#[path = "compose_tests.rs"]
mod tests;
