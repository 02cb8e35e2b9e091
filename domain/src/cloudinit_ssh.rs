//! vmr's ssh public keys merged into a user's own user-data, so that
//! `vmr ssh` can log in while everything the user asked for stays:
//!
//! - `#cloud-config` (or none): the keys join the top-level
//!   `ssh_authorized_keys` (cloud-init gives those to the image's default
//!   user); the user's own keys and settings are kept. When `users:` lists
//!   users but not `default`, the keys also join each listed user's
//!   `ssh_authorized_keys`, since no default user will exist.
//! - a script (`#!`), `#include`, `#cloud-boothook`, `## template: jinja`,
//!   `#cloud-config-archive` or `#part-handler`: wrapped as one part of a
//!   MIME multipart archive next to a `#cloud-config` part with the keys.
//! - a MIME multipart archive: the `#cloud-config` part is added at its
//!   end, with a `merge_how` that appends lists and keeps the user's values,
//!   so the user's own `ssh_authorized_keys` in an earlier part survive.
//! - anything else (gzip, text cloud-init does not recognise): refused,
//!   naming the field, rather than silently leaving the VM unreachable.
//!
//! A re-serialised `#cloud-config` loses the user's YAML comments.

use serde_yaml::{Mapping, Value};

use crate::validation::ValidationError;

/// Longest public key line accepted (an RSA 16384 key is about 2.8 KiB).
pub const MAX_SSH_KEY_BYTES: usize = 16 * 1024;
/// Most keys one VM may be given.
pub const MAX_SSH_KEYS: usize = 32;

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// One OpenSSH public key line: `TYPE BASE64 [COMMENT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshPublicKey(String);

