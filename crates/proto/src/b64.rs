//! base64url without padding, as the original encodes and decodes it (protocol.md §1.2).
//!
//! Encoding is canonical. Decoding is deliberately as lenient as the original and no more:
//! `=`, `+`, `/` and spaces are errors, CR and LF are skipped, and non-zero unused trailing
//! bits are accepted (`AR` decodes like `AQ`).

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

const ENCODER: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false),
);

/// A base64url text that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    /// What was wrong, with the offending byte offset, worded as the original words it
    /// (`illegal base64 data at input byte N`).
    pub reason: String,
}

impl DecodeError {
    fn at(offset: usize) -> Self {
        Self {
            reason: format!("illegal base64 data at input byte {offset}"),
        }
    }
}

/// Encodes bytes as canonical base64url without padding.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    ENCODER.encode(bytes)
}

/// Decodes base64url without padding, skipping CR and LF as the original does.
pub fn decode(text: impl AsRef<[u8]>) -> Result<Vec<u8>, DecodeError> {
    decode_partial(text).map_err(|(_, e)| e)
}

/// Like [`decode`], but on failure also returns the bytes the original's decoder had already
/// written: 3 per complete 4-symbol group before the group holding the error. Key loading
/// reports that length ("invalid seed size: 30" for a padded seed), so it is part of the
/// observable behaviour.
pub fn decode_partial(text: impl AsRef<[u8]>) -> Result<Vec<u8>, (Vec<u8>, DecodeError)> {
    let text = text.as_ref();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut group = [0u8; 4];
    let mut filled = 0;
    for (offset, &byte) in text.iter().enumerate() {
        if byte == b'\r' || byte == b'\n' {
            continue;
        }
        let Some(sextet) = sextet(byte) else {
            return Err((out, DecodeError::at(offset)));
        };
        group[filled] = sextet;
        filled += 1;
        if filled == 4 {
            push_group(&mut out, &group, 4);
            filled = 0;
        }
    }
    match filled {
        0 => Ok(out),
        // One leftover symbol carries only 6 bits: not a whole byte. The original reports the
        // position of the last input byte.
        1 => Err((out, DecodeError::at(text.len().saturating_sub(1)))),
        n => {
            push_group(&mut out, &group, n);
            Ok(out)
        }
    }
}

/// Decodes base64url into exactly `N` bytes.
pub fn decode_array<const N: usize>(text: impl AsRef<[u8]>) -> Result<[u8; N], DecodeError> {
    let bytes = decode(text)?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| DecodeError {
        reason: format!("expected {N} bytes, got {len}"),
    })
}

fn sextet(byte: u8) -> Option<u8> {
    match byte {
        b'A'..=b'Z' => Some(byte - b'A'),
        b'a'..=b'z' => Some(byte - b'a' + 26),
        b'0'..=b'9' => Some(byte - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Appends the `symbols - 1` bytes a group of `symbols` sextets encodes; unused trailing bits
/// are dropped unchecked, as in the original's non-strict mode.
fn push_group(out: &mut Vec<u8>, group: &[u8; 4], symbols: usize) {
    let word = u32::from(group[0]) << 18
        | u32::from(group[1]) << 12
        | u32::from(group[2]) << 6
        | u32::from(group[3]);
    let bytes = word.to_be_bytes();
    out.extend_from_slice(&bytes[1..symbols]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_where_the_original_is() {
        assert_eq!(decode("AR"), Ok(vec![1]));
        assert_eq!(decode("A\r\nQ"), Ok(vec![1]));
        assert!(decode("AQ==").is_err());
        assert!(decode("+w").is_err());
        assert!(decode("A Q").is_err());
        assert!(decode("A").is_err());
        assert_eq!(decode(""), Ok(vec![]));
    }

    #[test]
    fn errors_name_the_originals_offset() {
        let at = |t: &str| decode(t).map_err(|e| e.reason);
        assert_eq!(
            at("AQ=="),
            Err("illegal base64 data at input byte 2".into())
        );
        assert_eq!(
            at("AAAAA"),
            Err("illegal base64 data at input byte 4".into())
        );
        assert_eq!(
            at("AAAAA\n"),
            Err("illegal base64 data at input byte 5".into())
        );
        assert_eq!(
            decode_partial("AAAAAAAA+").map_err(|(p, _)| p.len()),
            Err(6)
        );
        assert_eq!(decode_partial("AAAAAAA+").map_err(|(p, _)| p.len()), Err(3));
    }

    proptest::proptest! {
        #[test]
        fn round_trips(bytes: Vec<u8>) {
            proptest::prop_assert_eq!(decode(encode(&bytes)), Ok(bytes));
        }

        /// Agrees with the base64 crate's engine configured as leniently as the original.
        #[test]
        fn agrees_with_a_reference_engine(text in "[A-Za-z0-9_+/= \r\n-]{0,16}") {
            use base64::engine::DecodePaddingMode;
            let reference = GeneralPurpose::new(
                &URL_SAFE,
                GeneralPurposeConfig::new()
                    .with_decode_padding_mode(DecodePaddingMode::RequireNone)
                    .with_decode_allow_trailing_bits(true),
            );
            let cleaned: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            proptest::prop_assert_eq!(decode(&text).ok(), reference.decode(cleaned).ok());
        }
    }
}
