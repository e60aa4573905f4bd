//! Directory /info parser: never panics; accepted objects re-encode to bytes that parse equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::dirinfo::DirInfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = DirInfo::from_json(data) {
        assert_eq!(DirInfo::from_json(&info.to_json()).ok(), Some(info));
    }
});
