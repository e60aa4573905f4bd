//! Accesskey parser and import checks: never panic; parsed files re-encode to themselves.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::accesskey::AccessKey;

fuzz_target!(|data: &[u8]| {
    let Ok(ak) = AccessKey::from_json(data) else {
        return;
    };
    let bytes = ak.to_json().expect("a parsed accesskey always serialises");
    let again = AccessKey::from_json(&bytes).expect("our own bytes parse");
    assert_eq!(again.to_json().ok(), Some(bytes));
    let _ = ak.validate();
});
