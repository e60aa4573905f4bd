//! `key.seed` loader: never panics; a scheduled rewrite loads to the same seed without
//! scheduling another.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::keys;

fuzz_target!(|data: &[u8]| {
    let first = keys::load_seed_file(data);
    if let Some(rewrite) = &first.rewrite {
        let second = keys::load_seed_file(rewrite);
        assert!(second.rewrite.is_none());
        assert_eq!(
            first.result.as_ref().ok().map(|k| k.seed()),
            second.result.as_ref().ok().map(|k| k.seed())
        );
    }
});
