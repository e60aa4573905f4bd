//! payout_objects.json (protocol.md §19) replayed against `wireleap_proto::payout`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use proptest::prelude::*;
use wireleap_proto::payout::{
    from_json, to_json, Balance, ExportedBalance, PofRequest, Withdrawal, WithdrawalRequest,
    WithdrawalState,
};

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

#[test]
fn withdrawal_requests() {
    let v = load("payout_objects");
    for c in arr(&v, "withdrawal_request") {
        let json = s(c, "json");
        let r: WithdrawalRequest = from_json(json.as_bytes()).unwrap();
        assert_eq!(text(to_json(&r)), json);
        match c["validate_error"].as_str() {
            None => r.validate().unwrap(),
            Some(want) => assert_eq!(r.validate().unwrap_err().to_string(), want),
        }
    }
}

#[test]
fn withdrawals() {
    let v = load("payout_objects");
    for c in arr(&v, "withdrawal") {
        let json = s(c, "json");
        let w: Withdrawal = from_json(json.as_bytes()).unwrap();
        assert_eq!(text(to_json(&w)), json);
        match c["validate_error"].as_str() {
            None => assert_eq!(w.validate().unwrap(), WithdrawalState::Pending),
            Some(want) => assert_eq!(w.validate().unwrap_err().to_string(), want),
        }
    }
}

#[test]
fn balance_and_pof_request() {
    let v = load("payout_objects");
    let b: Balance = from_json(s(&v["balance"], "internal_json").as_bytes()).unwrap();
    assert_eq!(text(to_json(&b)), s(&v["balance"], "internal_json"));
    let exported = b.export().unwrap();
    assert_eq!(text(to_json(&exported)), s(&v["balance"], "exported_json"));
    let back: ExportedBalance = from_json(s(&v["balance"], "exported_json").as_bytes()).unwrap();
    assert_eq!(back, exported);

    let p = &v["pof_request"];
    let r: PofRequest = from_json(s(p, "json").as_bytes()).unwrap();
    assert_eq!(text(to_json(&r)), s(p, "json"));
    assert!(p["validate_error"].is_null());
    r.validate().unwrap();
    let empty: PofRequest = from_json(b"{}").unwrap();
    assert_eq!(
        empty.validate().unwrap_err().to_string(),
        s(p, "empty_validate_error")
    );
    assert!(from_json::<Balance>(br#"{"currency":"usd","value":999}"#).is_err());
}

proptest! {
    #[test]
    fn round_trips(amount in any::<i64>(), kind in "[A-Za-z]{0,6}", dest in "\\PC{0,10}", id in "[a-z0-9_]{0,6}",
                   changed in any::<i64>(), num in any::<i64>(), den in 1i64..1000, qty in any::<i64>()) {
        let req = WithdrawalRequest { amount, kind: kind.clone(), destination: dest.clone() };
        prop_assert_eq!(from_json::<WithdrawalRequest>(&to_json(&req)).unwrap(), req.clone());
        let w = Withdrawal { id, state: "failed".into(), state_changed: changed, amount, kind: kind.clone(), destination: dest, receipt: Some(serde_json::json!({"k": num})) };
        prop_assert_eq!(from_json::<Withdrawal>(&to_json(&w)).unwrap(), w.clone());
        prop_assert_eq!(w.request(), req);
        let b = Balance { currency: kind.clone(), value: wireleap_proto::rational::Rational::new(num, den).unwrap(), pending: None };
        prop_assert_eq!(from_json::<Balance>(&to_json(&b)).unwrap(), b.clone());
        let floor = (num as i128).div_euclid(den as i128) as i64;
        prop_assert_eq!(b.export().unwrap().available, floor);
        let p = PofRequest { quantity: qty, kind, duration: 60, accounting: None };
        prop_assert_eq!(from_json::<PofRequest>(&to_json(&p)).unwrap(), p);
    }

    #[test]
    fn parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = from_json::<Withdrawal>(&body).map(|w| w.validate());
        let _ = from_json::<WithdrawalRequest>(&body).map(|w| w.validate());
        let _ = from_json::<PofRequest>(&body).map(|w| w.validate());
        let _ = from_json::<Balance>(&body).map(|b| b.export());
    }
}
