//! relaylist.json (protocol.md §10) replayed against `wireleap_proto::relaylist`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use proptest::prelude::*;
use wireleap_proto::address::Address;
use wireleap_proto::keys::Keypair;
use wireleap_proto::relayentry::{RelayEntry, Role};
use wireleap_proto::relaylist::{RelayList, RelayListError};
use wireleap_proto::request::{verify_body, AuthError};
use wireleap_proto::version::Component;

fn entry(seed_byte: u8, role: Role, addr: &str) -> RelayEntry {
    RelayEntry::new(
        role,
        Address::parse(addr).unwrap(),
        Keypair::from_seed(seed(seed_byte)).public(),
        semver::Version::new(0, 6, 1),
    )
}

#[test]
fn directory_builds_and_signs_the_exact_body() {
    let v = load("relaylist");
    let mut list = RelayList::default();
    // Inserted out of order: the body must come out sorted.
    assert!(list.insert(entry(
        7,
        Role::Backing,
        "wireleap://relay3.example.com:13490"
    )));
    assert!(list.insert(entry(
        1,
        Role::Fronting,
        "wireleap://relay1.example.com:443/wireleap"
    )));
    assert!(list.insert(entry(
        6,
        Role::Entropic,
        "wireleap://relay2.example.com:13490"
    )));
    let dir = Keypair::from_seed(seed(3));
    let (body, hdrs) = list.sign(&dir);
    assert_eq!(String::from_utf8(body).unwrap(), s(&v, "body"));
    let want = headers(&v["headers"]);
    for (k, val) in hdrs {
        assert!(want.contains(&(k.to_string(), val.clone())), "{k}: {val}");
    }
    assert_eq!(
        list.relays.values().next().map(|e| e.to_body()),
        Some(
            entry(
                1,
                Role::Fronting,
                "wireleap://relay1.example.com:443/wireleap"
            )
            .to_body()
        )
    );
}

#[test]
fn verdicts() {
    let v = load("relaylist");
    let dir = Keypair::from_seed(seed(3)).public();
    let body = s(&v, "body").as_bytes();
    let ok = RelayList::verify(body, &headers(&v["headers"]), &dir).unwrap();
    assert_eq!(
        ok.list.relays.len() as u64,
        v["client_parse"]["relay_count"].as_u64().unwrap()
    );
    assert!(ok.rejected.is_empty());
    assert!(v["verify_error"].is_null());

    for n in arr(&v, "negative") {
        let name = s(n, "name");
        let hdrs = headers(n.get("headers").unwrap_or(&v["headers"]));
        let b = n
            .get("body")
            .and_then(|b| b.as_str())
            .unwrap_or(s(&v, "body"))
            .as_bytes();
        let unpinned = verify_body(Component::Directory, &hdrs, b);
        if let Some(want) = n.get("verify_error") {
            match want.as_str() {
                None => assert!(unpinned.is_ok(), "{name}"),
                Some(w) => assert_eq!(unpinned.as_ref().unwrap_err().to_string(), w, "{name}"),
            }
        }
        let pinned = RelayList::verify(b, &hdrs, &dir);
        match name {
            // The original accepts this list; pinning the directory key refuses it.
            "signed_by_other_key_header_replaced" => assert!(
                matches!(
                    pinned,
                    Err(RelayListError::Auth(AuthError::UnexpectedKey { .. }))
                ),
                "{pinned:?}"
            ),
            "client_dir_version_mismatch" => {
                let err = pinned.unwrap_err();
                assert!(matches!(err, RelayListError::Version(_)));
                let want = s(&n["client_parse"], "error");
                assert!(want.starts_with(&err.to_string()), "{err} vs {want}");
            }
            _ => {
                let err = pinned.unwrap_err();
                if let Some(cp) = n.get("client_parse") {
                    let want = s(cp, "error");
                    assert!(want.ends_with(&err.to_string()), "{err} vs {want}");
                }
            }
        }
    }
}

#[test]
fn bad_entries_are_set_aside() {
    let body = br#"{"wireleap://a.example:1":{"role":"fronting","address":"wireleap://a.example:1","pubkey":"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w","versions":{}},"x":{"role":"nope"},"y":{"versions":{}}}"#;
    let (list, rejected) = RelayList::parse(body).unwrap();
    assert_eq!(list.relays.len(), 1);
    let keys: Vec<&str> = rejected.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["x", "y"]);
    assert!(RelayList::parse(b"[]").is_err());
    assert!(RelayList::parse(b"null").is_err());
}

proptest! {
    #[test]
    fn signed_list_round_trips_and_bit_flips_fail(n in 1usize..4, bit in any::<usize>()) {
        let mut list = RelayList::default();
        for i in 0..n {
            list.insert(entry(10 + i as u8, Role::ALL[i % 3], &format!("wireleap://r{i}.example:{}", 1000 + i)));
        }
        let kp = Keypair::from_seed(seed(3));
        let (body, hdrs) = list.sign(&kp);
        let hdrs: Vec<(String, String)> = hdrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let ok = RelayList::verify(&body, &hdrs, &kp.public()).unwrap();
        prop_assert_eq!(&ok.list, &list);
        let mut flipped = body.clone();
        let b = bit % (flipped.len() * 8);
        flipped[b / 8] ^= 1 << (b % 8);
        prop_assert!(RelayList::verify(&flipped, &hdrs, &kp.public()).is_err());
    }

    #[test]
    fn parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..96)) {
        let _ = RelayList::parse(&body);
    }
}
