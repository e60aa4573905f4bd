//! Rational parser: never panics; accepted values render and re-parse equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::rational::Rational;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(r) = text.parse::<Rational>() {
            assert_eq!(r.to_string().parse::<Rational>().ok(), Some(r));
        }
    }
});
