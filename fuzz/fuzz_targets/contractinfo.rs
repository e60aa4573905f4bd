//! Contract /info parser: never panics; accepted objects re-encode to bytes that parse equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::contractinfo::ContractInfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = ContractInfo::from_json(data) {
        let again = ContractInfo::from_json(&info.to_json());
        // Durations below a second do not survive Go's text form ("500ms" reads as minutes),
        // so only compare when every duration is whole seconds.
        let whole = [
            info.servicekey.duration,
            info.settlement.submission_window,
            info.payout.check_period,
        ]
        .iter()
        .all(|d| d.as_nanos() % 1_000_000_000 == 0 && d.as_nanos() >= 0);
        if whole {
            assert_eq!(again.ok(), Some(info));
        }
    }
});
