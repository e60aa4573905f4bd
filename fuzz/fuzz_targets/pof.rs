//! Pof, pofs.json and activation request parsers: never panic; parsed values re-encode to
//! themselves.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::keys::Keypair;
use wireleap_proto::pof::{self, ActivationRequest, Pof};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Pof::from_json(data) {
        let bytes = p.to_json().expect("a parsed pof always serialises");
        assert_eq!(Pof::from_json(&bytes).ok(), Some(p.clone()));
        let _ = p.verify(&[Keypair::from_seed([4; 32]).public()], 1_700_000_000);
    }
    if let Ok(list) = pof::parse_pofs_file(data) {
        let file = pof::pofs_file(&list).expect("parsed pofs always serialise");
        assert_eq!(pof::parse_pofs_file(&file).ok(), Some(list));
    }
    if let Ok(req) = ActivationRequest::from_json(data) {
        let bytes = req.to_json().expect("a parsed request always serialises");
        assert_eq!(ActivationRequest::from_json(&bytes).ok(), Some(req));
    }
});
