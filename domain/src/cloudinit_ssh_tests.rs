use super::*;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJzvmrkeyvmrkeyvmrkeyvmrkeyvmrkeyvmrkeyvmr vmr";
const USER_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCuserkey alice@laptop";

fn keys() -> Vec<SshPublicKey> {
    vec![SshPublicKey::parse("k", KEY).unwrap()]
}

fn merged(user_data: &str) -> String {
    String::from_utf8(
        merge_ssh_keys("user_data", Some(user_data.as_bytes()), &keys())
            .unwrap()
            .unwrap(),
    )
    .unwrap()
}

fn yaml(text: &str) -> Value {
    assert!(text.starts_with("#cloud-config\n"), "{text}");
    serde_yaml::from_str(text).unwrap()
}

#[test]
fn keys_are_checked() {
    assert!(SshPublicKey::parse("k", &format!("  {KEY}\n")).is_ok());
    let e = SshPublicKey::parse("k", "ssh-dss AAAAB3NzaC1kc3MAAACBAP").unwrap_err();
    assert!(e.reason.contains("not an OpenSSH public key"), "{e}");
    let e = SshPublicKey::parse("k", "ssh-ed25519 not*base64*at*all!!").unwrap_err();
    assert!(e.reason.contains("base64"), "{e}");
    let e = SshPublicKey::parse("k", &format!("{KEY}\n{KEY}")).unwrap_err();
    assert!(e.reason.contains("single line"), "{e}");
    let e = parse_ssh_keys(&[KEY.to_owned(), "x".to_owned()]).unwrap_err();
    assert_eq!(e.field, "ssh_authorized_keys[1]");
    let many = vec![KEY.to_owned(); MAX_SSH_KEYS + 1];
    assert_eq!(
        parse_ssh_keys(&many).unwrap_err().field,
        "ssh_authorized_keys"
    );
}

#[test]
fn no_keys_leaves_user_data_alone() {
    assert_eq!(merge_ssh_keys("f", None, &[]).unwrap(), None);
    assert_eq!(
        merge_ssh_keys("f", Some(b"\x1f\x8bgzip"), &[]).unwrap(),
        Some(b"\x1f\x8bgzip".to_vec())
    );
}

#[test]
fn no_user_data_becomes_a_cloud_config_with_the_key() {
    for given in [None, Some(&b""[..])] {
        let text =
            String::from_utf8(merge_ssh_keys("f", given, &keys()).unwrap().unwrap()).unwrap();
        assert_eq!(yaml(&text)["ssh_authorized_keys"][0], Value::from(KEY));
    }
}

#[test]
fn cloud_config_keeps_the_users_keys_and_settings() {
    let text = merged(&format!(
        "#cloud-config\nssh_authorized_keys:\n  - {USER_KEY}\nwrite_files:\n  - path: /etc/x\n    content: hi\npackages: [curl]\n"
    ));
    let doc = yaml(&text);
    let keys = doc["ssh_authorized_keys"].as_sequence().unwrap();
    assert_eq!(keys, &vec![Value::from(USER_KEY), Value::from(KEY)]);
    assert_eq!(doc["write_files"][0]["path"], Value::from("/etc/x"));
    assert_eq!(doc["packages"][0], Value::from("curl"));
    // Merging twice adds nothing more.
    let again = yaml(&merged(&text));
    assert_eq!(again["ssh_authorized_keys"].as_sequence().unwrap().len(), 2);
}

#[test]
fn a_single_key_string_becomes_a_list() {
    let doc = yaml(&merged(&format!(
        "#cloud-config\nssh_authorized_keys: {USER_KEY}\n"
    )));
    assert_eq!(
        doc["ssh_authorized_keys"].as_sequence().unwrap(),
        &vec![Value::from(USER_KEY), Value::from(KEY)]
    );
    let doc = yaml(&merged("#cloud-config\n"));
    assert_eq!(doc["ssh_authorized_keys"][0], Value::from(KEY));
}

