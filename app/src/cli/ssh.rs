//! `vmr ssh NAME [-- CMD...]`: the system OpenSSH client, exec'd (so its
//! exit code, a command's included, is vmr's) with vmr's key, the VM's
//! own known_hosts file and the first of the VM's addresses whose sshd
//! answers (see `ssh_reach`). The user is
//! `--user`, else the image's label `vmr.ssh.user`, else the VM's name is
//! not enough to guess one and vmr says how to name it.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use vmr_domain::image::{Digest, ImageConfig, Reference};
use vmr_proto::v1 as pb;

use super::Session;
use super::connect::{Client, Reply, RpcError};
use super::ssh_keys::{SshHome, SshIdentity};
use super::ssh_reach::{self, Candidate, NoBanner};

/// The image label that names the user `vmr ssh` logs in as.
pub const SSH_USER_LABEL: &str = "vmr.ssh.user";

/// The guest's ssh port.
const SSH_PORT: u16 = 22;

/// How long `vmr ssh` waits for a starting VM's address and sshd by default.
const DEFAULT_ADDRESS_WAIT: Duration = Duration::from_secs(120);

/// ssh's own bound on connecting and the handshake, in seconds: the banner
/// was read just before, so only a network that drops the VM right then
/// reaches it, and ssh then fails instead of hanging.
const CONNECT_TIMEOUT_SECS: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct SshArgs {
    /// The VM (with `compose ssh`: the service)
    pub name: String,
    /// Log in as this user [default: the image's label vmr.ssh.user]
    #[arg(short = 'l', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// The private key to use (its public half at FILE.pub) [default: vmr's own]
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Seconds to wait for the VM's address and its sshd [default: 120]
    #[arg(long = "wait", value_name = "SECS")]
    pub wait: Option<u64>,
    /// A command to run instead of an interactive shell
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The `--identity` of `run` and `create`.
#[derive(Debug, Default, Clone, Args)]
pub struct IdentityArg {
    /// The ssh key `vmr ssh` logs in with (its public half at FILE.pub) [default: vmr's own]
    #[arg(long = "identity", value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

/// The public key line a create request carries.
pub fn public_key(identity: &IdentityArg) -> anyhow::Result<String> {
    Ok(SshHome::of_user()?
        .identity(identity.identity.as_deref())?
        .public)
}

/// Forgets the host keys of VMs that are gone or made anew.
pub fn forget_hosts<'a>(names: impl IntoIterator<Item = &'a str>) {
    let Ok(home) = SshHome::of_user() else {
        return;
    };
    for name in names {
        if let Err(e) = home.forget_host(name) {
            eprintln!("vmr: {e:#}");
        }
    }
}

fn precondition(message: String) -> RpcError {
    RpcError(tonic::Status::failed_precondition(message))
}

/// The VM, refused unless it runs with a network card.
async fn running_vm(client: &mut Client, name: &str) -> anyhow::Result<pb::VmInfo> {
    let vm = client
        .inspect_vm(pb::InspectVmRequest {
            name: name.to_owned(),
        })
        .await
        .reply()?
        .vm
        .unwrap_or_default();
    if vm.state != pb::VmState::Running as i32 {
        return Err(precondition(format!(
            "VM {name} is not running; start it with `vmr start {name}`"
        ))
        .into());
    }
    if vm.interfaces.is_empty() {
        return Err(precondition(format!(
            "VM {name} has no network card (it was created with --network none), so ssh cannot reach it; use `vmr exec {name} -- CMD` or `vmr console {name}`"
        ))
        .into());
    }
    Ok(vm)
}

/// The first of the VM's addresses, in [`ssh_reach::candidates`]' order,
/// whose sshd sends its banner, waiting up to `wait` (ending at `deadline`):
/// a booting guest has its lease well before sshd listens. Each round asks
/// the daemon again, since a lease may come after a static address is known.
/// cloud-init installs the keys before sshd starts, so an sshd that answers
/// is one that lets vmr in.
async fn reachable_address(
    client: &mut Client,
    name: &str,
    wait: Duration,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Ipv4Addr> {
    /// Each attempt's bound: an address nobody holds answers no SYN, and an
    /// sshd sends its banner at once.
    const ATTEMPT: Duration = Duration::from_secs(5);
    /// The least an attempt gets, even past the deadline: the last round
    /// still gives every address a fair try.
    const LEAST: Duration = Duration::from_secs(1);
    let mut tried: Vec<(Candidate, NoBanner)> = Vec::new();
    loop {
        let vm = running_vm(client, name).await?;
        // The network's mode is not in InspectVM's answer; without the list
        // (an old daemon, an error) the address source alone orders them.
        let networks = client
            .list_networks(pb::ListNetworksRequest {})
            .await
            .reply()
            .map(|r| r.networks)
            .unwrap_or_default();
        for candidate in ssh_reach::candidates(&vm.interfaces, &networks) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let within = ATTEMPT.min(left).max(LEAST);
            let addr = SocketAddr::new(candidate.ip.into(), SSH_PORT);
            match ssh_reach::ssh_banner(addr, within).await {
                Ok(banner) => {
                    tracing::debug!(vm = name, %addr, banner, "sshd answers");
                    return Ok(candidate.ip);
                }
                Err(why) => {
                    tried.retain(|(c, _)| c.ip != candidate.ip);
                    tried.push((candidate, why));
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let message = if tried.is_empty() {
                format!(
                    "VM {name} has no IPv4 address after {}s (no DHCP lease, no static address, no guest agent answer); see `vmr logs {name}`",
                    wait.as_secs()
                )
            } else {
                ssh_reach::unreachable_message(name, SSH_PORT, wait, &tried)
            };
            return Err(RpcError(tonic::Status::deadline_exceeded(message)).into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The user the image names, if it does. The image is looked up by the
/// digest the VM was made from (`REPOSITORY@DIGEST`: a bare digest names no
/// image), then by the reference, whose tag may have moved since.
async fn image_user(client: &mut Client, vm: &pb::VmInfo) -> anyhow::Result<Option<String>> {
    for reference in image_references(vm) {
        let Ok(image) = client
            .inspect_image(pb::InspectImageRequest {
                reference: reference.clone(),
            })
            .await
            .reply()
        else {
            continue;
        };
        let config = ImageConfig::from_json(&image.config)
            .map_err(|e| anyhow::anyhow!("the config of image {reference} is unreadable: {e}"))?;
        return Ok(config.metadata.labels.get(SSH_USER_LABEL).cloned());
    }
    Ok(None)
}

/// The references to look a VM's image up by, pinned one first.
fn image_references(vm: &pb::VmInfo) -> Vec<String> {
    let pinned = vm
        .image
        .parse::<Reference>()
        .ok()
        .zip(vm.image_digest.parse::<Digest>().ok())
        .map(|(reference, digest)| {
            Reference {
                tag: None,
                digest: Some(digest),
                ..reference
            }
            .to_string()
        });
    pinned.into_iter().chain([vm.image.clone()]).collect()
}

/// The ssh command line: batch-safe options first, then the target. The
/// command's words are quoted for the remote shell, so the guest runs the
/// argv the user typed (as `vmr exec` and lima's `shell` do), not OpenSSH's
/// space-joined line: `-- sh -c 'exit 6'` exits 6.
pub fn ssh_command(
    identity: &SshIdentity,
    known_hosts: &std::path::Path,
    vm: &str,
    user: &str,
    ip: &str,
    command: &[String],
    interactive: bool,
) -> anyhow::Result<std::process::Command> {
    let mut ssh = std::process::Command::new("ssh");
    ssh.arg("-i")
        .arg(&identity.private)
        .args(["-o", "IdentitiesOnly=yes"])
        .args(["-o", "StrictHostKeyChecking=accept-new"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        // Keyed by the VM, not its address: a lease that moves keeps the key.
        .arg("-o")
        .arg(format!("HostKeyAlias={vm}"))
        .args(["-o", "LogLevel=ERROR"])
        .arg("-o")
        .arg(format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"));
    if interactive {
        ssh.arg("-t");
    }
    ssh.arg("-l").arg(user).arg(ip);
    if !command.is_empty() {
        let line = shlex::try_join(command.iter().map(String::as_str))
            .map_err(|e| anyhow::anyhow!("the command cannot be passed to ssh: {e}"))?;
        ssh.arg("--").arg(line);
    }
    Ok(ssh)
}

pub(super) async fn run(session: &Session, args: SshArgs) -> anyhow::Result<()> {
    let home = SshHome::of_user()?;
    let identity = home.identity(args.identity.as_deref())?;
    let mut client = session.client().await?;
    let wait = args.wait.map_or(DEFAULT_ADDRESS_WAIT, Duration::from_secs);
    let deadline = tokio::time::Instant::now() + wait;
    let vm = running_vm(&mut client, &args.name).await?;
    let user = match args.user.clone() {
        Some(user) => user,
        None => image_user(&mut client, &vm).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "image {} names no ssh user (label {SSH_USER_LABEL}); give one with `vmr ssh --user USER {}`",
                vm.image,
                args.name
            )
        })?,
    };
    let ip = reachable_address(&mut client, &args.name, wait, deadline)
        .await?
        .to_string();
    home.prepare_known_hosts()?;
    let interactive = args.command.is_empty();
    let known_hosts = home.known_hosts(&args.name);
    let error = ssh_command(
        &identity,
        &known_hosts,
        &args.name,
        &user,
        &ip,
        &args.command,
        interactive,
    )?
    .exec();
    Err(anyhow::anyhow!(
        "cannot run ssh (install OpenSSH's client, e.g. openssh-client): {error}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_is_looked_up_by_its_digest_first() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let vm = pb::VmInfo {
            image: "reg.example:5000/tests/debian12:1".into(),
            image_digest: digest.clone(),
            ..Default::default()
        };
        assert_eq!(
            image_references(&vm),
            [
                format!("reg.example:5000/tests/debian12@{digest}"),
                "reg.example:5000/tests/debian12:1".to_owned()
            ]
        );
        let unpinned = pb::VmInfo {
            image: "tests/debian12:1".into(),
            ..Default::default()
        };
        assert_eq!(image_references(&unpinned), ["tests/debian12:1"]);
    }

    #[test]
    fn the_command_pins_the_key_and_the_known_hosts() {
        let identity = SshIdentity {
            private: "/home/u/.config/vmr/ssh/id_ed25519".into(),
            public: String::new(),
        };
        let words = |c: &std::process::Command| -> Vec<String> {
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let kh = std::path::Path::new("/k/g1");
        let cmd = ssh_command(
            &identity,
            kh,
            "g1",
            "debian",
            "10.89.0.5",
            &["sh".into(), "-c".into(), "exit 6".into()],
            false,
        )
        .unwrap();
        let args = words(&cmd);
        assert_eq!(cmd.get_program(), "ssh");
        assert!(args.contains(&"StrictHostKeyChecking=accept-new".to_owned()));
        assert!(args.contains(&"UserKnownHostsFile=/k/g1".to_owned()));
        assert!(args.contains(&"HostKeyAlias=g1".to_owned()));
        assert!(args.contains(&"ConnectTimeout=10".to_owned()));
        assert!(!args.contains(&"-t".to_owned()));
        assert_eq!(
            args[args.len() - 5..],
            ["-l", "debian", "10.89.0.5", "--", "sh -c 'exit 6'"]
        );
        let shell =
            words(&ssh_command(&identity, kh, "g1", "debian", "10.89.0.5", &[], true).unwrap());
        assert!(shell.contains(&"-t".to_owned()));
        assert_eq!(shell.last().unwrap(), "10.89.0.5");
    }
}
