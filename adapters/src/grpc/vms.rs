//! VMs: create, start, stop, restart, remove, list, inspect. Requests are
//! parsed into domain types here (a bad field is INVALID_ARGUMENT naming
//! it, before any use case runs); records become `VMInfo`.

use std::net::Ipv4Addr;
use std::time::Duration;

use tonic::{Request, Response, Status};
use vmr_domain::image::Digest;
use vmr_domain::network::{MacAddr, NetworkName};
use vmr_domain::units::ByteSize;
use vmr_domain::validation::ValidationError;
use vmr_domain::vm::{RestartPolicy, VmName, VmState};
use vmr_ports::driving::{CreateVm, NicRequest, StaticAddress, StopVm, UseCaseError, VmFilter};
use vmr_ports::{VmDetails, VmRecord};
use vmr_proto::v1 as pb;

use super::convert;
use super::service::Core;
use super::status::to_status;

fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    to_status(UseCaseError::invalid(field, reason))
}

fn relabel(error: ValidationError, field: String) -> Status {
    to_status(error.with_field(field).into())
}

/// A VM name field; `name` in every request.
pub(super) fn vm_name(raw: &str) -> Result<VmName, Status> {
    raw.parse::<VmName>().map_err(|e| to_status(e.into()))
}

fn non_empty(raw: &str) -> Option<&str> {
    Some(raw.trim()).filter(|s| !s.is_empty())
}

fn static_address(field: &str, raw: &str) -> Result<StaticAddress, Status> {
    let (addr, prefix) = match raw.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (raw, None),
    };
    let bad = || {
        invalid(
            field,
            format!(
                "`{}` is not an IPv4 address like 192.168.70.10 or 192.168.70.10/24",
                raw.escape_debug()
            ),
        )
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let prefix_len = prefix
        .map(|p| p.parse::<u8>().ok().filter(|p| *p <= 32).ok_or_else(bad))
        .transpose()?;
    Ok(StaticAddress { addr, prefix_len })
}

fn nic(index: usize, raw: &pb::NetworkAttachment) -> Result<NicRequest, Status> {
    let field = |name: &str| format!("networks[{index}].{name}");
    let network = raw
        .network
        .parse::<NetworkName>()
        .map_err(|e| relabel(e, field("network")))?;
    let static_ip = non_empty(&raw.static_ip)
        .map(|ip| static_address(&field("static_ip"), ip))
        .transpose()?;
    let gateway = non_empty(&raw.gateway)
        .map(|gw| {
            gw.parse::<Ipv4Addr>().map_err(|_| {
                invalid(
                    &field("gateway"),
                    format!("`{}` is not an IPv4 address", gw.escape_debug()),
                )
            })
        })
        .transpose()?;
    let mac = non_empty(&raw.mac)
        .map(|mac| mac.parse::<MacAddr>().map_err(|e| relabel(e, field("mac"))))
        .transpose()?;
    Ok(NicRequest {
        network,
        static_ip,
        gateway,
        mac,
    })
}

fn create_request(raw: pb::CreateVmRequest) -> Result<CreateVm, Status> {
    let restart_policy = match non_empty(&raw.restart_policy) {
        None => RestartPolicy::No,
        Some(policy) => policy
            .parse()
            .map_err(|e| relabel(e, "restart_policy".into()))?,
    };
    let size = |n: u64| (n > 0).then_some(ByteSize(n));
    Ok(CreateVm {
        name: vm_name(&raw.name)?,
        image: convert::reference("image", &raw.image)?,
        cpu: (raw.cpu > 0).then_some(raw.cpu),
        memory: size(raw.memory_bytes),
        disk_size: size(raw.disk_size_bytes),
        networks: raw
            .networks
            .iter()
            .enumerate()
            .map(|(i, n)| nic(i, n))
            .collect::<Result<_, _>>()?,
        user_data: (!raw.user_data.is_empty()).then_some(raw.user_data),
        restart_policy,
        project: None,
        service: None,
        start: raw.start,
        ssh_authorized_keys: raw.ssh_authorized_keys,
        no_network: raw.no_network,
    })
}

