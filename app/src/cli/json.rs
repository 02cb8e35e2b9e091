//! `-o json`: the daemon's answers as JSON. prost messages do not derive
//! serde, so each message lists its fields once in `json_message!`; keys are
//! the proto JSON names (lowerCamelCase) and enums are lowercase words
//! (`running`, `not-serving`) so that scripts need not know the proto prefixes.

use std::collections::HashMap;

use serde_json::{Map, Value};
use vmr_proto::v1 as pb;

/// A value that `-o json` can print.
pub trait ToJson {
    fn to_json(&self) -> Value;
}

impl ToJson for String {
    fn to_json(&self) -> Value {
        Value::String(self.clone())
    }
}

impl ToJson for bool {
    fn to_json(&self) -> Value {
        Value::Bool(*self)
    }
}

impl ToJson for u32 {
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

impl ToJson for u64 {
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

impl ToJson for i64 {
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

impl<T: ToJson> ToJson for Vec<T> {
    fn to_json(&self) -> Value {
        Value::Array(self.iter().map(ToJson::to_json).collect())
    }
}

impl<T: ToJson> ToJson for Option<T> {
    fn to_json(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToJson::to_json)
    }
}

impl ToJson for HashMap<String, String> {
    fn to_json(&self) -> Value {
        // Sorted, so that the same answer always prints the same way.
        let mut entries: Vec<_> = self.iter().collect();
        entries.sort();
        Value::Object(
            entries
                .into_iter()
                .map(|(key, value)| (key.clone(), Value::String(value.clone())))
                .collect(),
        )
    }
}

/// `snake_case` field name to its proto JSON name.
fn json_name(field: &str) -> String {
    let mut name = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            name.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            name.push(c);
        }
    }
    name
}

/// Implements `ToJson` for messages from their field lists; a field written
/// `field => converter` is printed by `converter(&self.field)` (enums, bytes).
macro_rules! json_message {
    (@value $value:expr) => { ToJson::to_json(&$value) };
    (@value $value:expr, $convert:expr) => { $convert(&$value) };
    ($($message:ty { $($field:ident $(=> $convert:expr)?),* $(,)? })*) => {
        $(
            impl ToJson for $message {
                fn to_json(&self) -> Value {
                    #[allow(unused_mut)]
                    let mut object = Map::new();
                    $(
                        object.insert(
                            json_name(stringify!($field)),
                            json_message!(@value self.$field $(, $convert)?),
                        );
                    )*
                    Value::Object(object)
                }
            }
        )*
    };
}

