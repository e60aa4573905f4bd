//! Byte size parser: never panics; accepted values render and re-parse to the same number.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::bytesize::ByteSize;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(b) = text.parse::<ByteSize>() {
            assert_eq!(b.to_string().parse::<ByteSize>().ok(), Some(b));
        }
    }
});
