//! relayentry.json and enroll_replies.json (protocol.md §8) replayed against
//! `wireleap_proto::relayentry`, plus bytesize and address round trips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use proptest::prelude::*;
use wireleap_proto::address::{Address, Host};
use wireleap_proto::bytesize::ByteSize;
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::relayentry::{
    classify_enroll_reply, EnrollReply, EnrollReplyError, RelayEntry, Role, Versions,
};
use wireleap_proto::request::check_response_versions;
use wireleap_proto::version::Interface;

#[test]
fn bodies_round_trip_byte_for_byte() {
    let v = load("relayentry");
    for b in arr(&v, "bodies") {
        let json = s(b, "json");
        let e = RelayEntry::from_body(json.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(e.to_body()).unwrap(),
            json,
            "{}",
            s(b, "name")
        );
    }
}

#[test]
fn relay_builds_the_typical_body() {
    let v = load("relayentry");
    let relay = Keypair::from_seed(seed(1)).public();
    let e = RelayEntry::new(
        Role::Fronting,
        Address::parse("wireleap://relay1.example.com:443/wireleap").unwrap(),
        relay,
        semver::Version::new(0, 6, 1),
    );
    e.validate().unwrap();
    assert_eq!(
        String::from_utf8(e.to_body()).unwrap(),
        s(&arr(&v, "bodies")[0], "json")
    );
    assert_eq!(
        String::from_utf8(e.to_body()).unwrap(),
        s(&v["enroll_request"], "body")
    );

    let mut limited = RelayEntry::new(
        Role::Backing,
        Address::parse("wireleap://relay1.example.com:13490").unwrap(),
        relay,
        semver::Version::new(0, 6, 1),
    );
    limited.key = Some("user:secret".into());
    limited.network_usage_limit = Some(ByteSize::gb(10));
    assert_eq!(
        String::from_utf8(limited.to_body()).unwrap(),
        s(&arr(&v, "bodies")[1], "json")
    );
}

