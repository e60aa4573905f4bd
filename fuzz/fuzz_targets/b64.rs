//! base64url decoder: never panics; accepted input round-trips through the canonical form,
//! and the partial output on error is what complete groups decode to.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::b64;

fuzz_target!(|data: &[u8]| {
    match b64::decode_partial(data) {
        Ok(bytes) => assert_eq!(b64::decode(b64::encode(&bytes)).ok(), Some(bytes)),
        Err((partial, _)) => assert_eq!(partial.len() % 3, 0),
    }
});
