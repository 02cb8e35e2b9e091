//! Virtual networks: create, start, stop, remove, list, inspect. A create
//! request is validated into a `NetworkSpec` here (defaults applied, a bad
//! field is INVALID_ARGUMENT naming it); records become `NetworkInfo`.

use tonic::{Request, Response, Status};
use vmr_domain::network::{NetworkName, NetworkSpec};
use vmr_ports::NetworkRecord;
use vmr_proto::v1 as pb;

use super::service::Core;
use super::status::to_status;

fn network_name(raw: &str) -> Result<NetworkName, Status> {
    raw.parse::<NetworkName>().map_err(|e| to_status(e.into()))
}

fn opt(raw: &str) -> Option<&str> {
    Some(raw.trim()).filter(|s| !s.is_empty())
}

fn spec(raw: &pb::CreateNetworkRequest) -> Result<NetworkSpec, Status> {
    NetworkSpec::from_parts(
        &raw.name,
        &raw.mode,
        opt(&raw.subnet),
        opt(&raw.gateway),
        opt(&raw.dhcp_start),
        opt(&raw.dhcp_end),
        raw.no_dhcp,
        opt(&raw.bridge),
        opt(&raw.interface),
    )
    .map_err(|e| to_status(e.into()))
}

/// A network as the API shows it.
pub(super) fn network_info(record: &NetworkRecord) -> pb::NetworkInfo {
    let spec = &record.spec;
    let ipv4 = spec.ipv4;
    let dhcp = ipv4.and_then(|c| c.dhcp);
    let text = |value: Option<String>| value.unwrap_or_default();
    pb::NetworkInfo {
        name: spec.name.to_string(),
        mode: spec.mode.to_string(),
        subnet: text(ipv4.map(|c| c.subnet.to_string())),
        gateway: text(ipv4.map(|c| c.gateway.to_string())),
        dhcp_start: text(dhcp.map(|d| d.start.to_string())),
        dhcp_end: text(dhcp.map(|d| d.end.to_string())),
        bridge: text(record.bridge.clone().or_else(|| spec.bridge.clone())),
        interface: text(spec.interface.clone()),
        active: record.active,
        project: text(record.project.clone()),
    }
}

pub async fn create_network(
    core: &Core,
    request: Request<pb::CreateNetworkRequest>,
) -> Result<Response<pb::NetworkInfo>, Status> {
    let spec = spec(&request.into_inner())?;
    let record = core.networks.create(spec, None).await.map_err(to_status)?;
    Ok(Response::new(network_info(&record)))
}

pub async fn start_network(
    core: &Core,
    request: Request<pb::StartNetworkRequest>,
) -> Result<Response<pb::NetworkInfo>, Status> {
    let name = network_name(&request.into_inner().name)?;
    let record = core.networks.start(&name).await.map_err(to_status)?;
    Ok(Response::new(network_info(&record)))
}

pub async fn stop_network(
    core: &Core,
    request: Request<pb::StopNetworkRequest>,
) -> Result<Response<pb::NetworkInfo>, Status> {
    let name = network_name(&request.into_inner().name)?;
    let record = core.networks.stop(&name).await.map_err(to_status)?;
    Ok(Response::new(network_info(&record)))
}

pub async fn remove_network(
    core: &Core,
    request: Request<pb::RemoveNetworkRequest>,
) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
    let name = network_name(&request.into_inner().name)?;
    core.networks.remove(&name).await.map_err(to_status)?;
    Ok(Response::new(pb::RemoveNetworkResponse {}))
}

pub async fn list_networks(
    core: &Core,
    _request: Request<pb::ListNetworksRequest>,
) -> Result<Response<pb::ListNetworksResponse>, Status> {
    let networks = core.networks.list().await.map_err(to_status)?;
    Ok(Response::new(pb::ListNetworksResponse {
        networks: networks.iter().map(network_info).collect(),
    }))
}

pub async fn inspect_network(
    core: &Core,
    request: Request<pb::InspectNetworkRequest>,
) -> Result<Response<pb::NetworkInfo>, Status> {
    let name = network_name(&request.into_inner().name)?;
    let details = core.networks.inspect(&name).await.map_err(to_status)?;
    Ok(Response::new(network_info(&details.record)))
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn raw(mode: &str) -> pb::CreateNetworkRequest {
        pb::CreateNetworkRequest {
            name: "lab".into(),
            mode: mode.into(),
            subnet: "192.168.70.0/24".into(),
            ..pb::CreateNetworkRequest::default()
        }
    }

    #[test]
    fn create_applies_defaults_and_info_shows_them() {
        let spec = spec(&raw("nat")).unwrap();
        let info = network_info(&NetworkRecord {
            spec,
            project: None,
            active: true,
            bridge: Some("vmr-0123456789".into()),
            managed: true,
        });
        assert_eq!(info.mode, "nat");
        assert_eq!(info.subnet, "192.168.70.0/24");
        assert_eq!(info.gateway, "192.168.70.1");
        assert_eq!(info.dhcp_start, "192.168.70.128");
        assert_eq!(info.dhcp_end, "192.168.70.254");
        assert_eq!(info.bridge, "vmr-0123456789");
        assert!(info.active);
    }

    #[test]
    fn bad_fields_are_named() {
        let mut bad_mode = raw("bridge");
        bad_mode.subnet.clear();
        let mut no_subnet = raw("nat");
        no_subnet.subnet.clear();
        let mut outside = raw("nat");
        outside.gateway = "10.0.0.1".into();
        let mut bad_name = raw("nat");
        bad_name.name = "a/b".into();
        for (request, field) in [
            (bad_mode, "mode"),
            (no_subnet, "subnet"),
            (outside, "gateway"),
            (bad_name, "name"),
        ] {
            let status = spec(&request).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            assert_eq!(
                status
                    .metadata()
                    .get("vmr-field")
                    .and_then(|v| v.to_str().ok()),
                Some(field),
                "{status:?}"
            );
        }
    }
}
