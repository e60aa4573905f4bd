//! Random hex nonces: Idempotency-Key, sharetoken and pof nonces (protocol.md §18).
//!
//! A nonce of length n is the lowercase hex of `n/2 + 1` random bytes, cut to n characters.
//! [`from_bytes`] is the pure derivation (testable against the vectors); [`generate`] draws
//! the bytes from the operating system's CSPRNG.

use rand_core::{OsRng, RngCore};

/// Length of Idempotency-Key and sharetoken nonces.
pub const IDEMPOTENCY_KEY_LEN: usize = 32;
/// Length of pof nonces.
pub const POF_NONCE_LEN: usize = 18;

/// How many random bytes a nonce of length `n` consumes.
pub const fn bytes_needed(n: usize) -> usize {
    n / 2 + 1
}

/// The nonce of length `n` made from `random` (which must hold at least
/// [`bytes_needed`]`(n)` bytes; extra bytes are ignored, missing ones shorten the nonce).
pub fn from_bytes(n: usize, random: &[u8]) -> String {
    let take = bytes_needed(n).min(random.len());
    let mut text = hex::encode(&random[..take]);
    text.truncate(n);
    text
}

/// A fresh nonce of length `n` from the OS random source.
pub fn generate(n: usize) -> String {
    let mut buf = vec![0u8; bytes_needed(n)];
    OsRng.fill_bytes(&mut buf);
    from_bytes(n, &buf)
}

/// A fresh Idempotency-Key (32 lowercase hex characters).
pub fn idempotency_key() -> String {
    generate(IDEMPOTENCY_KEY_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_alphabet() {
        for n in [0, 1, 17, 18, 32, 33] {
            let k = generate(n);
            assert_eq!(k.len(), n);
            assert!(k
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
        assert_ne!(idempotency_key(), idempotency_key());
        assert_eq!(from_bytes(3, &[0xab, 0xcd, 0xef]), "abc");
    }
}
