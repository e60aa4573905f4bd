//! wl-payload parser: never panics; accepted payloads re-encode to a header that parses equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::wl_payload::WlPayload;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = WlPayload::parse(text) {
            assert_eq!(WlPayload::parse(&p.to_header_value()).ok(), Some(p.clone()));
            let _ = p.into_request();
        }
    }
});
