//! bcrypt_pow.json (protocol.md §9) replayed against `wireleap_proto::pow`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use proptest::prelude::*;
use wireleap_proto::pow::{self, PowError};
use wireleap_proto::relayentry::{classify_enroll_reply, EnrollReply};

fn salt(hex_text: &str) -> [u8; 16] {
    hex::decode(hex_text).unwrap().try_into().unwrap()
}

#[test]
fn valid_pair() {
    let v = load("bcrypt_pow");
    let c = &v["valid"];
    let challenge = s(c, "challenge");
    assert_eq!(
        pow::parse_cost(challenge).unwrap() as u64,
        c["cost"].as_u64().unwrap()
    );
    let r = pow::solve_with_salt(challenge, salt(s(c, "salt_bytes_hex"))).unwrap();
    assert_eq!(r, s(c, "response"));
    pow::verify(challenge, &r).unwrap();
    pow::verify_with_cost(challenge, &r).unwrap();
}

#[test]
fn invalid_responses() {
    let v = load("bcrypt_pow");
    for c in arr(&v, "invalid") {
        let err = pow::verify(s(c, "challenge"), s(c, "response")).unwrap_err();
        assert_eq!(err.to_string(), s(c, "compare_error"), "{}", s(c, "name"));
    }
    for c in arr(&v["version_prefix_acceptance"], "cases") {
        assert!(c["compare_error"].is_null());
        pow::verify(s(&v["valid"], "challenge"), s(c, "response")).unwrap();
    }
    let l = &v["bcrypt_72_byte_limit"];
    let challenge = s(l, "challenge");
    pow::verify(challenge, s(l, "response")).unwrap();
    // Another challenge with the same first 72 bytes is accepted too (bcrypt truncates).
    let other = format!("{}QQQ", &challenge[..72]);
    pow::verify(&other, s(l, "response")).unwrap();
}

#[test]
fn relay_cost_parsing() {
    let v = load("bcrypt_pow");
    for c in arr(&v, "relay_cost_parsing") {
        let challenge = s(c, "challenge");
        match c.get("relay_error") {
            Some(_) => {
                let err = pow::solve_with_salt(challenge, [0; 16]).unwrap_err();
                if challenge.starts_with("32") {
                    assert_eq!(err.to_string(), s(c, "relay_error"));
                } else {
                    assert!(
                        matches!(err, PowError::BadCost { .. }),
                        "{challenge}: {err}"
                    );
                }
            }
            None => {
                let r = pow::solve_with_salt(challenge, salt(s(c, "salt_bytes_hex"))).unwrap();
                assert_eq!(r, s(c, "response"), "{challenge}");
                assert_eq!(
                    pow::response_cost(&r).unwrap() as u64,
                    c["response_cost"].as_u64().unwrap()
                );
                assert!(c["compare_with_challenge"].is_null());
                pow::verify(challenge, &r).unwrap();
            }
        }
    }
}

#[test]
fn handshake_transcript() {
    let v = load("bcrypt_pow");
    let t = &v["handshake_transcript"];
    let ex = arr(t, "exchange");
    let first = &ex[0];
    let rh = headers(&first["response_headers"]);
    let challenge = rh
        .iter()
        .find(|(k, _)| k == "Wireleap-Directory-Challenge")
        .map(|(_, v)| v.as_str());
    let reply = classify_enroll_reply(
        first["response_status"].as_u64().unwrap() as u16,
        s(first, "response_body").as_bytes(),
        challenge,
    )
    .unwrap();
    let EnrollReply::Challenge(c) = reply else {
        panic!("expected a challenge, got {reply:?}")
    };
    let answer = pow::solve_with_salt(&c, salt(s(t, "bcrypt_salt_hex"))).unwrap();
    let second = headers(&ex[1]["request_headers"]);
    let sent = |name: &str| {
        second
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(sent("Wireleap-Directory-Challenge"), c);
    assert_eq!(sent("Wireleap-Directory-Response"), answer);
    // Idempotency keys come from the recorded random stream: bytes 0-16 then 17-33.
    let random = hex::decode(s(t, "random_bytes_consumed_hex")).unwrap();
    assert_eq!(
        wireleap_proto::nonce::from_bytes(32, &random[17..34]),
        sent("Idempotency-Key")
    );
    assert_eq!(&random[34..50], &salt(s(t, "bcrypt_salt_hex")));
    // Both request bodies and signatures are identical.
    assert_eq!(s(&ex[0], "request_body"), s(&ex[1], "request_body"));
    let second_reply = classify_enroll_reply(
        ex[1]["response_status"].as_u64().unwrap() as u16,
        s(&ex[1], "response_body").as_bytes(),
        None,
    )
    .unwrap();
    assert!(
        matches!(second_reply, EnrollReply::Ok(ref st) if st.same_as(&wireleap_proto::status::Status::ok()))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn solved_challenges_verify_and_others_do_not(opaque in "[A-Za-z0-9]{0,20}", salt in any::<[u8; 16]>(), flip in 0usize..31) {
        let challenge = pow::make_challenge(4, &opaque);
        let r = pow::solve_with_salt(&challenge, salt).unwrap();
        prop_assert!(pow::verify(&challenge, &r).is_ok());
        let other = format!("{challenge}x");
        prop_assert!(pow::verify(&other, &r).is_err());
        // Changing any character of the hash part breaks it.
        let mut bytes = r.into_bytes();
        let i = 29 + flip;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(bytes).unwrap();
        prop_assert!(pow::verify(&challenge, &changed).is_err());
    }

    #[test]
    fn parsers_never_panic(challenge in "\\PC{0,20}", response in "\\PC{0,70}") {
        let _ = pow::parse_cost(&challenge);
        let _ = pow::response_cost(&response);
        let _ = pow::verify_with_cost("4~x", &response);
    }
}
