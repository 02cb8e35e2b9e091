//! VM commands: `run`/`create` (the request is built here, the user-data
//! file read here), `start`, `restart`, `stop`, `rm`, `ps`, and `inspect`,
//! which also falls back to images.

use vmr_proto::v1 as pb;

use super::args::{
    CreateArgs, InspectArgs, InspectType, NamesArgs, PsArgs, RestartArgs, RmArgs, StopArgs,
};
use super::connect::{Client, Reply, RpcError};
use super::images::inspect_image;
use super::json::{ToJson, print_json, vm_state_word};
use super::output::{human_size, or_dash, print_table, table};
use super::{Batch, Session, ssh};

/// The network name that stands for no network card (`--network none`).
pub const NO_NETWORK: &str = "none";

/// The CreateVM request for `run` (`start`) or `create`; `user_data` is the
/// content of `--user-data`, already read, `ssh_key` the public key line
/// `vmr ssh` will log in with.
pub fn create_request(
    args: &CreateArgs,
    start: bool,
    user_data: Vec<u8>,
    ssh_key: Option<String>,
) -> anyhow::Result<pb::CreateVmRequest> {
    let no_network = args.networks.iter().any(|n| n.network == NO_NETWORK);
    if no_network && (args.networks.len() > 1 || args.networks[0].static_ip.is_some()) {
        anyhow::bail!("--network none (no network card) cannot be combined with other networks");
    }
    Ok(pb::CreateVmRequest {
        name: args.name.clone(),
        image: args.image.clone(),
        cpu: args.cpu.unwrap_or(0),
        memory_bytes: args.memory.unwrap_or(0),
        disk_size_bytes: args.disk_size.unwrap_or(0),
        networks: args
            .networks
            .iter()
            .filter(|network| network.network != NO_NETWORK)
            .map(|network| pb::NetworkAttachment {
                network: network.network.clone(),
                static_ip: match (network.static_ip, network.prefix_len) {
                    (Some(ip), Some(len)) => format!("{ip}/{len}"),
                    (Some(ip), None) => ip.to_string(),
                    (None, _) => String::new(),
                },
                gateway: String::new(),
                mac: String::new(),
            })
            .collect(),
        user_data,
        restart_policy: args
            .restart
            .map(|policy| policy.as_str().to_owned())
            .unwrap_or_default(),
        start,
        ssh_authorized_keys: ssh_key.into_iter().collect(),
        no_network,
    })
}

pub async fn create(session: &Session, args: CreateArgs, start: bool) -> anyhow::Result<()> {
    let user_data = match &args.user_data {
        Some(path) => tokio::fs::read(path).await.map_err(|err| {
            anyhow::anyhow!("cannot read the user-data file {}: {err}", path.display())
        })?,
        None => Vec::new(),
    };
    let ssh_key = ssh::public_key(&args.identity)?;
    let request = create_request(&args, start, user_data, Some(ssh_key))?;
    let vm = session.client().await?.create_vm(request).await.reply()?;
    // A VM made anew under an old name has a new host key.
    ssh::forget_hosts([vm.name.as_str()]);
    if session.output.is_json() {
        print_json(&vm.to_json());
    } else {
        println!("{}", vm.name);
    }
    Ok(())
}

pub async fn start(session: &Session, args: NamesArgs) -> anyhow::Result<()> {
    let client = session.client().await?;
    for_each_vm(session, args.names, |name| {
        let mut client = client.clone();
        async move { client.start_vm(pb::StartVmRequest { name }).await.reply() }
    })
    .await
}

pub async fn restart(session: &Session, args: RestartArgs) -> anyhow::Result<()> {
    let client = session.client().await?;
    let timeout_seconds = args.timeout.unwrap_or(0);
    for_each_vm(session, args.names, |name| {
        let mut client = client.clone();
        async move {
            client
                .restart_vm(pb::RestartVmRequest {
                    name,
                    timeout_seconds,
                })
                .await
                .reply()
        }
    })
    .await
}

pub async fn stop(session: &Session, args: StopArgs) -> anyhow::Result<()> {
    let client = session.client().await?;
    let request = |name| pb::StopVmRequest {
        name,
        force: args.force,
        timeout_seconds: args.timeout.unwrap_or(0),
    };
    for_each_vm(session, args.names.clone(), |name| {
        let mut client = client.clone();
        let request = request(name);
        async move { client.stop_vm(request).await.reply() }
    })
    .await
}

