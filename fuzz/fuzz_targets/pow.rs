//! Proof-of-work parsing and bounded verification: never panic. The challenge fixes cost 4,
//! so the verifier never hashes at a cost chosen by the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::pow;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pow::parse_cost(text);
        let _ = pow::response_cost(text);
        let _ = pow::verify_with_cost("4~fuzz", text);
    }
});
