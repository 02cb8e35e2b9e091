//! The `vmr` command line as clap definitions: every command, flag and
//! client-side value check lives here and nowhere else. The handlers in the
//! sibling modules receive these parsed structs.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use vmr_domain::units::ByteSize;
use vmr_domain::vm::RestartPolicy;

use super::output::OutputFormat;

/// vmr: VM images in OCI registries, VMs and networks on libvirt, multi-VM
/// compose projects; a client of the vmrd daemon.
#[derive(Debug, Parser)]
#[command(name = "vmr", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts, before or after the command name.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The daemon's Unix socket [default: $XDG_RUNTIME_DIR/vm-registry.sock
    /// for users other than root, else /var/run/vm-registry.sock]
    #[arg(
        long,
        global = true,
        env = "VM_REGISTRY_SOCKET_PATH",
        value_name = "PATH"
    )]
    pub socket: Option<PathBuf>,
    /// The registry context for login, logout, register, push and pull
    /// [default: the daemon's current context]
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Output format
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value_t,
        value_name = "FORMAT"
    )]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the health of the daemon and of what it depends on
    Health,
    /// Show the client's and the daemon's versions
    Version,
    /// Check the daemon and its store
    #[command(subcommand)]
    System(SystemCommand),
    /// Import an image from a VMFile and the disk it names
    Import(ImportArgs),
    /// List images
    Images(ImagesArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Give an image another reference
    Tag(TagArgs),
    /// Remove images
    Rmi(RmiArgs),
    /// Push an image to its registry
    Push(TransferArgs),
    /// Pull an image from its registry
    Pull(TransferArgs),
    /// Log in to the context's registry and keep the credential
    Login(LoginArgs),
    /// Revoke and forget the context's stored credential
    Logout,
    /// Create an account on the context's auth server
    Register(RegisterArgs),
    /// Create and start a VM
    Run(CreateArgs),
    /// Create a VM without starting it
    Create(CreateArgs),
    /// Start VMs
    Start(NamesArgs),
    /// Restart VMs
    Restart(RestartArgs),
    /// Stop VMs (ACPI shutdown, then optionally forced)
    Stop(StopArgs),
    /// Remove VMs and their runtime files
    Rm(RmArgs),
    /// List VMs
    Ps(PsArgs),
    /// Show a VM or an image in detail, as JSON
    Inspect(InspectArgs),
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Run multi-VM projects described by a VMCompose file
    Compose(ComposeArgs),
    /// Manage registry contexts
    #[command(subcommand)]
    Context(ContextCommand),
    /// Open a shell in a VM, or run one command there, over ssh
    Ssh(super::ssh::SshArgs),
    /// Run a command in a VM through its guest agent (no network needed)
    Exec(super::guest::ExecArgs),
    /// Print a VM's serial console log
    Logs(super::guest::LogsArgs),
    /// Attach to a VM's serial console (detach with Ctrl-])
    Console(super::console::ConsoleArgs),
    /// Follow the daemon's events (VMs, images, networks, compose projects)
    Events(super::events::EventsArgs),
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Check the store (blobs, manifests, temporaries); fails when anything is wrong
    Check,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The VMFile describing the image
    #[arg(short = 'f', long = "file", value_name = "VMFILE")]
    pub file: PathBuf,
    /// A tag for the image (repeatable) [default: latest]
    #[arg(short = 't', long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only this repository
    pub repository: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images
    #[command(visible_alias = "list")]
    Ls(ImagesArgs),
    /// Remove images nothing refers to
    Prune(PruneArgs),
    /// Remove images
    #[command(visible_alias = "remove")]
    Rm(RmiArgs),
    /// Show an image in detail, as JSON
    Inspect(ReferenceArgs),
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The existing image
    #[arg(value_name = "SRC")]
    pub source: String,
    /// The new reference
    #[arg(value_name = "DST")]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove even when a VM uses the image
    #[arg(short, long)]
    pub force: bool,
    #[arg(value_name = "REF", required = true)]
    pub references: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also remove every tagged image that no VM uses
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ReferenceArgs {
    #[arg(value_name = "REF")]
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct TransferArgs {
    #[arg(value_name = "REF")]
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The user name [default: asked on the terminal]
    #[arg(short, long)]
    pub username: Option<String>,
    /// Read the password from the first line of standard input
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The user name [default: asked on the terminal]
    #[arg(short, long)]
    pub username: Option<String>,
    /// The account's e-mail address
    #[arg(short, long)]
    pub email: Option<String>,
    /// Read the password from the first line of standard input
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
}

/// The flags of `run` and `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The image to run
    #[arg(value_name = "REF")]
    pub image: String,
    /// The VM's name
    #[arg(long)]
    pub name: String,
    /// Virtual CPUs [default: the image's]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub cpu: Option<u32>,
    /// Memory, e.g. 4GiB [default: the image's]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Grow the VM's disk to this size, e.g. 20G [default: the image's]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub disk_size: Option<u64>,
    /// Attach to a network, with a static address when given (repeatable;
    /// IP/LEN on a bridged or macvtap network, whose subnet vmr does not
    /// know); `none`: no network card [default: the NAT network vmr-default]
    #[arg(long = "network", value_name = "NET[:IP[/LEN]]", value_parser = parse_network)]
    pub networks: Vec<NetworkArg>,
    /// A cloud-init user-data file to give the VM
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// What the daemon does when the VM stops on its own:
    /// no, on-failure, always, unless-stopped [default: no]
    #[arg(long = "restart", value_name = "POLICY", value_parser = parse_restart_policy)]
    pub restart: Option<RestartPolicy>,
    #[command(flatten)]
    pub identity: super::ssh::IdentityArg,
}

/// One `--network NET[:IP[/LEN]]` value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkArg {
    pub network: String,
    pub static_ip: Option<IpAddr>,
    /// The static address's prefix length, when given.
    pub prefix_len: Option<u8>,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Seconds to wait for the guest to shut down [default: 60]
    #[arg(short, long, value_name = "SECS")]
    pub timeout: Option<u32>,
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Power off when the guest has not shut down in time; without
    /// --timeout, power off at once
    #[arg(short, long)]
    pub force: bool,
    /// Seconds to wait for the guest to shut down [default: 60]
    #[arg(short, long, value_name = "SECS")]
    pub timeout: Option<u32>,
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Stop a running VM first
    #[arg(short, long)]
    pub force: bool,
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Include VMs that are not running
    #[arg(short, long)]
    pub all: bool,
    /// Only the VMs of this compose project
    #[arg(long)]
    pub project: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InspectType {
    Image,
    Vm,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// What NAME_OR_REF names [default: a VM if one has that name, else an image]
    #[arg(long = "type", value_enum)]
    pub kind: Option<InspectType>,
    #[arg(value_name = "NAME_OR_REF")]
    pub target: String,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create and start a network
    Create(NetworkCreateArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls,
    /// Show a network in detail, as JSON
    Inspect(NameArg),
    /// Start a network
    Start(NameArg),
    /// Stop a network
    Stop(NameArg),
    /// Remove a network
    #[command(visible_alias = "remove")]
    Rm(NameArg),
}

#[derive(Debug, Args)]
pub struct NameArg {
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkMode {
    /// NAT to the host's uplink, with DHCP
    Nat,
    /// No forwarding
    Isolated,
    /// Routed, no NAT
    Routed,
    /// Forwarding without firewall rules
    Open,
    /// An existing host bridge (--bridge)
    Bridged,
    /// Direct attachment to a host interface (--interface)
    Macvtap,
}

#[derive(Debug, Args)]
pub struct NetworkCreateArgs {
    pub name: String,
    #[arg(long, value_enum)]
    pub mode: NetworkMode,
    /// The IPv4 subnet, e.g. 192.168.70.0/24 (nat, isolated, routed, open)
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<IpNet>,
    /// [default: the subnet's first host]
    #[arg(long, value_name = "IP")]
    pub gateway: Option<IpAddr>,
    /// First DHCP address [default: the second half of the subnet]
    #[arg(
        long,
        value_name = "IP",
        requires = "dhcp_end",
        conflicts_with = "no_dhcp"
    )]
    pub dhcp_start: Option<IpAddr>,
    /// Last DHCP address
    #[arg(
        long,
        value_name = "IP",
        requires = "dhcp_start",
        conflicts_with = "no_dhcp"
    )]
    pub dhcp_end: Option<IpAddr>,
    /// Serve no DHCP
    #[arg(long)]
    pub no_dhcp: bool,
    /// The existing host bridge (bridged)
    #[arg(long, value_name = "BR")]
    pub bridge: Option<String>,
    /// The host interface (macvtap)
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
}

