//! `shared/vectors/base64url.json` (protocol.md §1.2).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod b_support;
use b_support::{arr, load, s};
use wireleap_proto::b64;
use wireleap_proto::keys::opt_b64;

#[test]
fn encode_cases() {
    let v = load("base64url");
    let cases = arr(&v, "encode");
    assert_eq!(cases.len(), 8);
    for c in cases {
        let bytes = hex::decode(s(c, "bytes_hex")).unwrap();
        assert_eq!(b64::encode(&bytes), s(c, "b64url"));
        assert_eq!(
            serde_json::to_string(&b64::encode(&bytes)).unwrap(),
            s(c, "as_json")
        );
        assert_eq!(b64::decode(s(c, "b64url")).unwrap(), bytes);
    }
}

/// A Go `[]byte`-like JSON field: null stays absent, text is decoded leniently.
fn decode_json_field(json: &str) -> Result<Option<Vec<u8>>, String> {
    match serde_json::from_str::<serde_json::Value>(json).map_err(|e| e.to_string())? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(text) => b64::decode(text).map(Some).map_err(|e| e.to_string()),
        other => Err(format!("not a string: {other}")),
    }
}

#[test]
fn decode_cases() {
    let v = load("base64url");
    let cases = arr(&v, "decode");
    assert_eq!(cases.len(), 16);
    for c in cases {
        let name = s(c, "name");
        let got = decode_json_field(s(c, "json"));
        if c["ok"].as_bool().unwrap() {
            let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.is_none(), c["is_nil"].as_bool().unwrap(), "{name}");
            assert_eq!(
                hex::encode(got.unwrap_or_default()),
                s(c, "bytes_hex"),
                "{name}"
            );
        } else {
            let err = got.expect_err(name);
            let want = s(c, "error");
            // Base64 errors carry the original's text and offset; the type error is JSON's.
            if want.starts_with("illegal base64") {
                assert_eq!(err, want, "{name}");
                let text: String = serde_json::from_str(s(c, "json")).unwrap();
                let (partial, _) = b64::decode_partial(&text).expect_err(name);
                assert_eq!(hex::encode(partial), s(c, "partial_bytes_hex"), "{name}");
            }
        }
    }
}

#[derive(serde::Deserialize, Debug)]
struct WithKey {
    #[serde(default, with = "opt_b64")]
    k: Option<wireleap_proto::keys::PublicKey>,
}

#[test]
fn optional_binary_fields_follow_go() {
    // null and "" are both Go's empty slice; a number is a type error.
    let none: WithKey = wireleap_proto::json::from_slice(br#"{"k":null}"#).unwrap();
    assert!(none.k.is_none());
    let empty: WithKey = wireleap_proto::json::from_slice(br#"{"k":""}"#).unwrap();
    assert!(empty.k.is_none());
    assert!(wireleap_proto::json::from_slice::<WithKey>(br#"{"k":12}"#).is_err());
    assert!(wireleap_proto::json::from_slice::<WithKey>(br#"{"k":"AQ"}"#).is_err());
}
