//! `vmr network ...`: create (the request is built from the flags here),
//! list, inspect, start, stop, remove.

use clap::ValueEnum;
use vmr_proto::v1 as pb;

use super::Session;
use super::args::{NetworkCommand, NetworkCreateArgs};
use super::connect::Reply;
use super::json::{ToJson, print_json};
use super::output::{or_dash, print_table, table};

pub fn create_request(args: &NetworkCreateArgs) -> pb::CreateNetworkRequest {
    let text = |value: Option<String>| value.unwrap_or_default();
    pb::CreateNetworkRequest {
        name: args.name.clone(),
        mode: args
            .mode
            .to_possible_value()
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default(),
        subnet: text(args.subnet.map(|subnet| subnet.to_string())),
        gateway: text(args.gateway.map(|ip| ip.to_string())),
        dhcp_start: text(args.dhcp_start.map(|ip| ip.to_string())),
        dhcp_end: text(args.dhcp_end.map(|ip| ip.to_string())),
        no_dhcp: args.no_dhcp,
        bridge: text(args.bridge.clone()),
        interface: text(args.interface.clone()),
    }
}

pub async fn run(session: &Session, command: NetworkCommand) -> anyhow::Result<()> {
    let mut client = session.client().await?;
    let json = session.output.is_json();
    // Start, stop and remove print the network's name, like docker.
    let name = match command {
        NetworkCommand::Create(args) => {
            let info = client.create_network(create_request(&args)).await.reply()?;
            return print_info(json, &info);
        }
        NetworkCommand::Ls => {
            let response = client
                .list_networks(pb::ListNetworksRequest {})
                .await
                .reply()?;
            if json {
                print_json(&response.to_json());
            } else {
                print_table(&networks_table(&response.networks));
            }
            return Ok(());
        }
        NetworkCommand::Inspect(args) => {
            let info = client
                .inspect_network(pb::InspectNetworkRequest { name: args.name })
                .await
                .reply()?;
            print_json(&info.to_json());
            return Ok(());
        }
        NetworkCommand::Start(args) => {
            let info = client
                .start_network(pb::StartNetworkRequest { name: args.name })
                .await
                .reply()?;
            return print_info(json, &info);
        }
        NetworkCommand::Stop(args) => {
            let info = client
                .stop_network(pb::StopNetworkRequest { name: args.name })
                .await
                .reply()?;
            return print_info(json, &info);
        }
        NetworkCommand::Rm(args) => {
            client
                .remove_network(pb::RemoveNetworkRequest {
                    name: args.name.clone(),
                })
                .await
                .reply()?;
            args.name
        }
    };
    if json {
        print_json(&serde_json::json!({ "removed": name }));
    } else {
        println!("{name}");
    }
    Ok(())
}

fn print_info(json: bool, info: &pb::NetworkInfo) -> anyhow::Result<()> {
    if json {
        print_json(&info.to_json());
    } else {
        println!("{}", info.name);
    }
    Ok(())
}

fn networks_table(networks: &[pb::NetworkInfo]) -> comfy_table::Table {
    let mut rows = table([
        "NAME", "MODE", "SUBNET", "GATEWAY", "DHCP", "BRIDGE", "STATE", "PROJECT",
    ]);
    for network in networks {
        let dhcp = if network.dhcp_start.is_empty() {
            "-".to_owned()
        } else {
            format!("{}-{}", network.dhcp_start, network.dhcp_end)
        };
        let device = if network.bridge.is_empty() {
            &network.interface
        } else {
            &network.bridge
        };
        rows.add_row([
            network.name.clone(),
            network.mode.clone(),
            or_dash(&network.subnet).to_owned(),
            or_dash(&network.gateway).to_owned(),
            dhcp,
            or_dash(device).to_owned(),
            if network.active { "active" } else { "inactive" }.to_owned(),
            or_dash(&network.project).to_owned(),
        ]);
    }
    rows
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::args::{Cli, Command};

    fn create_args(line: &[&str]) -> NetworkCreateArgs {
        let cli = Cli::try_parse_from(line).expect("valid command line");
        match cli.command {
            Command::Network(NetworkCommand::Create(args)) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn create_request_carries_every_flag() {
        let args = create_args(&[
            "vmr",
            "network",
            "create",
            "lab",
            "--mode",
            "nat",
            "--subnet",
            "192.168.70.0/24",
            "--gateway",
            "192.168.70.1",
            "--dhcp-start",
            "192.168.70.100",
            "--dhcp-end",
            "192.168.70.200",
        ]);
        let request = create_request(&args);
        assert_eq!(request.name, "lab");
        assert_eq!(request.mode, "nat");
        assert_eq!(request.subnet, "192.168.70.0/24");
        assert_eq!(request.gateway, "192.168.70.1");
        assert_eq!(request.dhcp_start, "192.168.70.100");
        assert_eq!(request.dhcp_end, "192.168.70.200");
        assert!(!request.no_dhcp);

        let args = create_args(&[
            "vmr",
            "network",
            "create",
            "up",
            "--mode",
            "macvtap",
            "--interface",
            "eth0",
        ]);
        let request = create_request(&args);
        assert_eq!(request.mode, "macvtap");
        assert_eq!(request.interface, "eth0");
        assert_eq!(request.subnet, "");
    }
}
