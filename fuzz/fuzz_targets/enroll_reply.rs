//! Directory reply classification: never panics on any status, body or challenge header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::relayentry::classify_enroll_reply;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let code = u16::from_be_bytes([data[0], data[1]]);
    let split = (data[2] as usize).min(data.len() - 3);
    let (challenge, body) = data[3..].split_at(split);
    let challenge = std::str::from_utf8(challenge).ok();
    let _ = classify_enroll_reply(code, body, challenge);
});