/// Acts on each named VM in turn; prints each VM's name as it is done (its
/// info under `-o json`, as an array).
async fn for_each_vm<F, Fut>(
    session: &Session,
    names: Vec<String>,
    mut action: F,
) -> anyhow::Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<pb::VmInfo, RpcError>>,
{
    let mut batch = Batch::new(names.len());
    let mut done = Vec::new();
    for name in names {
        match action(name).await {
            Ok(vm) => {
                if !session.output.is_json() {
                    println!("{}", vm.name);
                }
                done.push(vm);
            }
            Err(err) => batch.fail(err),
        }
    }
    if session.output.is_json() {
        print_json(&done.to_json());
    }
    batch.finish("VMs")
}

pub async fn remove(session: &Session, args: RmArgs) -> anyhow::Result<()> {
    let mut client = session.client().await?;
    let mut batch = Batch::new(args.names.len());
    let mut removed = Vec::new();
    for name in args.names {
        let request = pb::RemoveVmRequest {
            name: name.clone(),
            force: args.force,
        };
        match client.remove_vm(request).await.reply() {
            Ok(_) => {
                ssh::forget_hosts([name.as_str()]);
                if !session.output.is_json() {
                    println!("{name}");
                }
                removed.push(name);
            }
            Err(err) => batch.fail(err),
        }
    }
    if session.output.is_json() {
        print_json(&serde_json::json!({ "removed": removed }));
    }
    batch.finish("VMs")
}

pub async fn list(session: &Session, args: PsArgs) -> anyhow::Result<()> {
    let request = pb::ListVMsRequest {
        all: args.all,
        project: args.project.unwrap_or_default(),
    };
    let response = session.client().await?.list_v_ms(request).await.reply()?;
    if session.output.is_json() {
        print_json(&response.to_json());
    } else {
        print_table(&vms_table(&response.vms));
    }
    Ok(())
}

pub fn vms_table(vms: &[pb::VmInfo]) -> comfy_table::Table {
    let mut rows = table(["NAME", "STATE", "IMAGE", "CPU", "MEMORY", "IPS", "PROJECT"]);
    for vm in vms {
        rows.add_row([
            vm.name.clone(),
            vm_state_word(vm.state),
            vm.image.clone(),
            vm.cpu.to_string(),
            human_size(vm.memory_bytes),
            ips(vm),
            or_dash(&vm.project).to_owned(),
        ]);
    }
    rows
}

/// The VM's addresses with where each came from (`10.89.0.7 (dhcp)`),
/// comma separated; `-` when it has none yet.
pub fn ips(vm: &pb::VmInfo) -> String {
    let ips: Vec<String> = vm
        .interfaces
        .iter()
        .filter(|interface| !interface.ip.is_empty())
        .map(|interface| match interface.ip_source.as_str() {
            "" => interface.ip.clone(),
            source => format!("{} ({source})", interface.ip),
        })
        .collect();
    if ips.is_empty() {
        "-".to_owned()
    } else {
        ips.join(", ")
    }
}

/// Prints JSON whatever `-o` says, like docker inspect. Without `--type`,
/// a VM of that name wins, then an image of that reference.
pub async fn inspect(session: &Session, args: InspectArgs) -> anyhow::Result<()> {
    let mut client = session.client().await?;
    let value = match args.kind {
        Some(InspectType::Vm) => inspect_vm(&mut client, args.target).await?.to_json(),
        Some(InspectType::Image) => inspect_image(&mut client, args.target).await?.to_json(),
        None => match inspect_vm(&mut client, args.target.clone()).await {
            Ok(vm) => vm.to_json(),
            Err(vm_err) if is_absent(&vm_err) => {
                match inspect_image(&mut client, args.target.clone()).await {
                    Ok(image) => image.to_json(),
                    Err(image_err) if is_absent(&image_err) => {
                        anyhow::bail!("no VM or image named {}", args.target)
                    }
                    Err(image_err) => return Err(image_err.into()),
                }
            }
            Err(vm_err) => return Err(vm_err.into()),
        },
    };
    print_json(&value);
    Ok(())
}

async fn inspect_vm(client: &mut Client, name: String) -> Result<pb::InspectVmResponse, RpcError> {
    client
        .inspect_vm(pb::InspectVmRequest { name })
        .await
        .reply()
}

