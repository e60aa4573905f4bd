//! Status object parser: never panics; whatever parses re-renders and re-parses to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::status::Status;

fuzz_target!(|data: &[u8]| {
    if let Ok(st) = Status::parse(data) {
        let again = Status::parse(st.text().as_bytes());
        assert_eq!(again.ok(), Some(st));
    }
});
