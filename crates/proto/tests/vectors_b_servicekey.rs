//! `shared/vectors/servicekey.json` (protocol.md §4).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod b_support;
use b_support::{arr, i, kp, load, s};
use wireleap_proto::keys::PublicKey;
use wireleap_proto::servicekey::{ContractError, ContractSection, ServiceKey};

#[test]
fn contract_section_is_reproduced_from_inputs() {
    let v = load("servicekey");
    let c = &v["contract_section"];
    let inputs = &c["inputs"];
    let section = ContractSection::new_signed(
        &kp(2),
        i(inputs, "settlement_open"),
        i(inputs, "settlement_close"),
    );
    assert_eq!(section.digest(), s(c, "digest"));
    assert_eq!(
        section.signature.unwrap().to_b64(),
        s(c, "signature_b64url")
    );
    assert_eq!(
        section.public_key.unwrap().to_b64(),
        s(&v["keys"], "contract")
    );
    assert_eq!(section.to_json().unwrap(), s(c, "json").as_bytes());
    let parsed = ContractSection::from_json(s(c, "json").as_bytes()).unwrap();
    assert_eq!(parsed, section);
    assert_eq!(parsed.to_json().unwrap(), s(c, "json").as_bytes());
    assert!(c["verify_error"].is_null());
    assert_eq!(parsed.verify().unwrap().get(), &section);
}

#[test]
fn negatives_fail_with_the_original_text() {
    let v = load("servicekey");
    let negatives = arr(&v, "negative");
    assert_eq!(negatives.len(), 5);
    for n in negatives {
        let name = s(n, "name");
        let section = ContractSection::from_json(s(n, "json").as_bytes()).unwrap();
        assert_eq!(section.digest(), s(n, "digest"), "{name}");
        assert_eq!(
            section.to_json().unwrap(),
            s(n, "json").as_bytes(),
            "{name}"
        );
        let err = section.verify().expect_err(name);
        let want = s(n, "verify_error");
        if let Some(panic) = want.strip_prefix("PANIC: ") {
            // The original crashed (no key); we must refuse instead.
            assert!(panic.contains("bad public key length: 0"), "{name}");
            assert_eq!(err, ContractError::MissingPublicKey, "{name}");
        } else {
            assert!(matches!(err, ContractError::BadSignature { .. }), "{name}");
            assert_eq!(err.to_string(), want, "{name}");
        }
    }
}

#[test]
fn servicekey_object_and_file() {
    let v = load("servicekey");
    let o = &v["servicekey_object"];
    let mut sk = ServiceKey::new(kp(5));
    assert_eq!(sk.public_key().to_b64(), s(&v["keys"], "servicekey_public"));
    let fresh = &v["omitempty"];
    assert_eq!(
        sk.to_json().unwrap(),
        s(fresh, "new_servicekey_before_activation_json").as_bytes()
    );
    assert_eq!(
        ContractSection::default().to_json().unwrap(),
        s(fresh, "empty_contract_json").as_bytes()
    );

    sk.contract = ContractSection::from_json(s(&v["contract_section"], "json").as_bytes()).unwrap();
    assert_eq!(sk.to_json().unwrap(), s(o, "json").as_bytes());
    assert_eq!(
        sk.to_file().unwrap(),
        s(o, "servicekey_file_json").as_bytes()
    );

    for text in [s(o, "json"), s(o, "servicekey_file_json")] {
        let back = ServiceKey::parse(text.as_bytes()).unwrap();
        assert_eq!(back.keypair.seed(), [5; 32]);
        assert_eq!(back.contract, sk.contract);
        assert_eq!(
            back.to_file().unwrap(),
            s(o, "servicekey_file_json").as_bytes()
        );
    }
}

#[test]
fn expiry_boundary() {
    let v = load("servicekey");
    let mut sk = ServiceKey::new(kp(5));
    sk.contract = ContractSection::from_json(s(&v["contract_section"], "json").as_bytes()).unwrap();
    let cases = arr(&v["expiry"], "cases");
    assert!(!cases.is_empty());
    for c in cases {
        let now = i(c, "now");
        let want = c["is_expired"].as_bool().unwrap();
        assert_eq!(sk.is_expired(now), want, "now {now}");
        assert_eq!(sk.contract.is_expired(now), want, "now {now}");
    }
}

#[test]
fn contract_key_is_the_vector_key() {
    let v = load("servicekey");
    let key = PublicKey::from_b64(s(&v["keys"], "contract")).unwrap();
    assert_eq!(key, kp(2).public());
}
