//! durations.json (protocol.md §17) replayed against `wireleap_proto::duration`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use proptest::prelude::*;
use serde::Deserialize;
use wireleap_proto::duration::{self, Duration};

#[derive(Deserialize)]
struct Lenient {
    #[serde(default = "five_minutes", deserialize_with = "duration::lenient")]
    d: Duration,
}

fn five_minutes() -> Duration {
    Duration::from_mins(5)
}

#[test]
fn parse_and_format_cases() {
    let v = load("durations");
    for c in arr(&v, "cases") {
        let input = s(c, "input");
        let r = Duration::parse(input);
        if c["ok"].as_bool().unwrap() {
            let d = r.unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(
                d.as_nanos() as u64,
                c["nanoseconds"].as_u64().unwrap(),
                "{input:?}"
            );
            assert_eq!(d.to_string(), s(c, "go_string"), "{input:?}");
            assert_eq!(d.to_days_string(), s(c, "string_method"), "{input:?}");
            let json = String::from_utf8(wireleap_proto::json::to_vec(&d).unwrap()).unwrap();
            assert_eq!(json, s(c, "marshal_json"));
            // Strict serde reads it back.
            let back: Duration = serde_json::from_str(&json).unwrap();
            assert_eq!(back, d);
        } else {
            assert!(r.is_err(), "{input:?} must fail");
            // Our strict serde names the bad value instead of ignoring it.
            let json = serde_json::to_string(input).unwrap();
            let err = serde_json::from_str::<Duration>(&json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("{input:?}")), "{err}");
        }
        // The lenient reader (for Go peers' wire objects) keeps the default like the original.
        let json = format!("{{\"d\":{}}}", serde_json::to_string(input).unwrap());
        let lenient: Lenient = serde_json::from_str(&json).unwrap();
        let want = c["json_unmarshal_over_default_5m_ns"].as_u64().unwrap() as i64;
        // The original keeps the previous value (5m here); ours yields zero for a fresh field.
        if c["ok"].as_bool().unwrap() {
            assert_eq!(lenient.d.as_nanos(), want, "{input:?}");
        } else {
            assert_eq!(lenient.d, Duration::ZERO, "{input:?}");
        }
    }
}

#[test]
fn non_string_json() {
    let v = load("durations");
    for c in arr(&v, "non_string_json") {
        let json = format!("{{\"d\":{}}}", s(c, "json"));
        let r = serde_json::from_str::<Lenient>(&json);
        if c["error"].is_null() {
            assert_eq!(r.unwrap().d, Duration::ZERO);
        } else {
            assert!(r.is_err(), "{json}");
            assert!(serde_json::from_str::<Duration>(s(c, "json")).is_err());
        }
    }
}

proptest! {
    #[test]
    fn go_text_round_trips_at_second_precision(secs in 0i64..9_000_000_000) {
        let d = Duration::from_secs(secs);
        prop_assert_eq!(Duration::parse(&d.to_string()).unwrap(), d);
        prop_assert_eq!(serde_json::from_str::<Duration>(&serde_json::to_string(&d).unwrap()).unwrap(), d);
    }

    #[test]
    fn days_form_parses_back(secs in 0i64..9_000_000_000) {
        let d = Duration::from_secs(secs);
        prop_assert_eq!(Duration::parse(&d.to_days_string()).unwrap(), d);
    }

    #[test]
    fn parse_never_panics(text in "\\PC{0,24}") {
        let _ = Duration::parse(&text);
    }
}
