//! interface_versions.json (protocol.md §16) replayed against `wireleap_proto::version`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use proptest::prelude::*;
use wireleap_proto::version::{
    check_compatible, parse_strict, Component, Interface, VersionError, VersionReport,
};

#[test]
fn our_interface_versions() {
    let v = load("interface_versions");
    let map = v["interfaces"].as_object().unwrap();
    assert_eq!(map.len(), Interface::ALL.len());
    for (name, ver) in map {
        let i = Interface::from_name(name).unwrap_or_else(|| panic!("unknown interface {name}"));
        assert_eq!(i.version().to_string(), ver.as_str().unwrap());
    }
    assert_eq!(
        Interface::RelayDir.header_name(),
        "Wireleap-Relay-Dir-Version"
    );
}

#[test]
fn compatibility_cases() {
    let v = load("interface_versions");
    for c in arr(&v, "cases") {
        let ours = parse_strict(s(c, "ours")).unwrap();
        let r = check_compatible(&ours, s(c, "theirs"));
        assert_eq!(r.is_ok(), c["compatible"].as_bool().unwrap(), "{c}");
        match (&r, c["error"].as_str()) {
            (Ok(_), None) => {}
            (Err(e), Some(want)) => assert_eq!(e.to_string(), want, "{c}"),
            _ => panic!("verdict mismatch for {c}: {r:?}"),
        }
    }
}

#[test]
fn version_report_lists_relay_interfaces() {
    let r = VersionReport::new(Component::Relay, semver::Version::new(0, 6, 1));
    let json = String::from_utf8(wireleap_proto::json::to_vec(&r).unwrap()).unwrap();
    assert_eq!(
        json,
        r#"{"software":"0.6.1","interfaces":{"client-relay":"0.2.0","relay-contract":"0.1.0","relay-dir":"0.2.0","relay-relay":"0.2.0"}}"#
    );
}

proptest! {
    #[test]
    fn semver_round_trips(maj in 0u64..1000, min in 0u64..1000, pat in 0u64..1000,
                          pre in proptest::option::of("[a-z][a-z0-9-]{0,5}(\\.[1-9][0-9]{0,3})?"),
                          build in proptest::option::of("[A-Za-z0-9-]{1,6}")) {
        let mut text = format!("{maj}.{min}.{pat}");
        if let Some(p) = &pre { text.push('-'); text.push_str(p); }
        if let Some(b) = &build { text.push('+'); text.push_str(b); }
        let v = parse_strict(&text).unwrap();
        prop_assert_eq!(v.to_string(), text.clone());
        // Compatibility is exactly "same minor".
        let ours = semver::Version::new(0, min, 0);
        prop_assert!(check_compatible(&ours, &text).is_ok());
        let other = semver::Version::new(0, min + 1, 0);
        let incompatible = matches!(check_compatible(&other, &text), Err(VersionError::Incompatible { .. }));
        prop_assert!(incompatible);
    }

    #[test]
    fn strict_agrees_with_semver_crate_when_accepting(text in "[0-9a-z.+-]{0,12}") {
        if let Ok(v) = parse_strict(&text) {
            prop_assert_eq!(semver::Version::parse(&text).unwrap(), v);
        }
    }
}
