//! vmr image config blobs: any bytes give a config or an error, and a valid
//! config survives its canonical round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmr_domain::image::ImageConfig;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(config) = ImageConfig::from_json(bytes) {
        let canonical = config.to_json_bytes();
        let again = ImageConfig::from_json(&canonical).expect("a canonical config reads back");
        assert_eq!(again.to_json_bytes(), canonical);
        let _ = config.annotations("2026-01-01T00:00:00Z");
    }
});
