//! `shared/vectors/json_rules.json` (protocol.md §1.3), replayed on the pof type as the
//! original did.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod b_support;
use b_support::{arr, load, s};
use wireleap_proto::json;
use wireleap_proto::pof::Pof;

#[test]
fn decode_rules() {
    let v = load("json_rules");
    let cases = arr(&v, "decode");
    assert_eq!(cases.len(), 9);
    for c in cases {
        let name = s(c, "name");
        let got = Pof::from_json(s(c, "json").as_bytes());
        if c["error"].is_null() {
            let pof = got.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                pof.to_json().unwrap(),
                s(c, "decoded_pof").as_bytes(),
                "{name}"
            );
        } else {
            assert!(got.is_err(), "{name}: accepted {got:?}");
        }
    }
}

#[test]
fn html_escaping_on_output() {
    let v = load("json_rules");
    let cases = arr(&v, "encode_html_escaping");
    assert_eq!(cases.len(), 2);

    let pof_case = &cases[0];
    let pof = Pof {
        kind: "a<b&c>".into(),
        ..Pof::default()
    };
    assert_eq!(pof.to_json().unwrap(), s(pof_case, "json").as_bytes());
    assert_eq!(pof.digest(), s(pof_case, "digest"));
    assert_eq!(Pof::from_json(s(pof_case, "json").as_bytes()).unwrap(), pof);

    // The relay entry type is part A's; the escaping rule is the encoder's, so an ordered map
    // with the same members must give the same bytes.
    let entry_case = &cases[1];
    let entry = serde_json::json!({
        "role": "backing",
        "address": "wireleap://relay.example.com:443/path?x=1&y=<2>",
        "versions": {}
    });
    assert_eq!(
        json::to_vec(&entry).unwrap(),
        s(entry_case, "json").as_bytes()
    );
}