/// An enum value as a lowercase word: `VM_STATE_RUNNING` -> `running`,
/// `SERVING_STATUS_NOT_SERVING` -> `not-serving`.
pub fn enum_word(proto_name: &str, prefix: &str) -> String {
    proto_name
        .strip_prefix(prefix)
        .unwrap_or(proto_name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

pub fn vm_state_word(state: i32) -> String {
    pb::VmState::try_from(state).map_or_else(
        |_| format!("unknown ({state})"),
        |state| enum_word(state.as_str_name(), "VM_STATE_"),
    )
}

pub fn serving_status_word(status: i32) -> String {
    pb::ServingStatus::try_from(status).map_or_else(
        |_| format!("unknown ({status})"),
        |status| enum_word(status.as_str_name(), "SERVING_STATUS_"),
    )
}

pub fn compose_event_word(kind: i32) -> String {
    pb::ComposeEventKind::try_from(kind).map_or_else(
        |_| format!("unknown ({kind})"),
        |kind| enum_word(kind.as_str_name(), "COMPOSE_EVENT_KIND_"),
    )
}

fn vm_state_json(state: &i32) -> Value {
    Value::String(vm_state_word(*state))
}

fn serving_status_json(status: &i32) -> Value {
    Value::String(serving_status_word(*status))
}

fn compose_event_json(kind: &i32) -> Value {
    Value::String(compose_event_word(*kind))
}

/// Bytes the daemon documents as JSON (manifest, config): embedded as JSON,
/// or as text when they do not parse, so nothing is hidden.
fn embedded_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

json_message! {
    pb::ComponentHealth { name, status => serving_status_json, message }
    pb::HealthCheckResponse { components, version }
    pb::RegisterResponse { username }
    pb::ContextInfo { name, registry_url, auth_url, insecure, current }
    pb::ListContextsResponse { contexts }
    pb::ImageSummary {
        repository, tags, digest, size, disk_format, created, cpu, memory_bytes, description,
    }
    pb::ImportImageResponse { image, references }
    pb::ListImagesResponse { images }
    pb::Descriptor { media_type, digest, size, annotations }
    pb::InspectImageResponse {
        image, manifest => embedded_json, config => embedded_json, layers,
    }
    pb::TagImageResponse { reference, digest }
    pb::RemoveImageResponse { untagged, deleted }
    pb::PruneImagesResponse { untagged, deleted, reclaimed_bytes }
    pb::BlobProgress { digest, media_type, done, total, skipped }
    pb::TransferDone { reference, digest, bytes_transferred }
    pb::InterfaceInfo { network, mac, ip, ip_source }
    pb::VmInfo {
        name, state => vm_state_json, image, image_digest, cpu, memory_bytes, disk_size_bytes,
        interfaces, project, service, restart_policy, bootloader,
    }
    pb::ListVMsResponse { vms }
    pb::InspectVmResponse { vm, domain_xml }
    pb::NetworkInfo {
        name, mode, subnet, gateway, dhcp_start, dhcp_end, bridge, interface, active, project,
    }
    pb::ListNetworksResponse { networks }
    pb::ComposeEvent {
        project, service, network, kind => compose_event_json, message, timestamp_unix_nanos,
    }
    pb::ComposeDownResponse { removed_vms, removed_networks }
    pb::ComposeServiceStatus { service, vm }
    pb::ComposePsResponse { project, services }
    pb::ComposeConfigResponse { project, normalized_yaml }
}

impl ToJson for pb::TransferProgress {
    fn to_json(&self) -> Value {
        match &self.event {
            Some(pb::transfer_progress::Event::Blob(blob)) => {
                serde_json::json!({ "blob": blob.to_json() })
            }
            Some(pb::transfer_progress::Event::Done(done)) => {
                serde_json::json!({ "done": done.to_json() })
            }
            None => Value::Object(Map::new()),
        }
    }
}

/// The login answer without its credential: a token on stdout would end up
/// in terminal scrollback and CI logs.
pub fn login_json(context: &str, response: &pb::LoginResponse) -> Value {
    serde_json::json!({
        "context": context,
        "username": response.username,
        "registryUrl": response.registry_url,
        "scheme": response.scheme,
        "expiresInSeconds": response.expires_in_seconds,
    })
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &Value) {
    // serde_json cannot fail to format a `Value`.
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Prints a value as one compact JSON line (for streams of events).
pub fn print_json_line(value: &Value) {
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn vm_info_prints_camel_case_keys_and_state_words() {
        let vm = pb::VmInfo {
            name: "web".to_owned(),
            state: pb::VmState::Running as i32,
            image: "nixos/base:1".to_owned(),
            image_digest: "sha256:ab".to_owned(),
            cpu: 2,
            memory_bytes: 4 << 30,
            disk_size_bytes: 20 << 30,
            interfaces: vec![pb::InterfaceInfo {
                network: "lan".to_owned(),
                mac: "52:54:00:00:00:01".to_owned(),
                ip: "10.0.0.5".to_owned(),
                ip_source: "dhcp".to_owned(),
            }],
            project: "demo".to_owned(),
            service: "web".to_owned(),
            restart_policy: "always".to_owned(),
            bootloader: "uefi".to_owned(),
        };
        assert_eq!(
            vm.to_json(),
            json!({
                "name": "web",
                "state": "running",
                "image": "nixos/base:1",
                "imageDigest": "sha256:ab",
                "cpu": 2,
                "memoryBytes": 4_294_967_296_u64,
                "diskSizeBytes": 21_474_836_480_u64,
                "interfaces": [{"network": "lan", "mac": "52:54:00:00:00:01", "ip": "10.0.0.5", "ipSource": "dhcp"}],
                "project": "demo",
                "service": "web",
                "restartPolicy": "always",
                "bootloader": "uefi",
            })
        );
    }

    #[test]
    fn health_uses_words_for_serving_status() {
        let health = pb::HealthCheckResponse {
            components: vec![pb::ComponentHealth {
                name: "registry".to_owned(),
                status: pb::ServingStatus::NotConfigured as i32,
                message: "no registry URL".to_owned(),
            }],
            version: "0.1.0".to_owned(),
        };
        assert_eq!(
            health.to_json(),
            json!({
                "components": [
                    {"name": "registry", "status": "not-configured", "message": "no registry URL"}
                ],
                "version": "0.1.0",
            })
        );
    }

    #[test]
    fn image_inspect_embeds_manifest_and_config_as_json() {
        let response = pb::InspectImageResponse {
            image: None,
            manifest: br#"{"schemaVersion":2}"#.to_vec(),
            config: b"not json".to_vec(),
            layers: vec![pb::Descriptor {
                media_type: "application/vnd.vmregistry.disk.v1.qcow2".to_owned(),
                digest: "sha256:cd".to_owned(),
                size: 10,
                annotations: HashMap::from([(
                    "org.opencontainers.image.title".to_owned(),
                    "disk.qcow2".to_owned(),
                )]),
            }],
        };
        let value = response.to_json();
        assert_eq!(value["image"], Value::Null);
        assert_eq!(value["manifest"], json!({"schemaVersion": 2}));
        assert_eq!(value["config"], json!("not json"));
        assert_eq!(
            value["layers"][0]["annotations"]["org.opencontainers.image.title"],
            json!("disk.qcow2")
        );
        assert_eq!(
            value["layers"][0]["mediaType"],
            json!("application/vnd.vmregistry.disk.v1.qcow2")
        );
    }

    #[test]
    fn transfer_progress_names_its_event() {
        let done = pb::TransferProgress {
            event: Some(pb::transfer_progress::Event::Done(pb::TransferDone {
                reference: "r/x:1".to_owned(),
                digest: "sha256:ef".to_owned(),
                bytes_transferred: 7,
            })),
        };
        assert_eq!(
            done.to_json(),
            json!({"done": {"reference": "r/x:1", "digest": "sha256:ef", "bytesTransferred": 7}})
        );
    }

    #[test]
    fn login_json_leaves_the_credential_out() {
        let response = pb::LoginResponse {
            scheme: "bearer".to_owned(),
            credential: "secret-token".to_owned(),
            expires_in_seconds: 300,
            username: "ana".to_owned(),
            registry_url: "https://r.example".to_owned(),
        };
        let text = login_json("default", &response).to_string();
        assert!(!text.contains("secret-token"), "{text}");
        assert!(text.contains("\"username\":\"ana\""), "{text}");
    }

    #[test]
    fn enum_words_drop_the_prefix() {
        assert_eq!(vm_state_word(pb::VmState::Stopped as i32), "stopped");
        assert_eq!(
            compose_event_word(pb::ComposeEventKind::NetworkCreated as i32),
            "network-created"
        );
        assert_eq!(vm_state_word(99), "unknown (99)");
    }
}
