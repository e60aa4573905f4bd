//! The database URL resolver never panics and leaves non-SQLite URLs alone.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let out = wireleap_dir::dburl::resolve(text, Path::new("/home/dir"));
        if !text.starts_with("sqlite:") {
            assert_eq!(out, text);
        }
    }
});
