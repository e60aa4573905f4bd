//! contractinfo.json and dirinfo.json (protocol.md §11, §12) replayed against
//! `wireleap_proto::{contractinfo, dirinfo, rational}`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use proptest::prelude::*;
use wireleap_proto::contractinfo::{ContractInfo, PofIssuer};
use wireleap_proto::dirinfo::{DirInfo, RoleEnrollment};
use wireleap_proto::duration::Duration;
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::rational::Rational;
use wireleap_proto::relayentry::Role;

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

#[test]
fn contractinfo_examples_round_trip() {
    let v = load("contractinfo");
    for e in arr(&v, "examples") {
        let json = s(e, "json");
        let info = ContractInfo::from_json(json.as_bytes())
            .unwrap_or_else(|err| panic!("{}: {err}", s(e, "name")));
        assert_eq!(text(info.to_json()), json, "{}", s(e, "name"));
    }
    assert_eq!(
        text(ContractInfo::default().to_json()),
        s(&arr(&v, "examples")[3], "json")
    );
}

#[test]
fn contractinfo_built_from_values() {
    let v = load("contractinfo");
    let mut info = ContractInfo {
        pubkey: Some(Keypair::from_seed(seed(2)).public()),
        version: semver::Version::new(0, 5, 0),
        endpoint: Some("https://contract.example.com".into()),
        ..Default::default()
    };
    info.proof_of_funding.push(PofIssuer {
        endpoint: Some("https://ps.example.com/checkout".into()),
        kind: Some("stripe".into()),
        pubkey: Some(Keypair::from_seed(seed(4)).public()),
    });
    info.servicekey.currency = Some("usd".into());
    info.servicekey.value = Some(Rational::new(2001, 2).unwrap());
    info.servicekey.duration = Duration::parse("36h1m30s").unwrap();
    info.settlement.fee_percent = Some("2.5".parse().unwrap());
    info.settlement.submission_window = Duration::from_hours(1);
    info.payout.endpoint = Some("https://ps.example.com/withdrawals".into());
    info.payout.kind = "stripe".into();
    info.payout.check_period = Duration::parse("1d").unwrap();
    info.payout.min_withdrawal = 500;
    info.payout.max_withdrawal = 10000;
    info.payout.info = Some("https://ps.example.com/payout-info".into());
    info.directory.endpoint = Some("https://directory.example.com".into());
    info.directory.public_key = Some(Keypair::from_seed(seed(3)).public());
    info.metadata.operator = Some("Example Operator".into());
    info.metadata.operator_url = Some("https://example.com".into());
    info.metadata.name = Some("Example contract".into());
    info.metadata.terms_of_service = Some("https://example.com/tos".into());
    info.metadata.privacy_policy = Some("https://example.com/privacy".into());
    assert_eq!(text(info.to_json()), s(&arr(&v, "examples")[1], "json"));
}

