//! base64url without padding, as the original encodes and decodes it (protocol.md §1.2).
//!
//! Encoding is canonical. Decoding is deliberately as lenient as the original and no more:
//! `=`, `+`, `/` and spaces are errors, CR and LF are skipped, and non-zero unused trailing
//! bits are accepted (`AR` decodes like `AQ`).

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

const ENCODER: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false),
);

const DECODER: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// A base64url text that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal base64url data: {reason}")]
pub struct DecodeError {
    /// What was wrong, with the offending position where known.
    pub reason: String,
}

/// Encodes bytes as canonical base64url without padding.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    ENCODER.encode(bytes)
}

/// Decodes base64url without padding, skipping CR and LF as the original does.
pub fn decode(text: impl AsRef<[u8]>) -> Result<Vec<u8>, DecodeError> {
    let text = text.as_ref();
    let cleaned: std::borrow::Cow<'_, [u8]> = if text.iter().any(|b| *b == b'\r' || *b == b'\n') {
        text.iter()
            .copied()
            .filter(|b| *b != b'\r' && *b != b'\n')
            .collect::<Vec<u8>>()
            .into()
    } else {
        text.into()
    };
    DECODER.decode(&cleaned).map_err(|e| DecodeError {
        reason: e.to_string(),
    })
}

/// Decodes base64url into exactly `N` bytes.
pub fn decode_array<const N: usize>(text: impl AsRef<[u8]>) -> Result<[u8; N], DecodeError> {
    let bytes = decode(text)?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| DecodeError {
        reason: format!("expected {N} bytes, got {len}"),
    })
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
}
