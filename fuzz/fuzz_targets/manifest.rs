//! OCI image manifests as a registry serves them: any bytes give a manifest
//! or an error, and a valid manifest survives its canonical round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmr_domain::image::Manifest;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(manifest) = Manifest::from_json(bytes) {
        let canonical = manifest.to_json_bytes();
        let again = Manifest::from_json(&canonical).expect("a canonical manifest reads back");
        assert_eq!(again.digest(), manifest.digest());
        let _ = manifest.disk_size();
    }
});
