//! config.json of the directory: parsing and validation never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_daemon::Config as _;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = serde_json::from_slice::<wireleap_dir::DirectoryConfig>(data) {
        let _ = c.validate();
    }
});