fn seconds(secs: u32) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(u64::from(secs)))
}

pub(super) fn vm_state(state: VmState) -> pb::VmState {
    match state {
        VmState::Created => pb::VmState::Created,
        VmState::Running => pb::VmState::Running,
        VmState::Paused => pb::VmState::Paused,
        VmState::Stopping => pb::VmState::Stopping,
        VmState::Stopped => pb::VmState::Stopped,
        VmState::Crashed => pb::VmState::Crashed,
    }
}

/// A VM as the API shows it.
/// Takes the record by value: a listing moves its strings into the response
/// instead of copying them.
pub(super) fn vm_info(record: VmRecord) -> pb::VmInfo {
    let spec = record.spec;
    pb::VmInfo {
        name: spec.name.into_string(),
        state: vm_state(record.state) as i32,
        image: spec.labels.image,
        image_digest: spec
            .labels
            .image_digest
            .as_ref()
            .map(Digest::prefixed)
            .unwrap_or_default(),
        cpu: spec.cpu,
        memory_bytes: spec.memory.bytes(),
        disk_size_bytes: spec.disk_size.map_or(0, ByteSize::bytes),
        interfaces: record
            .interfaces
            .into_iter()
            .map(|i| pb::InterfaceInfo {
                network: i.network.into_string(),
                mac: i.mac.to_string(),
                ip: i.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                ip_source: i.source.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            })
            .collect(),
        project: spec.labels.project.unwrap_or_default(),
        service: spec.labels.service.unwrap_or_default(),
        restart_policy: spec.restart_policy.as_str().to_owned(),
        bootloader: spec.bootloader.as_str().to_owned(),
    }
}

fn details(details: &VmDetails) -> pb::InspectVmResponse {
    pb::InspectVmResponse {
        vm: Some(vm_info(details.record.clone())),
        domain_xml: details.definition.clone(),
    }
}

pub async fn create_vm(
    core: &Core,
    request: Request<pb::CreateVmRequest>,
) -> Result<Response<pb::VmInfo>, Status> {
    let request = create_request(request.into_inner())?;
    let record = core.vms.create(request).await.map_err(to_status)?;
    Ok(Response::new(vm_info(record)))
}

pub async fn start_vm(
    core: &Core,
    request: Request<pb::StartVmRequest>,
) -> Result<Response<pb::VmInfo>, Status> {
    let name = vm_name(&request.into_inner().name)?;
    let record = core.vms.start(&name).await.map_err(to_status)?;
    Ok(Response::new(vm_info(record)))
}

pub async fn stop_vm(
    core: &Core,
    request: Request<pb::StopVmRequest>,
) -> Result<Response<pb::VmInfo>, Status> {
    let request = request.into_inner();
    let name = vm_name(&request.name)?;
    let how = StopVm {
        force: request.force,
        timeout: seconds(request.timeout_seconds),
    };
    let record = core.vms.stop(&name, how).await.map_err(to_status)?;
    Ok(Response::new(vm_info(record)))
}

pub async fn restart_vm(
    core: &Core,
    request: Request<pb::RestartVmRequest>,
) -> Result<Response<pb::VmInfo>, Status> {
    let request = request.into_inner();
    let name = vm_name(&request.name)?;
    let record = core
        .vms
        .restart(&name, seconds(request.timeout_seconds))
        .await
        .map_err(to_status)?;
    Ok(Response::new(vm_info(record)))
}

pub async fn remove_vm(
    core: &Core,
    request: Request<pb::RemoveVmRequest>,
) -> Result<Response<pb::RemoveVmResponse>, Status> {
    let request = request.into_inner();
    let name = vm_name(&request.name)?;
    core.vms
        .remove(&name, request.force)
        .await
        .map_err(to_status)?;
    Ok(Response::new(pb::RemoveVmResponse {}))
}

