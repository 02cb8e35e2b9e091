//! The normalised plan as YAML (`vmr compose config`): defaults applied,
//! names namespaced, MACs derived, services in start order.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_yaml::Value;

use super::ComposePlan;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    project: String,
    networks: Vec<Net>,
    services: Vec<Svc>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Net {
    key: String,
    name: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    external: bool,
    /// The project's default network, made by `up` on a free /24.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    implicit: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subnet: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dhcp: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bridge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Svc {
    service: String,
    level: usize,
    vm_name: String,
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_size: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    networks: Vec<Nic>,
    user_data: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    meta_data: BTreeMap<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network_config: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<Dep>,
    restart_policy: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Nic {
    network: String,
    mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    static_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
}

#[derive(Serialize)]
struct Dep {
    service: String,
    condition: String,
}

pub(super) fn to_yaml(plan: &ComposePlan) -> String {
    let networks = plan
        .networks
        .iter()
        .map(|n| {
            let spec = n.spec.as_ref();
            let v4 = spec.and_then(|s| s.ipv4);
            Net {
                key: n.key.clone(),
                name: n.name.to_string(),
                external: n.external,
                implicit: n.implicit,
                mode: spec
                    .map(|s| s.mode.to_string())
                    .or_else(|| n.implicit.then(|| "nat".to_owned())),
                subnet: v4.map(|v| v.subnet.to_string()),
                gateway: v4.map(|v| v.gateway.to_string()),
                dhcp: v4.map(|v| match v.dhcp {
                    Some(range) => {
                        let mut m = serde_yaml::Mapping::new();
                        m.insert("start".into(), range.start.to_string().into());
                        m.insert("end".into(), range.end.to_string().into());
                        Value::Mapping(m)
                    }
                    None => Value::Bool(false),
                }),
                bridge: spec.and_then(|s| s.bridge.clone()),
                interface: spec.and_then(|s| s.interface.clone()),
            }
        })
        .collect();
    let services = plan
        .levels
        .iter()
        .enumerate()
        .flat_map(|(level, services)| services.iter().map(move |s| (level, s)))
        .map(|(level, s)| Svc {
            service: s.service.clone(),
            level,
            vm_name: s.vm_name.to_string(),
            image: s.image.to_string(),
            cpu: s.cpu,
            memory: s.memory.map(|m| m.to_string()),
            disk_size: s.disk_size.map(|d| d.to_string()),
            networks: s
                .networks
                .iter()
                .map(|n| Nic {
                    network: n.network.to_string(),
                    mac: n.mac.to_string(),
                    static_ip: n.static_ip.map(|ip| ip.to_string()),
                    gateway: n.gateway.map(|g| g.to_string()),
                })
                .collect(),
            user_data: String::from_utf8_lossy(&s.user_data).into_owned(),
            meta_data: s.extra_meta_data.clone(),
            network_config: s.network_config.clone(),
            depends_on: s
                .depends_on
                .iter()
                .map(|d| Dep {
                    service: d.service.clone(),
                    condition: d.condition.to_string(),
                })
                .collect(),
            restart_policy: s.restart_policy.to_string(),
        })
        .collect();
    serde_yaml::to_string(&Doc {
        project: plan.project.clone(),
        networks,
        services,
    })
    .expect("a compose plan always serialises")
}
