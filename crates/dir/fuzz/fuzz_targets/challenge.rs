//! Proof-of-work challenge texts returned by relays: parsing and checking never panic, and a
//! text that checks is exactly one we would issue.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_dir::challenge::{parse_challenge, ChallengeIssuer};
use wireleap_proto::keys::PublicKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let parsed = parse_challenge(text);
        let issuer = ChallengeIssuer::new([7; 32], 300);
        let relay = PublicKey([1; 32]);
        if issuer.check(text, &relay, 4, 1_700_000_000).is_ok() {
            let p = parsed.unwrap_or_else(|e| panic!("checked but does not parse: {e}"));
            assert_eq!(issuer.issue(p.cost, &relay, p.expiry - 300), text);
        }
    }
});
