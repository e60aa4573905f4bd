//! `shared/vectors/sharetoken.json` (protocol.md §5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod b_support;
use b_support::{arr, i, kp, load, s};
use wireleap_proto::keys::PublicKey;
use wireleap_proto::servicekey::ContractSection;
use wireleap_proto::sharetoken::{Sharetoken, SharetokenError, VerifyContext};

fn contract_section() -> ContractSection {
    let sk = load("servicekey");
    ContractSection::from_json(s(&sk["contract_section"], "json").as_bytes()).unwrap()
}

#[test]
fn valid_token_is_reproduced_from_inputs() {
    let v = load("sharetoken");
    let valid = &v["valid"];
    let inputs = &valid["inputs"];
    assert_eq!(i(inputs, "version"), 0);
    assert_eq!(s(inputs, "share_key"), "");
    let token = Sharetoken::new_signed(
        &kp(5),
        contract_section(),
        kp(1).public(),
        i(inputs, "timestamp"),
        s(inputs, "nonce").to_string(),
    );
    assert_eq!(token.digest().unwrap(), s(valid, "digest"));
    assert_eq!(token.signature.to_b64(), s(valid, "signature_b64url"));
    assert_eq!(token.to_json().unwrap(), s(valid, "json").as_bytes());

    let parsed = Sharetoken::from_json(s(valid, "json").as_bytes()).unwrap();
    assert_eq!(parsed, token);
    assert_eq!(parsed.to_json().unwrap(), s(valid, "json").as_bytes());
    assert!(valid["verify_error"].is_null());
    parsed.verify_signatures().unwrap();
    assert_eq!(arr(&v, "digest_fields_in_order").len(), 10);
}

#[test]
fn every_negative_fails_at_its_stage() {
    let v = load("sharetoken");
    let negatives = arr(&v, "negative");
    assert_eq!(negatives.len(), 13);
    for n in negatives {
        let name = s(n, "name");
        let want = s(n, "verify_error");
        let parsed = Sharetoken::from_json(s(n, "json").as_bytes());
        if let Some(panic) = want.strip_prefix("PANIC: ") {
            // The original crashed; we refuse with an error, at parse time for a wrong-size
            // key, at verification for a missing contract.
            match parsed {
                Err(_) => assert!(panic.contains("bad public key length"), "{name}"),
                Ok(t) => {
                    assert!(n["digest"].is_null(), "{name}");
                    assert_eq!(t.digest(), Err(SharetokenError::MissingContract), "{name}");
                    assert_eq!(
                        t.verify_signatures(),
                        Err(SharetokenError::MissingContract),
                        "{name}"
                    );
                }
            }
            continue;
        }
        let t = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.digest().unwrap(), s(n, "digest"), "{name}");
        assert_eq!(t.to_json().unwrap(), s(n, "json").as_bytes(), "{name}");
        let err = t.verify_signatures().expect_err(name);
        assert_eq!(err.to_string(), want, "{name}");
        let stage_ok = match want {
            "sharetoken client signature is invalid" => err == SharetokenError::BadClientSignature,
            "contract public key is null" => err == SharetokenError::MissingContractKey,
            _ => matches!(err, SharetokenError::BadContractSignature(_)),
        };
        assert!(stage_ok, "{name}: wrong stage {err:?}");
    }
}

#[test]
fn timing_predicates() {
    let v = load("sharetoken");
    let t = Sharetoken::from_json(s(&v["valid"], "json").as_bytes()).unwrap();
    let cases = arr(&v["timing"], "cases");
    assert_eq!(cases.len(), 5);
    for c in cases {
        let now = i(c, "now");
        assert_eq!(
            t.is_expired(now),
            c["is_expired"].as_bool().unwrap(),
            "now {now}"
        );
        assert_eq!(
            t.settleable(now),
            c["is_settling"].as_bool().unwrap(),
            "now {now}"
        );
    }
}

#[test]
fn relay_acceptance_order() {
    let v = load("sharetoken");
    let cases = arr(&v["relay_acceptance"], "cases");
    assert_eq!(cases.len(), 5);
    for c in cases {
        let name = s(c, "name");
        let relay = PublicKey::from_b64(s(c, "relay_public_key")).unwrap();
        let trusted: Vec<PublicKey> = arr(c, "trusted_contracts")
            .iter()
            .map(|k| PublicKey::from_b64(k.as_str().unwrap()).unwrap())
            .collect();
        let t = Sharetoken::from_json(s(c, "json").as_bytes()).unwrap();
        let ctx = VerifyContext::new(relay, &trusted, i(c, "now"));
        let got = t.verify(&ctx);
        match c["error"].as_str() {
            None => assert_eq!(got.unwrap().get(), &t, "{name}"),
            Some(want) => {
                let err = got.expect_err(name);
                assert_eq!(err.to_string(), want, "{name}");
                let stage_ok = match name {
                    "wrong_relay" => matches!(err, SharetokenError::RelayMismatch { .. }),
                    "expired_at_settlement_open" => err == SharetokenError::Expired,
                    "untrusted_contract" => err == SharetokenError::UntrustedContract,
                    "bad_client_signature" => err == SharetokenError::BadClientSignature,
                    other => panic!("unknown case {other}"),
                };
                assert!(stage_ok, "{name}: wrong stage {err:?}");
            }
        }
    }
}

#[test]
fn enrollment_stage_comes_first() {
    // Not in the vector file (composed there without it); protocol.md §5 puts it first.
    let v = load("sharetoken");
    let t = Sharetoken::from_json(s(&v["valid"], "json").as_bytes()).unwrap();
    let contract = kp(2).public();
    let not_enrolled = |_: &PublicKey| false;
    // Wrong relay AND not enrolled: the enrollment text wins.
    let ctx = VerifyContext::new(
        kp(6).public(),
        std::slice::from_ref(&contract),
        1_700_000_000,
    )
    .with_enrollment(&not_enrolled);
    assert_eq!(
        t.verify(&ctx).unwrap_err().to_string(),
        format!("relay contract not available: {contract}")
    );
    let ctx = VerifyContext::new(kp(1).public(), &[], 1_700_000_000).with_enrollment(&not_enrolled);
    assert_eq!(
        t.verify(&ctx).unwrap_err().to_string(),
        format!("relay contract not found: {contract}")
    );
}
