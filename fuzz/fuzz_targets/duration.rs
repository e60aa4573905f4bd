//! Duration parser: never panics; second-precision results re-parse from their Go text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::duration::Duration;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(d) = Duration::parse(text) {
            let _ = d.to_days_string();
            if d.as_nanos() % 1_000_000_000 == 0 && d.as_nanos() >= 0 {
                assert_eq!(Duration::parse(&d.to_string()).ok(), Some(d));
            }
        }
    }
});