/// Nothing to show under that name: unknown, not even a valid name for
/// that kind (an image reference such as `nixos/base:1` is no VM name), or a
/// daemon without that kind of object; the other lookup may still answer.
fn is_absent(err: &RpcError) -> bool {
    matches!(
        err.code(),
        tonic::Code::NotFound | tonic::Code::InvalidArgument | tonic::Code::Unimplemented
    )
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use vmr_domain::vm::RestartPolicy;

    use super::*;
    use crate::cli::args::NetworkArg;

    #[test]
    fn create_request_carries_every_flag() {
        let args = CreateArgs {
            image: "nixos/base:1".to_owned(),
            name: "web".to_owned(),
            cpu: Some(2),
            memory: Some(4 << 30),
            disk_size: None,
            networks: vec![
                NetworkArg {
                    network: "lan".to_owned(),
                    static_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))),
                    prefix_len: None,
                },
                NetworkArg {
                    network: "wan".to_owned(),
                    static_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 7, 0, 5))),
                    prefix_len: Some(16),
                },
            ],
            user_data: None,
            restart: Some(RestartPolicy::OnFailure),
            identity: Default::default(),
        };
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIkey vmr".to_owned();
        let request =
            create_request(&args, true, b"#cloud-config\n".to_vec(), Some(key.clone())).unwrap();
        assert_eq!(request.ssh_authorized_keys, [key]);
        assert!(!request.no_network);
        assert_eq!(request.name, "web");
        assert_eq!(request.image, "nixos/base:1");
        assert_eq!(request.cpu, 2);
        assert_eq!(request.memory_bytes, 4 << 30);
        assert_eq!(request.disk_size_bytes, 0);
        assert_eq!(request.networks.len(), 2);
        assert_eq!(request.networks[0].network, "lan");
        assert_eq!(request.networks[0].static_ip, "10.0.0.5");
        assert_eq!(request.networks[1].static_ip, "10.7.0.5/16");
        assert_eq!(request.user_data, b"#cloud-config\n");
        assert_eq!(request.restart_policy, "on-failure");
        assert!(request.start);
        assert!(
            !create_request(&args, false, Vec::new(), None)
                .unwrap()
                .start
        );
    }

    #[test]
    fn network_none_asks_for_no_card() {
        let mut args = CreateArgs {
            image: "i".to_owned(),
            name: "web".to_owned(),
            cpu: None,
            memory: None,
            disk_size: None,
            networks: vec![NetworkArg {
                network: "none".to_owned(),
                ..NetworkArg::default()
            }],
            user_data: None,
            restart: None,
            identity: Default::default(),
        };
        let request = create_request(&args, true, Vec::new(), None).unwrap();
        assert!(request.no_network);
        assert!(request.networks.is_empty());
        args.networks.push(NetworkArg {
            network: "lan".to_owned(),
            ..NetworkArg::default()
        });
        let e = create_request(&args, true, Vec::new(), None).unwrap_err();
        assert!(e.to_string().contains("cannot be combined"), "{e}");
        args.networks.clear();
        let request = create_request(&args, true, Vec::new(), None).unwrap();
        assert!(!request.no_network && request.networks.is_empty());
    }

    #[test]
    fn ps_table_shows_state_words_sizes_and_addresses() {
        let vm = pb::VmInfo {
            name: "demo-web".to_owned(),
            state: pb::VmState::Running as i32,
            image: "nixos/base:1".to_owned(),
            cpu: 2,
            memory_bytes: 4 << 30,
            interfaces: vec![
                pb::InterfaceInfo {
                    network: "lan".to_owned(),
                    mac: String::new(),
                    ip: "10.0.0.5".to_owned(),
                    ip_source: "static".to_owned(),
                },
                pb::InterfaceInfo {
                    network: "wan".to_owned(),
                    mac: String::new(),
                    ip: "192.168.1.7".to_owned(),
                    ip_source: "dhcp".to_owned(),
                },
            ],
            project: "demo".to_owned(),
            ..pb::VmInfo::default()
        };
        let lines: Vec<String> = vms_table(&[vm])
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            lines,
            [
                "NAME STATE IMAGE CPU MEMORY IPS PROJECT",
                "demo-web running nixos/base:1 2 4.0 GiB 10.0.0.5 (static), 192.168.1.7 (dhcp) demo",
            ]
        );
    }
}