#[test]
fn users_with_default_leave_listed_users_alone() {
    let doc = yaml(&merged(
        "#cloud-config\nusers:\n  - default\n  - name: alice\n    shell: /bin/bash\n",
    ));
    assert_eq!(doc["ssh_authorized_keys"][0], Value::from(KEY));
    assert_eq!(doc["users"][0], Value::from("default"));
    assert!(doc["users"][1].get("ssh_authorized_keys").is_none());
    assert_eq!(doc["users"][1]["shell"], Value::from("/bin/bash"));
}

#[test]
fn users_without_default_each_get_the_key() {
    let doc = yaml(&merged(&format!(
        "#cloud-config\nusers:\n  - name: alice\n    ssh_authorized_keys: [{USER_KEY}]\n  - name: bob\n"
    )));
    assert_eq!(
        doc["users"][0]["ssh_authorized_keys"]
            .as_sequence()
            .unwrap(),
        &vec![Value::from(USER_KEY), Value::from(KEY)]
    );
    assert_eq!(doc["users"][1]["ssh_authorized_keys"][0], Value::from(KEY));
}

#[test]
fn a_cloud_config_that_is_not_a_mapping_is_refused() {
    let e = merge_ssh_keys("user_data", Some(b"#cloud-config\n- a\n"), &keys()).unwrap_err();
    assert_eq!(e.field, "user_data");
}

#[test]
fn a_script_is_wrapped_in_a_multipart_archive() {
    let text = merged("#!/bin/sh\necho hi > /tmp/x\n");
    assert!(text.starts_with("Content-Type: multipart/mixed; boundary=\"==vmr-user-data==\""));
    assert!(text.contains("Content-Type: text/x-shellscript"));
    assert!(text.contains("#!/bin/sh\necho hi > /tmp/x\n"));
    assert!(text.contains("Content-Type: text/cloud-config"));
    assert!(text.contains(KEY));
    assert!(text.trim_end().ends_with("--==vmr-user-data==--"));
    // A script holding the boundary gets another one.
    let text = merged("#!/bin/sh\necho ==vmr-user-data==\n");
    assert!(text.contains("boundary=\"==xvmr-user-data==\""), "{text}");
    let boothook = merged("#cloud-boothook\necho hi\n");
    assert!(boothook.contains("Content-Type: text/cloud-boothook"));
}

#[test]
fn a_multipart_archive_gets_a_part_at_its_end() {
    let archive = format!(
        "Content-Type: multipart/mixed; boundary=\"XYZ\"\nMIME-Version: 1.0\n\n--XYZ\nContent-Type: text/cloud-config\n\n#cloud-config\nssh_authorized_keys: [{USER_KEY}]\n--XYZ--\n"
    );
    let text = merged(&archive);
    let user_part = text.find(USER_KEY).unwrap();
    let vmr_part = text.find(KEY).unwrap();
    let closing = text.find("--XYZ--").unwrap();
    assert!(user_part < vmr_part && vmr_part < closing, "{text}");
    assert!(text.contains("merge_how"));
    assert_eq!(
        text.matches("--XYZ\r\n").count() + text.matches("--XYZ\n").count(),
        2
    );
    let e = merge_ssh_keys(
        "user_data",
        Some(b"Content-Type: multipart/mixed; boundary=Q\n\n--Q\nx\n"),
        &keys(),
    )
    .unwrap_err();
    assert!(e.reason.contains("closing delimiter --Q--"), "{e}");
}

#[test]
fn unknown_user_data_is_refused_naming_the_field() {
    let e = merge_ssh_keys("user_data", Some(b"\x1f\x8b\x08gzip"), &keys()).unwrap_err();
    assert_eq!(e.field, "user_data");
    assert!(e.reason.contains("#cloud-config"), "{e}");
}

#[test]
fn an_oversized_document_is_refused_before_the_merge_could_shrink_it() {
    // Comments vanish when the document is re-serialised with the key.
    let mut data = b"#cloud-config\n".to_vec();
    while data.len() <= crate::cloudinit::MAX_USER_DATA_BYTES {
        data.extend_from_slice(b"# padding that a YAML round trip drops\n");
    }
    let e = merge_ssh_keys("user_data", Some(&data), &keys()).unwrap_err();
    assert_eq!(e.field, "user_data");
    assert!(e.reason.contains("larger than the limit"), "{e}");
}