#[derive(Debug, Args)]
pub struct ComposeArgs {
    /// The compose file [default: vmcompose.yaml, vmcompose.yml or
    /// compose.yaml in the current directory, the first that exists]
    #[arg(short = 'f', long = "file", global = true, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The project name when the file has no `name`
    /// [default: the file's directory name]
    #[arg(short = 'p', long = "project-name", global = true, value_name = "NAME")]
    pub project: Option<String>,
    /// Let `*File` keys name files outside the compose file's directory tree
    #[arg(long, global = true)]
    pub allow_outside_files: bool,
    #[command(subcommand)]
    pub command: ComposeCommand,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ComposeCommand {
    /// Create the project's networks and VMs and start them, in dependency order
    Up,
    /// Remove the project's VMs and the networks it created
    Down,
    /// List the project's services
    Ps,
    /// Validate the file and print the normalised plan
    Config,
    /// Print the serial console logs of the project's VMs, each line after its service
    Logs(ComposeLogsArgs),
    /// Run a command in a service's VM through its guest agent
    Exec(super::guest::ExecArgs),
    /// Open a shell in a service's VM, or run one command there, over ssh
    Ssh(super::ssh::SshArgs),
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ComposeLogsArgs {
    /// Keep printing what the guests write next (until Ctrl-C); no `-f`,
    /// which names the compose file here
    #[arg(long = "follow")]
    pub follow: bool,
    /// Only the last N lines of each log so far
    #[arg(short = 'n', long = "tail", value_name = "N")]
    pub tail: Option<u64>,
    /// Only this service [default: every service with a VM]
    pub service: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Create a context
    Create(ContextCreateArgs),
    /// List contexts
    #[command(visible_alias = "list")]
    Ls,
    /// Make a context the current one
    Use(NameArg),
    /// Remove a context
    #[command(visible_alias = "remove")]
    Rm(NameArg),
    /// Show a context, as JSON [default: the current one]
    Inspect(OptionalNameArg),
}

#[derive(Debug, Args)]
pub struct OptionalNameArg {
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ContextCreateArgs {
    pub name: String,
    /// The OCI registry, e.g. https://registry.example.org
    #[arg(long, value_name = "URL")]
    pub registry_url: String,
    /// The auth server
    #[arg(long, value_name = "URL")]
    pub auth_url: Option<String>,
    /// Allow plain http and skip TLS verification
    #[arg(long)]
    pub insecure: bool,
}

fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<ByteSize>()
        .map(ByteSize::bytes)
        .map_err(|err| err.reason)
}

fn parse_restart_policy(text: &str) -> Result<RestartPolicy, String> {
    text.parse()
        .map_err(|err: vmr_domain::ValidationError| err.reason)
}

/// `NET`, `NET:IP` or `NET:IP/LEN`; the name is split at the first `:`
/// because network names never contain one, which leaves IPv6 addresses
/// whole.
fn parse_network(text: &str) -> Result<NetworkArg, String> {
    const USE: &str = "use NET, NET:IP or NET:IP/LEN";
    let (network, ip) = match text.split_once(':') {
        Some((network, ip)) => (network, Some(ip)),
        None => (text, None),
    };
    if network.is_empty() {
        return Err(format!("the network name is empty; {USE}"));
    }
    let Some(ip) = ip else {
        return Ok(NetworkArg {
            network: network.to_owned(),
            ..NetworkArg::default()
        });
    };
    let (addr, prefix) = match ip.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (ip, None),
    };
    let static_ip = addr
        .parse::<IpAddr>()
        .map_err(|_| format!("`{addr}` is not an IP address; {USE}"))?;
    let max = if static_ip.is_ipv4() { 32 } else { 128 };
    let prefix_len = prefix
        .map(|prefix| {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|len| *len <= max)
                .ok_or_else(|| format!("`/{prefix}` is not a prefix length (0 to {max}); {USE}"))
        })
        .transpose()?;
    Ok(NetworkArg {
        network: network.to_owned(),
        static_ip: Some(static_ip),
        prefix_len,
    })
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
