//! VMFile parsing and validation: any text gives a VMFile or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmr_domain::vmfile::VmFile;

fuzz_target!(|text: &str| {
    if let Ok(vmfile) = VmFile::parse(text) {
        // A valid VMFile always yields a config blob that reads back.
        let config = vmfile.image_config(1 << 30);
        let bytes = config.to_json_bytes();
        vmr_domain::image::ImageConfig::from_json(&bytes)
            .expect("the config of a valid VMFile reads back");
    }
});
