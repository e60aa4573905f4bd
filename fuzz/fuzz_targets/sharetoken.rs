//! Sharetoken parser and verifier: never panics; whatever parses re-encodes to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::keys::Keypair;
use wireleap_proto::sharetoken::{Sharetoken, VerifyContext};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = Sharetoken::from_json(data) else {
        return;
    };
    let bytes = token.to_json().expect("a parsed sharetoken always serialises");
    assert_eq!(Sharetoken::from_json(&bytes).ok(), Some(token.clone()));
    let relay = Keypair::from_seed([1; 32]).public();
    let contracts = [Keypair::from_seed([2; 32]).public()];
    let enrolled = |_: &wireleap_proto::keys::PublicKey| true;
    let ctx = VerifyContext::new(relay, &contracts, 1_700_000_000).with_enrollment(&enrolled);
    let _ = token.digest();
    let _ = token.verify(&ctx);
    let _ = token.verify_for_settlement(&contracts[0], 1_700_000_600);
    let _ = (token.is_expired(0), token.settleable(0), token.id());
});
