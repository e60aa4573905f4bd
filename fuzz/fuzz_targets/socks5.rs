//! The client's SOCKSv5 decoders (greeting, request, reply, UDP header) and the UDP datagram
//! framing, on arbitrary bytes: no panic, consumed lengths within the input, and whatever
//! decodes re-encodes to a message that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Both modules use only std, so they are compiled in directly rather than pulling the whole
// client (tokio, TLS, HTTP) into the fuzz build.
#[path = "../../crates/client/src/socks/codec.rs"]
#[allow(dead_code)]
mod codec;
#[path = "../../crates/client/src/udpframe.rs"]
#[allow(dead_code)]
mod udpframe;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((g, n))) = codec::decode_greeting(data) {
        assert!(n <= data.len() && n <= codec::MAX_GREETING);
        assert_eq!(codec::decode_greeting(&g.encode()), Ok(Some((g.clone(), n))));
    }
    if let Ok(Some((req, n))) = codec::decode_request(data) {
        assert!(n <= data.len() && n <= codec::MAX_REQUEST);
        let again = req.encode().expect("a decoded request encodes");
        assert_eq!(codec::decode_request(&again), Ok(Some((req, again.len()))));
    }
    if let Ok(Some((reply, n))) = codec::decode_reply(data) {
        assert!(n <= data.len());
        let again = reply.encode().expect("a decoded reply encodes");
        assert_eq!(codec::decode_reply(&again), Ok(Some((reply, again.len()))));
    }
    if let Ok(h) = codec::decode_udp(data) {
        assert!(h.header_len <= data.len());
        let again = codec::encode_udp(&h.addr, &data[h.header_len..]).expect("encodes");
        assert_eq!(codec::decode_udp(&again).map(|x| x.addr), Ok(h.addr));
    }
    let mut at = 0;
    while let Some((payload, used)) = udpframe::decode(&data[at..]) {
        assert_eq!(used, payload.len() + udpframe::PREFIX);
        at += used;
    }
    assert!(at <= data.len());
});
