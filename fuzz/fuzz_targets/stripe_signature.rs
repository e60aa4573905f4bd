//! ps-stripe's `Stripe-Signature` header parser and webhook verifier: never panic, and a
//! parsed header renders to a text that parses to the same header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_ps_stripe::signature::{verify, SignatureHeader, WebhookSecret};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (header, body) = data.split_at(split);
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    if let Ok(parsed) = SignatureHeader::parse(header) {
        assert_eq!(SignatureHeader::parse(&parsed.render()), Ok(parsed.clone()));
        let _ = verify(
            header,
            body,
            &[WebhookSecret::new("whsec_fuzz")],
            parsed.timestamp,
            300,
        );
    }
});
