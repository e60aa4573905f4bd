//! Address parser: never panics; accepted text keeps its exact bytes and re-parses equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::address::Address;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(a) = Address::parse(text) {
            assert_eq!(a.as_str(), text);
            assert_eq!(Address::parse(a.as_str()).ok(), Some(a.clone()));
            let _ = a.host().is_loopback_or_unspecified();
            let _ = a.tunnel_url();
        }
    }
});