#[test]
fn contractinfo_parse_cases() {
    let v = load("contractinfo");
    for c in arr(&v, "parse_cases") {
        let r = ContractInfo::from_json(s(c, "json").as_bytes());
        if !c["error"].is_null() {
            assert!(r.is_err(), "{c}");
            continue;
        }
        let info = r.unwrap();
        let opt = |r: &Option<Rational>| r.as_ref().map(|r| r.to_string());
        assert_eq!(
            opt(&info.servicekey.value).as_deref(),
            c["servicekey_value"].as_str()
        );
        assert_eq!(
            opt(&info.settlement.fee_percent).as_deref(),
            c["fee_percent"].as_str()
        );
        assert_eq!(
            info.servicekey.duration.as_nanos() as u64,
            c["servicekey_duration_ns"].as_u64().unwrap()
        );
        assert_eq!(
            info.settlement.submission_window.as_nanos() as u64,
            c["submission_window_ns"].as_u64().unwrap()
        );
    }
    // The semver error text travels as the original words it.
    let err = ContractInfo::from_json(br#"{"version":"0.5"}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("No Major.Minor.Patch elements found"),
        "{err}"
    );
    assert!(ContractInfo::from_json(b"null").is_err());
    assert!(ContractInfo::from_json(br#"{"servicekey":{"duration":10}}"#).is_err());
}

#[test]
fn dirinfo_examples_and_parse_cases() {
    let v = load("dirinfo");
    for e in arr(&v, "examples") {
        let json = s(e, "json");
        let info = DirInfo::from_json(json.as_bytes()).unwrap();
        assert_eq!(text(info.to_json()), json, "{}", s(e, "name"));
    }
    let typical = DirInfo::from_json(s(&arr(&v, "examples")[0], "json").as_bytes()).unwrap();
    assert_eq!(
        typical.client_version(),
        Some(&semver::Version::new(0, 6, 3))
    );
    assert_eq!(
        typical.relay_version("default"),
        Some(&semver::Version::new(0, 6, 1))
    );
    assert_eq!(
        typical.enrollment.get(Role::Backing),
        &RoleEnrollment {
            count: 3,
            restricted: true
        }
    );
    assert_eq!(
        typical.public_key,
        Some(Keypair::from_seed(seed(3)).public())
    );
    assert_eq!(
        text(DirInfo::default().to_json()),
        s(&arr(&v, "examples")[3], "json")
    );
    for c in arr(&v, "parse_cases") {
        let r = DirInfo::from_json(s(c, "json").as_bytes());
        match c["error"].as_str() {
            None => assert_eq!(text(r.unwrap().to_json()), s(c, "reserialized")),
            Some(want) => {
                let err = r.unwrap_err().to_string();
                assert!(err.contains(want), "{err} should contain {want}");
            }
        }
    }
}

fn arb_rational() -> impl Strategy<Value = Rational> {
    (any::<i64>(), 1i64..1_000_000).prop_map(|(n, d)| Rational::new(n, d).unwrap())
}

fn arb_url() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("https://[a-z]{1,8}\\.example(/[a-z<&>]{0,5})?")
}

fn arb_secs() -> impl Strategy<Value = Duration> {
    (0i64..10_000_000).prop_map(Duration::from_secs)
}

prop_compose! {
    fn arb_contractinfo()(pk in proptest::option::of(any::<[u8; 32]>()), ver in (0u64..9, 0u64..9, 0u64..9),
                          endpoint in arb_url(), value in proptest::option::of(arb_rational()),
                          fee in proptest::option::of(arb_rational()), dur in arb_secs(), window in arb_secs(),
                          period in arb_secs(), min in any::<i64>(), payout_ep in arb_url(), kind in "[a-z]{0,6}",
                          dir in arb_url(), dirkey in proptest::option::of(any::<[u8; 32]>()),
                          name in proptest::option::of("\\PC{1,10}")) -> ContractInfo {
        let mut c = ContractInfo { pubkey: pk.map(PublicKey), version: semver::Version::new(ver.0, ver.1, ver.2), endpoint, ..Default::default() };
        c.servicekey.value = value;
        c.servicekey.duration = dur;
        c.settlement.fee_percent = fee;
        c.settlement.submission_window = window;
        c.payout.check_period = period;
        c.payout.min_withdrawal = min;
        c.payout.endpoint = payout_ep;
        c.payout.kind = kind;
        c.directory.endpoint = dir;
        c.directory.public_key = dirkey.map(PublicKey);
        c.metadata.name = name;
        c
    }
}

proptest! {
    #[test]
    fn contractinfo_round_trips(c in arb_contractinfo()) {
        prop_assert_eq!(ContractInfo::from_json(&c.to_json()).unwrap(), c);
    }

    #[test]
    fn dirinfo_round_trips(count in any::<u64>(), restricted in any::<bool>(), chans in proptest::collection::btree_map("[a-z]{1,6}", (0u64..9, 0u64..9, 0u64..9), 0..3), ver in "\\PC{0,8}", key in proptest::option::of(any::<[u8; 32]>())) {
        let mut d = DirInfo { version: ver, public_key: key.map(PublicKey), ..Default::default() };
        d.enrollment.entropic = RoleEnrollment { count, restricted };
        d.upgrade_channels.client = chans.iter().map(|(k, v)| (k.clone(), semver::Version::new(v.0, v.1, v.2))).collect();
        d.update_channels = d.upgrade_channels.client.clone();
        prop_assert_eq!(DirInfo::from_json(&d.to_json()).unwrap(), d);
    }

    #[test]
    fn rational_round_trips(r in arb_rational()) {
        prop_assert_eq!(r.to_string().parse::<Rational>().unwrap(), r.clone());
        let json = serde_json::to_string(&r).unwrap();
        prop_assert_eq!(serde_json::from_str::<Rational>(&json).unwrap(), r);
    }

    #[test]
    fn rational_decimal_matches_fraction(n in -1_000_000i64..1_000_000, places in 0u32..6) {
        let den = 10i64.pow(places);
        let text = if places == 0 { n.to_string() } else {
            format!("{}{}.{:0width$}", if n < 0 { "-" } else { "" }, n.abs() / den, n.abs() % den, width = places as usize)
        };
        prop_assert_eq!(text.parse::<Rational>().unwrap(), Rational::new(n, den).unwrap());
    }

    #[test]
    fn info_parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..80), text in "\\PC{0,20}") {
        let _ = ContractInfo::from_json(&body);
        let _ = DirInfo::from_json(&body);
        let _ = text.parse::<Rational>();
    }
}