#[test]
fn validation() {
    let empty = RelayEntry::from_body(b"{\"versions\":{}}").unwrap();
    assert!(empty.validate().is_err());
    assert!(RelayEntry::from_body(br#"{"role":"middle"}"#).is_err());
    assert!(RelayEntry::from_body(br#"{"address":"http://x.example:80"}"#).is_err());
    assert!(
        RelayEntry::from_body(br#"{"address":"target://x.example:80"}"#)
            .unwrap()
            .validate()
            .is_err()
    );
    assert!(RelayEntry::from_body(br#"{"versions":{"software":"v1.0.0"}}"#).is_err());
    assert!(RelayEntry::from_body(b"null").is_err());
    let zero = RelayEntry::from_body(br#"{"network_usage_limit":"0GB"}"#).unwrap();
    assert_eq!(zero.network_usage_limit, None);
    // json_rules.json: an address with a query is HTML-escaped in the body.
    let rules = load("json_rules");
    let escaped = s(&arr(&rules, "encode_html_escaping")[1], "json");
    let e = RelayEntry::from_body(escaped.as_bytes()).unwrap();
    assert_eq!(
        e.address.as_ref().map(|a| a.as_str()),
        Some("wireleap://relay.example.com:443/path?x=1&y=<2>")
    );
    assert_eq!(String::from_utf8(e.to_body()).unwrap(), escaped);
    assert!(RelayEntry::from_body(b"[]").is_err());
    let e = RelayEntry::from_body(br#"{"update_channel":"old","upgrade_channel":"new"}"#).unwrap();
    assert_eq!(e.channel(), Some("new"));
    let e = RelayEntry::from_body(br#"{"update_channel":"old"}"#).unwrap();
    assert_eq!(e.channel(), Some("old"));
    assert_eq!(
        String::from_utf8(e.to_body()).unwrap(),
        r#"{"versions":{},"update_channel":"old"}"#
    );
}

#[test]
fn enroll_replies() {
    let v = load("enroll_replies");
    for c in arr(&v, "cases") {
        let name = s(c, "name");
        let http = c["reply_status"].as_u64().unwrap() as u16;
        let body = s(c, "reply_body").as_bytes();
        let hdrs = headers(&c["reply_headers"]);
        let version_check =
            check_response_versions(&[Interface::RelayContract, Interface::RelayDir], &hdrs);
        let reply = classify_enroll_reply(http, body, None);
        match s(c, "relay_outcome") {
            "success" => {
                version_check.unwrap();
                let returned =
                    wireleap_proto::status::Status::parse(s(c, "returned_status").as_bytes())
                        .unwrap();
                match reply.unwrap() {
                    EnrollReply::Ok(st) => {
                        assert!(!c["is_upgrade_notice"].as_bool().unwrap(), "{name}");
                        assert_eq!(st, returned, "{name}");
                    }
                    EnrollReply::Upgrade(ver) => {
                        assert!(c["is_upgrade_notice"].as_bool().unwrap(), "{name}");
                        assert_eq!(Some(ver.to_string()), returned.cause, "{name}");
                    }
                    other => panic!("{name}: unexpected {other:?}"),
                }
            }
            "error" => {
                // Either the version gate, the reply shape, or a refusal status.
                let refused = matches!(reply, Ok(EnrollReply::Error(_)));
                assert!(
                    version_check.is_err() || reply.is_err() || refused,
                    "{name}: {reply:?}"
                );
                if name == "bad_enrollment_key" {
                    let Ok(EnrollReply::Error(st)) = &reply else {
                        panic!("{name}")
                    };
                    assert!(st.same_as(&wireleap_proto::status::Status::bad_enrollment_key()));
                    assert_eq!(st, &wireleap_proto::status::Status::bad_enrollment_key());
                }
                if name == "challenge_without_header" {
                    assert_eq!(reply, Err(EnrollReplyError::MissingChallenge));
                }
                if name == "dir_version_header_mismatch" {
                    assert_eq!(
                        version_check.unwrap_err().to_string(),
                        "invalid server API version: expecting version 0.2.x, got 0.3.0"
                    );
                }
            }
            // The original crashes on `null`; we must return an error.
            p if p.starts_with("PANIC") => {
                assert_eq!(
                    reply,
                    Err(EnrollReplyError::NullBody { http_status: 200 }),
                    "{name}"
                );
            }
            other => panic!("{name}: unknown outcome {other}"),
        }
    }
}

#[test]
fn challenge_and_upgrade_after_pow_are_both_seen() {
    let challenge = wireleap_proto::status::Status::challenge().text();
    assert_eq!(
        classify_enroll_reply(202, challenge.as_bytes(), Some("4~abc")),
        Ok(EnrollReply::Challenge("4~abc".into()))
    );
    // The second reply of a PoW round is classified on its own: its upgrade notice survives.
    let up = wireleap_proto::status::Status::upgrade(&semver::Version::new(0, 6, 2)).text();
    assert_eq!(
        classify_enroll_reply(202, up.as_bytes(), None),
        Ok(EnrollReply::Upgrade(semver::Version::new(0, 6, 2)))
    );
    let bad = wireleap_proto::status::Status::new(202, wireleap_proto::status::UPGRADE_DESCRIPTION)
        .with_cause("soon")
        .text();
    assert!(matches!(
        classify_enroll_reply(202, bad.as_bytes(), None),
        Err(EnrollReplyError::BadUpgradeVersion { .. })
    ));
    assert!(matches!(
        classify_enroll_reply(500, b"oops", None),
        Err(EnrollReplyError::NotStatus {
            http_status: 500,
            ..
        })
    ));
    assert!(matches!(
        classify_enroll_reply(200, b"[]", None),
        Err(EnrollReplyError::NotStatus { .. })
    ));
    assert_eq!(
        classify_enroll_reply(204, b"", None),
        Err(EnrollReplyError::EmptyBody { http_status: 204 })
    );
}

fn arb_host() -> impl Strategy<Value = Host> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5}){0,2}".prop_map(Host::Domain),
        any::<[u8; 4]>().prop_map(|b| Host::Ipv4(b.into())),
        any::<[u8; 16]>().prop_map(|b| Host::Ipv6(b.into())),
    ]
}

fn arb_entry() -> impl Strategy<Value = RelayEntry> {
    (
        proptest::option::of(prop_oneof![
            Just(Role::Fronting),
            Just(Role::Entropic),
            Just(Role::Backing)
        ]),
        proptest::option::of(
            (
                prop_oneof![Just("wireleap"), Just("https")],
                arb_host(),
                1u16..,
                "(/[a-z<>&]{0,8})?",
            )
                .prop_map(|(s, h, p, path)| {
                    Address::parse(&format!("{s}://{h}:{p}{path}")).unwrap()
                }),
        ),
        proptest::option::of(any::<[u8; 32]>().prop_map(PublicKey)),
        proptest::option::of(
            (0u64..5, 0u64..5, 0u64..20).prop_map(|(a, b, c)| semver::Version::new(a, b, c)),
        ),
        proptest::option::of("\\PC{1,12}"),
        proptest::option::of("[a-z]{1,8}"),
        proptest::option::of("[a-z]{1,8}"),
        proptest::option::of((1u64..1 << 20).prop_map(ByteSize)),
    )
        .prop_map(
            |(role, address, pubkey, software, key, update_channel, upgrade_channel, limit)| {
                let mut versions = Versions::default();
                if let Some(sw) = software {
                    versions = Versions::ours(sw);
                }
                RelayEntry {
                    role,
                    address,
                    pubkey,
                    versions,
                    key,
                    update_channel,
                    upgrade_channel,
                    network_usage_limit: limit,
                }
            },
        )
}

proptest! {
    #[test]
    fn entry_round_trips(e in arb_entry()) {
        let body = e.to_body();
        prop_assert_eq!(RelayEntry::from_body(&body).unwrap(), e);
    }

    #[test]
    fn bytesize_round_trips(n in any::<u64>()) {
        let b = ByteSize(n);
        prop_assert_eq!(b.to_string().parse::<ByteSize>().unwrap(), b);
    }

    #[test]
    fn address_round_trips(h in arb_host(), p in 1u16..) {
        let a = Address::target(&h, p).unwrap();
        let again = Address::parse(a.as_str()).unwrap();
        prop_assert_eq!(again.host(), &h);
        prop_assert_eq!(again.port(), p);
        prop_assert_eq!(again, a);
    }

    #[test]
    fn parsers_never_panic(text in "\\PC{0,40}", body in proptest::collection::vec(any::<u8>(), 0..64), code in any::<u16>()) {
        let _ = Address::parse(&text);
        let _ = text.parse::<ByteSize>();
        let _ = RelayEntry::from_body(&body);
        let _ = classify_enroll_reply(code, &body, Some(&text));
    }
}
