//! Strict semver parser and interface check: never panic; accepted text round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::version::{parse_strict, Interface};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(v) = parse_strict(text) {
            assert_eq!(v.to_string(), text);
        }
        let _ = Interface::RelayDir.check(text);
    }
});
