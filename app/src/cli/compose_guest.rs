//! The ways into a compose project's VMs: `compose logs [SERVICE]`,
//! `compose exec SERVICE -- CMD` and `compose ssh SERVICE`. Each finds the
//! service's VM through `compose ps` and then does what `vmr logs`, `vmr
//! exec` and `vmr ssh` do with it. Logs are printed a line at a time, after
//! the service's name, as `docker compose logs` does.

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use vmr_proto::v1 as pb;

use super::Session;
use super::args::ComposeLogsArgs;
use super::connect::{Reply, RpcError};
use super::guest::ExecArgs;
use super::ssh::SshArgs;

/// The VMs of the project's services, `(service, VM)`: every one that has a
/// VM, or only `service`, which must exist and have one.
async fn service_vms(
    session: &Session,
    source: pb::ComposeSource,
    service: Option<&str>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut client = session.client().await?;
    let ps = client
        .compose_ps(pb::ComposePsRequest {
            source: Some(source),
        })
        .await
        .reply()?;
    let Some(wanted) = service else {
        let vms: Vec<(String, String)> = ps
            .services
            .into_iter()
            .filter_map(|s| s.vm.map(|vm| (s.service, vm.name)))
            .collect();
        if vms.is_empty() {
            anyhow::bail!(
                "project {} has no VMs; start it with `vmr compose up`",
                ps.project
            );
        }
        return Ok(vms);
    };
    let names: Vec<&str> = ps.services.iter().map(|s| s.service.as_str()).collect();
    let Some(status) = ps.services.iter().find(|s| s.service == wanted) else {
        anyhow::bail!(
            "project {} has no service named {wanted} (its services: {})",
            ps.project,
            names.join(", ")
        );
    };
    match &status.vm {
        Some(vm) => Ok(vec![(wanted.to_owned(), vm.name.clone())]),
        None => anyhow::bail!(
            "service {wanted} of project {} has no VM; start it with `vmr compose up`",
            ps.project
        ),
    }
}

/// Splits log bytes into lines, one carry per service.
struct Prefixer {
    prefixes: Vec<String>,
    carries: Vec<Vec<u8>>,
}

impl Prefixer {
    fn new(services: &[&str]) -> Self {
        let width = services.iter().map(|s| s.len()).max().unwrap_or(0);
        Self {
            prefixes: services.iter().map(|s| format!("{s:<width$} | ")).collect(),
            carries: vec![Vec::new(); services.len()],
        }
    }

    /// The complete lines of service `index` so far, each after its prefix.
    fn push(&mut self, index: usize, data: &[u8]) -> Vec<u8> {
        let carry = &mut self.carries[index];
        carry.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(end) = carry.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = carry.drain(..=end).collect();
            out.extend_from_slice(self.prefixes[index].as_bytes());
            out.extend_from_slice(&line);
        }
        out
    }

    /// The last lines that had no newline yet.
    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for (prefix, carry) in self.prefixes.iter().zip(&mut self.carries) {
            if !carry.is_empty() {
                out.extend_from_slice(prefix.as_bytes());
                out.append(carry);
                out.push(b'\n');
            }
        }
        out
    }
}

pub(super) async fn logs(
    session: &Session,
    source: pb::ComposeSource,
    args: ComposeLogsArgs,
) -> anyhow::Result<()> {
    let vms = service_vms(session, source, args.service.as_deref()).await?;
    let mut client = session.client().await?;
    let mut streams = Vec::new();
    for (index, (_, vm)) in vms.iter().enumerate() {
        let chunks = client
            .vm_logs(pb::VmLogsRequest {
                name: vm.clone(),
                follow: args.follow,
                tail: args.tail,
            })
            .await
            .reply()?;
        streams.push(chunks.map(move |chunk| (index, chunk)).boxed());
    }
    let services: Vec<&str> = vms.iter().map(|(s, _)| s.as_str()).collect();
    let mut lines = Prefixer::new(&services);
    let mut merged = futures::stream::select_all(streams);
    let mut stdout = tokio::io::stdout();
    while let Some((index, chunk)) = merged.next().await {
        let chunk = chunk.map_err(RpcError)?;
        stdout.write_all(&lines.push(index, &chunk.data)).await?;
        stdout.flush().await?;
    }
    stdout.write_all(&lines.finish()).await?;
    stdout.flush().await?;
    Ok(())
}

pub(super) async fn exec(
    session: &Session,
    source: pb::ComposeSource,
    args: ExecArgs,
) -> anyhow::Result<()> {
    let vms = service_vms(session, source, Some(&args.name)).await?;
    let (_, vm) = &vms[0];
    super::guest::exec_in(session, vm, args.command, args.interactive).await
}

pub(super) async fn ssh(
    session: &Session,
    source: pb::ComposeSource,
    mut args: SshArgs,
) -> anyhow::Result<()> {
    let vms = service_vms(session, source, Some(&args.name)).await?;
    args.name = vms[0].1.clone();
    super::ssh::run(session, args).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_prefixed_by_their_service_and_kept_whole() {
        let mut lines = Prefixer::new(&["db", "web"]);
        assert_eq!(lines.push(0, b"boot"), b"");
        assert_eq!(lines.push(1, b"a\nb"), b"web | a\n");
        assert_eq!(lines.push(0, b"ed\nup\n"), b"db  | booted\ndb  | up\n");
        assert_eq!(lines.finish(), b"web | b\n");
    }
}