pub async fn list_v_ms(
    core: &Core,
    request: Request<pb::ListVMsRequest>,
) -> Result<Response<pb::ListVMsResponse>, Status> {
    let request = request.into_inner();
    let filter = VmFilter {
        all: request.all,
        project: non_empty(&request.project).map(str::to_owned),
    };
    let vms = core.vms.list(filter).await.map_err(to_status)?;
    Ok(Response::new(pb::ListVMsResponse {
        vms: vms.into_iter().map(vm_info).collect(),
    }))
}

pub async fn inspect_vm(
    core: &Core,
    request: Request<pb::InspectVmRequest>,
) -> Result<Response<pb::InspectVmResponse>, Status> {
    let name = vm_name(&request.into_inner().name)?;
    let found = core.vms.inspect(&name).await.map_err(to_status)?;
    Ok(Response::new(details(&found)))
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn field(status: &Status) -> Option<&str> {
        status
            .metadata()
            .get("vmr-field")
            .and_then(|v| v.to_str().ok())
    }

    fn request() -> pb::CreateVmRequest {
        pb::CreateVmRequest {
            name: "web".into(),
            image: "tests/raw:1".into(),
            networks: vec![pb::NetworkAttachment {
                network: "lan".into(),
                static_ip: "10.0.0.5".into(),
                gateway: String::new(),
                mac: String::new(),
            }],
            ..pb::CreateVmRequest::default()
        }
    }

    #[test]
    fn create_requests_parse_with_defaults() {
        let parsed = create_request(request()).unwrap();
        assert_eq!(parsed.name.as_str(), "web");
        assert_eq!(parsed.cpu, None);
        assert_eq!(parsed.memory, None);
        assert_eq!(parsed.disk_size, None);
        assert_eq!(parsed.user_data, None);
        assert_eq!(parsed.restart_policy, RestartPolicy::No);
        assert_eq!(
            parsed.networks[0].static_ip,
            Some(StaticAddress {
                addr: Ipv4Addr::new(10, 0, 0, 5),
                prefix_len: None
            })
        );
        let mut full = request();
        full.cpu = 2;
        full.memory_bytes = 1 << 30;
        full.restart_policy = "unless-stopped".into();
        full.user_data = b"#cloud-config\n".to_vec();
        full.networks[0].static_ip = "10.0.0.5/24".into();
        full.networks[0].mac = "52:54:00:aa:bb:cc".into();
        let parsed = create_request(full).unwrap();
        assert_eq!(parsed.cpu, Some(2));
        assert_eq!(parsed.memory, Some(ByteSize::gib(1)));
        assert_eq!(parsed.restart_policy, RestartPolicy::UnlessStopped);
        assert_eq!(parsed.networks[0].static_ip.unwrap().prefix_len, Some(24));
        assert!(parsed.networks[0].mac.is_some());
    }

    #[test]
    fn bad_fields_are_named() {
        type Change = Box<dyn Fn(&mut pb::CreateVmRequest)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|r| r.name = "a/b".into()), "name"),
            (Box::new(|r| r.name = "a<b".into()), "name"),
            (Box::new(|r| r.name = String::new()), "name"),
            (Box::new(|r| r.image = String::new()), "image"),
            (
                Box::new(|r| r.networks[0].network = "../x".into()),
                "networks[0].network",
            ),
            (
                Box::new(|r| r.networks[0].static_ip = "10.0.0".into()),
                "networks[0].static_ip",
            ),
            (
                Box::new(|r| r.networks[0].static_ip = "10.0.0.5/33".into()),
                "networks[0].static_ip",
            ),
            (
                Box::new(|r| r.networks[0].gateway = "gw".into()),
                "networks[0].gateway",
            ),
            (
                Box::new(|r| r.networks[0].mac = "01:00:5e:00:00:01".into()),
                "networks[0].mac",
            ),
            (
                Box::new(|r| r.restart_policy = "sometimes".into()),
                "restart_policy",
            ),
        ];
        for (change, expected) in cases {
            let mut raw = request();
            change(&mut raw);
            let status = create_request(raw).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            if expected != "image" {
                assert_eq!(field(&status), Some(expected), "{status:?}");
            }
        }
    }
}
