//! `shared/vectors/pof.json` (protocol.md §3).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod b_support;
use b_support::{arr, i, kp, load, s};
use wireleap_proto::keys::PublicKey;
use wireleap_proto::pof::{self, ActivationRequest, Pof, PofError};

fn issuer_key(v: &serde_json::Value) -> PublicKey {
    let text = s(v, "issuer_key");
    let b64 = text.rsplit(' ').next().unwrap();
    let key = PublicKey::from_b64(b64).unwrap();
    assert_eq!(key, kp(4).public());
    key
}

#[test]
fn valid_pofs_are_reproduced_from_inputs() {
    let v = load("pof");
    let issuer = issuer_key(&v);
    let valid = arr(&v, "valid");
    assert_eq!(valid.len(), 2);
    for c in valid {
        let name = s(c, "name");
        let inputs = &c["inputs"];
        let p = Pof::new_signed(
            &kp(4),
            s(inputs, "type").into(),
            i(inputs, "expiration"),
            s(inputs, "nonce").into(),
        );
        assert_eq!(p.digest(), s(c, "digest"), "{name}");
        assert_eq!(
            p.signature.unwrap().to_b64(),
            s(c, "signature_b64url"),
            "{name}"
        );
        assert_eq!(p.to_json().unwrap(), s(c, "json").as_bytes(), "{name}");
        let parsed = Pof::from_json(s(c, "json").as_bytes()).unwrap();
        assert_eq!(parsed, p, "{name}");
        assert_eq!(parsed.to_json().unwrap(), s(c, "json").as_bytes(), "{name}");
        assert!(c["signature_verifies_with_issuer_key"].as_bool().unwrap());
        parsed.verify_signature(&[issuer]).unwrap();
        // Before expiry the full check passes and vouches for the same pof.
        let verified = parsed
            .verify(&[issuer], i(inputs, "expiration") - 1)
            .unwrap();
        assert_eq!(verified.get(), &p);
    }
}

#[test]
fn negatives_are_rejected() {
    let v = load("pof");
    let issuer = issuer_key(&v);
    let negatives = arr(&v, "negative");
    assert_eq!(negatives.len(), 6);
    for n in negatives {
        let name = s(n, "name");
        let p = Pof::from_json(s(n, "json").as_bytes()).unwrap();
        assert_eq!(p.digest(), s(n, "digest"), "{name}");
        assert_eq!(p.to_json().unwrap(), s(n, "json").as_bytes(), "{name}");
        assert!(!n["signature_verifies_with_issuer_key"].as_bool().unwrap());
        assert!(
            matches!(
                p.verify_signature(&[issuer]),
                Err(PofError::BadSignature { .. })
            ),
            "{name}"
        );
    }
    // The one signed by the contract key verifies under that key: the issuer set matters.
    let other = negatives
        .iter()
        .find(|n| s(n, "name") == "signed_by_other_key")
        .unwrap();
    let p = Pof::from_json(s(other, "json").as_bytes()).unwrap();
    p.verify_signature(&[issuer, kp(2).public()]).unwrap();
}

#[test]
fn expiry_boundary() {
    let v = load("pof");
    let issuer = issuer_key(&v);
    let e = &v["expiry"];
    let which = s(e, "pof");
    let c = arr(&v, "valid")
        .iter()
        .find(|c| s(c, "name") == which)
        .unwrap();
    let p = Pof::from_json(s(c, "json").as_bytes()).unwrap();
    let cases = arr(e, "cases");
    assert_eq!(cases.len(), 3);
    for case in cases {
        let now = i(case, "now");
        let expired = case["is_expired"].as_bool().unwrap();
        assert_eq!(p.is_expired(now), expired, "now {now}");
        assert_eq!(
            matches!(p.verify(&[issuer], now), Err(PofError::Expired { .. })),
            expired,
            "now {now}"
        );
    }
}

#[test]
fn empty_activation_and_file_layouts() {
    let v = load("pof");
    assert_eq!(
        Pof::default().to_json().unwrap(),
        s(&v["omitempty"], "empty_pof_json").as_bytes()
    );

    let valid = arr(&v, "valid");
    let dummy = Pof::from_json(s(&valid[0], "json").as_bytes()).unwrap();
    let stripe = Pof::from_json(s(&valid[1], "json").as_bytes()).unwrap();

    let req = ActivationRequest::new(kp(5).public(), dummy.clone());
    let want = s(&v["servicekey_activation_request"], "json");
    assert_eq!(req.to_json().unwrap(), want.as_bytes());
    assert_eq!(ActivationRequest::from_json(want.as_bytes()).unwrap(), req);
    assert_eq!(ActivationRequest::default().to_json().unwrap(), b"{}");

    let file = s(&v["pofs_file_json"], "content");
    let pofs = vec![dummy.clone(), stripe.clone()];
    assert_eq!(pof::pofs_file(&pofs).unwrap(), file.as_bytes());
    assert_eq!(pof::parse_pofs_file(file.as_bytes()).unwrap(), pofs);

    // De-duplication is by digest: re-importing the same pofs adds nothing.
    let mut merged = vec![dummy];
    assert_eq!(pof::merge_pofs(&mut merged, pofs.clone()), 1);
    assert_eq!(merged, pofs);
    assert_eq!(pof::merge_pofs(&mut merged, pofs.clone()), 0);
}
