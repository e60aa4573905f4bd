//! Datagram framing on a `protocol: udp` tunnel stream: each datagram travels as a 2-byte
//! big-endian length followed by that many bytes, in both directions.
//!
//! A tunnel stream is a byte stream, so datagram boundaries must be carried explicitly; the
//! original left this implicit (one write per datagram, client.md §15). Our relay uses the
//! same framing for `udp` remotes. This file uses only `std` so the fuzz target can include
//! it by path; the async read/write helpers are in `socks::udp`.

use std::fmt;

/// Bytes of the length prefix.
pub const PREFIX: usize = 2;
/// Largest payload a frame can carry (and the largest UDP payload there is).
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

/// A datagram that cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge(pub usize);

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "datagram of {} bytes is larger than {MAX_PAYLOAD}",
            self.0
        )
    }
}

impl std::error::Error for TooLarge {}

/// Appends one frame for `payload` to `out`.
pub fn encode_into(payload: &[u8], out: &mut Vec<u8>) -> Result<(), TooLarge> {
    let len = u16::try_from(payload.len()).map_err(|_| TooLarge(payload.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// One frame for `payload`.
pub fn encode(payload: &[u8]) -> Result<Vec<u8>, TooLarge> {
    let mut out = Vec::with_capacity(PREFIX + payload.len());
    encode_into(payload, &mut out)?;
    Ok(out)
}

/// Splits the first complete frame off `buf`: its payload and the bytes it used, or `None`
/// when `buf` does not hold a whole frame yet. Any byte sequence is a valid frame stream, so
/// there is no error case; the length bounds what a peer can make us buffer.
pub fn decode(buf: &[u8]) -> Option<(&[u8], usize)> {
    let prefix = buf.get(..PREFIX)?;
    let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    let payload = buf.get(PREFIX..PREFIX + len)?;
    Some((payload, PREFIX + len))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_bytes() {
        assert_eq!(encode(b"abc").unwrap(), [0, 3, b'a', b'b', b'c']);
        assert_eq!(encode(b"").unwrap(), [0, 0]);
        assert_eq!(
            encode(&vec![0; MAX_PAYLOAD + 1]),
            Err(TooLarge(MAX_PAYLOAD + 1))
        );
        assert_eq!(decode(&[0, 3, b'a', b'b']), None);
        assert_eq!(decode(&[0]), None);
        assert_eq!(decode(&[0, 1, 7, 9]), Some((&[7u8][..], 3)));
    }

    proptest! {
        #[test]
        fn round_trips_in_sequence(datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
            let mut stream = Vec::new();
            for d in &datagrams {
                encode_into(d, &mut stream).unwrap();
            }
            let mut at = 0;
            let mut got = Vec::new();
            while let Some((payload, used)) = decode(&stream[at..]) {
                got.push(payload.to_vec());
                at += used;
            }
            prop_assert_eq!(at, stream.len());
            prop_assert_eq!(got, datagrams);
        }

        #[test]
        fn decode_stays_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Some((payload, used)) = decode(&bytes) {
                prop_assert!(used <= bytes.len());
                prop_assert_eq!(payload.len() + PREFIX, used);
            }
        }
    }
}
