//! Image references: parse, and a parsed reference prints back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmr_domain::image::{Digest, Reference};

fuzz_target!(|text: &str| {
    if let Ok(reference) = text.parse::<Reference>() {
        let printed = reference.to_string();
        let again: Reference = printed.parse().expect("a printed reference parses again");
        assert_eq!(again, reference, "round trip of {printed:?}");
    }
    if let Ok(digest) = text.parse::<Digest>() {
        assert_eq!(digest.to_string().parse::<Digest>().ok(), Some(digest));
    }
});
