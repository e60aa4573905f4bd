//! `shared/vectors/accesskey.json` (protocol.md §6).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod b_support;
use b_support::{arr, kp, load, s};
use wireleap_proto::accesskey::{self, AccessKey, AccessKeyError, AccessKeyField};
use wireleap_proto::pof::Pof;

#[test]
fn file_bytes() {
    let v = load("accesskey");
    let text = s(&v, "json");
    let pofs: Vec<Pof> = arr(&load("pof"), "valid")
        .iter()
        .map(|c| Pof::from_json(s(c, "json").as_bytes()).unwrap())
        .collect();
    let ak = AccessKey::new(
        "https://contract.example.com".into(),
        kp(2).public(),
        pofs.clone(),
    );
    assert_eq!(ak.to_json().unwrap(), text.as_bytes());
    let parsed = AccessKey::from_json(text.as_bytes()).unwrap();
    assert_eq!(parsed, ak);
    assert_eq!(parsed.to_json().unwrap(), text.as_bytes());

    let imported = AccessKey::import(text.as_bytes()).unwrap();
    assert_eq!(imported.version, accesskey::SUPPORTED_VERSION);
    assert_eq!(imported.endpoint, "https://contract.example.com");
    assert_eq!(imported.contract, kp(2).public());
    assert_eq!(imported.pofs, pofs);
    assert_eq!(arr(&v, "field_order").len(), 3);
}

#[test]
fn empty_accesskey() {
    let v = load("accesskey");
    let text = s(&v, "empty_accesskey_json");
    assert_eq!(AccessKey::default().to_json().unwrap(), text.as_bytes());
    let parsed = AccessKey::from_json(text.as_bytes()).unwrap();
    assert_eq!(parsed, AccessKey::default());
    match parsed.validate() {
        Err(AccessKeyError::Missing(fields)) => assert_eq!(
            fields,
            [
                AccessKeyField::Version,
                AccessKeyField::Contract,
                AccessKeyField::Pofs
            ]
        ),
        other => panic!("accepted an empty accesskey: {other:?}"),
    }
}

#[test]
fn version_compatibility_table() {
    let v = load("accesskey");
    let table = &v["version_compatibility"];
    assert_eq!(
        s(table, "supported"),
        accesskey::SUPPORTED_VERSION.to_string()
    );
    let cases = arr(table, "cases");
    assert_eq!(cases.len(), 9);
    for c in cases {
        let text = s(c, "version");
        let compatible = c["compatible"].as_bool().unwrap();
        let got = accesskey::check_version(text);
        assert_eq!(got.is_ok(), compatible, "{text}: {got:?}");
        match c["parse_error"].as_str() {
            Some(want) => match got {
                Err(AccessKeyError::BadVersion(e)) => assert_eq!(e.to_string(), want, "{text}"),
                other => panic!("{text}: expected a parse error, got {other:?}"),
            },
            None if !compatible => {
                assert!(
                    matches!(got, Err(AccessKeyError::IncompatibleVersion { .. })),
                    "{text}"
                )
            }
            None => {}
        }
        // The same verdict through a whole file.
        let mut file: serde_json::Value = serde_json::from_str(s(&v, "json")).unwrap();
        file["version"] = serde_json::Value::String(text.into());
        let bytes = serde_json::to_vec(&file).unwrap();
        assert_eq!(AccessKey::import(&bytes).is_ok(), compatible, "{text}");
    }
}
