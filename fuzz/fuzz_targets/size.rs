//! Sizes (`20GiB`, `512M`, ...): parse without panicking or overflowing, and
//! a parsed size prints back to the same number of bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmr_domain::units::ByteSize;

fuzz_target!(|text: &str| {
    if let Ok(size) = text.parse::<ByteSize>() {
        let printed = size.to_string();
        let again: ByteSize = printed.parse().expect("a printed size parses again");
        assert_eq!(again, size, "round trip of {printed:?}");
    }
});
