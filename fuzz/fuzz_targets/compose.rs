//! Compose file parsing and planning: any text gives a plan or an error.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use vmr_domain::compose::{ComposeInput, ComposePlan};

fuzz_target!(|text: &str| {
    // The files a compose file may reference (userDataFile and the like).
    let mut files = BTreeMap::new();
    files.insert(
        "./cloud-init/user-data.yaml".to_owned(),
        b"#cloud-config\n".to_vec(),
    );
    files.insert(
        "./cloud-init/server-a-2.yaml".to_owned(),
        b"#cloud-config\nhostname: a\n".to_vec(),
    );
    let input = ComposeInput {
        yaml: text,
        files: &files,
        project_flag: None,
        directory_name: "fuzz",
    };
    if let Ok(plan) = ComposePlan::parse(&input) {
        // Every planned service can be looked up by its name.
        for service in plan.services() {
            assert!(plan.service(&service.service).is_some());
        }
    }
});