impl SshPublicKey {
    /// Checks one key line (surrounding whitespace trimmed).
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        let line = text.trim();
        if line.len() > MAX_SSH_KEY_BYTES {
            return Err(ValidationError::new(
                field,
                format!("is longer than {MAX_SSH_KEY_BYTES} bytes"),
            ));
        }
        if line.contains(['\n', '\r']) {
            return Err(ValidationError::new(field, "must be a single line"));
        }
        let mut words = line.split_ascii_whitespace();
        let kind = words.next().unwrap_or_default();
        if !KEY_TYPES.contains(&kind) {
            return Err(ValidationError::new(
                field,
                format!(
                    "is not an OpenSSH public key (`TYPE BASE64 [COMMENT]`, TYPE one of {})",
                    KEY_TYPES.join(", ")
                ),
            ));
        }
        let body = words.next().unwrap_or_default();
        let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
        if body.len() < 16 || !body.chars().all(base64) {
            return Err(ValidationError::new(
                field,
                format!("has no base64 key after its type {kind}"),
            ));
        }
        Ok(Self(line.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a request's key lines (`ssh_authorized_keys[i]` names a bad one).
pub fn parse_ssh_keys(keys: &[String]) -> Result<Vec<SshPublicKey>, ValidationError> {
    if keys.len() > MAX_SSH_KEYS {
        return Err(ValidationError::new(
            "ssh_authorized_keys",
            format!("has {} keys, more than {MAX_SSH_KEYS}", keys.len()),
        ));
    }
    keys.iter()
        .enumerate()
        .map(|(i, key)| SshPublicKey::parse(&format!("ssh_authorized_keys[{i}]"), key))
        .collect()
}

/// `user_data` with `keys` added (see the module's doc); unchanged without
/// keys. `None` or empty user-data becomes a `#cloud-config` with the keys.
pub fn merge_ssh_keys(
    field: &str,
    user_data: Option<&[u8]>,
    keys: &[SshPublicKey],
) -> Result<Option<Vec<u8>>, ValidationError> {
    let user_data = user_data.filter(|d| !d.is_empty());
    // The user's document is bounded before it is parsed, and judged as
    // they wrote it: a merge re-serialises it (comments go), which must
    // not bring an oversized document under the limit.
    if let Some(data) = user_data {
        crate::cloudinit::check_user_data(field, data)?;
    }
    if keys.is_empty() {
        return Ok(user_data.map(<[u8]>::to_vec));
    }
    let Some(data) = user_data else {
        return Ok(Some(cloud_config(Mapping::new(), keys).into_bytes()));
    };
    if data.starts_with(b"#cloud-config\n")
        || data.starts_with(b"#cloud-config\r\n")
        || data == b"#cloud-config"
    {
        let text = std::str::from_utf8(data)
            .map_err(|_| ValidationError::new(field, "a #cloud-config document must be UTF-8"))?;
        let map = match serde_yaml::from_str::<Value>(text) {
            Ok(Value::Mapping(map)) => map,
            Ok(Value::Null) => Mapping::new(),
            _ => {
                return Err(ValidationError::new(
                    field,
                    "a #cloud-config document must be a YAML mapping",
                ));
            }
        };
        return Ok(Some(cloud_config(map, keys).into_bytes()));
    }
    if let Some(boundary) = multipart_boundary(data) {
        return append_part(field, data, &boundary, keys).map(Some);
    }
    if let Some(content_type) = part_type(data) {
        return Ok(Some(wrap(data, content_type, keys)));
    }
    Err(ValidationError::new(
        field,
        "vmr can add its ssh key only to a #cloud-config document, a #! script (or another \
         cloud-init text format) or a MIME multipart archive; this user-data is none of them",
    ))
}

/// The user's cloud-config with the keys merged into it, as text.
fn cloud_config(mut map: Mapping, keys: &[SshPublicKey]) -> String {
    add_keys(&mut map, keys);
    if let Some(Value::Sequence(users)) = map.get_mut("users")
        && !users.iter().any(|u| u.as_str() == Some("default"))
    {
        for user in users.iter_mut() {
            if let Value::Mapping(user) = user
                && user.contains_key("name")
            {
                add_keys(user, keys);
            }
        }
    }
    let body = if map.is_empty() {
        String::new()
    } else {
        serde_yaml::to_string(&map).expect("a YAML mapping always serialises")
    };
    format!("#cloud-config\n{body}")
}

/// Appends the keys not yet listed to the mapping's `ssh_authorized_keys`
/// (a scalar there becomes the first item of a list).
fn add_keys(map: &mut Mapping, keys: &[SshPublicKey]) {
    let entry = map
        .entry("ssh_authorized_keys".into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !matches!(entry, Value::Sequence(_)) {
        let single = std::mem::replace(entry, Value::Null);
        *entry = Value::Sequence(if single.is_null() {
            Vec::new()
        } else {
            vec![single]
        });
    }
    if let Value::Sequence(list) = entry {
        for key in keys {
            let key = Value::from(key.as_str());
            if !list.contains(&key) {
                list.push(key);
            }
        }
    }
}

/// vmr's own part: the keys, merged into what earlier parts said (lists
/// appended, the user's values kept).
fn keys_part(keys: &[SshPublicKey]) -> String {
    let keys: Vec<Value> = keys.iter().map(|k| Value::from(k.as_str())).collect();
    let mut map = Mapping::new();
    map.insert(
        "merge_how".into(),
        serde_yaml::from_str("[{name: list, settings: [append]}, {name: dict, settings: [no_replace, recurse_list]}]")
            .expect("a constant YAML document"),
    );
    map.insert("ssh_authorized_keys".into(), Value::Sequence(keys));
    format!(
        "Content-Type: text/cloud-config; charset=\"utf-8\"\r\nMIME-Version: 1.0\r\n\
         Content-Disposition: attachment; filename=\"vmr-ssh-keys.cfg\"\r\n\r\n#cloud-config\n{}",
        serde_yaml::to_string(&map).expect("a YAML mapping always serialises")
    )
}

/// The MIME type cloud-init gives a part that starts so.
fn part_type(data: &[u8]) -> Option<&'static str> {
    const PREFIXES: &[(&[u8], &str)] = &[
        (b"#!", "text/x-shellscript"),
        (b"#include-once", "text/x-include-once-url"),
        (b"#include", "text/x-include-url"),
        (b"#cloud-config-archive", "text/cloud-config-archive"),
        (b"#cloud-boothook", "text/cloud-boothook"),
        (b"#part-handler", "text/part-handler"),
        (b"## template: jinja", "text/jinja2"),
    ];
    PREFIXES
        .iter()
        .find(|(prefix, _)| data.starts_with(prefix))
        .map(|(_, kind)| *kind)
}

/// The boundary of a `multipart/*` archive, read from its headers.
fn multipart_boundary(data: &[u8]) -> Option<String> {
    let head_end = find(data, b"\r\n\r\n")
        .or_else(|| find(data, b"\n\n"))
        .unwrap_or(data.len());
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    if !head.contains("content-type: multipart/") {
        return None;
    }
    let original = String::from_utf8_lossy(&data[..head_end]);
    let at = head.find("boundary=")? + "boundary=".len();
    let rest = &original[at..];
    let boundary = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split([';', '\r', '\n', ' ']).next()?,
    };
    (!boundary.is_empty()).then(|| boundary.to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The archive with vmr's part inserted before its closing delimiter.
fn append_part(
    field: &str,
    data: &[u8],
    boundary: &str,
    keys: &[SshPublicKey],
) -> Result<Vec<u8>, ValidationError> {
    let closing = format!("--{boundary}--");
    let at = find(data, closing.as_bytes()).ok_or_else(|| {
        ValidationError::new(
            field,
            format!("the MIME multipart archive has no closing delimiter {closing}"),
        )
    })?;
    let mut out = data[..at].to_vec();
    if !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}\r\n{}\r\n", keys_part(keys)).as_bytes());
    out.extend_from_slice(&data[at..]);
    Ok(out)
}

/// A multipart archive of the user's document and vmr's part.
fn wrap(data: &[u8], content_type: &str, keys: &[SshPublicKey]) -> Vec<u8> {
    let mut boundary = "==vmr-user-data==".to_owned();
    while find(data, boundary.as_bytes()).is_some() {
        boundary.insert(2, 'x');
    }
    let mut out = format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\nMIME-Version: 1.0\r\n\r\n\
         --{boundary}\r\nContent-Type: {content_type}; charset=\"utf-8\"\r\nMIME-Version: 1.0\r\n\
         Content-Disposition: attachment; filename=\"user-data\"\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(data);
    if !data.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!("--{boundary}\r\n{}\r\n--{boundary}--\r\n", keys_part(keys)).as_bytes(),
    );
    out
}

#[cfg(test)]
#[path = "cloudinit_ssh_tests.rs"]
mod tests;
