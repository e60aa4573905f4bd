//! Relay list parser and verifier: never panic on any body or headers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wireleap_proto::keys::PublicKey;
use wireleap_proto::relaylist::RelayList;

fuzz_target!(|data: &[u8]| {
    if let Ok((list, _rejected)) = RelayList::parse(data) {
        let (again, rejected) = RelayList::parse(&list.to_body()).unwrap_or_default();
        assert!(rejected.is_empty());
        assert_eq!(again, list);
    }
    let headers = vec![
        (
            "Wireleap-Directory-Pubkey".to_string(),
            "7UkoxijRwsbq6QM4kFmVYSlZJzpcY_k2NsFGFKyHN9E".to_string(),
        ),
        (
            "Wireleap-Directory-Signature".to_string(),
            String::from_utf8_lossy(data).into_owned(),
        ),
    ];
    let _ = RelayList::verify(data, &headers, &PublicKey([0; 32]));
});
