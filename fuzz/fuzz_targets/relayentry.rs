//! Relay entry body parser: never panics; accepted entries re-encode to a body that parses
//! back to the same entry.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::relayentry::RelayEntry;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = RelayEntry::from_body(data) {
        let _ = e.validate();
        assert_eq!(RelayEntry::from_body(&e.to_body()).ok(), Some(e));
    }
});
