//! Release metadata: the envelope parser, the manifest parser and the verifier never panic on
//! any bytes, and whatever parses as a manifest re-encodes to a manifest that parses equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::keys::Keypair;
use wireleap_upgrade::manifest::{Manifest, TrustedKeys, UnverifiedMetadata};

fuzz_target!(|data: &[u8]| {
    let key = Keypair::from_seed([7; 32]);
    if let Ok(trust) = TrustedKeys::new([key.public()], 1) {
        if let Ok(u) = UnverifiedMetadata::from_bytes(data) {
            let _ = u.verify(&trust, "wireleap-relay", 0);
        }
    }
    if let Ok(m) = Manifest::parse(data) {
        let bytes = m.to_bytes().unwrap_or_default();
        assert_eq!(Manifest::parse(&bytes).ok(), Some(m));
    }
});
