//! Contract section and servicekey file parsers: never panic; parsed values re-encode to
//! themselves.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::servicekey::{ContractSection, ServiceKey};

fuzz_target!(|data: &[u8]| {
    if let Ok(section) = ContractSection::from_json(data) {
        let bytes = section.to_json().expect("a parsed section always serialises");
        assert_eq!(ContractSection::from_json(&bytes).ok(), Some(section.clone()));
        let _ = section.verify();
    }
    if let Ok(sk) = ServiceKey::parse(data) {
        let file = sk.to_file().expect("a parsed servicekey always serialises");
        let again = ServiceKey::parse(&file).expect("our own file parses");
        assert_eq!(again.public_key(), sk.public_key());
        assert_eq!(again.contract, sk.contract);
    }
});
