//! status.json (protocol.md §13) replayed against `wireleap_proto::status`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use proptest::prelude::*;
use wireleap_proto::status::{Status, HTTP_HEADERS};

fn predefined(name: &str) -> Status {
    match name {
        "OK" => Status::ok(),
        "NoContent" => Status::no_content(),
        "ErrNotFound" => Status::not_found(),
        "ErrRequest" => Status::bad_request(),
        "ErrMethod" => Status::method_not_allowed(),
        "ErrInternal" => Status::internal(),
        "ErrUnpaid" => Status::unpaid(),
        "ErrForbidden" => Status::forbidden(),
        "ErrConflict" => Status::conflict(),
        "ErrGateway" => Status::gateway(),
        "ErrChallenge" => Status::challenge(),
        "ErrUpgrade" => Status::new(202, wireleap_proto::status::UPGRADE_DESCRIPTION),
        "ErrNotImplemented" => Status::not_implemented(),
        "ErrInsufficientBalance" => Status::insufficient_balance(),
        "ErrExpiredPof" => Status::expired_pof(),
        "ErrSneakyPof" => Status::sneaky_pof(),
        "ErrInvalidSig" => Status::invalid_sig(),
        "ErrMissingParam" => Status::missing_param(),
        "ErrNoText" => Status::no_text(),
        "ErrUnknownFormat" => Status::unknown_format(),
        "ErrVersionMismatch" => Status::version_mismatch(),
        "ErrRequestExpired" => Status::request_expired(),
        "ErrSTRejected" => Status::st_rejected(),
        "ErrWithdrawalPending" => Status::withdrawal_pending(),
        "ErrWithdrawalInvalid" => Status::withdrawal_invalid(),
        "ErrSettlementNotOpen" => Status::settlement_not_open(),
        "ErrSettlementClosed" => Status::settlement_closed(),
        "ErrContractPubkeyMismatch" => Status::contract_pubkey_mismatch(),
        "ErrPaymentSystemUnreachable" => Status::payment_system_unreachable(),
        "ErrBadEnrollmentKey" => Status::bad_enrollment_key(),
        other => panic!("no constructor for predefined status {other}"),
    }
}

#[test]
fn predefined_texts() {
    let v = load("status");
    for p in arr(&v, "predefined") {
        let st = predefined(s(p, "name"));
        assert_eq!(st.code as u64, p["code"].as_u64().unwrap());
        assert_eq!(st.description, s(p, "description"));
        assert_eq!(st.cause.as_deref().unwrap_or(""), s(p, "cause"));
        assert_eq!(st.text(), s(p, "error_string"), "{}", s(p, "name"));
        assert_eq!(
            st.is_retryable(),
            p["retryable_by_common_client"].as_bool().unwrap()
        );
        // Parsing the text gives the same status back.
        assert_eq!(Status::parse(s(p, "error_string").as_bytes()).unwrap(), st);
    }
}

#[test]
fn examples_and_http_rendering() {
    let v = load("status");
    for e in arr(&v, "examples") {
        let text = s(e, "error_string");
        let st = Status::parse(text.as_bytes()).unwrap();
        assert_eq!(st.text(), text);
        assert_eq!(st.to_trailer_value(), text.trim_end_matches('\n'));
    }
    let up = Status::upgrade(&semver::Version::new(0, 6, 2));
    assert_eq!(up.text(), s(&arr(&v, "examples")[0], "error_string"));
    assert!(up.is_upgrade_notice());

    for w in arr(&v, "http_write") {
        match s(w, "name") {
            "challenge_written_to_http_response" | "upgrade_notice_written_to_http_response" => {
                let resp = &w["response"];
                let st = if s(w, "name").starts_with("challenge") {
                    Status::challenge()
                } else {
                    up.clone()
                };
                let reply = st.to_http();
                assert_eq!(reply.status as u64, resp["status"].as_u64().unwrap());
                assert_eq!(reply.body, s(resp, "body").as_bytes());
                let mut want = headers(&resp["headers"]);
                want.sort();
                let mut got: Vec<(String, String)> = reply
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                got.sort();
                assert_eq!(got, want);
                assert_eq!(HTTP_HEADERS.len(), 2);
            }
            "written_to_plain_stream" => {
                let relay = wireleap_proto::keys::Keypair::from_seed(seed(1)).public();
                assert_eq!(Status::pong(&relay).text(), s(w, "bytes"));
            }
            "wl_status_header_value" => {
                let value = s(w, "header_value");
                let st = Status::from_header(value).unwrap();
                // The original sends the newline (and HTTP/2 drops it); we send it without.
                assert_eq!(st.text(), value);
                assert!(!st.to_trailer_value().contains('\n'));
                assert_eq!(
                    s(w, "header_name"),
                    wireleap_proto::status::WL_STATUS_HEADER
                );
            }
            other => panic!("unknown http_write case {other}"),
        }
    }
}

#[test]
fn is_and_circuit_error() {
    let v = load("status");
    for c in arr(&v, "is") {
        let a = Status::parse(s(c, "a").as_bytes()).unwrap();
        let b = Status::parse(s(c, "b").as_bytes()).unwrap();
        assert_eq!(a.same_as(&b), c["a_is_b"].as_bool().unwrap(), "{c}");
    }
    for c in arr(&v["is_circuit_error"], "cases") {
        let want = c["is_circuit_error"].as_bool().unwrap();
        match Status::parse(s(c, "status").as_bytes()) {
            Ok(st) => assert_eq!(st.is_circuit_error(), want, "{c}"),
            // A plain error is not a status, hence never a circuit error.
            Err(_) => assert!(!want),
        }
    }
}

#[test]
fn from_header() {
    let v = load("status");
    for c in arr(&v, "from_header") {
        let r = Status::from_header(s(c, "header_value"));
        if c["error"].is_null() {
            let st = r.unwrap();
            assert_eq!(st.text(), s(c, "parsed"));
            assert_eq!(st.same_as(&Status::ok()), c["is_OK"].as_bool().unwrap());
        } else {
            assert!(r.is_err(), "{c}");
        }
    }
}

fn arb_opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("\\PC{1,20}")
}

proptest! {
    #[test]
    fn text_round_trips(code in any::<u16>(), desc in "\\PC{0,30}", origin in arb_opt_text(), cause in arb_opt_text()) {
        let st = Status::new(code, desc).with_origin(origin.unwrap_or_default()).with_cause(cause.unwrap_or_default());
        prop_assert_eq!(Status::parse(st.text().as_bytes()).unwrap(), st.clone());
        prop_assert_eq!(Status::from_header(&st.to_trailer_value()).unwrap(), st.clone());
        let http = st.to_http();
        prop_assert!(http.body.ends_with(b"}\n\n"), "body {:?}", http.body);
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Status::parse(&bytes);
    }
}
