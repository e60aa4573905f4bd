//! Upgrade-report bodies decoded with the Go rules the API uses: never panic; a decoded
//! report has a strict semver version.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_dir::server::UpgradeReport;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = wireleap_proto::json::from_slice::<UpgradeReport>(data) {
        assert!(wireleap_proto::version::parse_strict(&r.version.to_string()).is_ok());
    }
});
