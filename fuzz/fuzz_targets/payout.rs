//! Payout object parsers and validators: never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::payout::{from_json, Balance, PofRequest, Withdrawal, WithdrawalRequest};

fuzz_target!(|data: &[u8]| {
    let _ = from_json::<WithdrawalRequest>(data).map(|w| w.validate());
    let _ = from_json::<Withdrawal>(data).map(|w| w.validate());
    let _ = from_json::<PofRequest>(data).map(|p| p.validate());
    let _ = from_json::<Balance>(data).map(|b| b.export());
});
