//! `shared/vectors/keys.json` (protocol.md §1.4, §2).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod b_support;
use b_support::{arr, load, s};
use wireleap_proto::b64;
use wireleap_proto::keys::{self, KeyError, Keypair, PublicKey};

#[test]
fn fixed_keys_and_files() {
    let v = load("keys");
    let ks = arr(&v, "keys");
    assert_eq!(ks.len(), 7);
    for k in ks {
        let name = s(k, "name");
        let seed: [u8; 32] = hex::decode(s(k, "seed_hex")).unwrap().try_into().unwrap();
        let kp = Keypair::from_seed(seed);
        assert_eq!(b64::encode(seed), s(k, "seed_b64url"), "{name}");
        assert_eq!(hex::encode(kp.public().0), s(k, "public_key_hex"), "{name}");
        assert_eq!(kp.public().to_b64(), s(k, "public_key_b64url"), "{name}");
        assert_eq!(
            b64::encode(kp.private_key_64()),
            s(k, "private_key_64_b64url"),
            "{name}"
        );
        assert_eq!(
            keys::seed_file(&kp),
            s(k, "key_seed_file").as_bytes(),
            "{name}"
        );
        assert_eq!(
            keys::pub_file(&kp.public()),
            s(k, "key_pub_file").as_bytes(),
            "{name}"
        );
        let back =
            Keypair::from_private_key_64(&b64::decode(s(k, "private_key_64_b64url")).unwrap())
                .unwrap();
        assert_eq!(back.seed(), seed, "{name}");
        assert_eq!(
            PublicKey::from_b64(s(k, "public_key_b64url")).unwrap(),
            kp.public(),
            "{name}"
        );
    }
}

#[test]
fn load_key_cases() {
    let v = load("keys");
    let cases = arr(&v, "load_key_cases");
    assert_eq!(cases.len(), 11);
    for c in cases {
        let name = s(c, "name");
        let content = s(c, "file_content");
        let load = keys::load_seed_file(content.as_bytes());
        // What the file holds afterwards: the rewrite if one was scheduled, else unchanged.
        let after = load
            .rewrite
            .clone()
            .unwrap_or_else(|| content.as_bytes().to_vec());
        assert_eq!(
            String::from_utf8(after).unwrap(),
            s(c, "file_content_after_load"),
            "{name}"
        );
        if c["ok"].as_bool().unwrap() {
            let kp = load.result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(kp.public().to_b64(), s(c, "public_key_b64url"), "{name}");
            let parsed = keys::parse_seed_file(content.as_bytes()).unwrap();
            assert_eq!(parsed.keypair.public(), kp.public(), "{name}");
            assert_eq!(parsed.rewrite, load.rewrite, "{name}");
        } else {
            let err = load.result.expect_err(name);
            let want = s(c, "error");
            match want.strip_prefix("<home>/key.seed has ") {
                Some(size_text) => {
                    assert!(matches!(err, KeyError::Size { what: "seed", .. }), "{name}");
                    assert_eq!(err.to_string(), size_text, "{name}");
                }
                None => {
                    assert!(matches!(err, KeyError::Encoding(_)), "{name}");
                    assert_eq!(err.to_string(), want, "{name}");
                }
            }
            assert!(keys::parse_seed_file(content.as_bytes()).is_err(), "{name}");
        }
    }
}
