//! Signed-request verification: never panics on arbitrary key, signature and version headers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::request::{check_request_versions, verify_body};
use wireleap_proto::version::{Component, Interface};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\u{0}');
    let pk = parts.next().unwrap_or_default().to_string();
    let sig = parts.next().unwrap_or_default().to_string();
    let ver = parts.next().unwrap_or_default().to_string();
    let body = parts.next().unwrap_or_default();
    let headers = vec![
        ("Wireleap-Relay-Pubkey".to_string(), pk),
        ("Wireleap-Relay-Signature".to_string(), sig),
        ("Wireleap-Relay-Dir-Version".to_string(), ver),
    ];
    let _ = verify_body(Component::Relay, &headers, body.as_bytes());
    let _ = check_request_versions(&[Interface::RelayDir], &headers);
});
