//! Stripe webhook signatures: parsing the `Stripe-Signature` header and checking it against
//! the raw request body, as Stripe documents it ("verify signatures manually").
//!
//! The header is a comma-separated list of `key=value` elements: one `t=<unix seconds>` and
//! one or more `v1=<64 hex>` (several while the endpoint secret is being rolled); other
//! schemes (`v0=` in test mode) are ignored. The signed payload is `<t>.<raw body bytes>`;
//! each expected signature is HMAC-SHA256 over it keyed with a webhook signing secret
//! (`whsec_...`, used as given, prefix included). A header verifies when any `v1` equals the
//! HMAC under any configured secret (compared in constant time) and `t` is within the
//! tolerance of now, in either direction.
//!
//! Pure: no I/O, the clock is passed in. Not here: what an event means (the API module).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use subtle::ConstantTimeEq as _;

/// The signature scheme this service accepts.
pub const SCHEME: &str = "v1";

/// Longest header accepted; Stripe's headers are ~150 bytes per signature.
pub const MAX_HEADER_LEN: usize = 4096;

/// Most `v1` signatures in one header (bounds the work an attacker can cause).
pub const MAX_SIGNATURES: usize = 16;

/// Stripe's recommended tolerance, seconds.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Why a `Stripe-Signature` header could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The header is empty.
    #[error("Stripe-Signature header is empty")]
    Empty,
    /// Longer than [`MAX_HEADER_LEN`].
    #[error("Stripe-Signature header is {0} bytes long, more than {MAX_HEADER_LEN}")]
    TooLong(usize),
    /// An element is not `key=value`.
    #[error("Stripe-Signature element {0:?} is not key=value")]
    NotKeyValue(String),
    /// No `t=` element.
    #[error("Stripe-Signature header has no timestamp (t=)")]
    MissingTimestamp,
    /// More than one `t=` element.
    #[error("Stripe-Signature header has more than one timestamp (t=)")]
    DuplicateTimestamp,
    /// `t=` is not a non-negative decimal integer.
    #[error("Stripe-Signature timestamp {0:?} is not unix seconds")]
    BadTimestamp(String),
    /// No `v1=` element.
    #[error("Stripe-Signature header has no {SCHEME} signature")]
    NoSignature,
    /// A `v1=` value is not 64 hex digits.
    #[error("Stripe-Signature {SCHEME} value {0:?} is not 64 hex digits")]
    BadSignature(String),
    /// More than [`MAX_SIGNATURES`] `v1=` elements.
    #[error("Stripe-Signature header has more than {MAX_SIGNATURES} {SCHEME} signatures")]
    TooManySignatures,
}

/// Why a webhook did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The header is malformed.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// No secret is configured, so nothing can verify.
    #[error("no webhook signing secret is configured")]
    NoSecret,
    /// No `v1` signature matches the body under any configured secret.
    #[error("no {SCHEME} signature in Stripe-Signature matches the body (wrong webhook signing secret, or the body was changed)")]
    Mismatch,
    /// The timestamp is outside the tolerance.
    #[error("Stripe-Signature timestamp {timestamp} is {skew}s {direction} the server time {now}, beyond the tolerance of {tolerance}s")]
    Timestamp {
        /// The signed timestamp.
        timestamp: i64,
        /// The server's time.
        now: i64,
        /// Distance in seconds.
        skew: i64,
        /// `before` or `after`.
        direction: &'static str,
        /// Allowed distance in seconds.
        tolerance: i64,
    },
}

/// A parsed `Stripe-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// The signed timestamp (unix seconds).
    pub timestamp: i64,
    /// The `v1` signatures, decoded.
    pub signatures: Vec<[u8; 32]>,
}

/// A webhook signing secret. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// Wraps the secret text exactly as Stripe shows it (`whsec_...`).
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        WebhookSecret(secret.into())
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl SignatureHeader {
    /// Parses a header value. Elements may be separated by `,` followed by spaces; keys
    /// other than `t` and `v1` are ignored, but every element must be `key=value`.
    pub fn parse(header: &str) -> Result<Self, HeaderError> {
        if header.len() > MAX_HEADER_LEN {
            return Err(HeaderError::TooLong(header.len()));
        }
        if header.trim().is_empty() {
            return Err(HeaderError::Empty);
        }
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for element in header.split(',') {
            let element = element.trim();
            let Some((key, value)) = element.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                return Err(HeaderError::NotKeyValue(clip(element)));
            };
            match key {
                "t" => {
                    if timestamp.is_some() {
                        return Err(HeaderError::DuplicateTimestamp);
                    }
                    timestamp = Some(parse_unix(value)?);
                }
                SCHEME => {
                    if signatures.len() == MAX_SIGNATURES {
                        return Err(HeaderError::TooManySignatures);
                    }
                    signatures.push(parse_hex32(value)?);
                }
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(HeaderError::MissingTimestamp)?;
        if signatures.is_empty() {
            return Err(HeaderError::NoSignature);
        }
        Ok(SignatureHeader {
            timestamp,
            signatures,
        })
    }

    /// The header value Stripe would send for these parts (tests and tools sign with it).
    pub fn render(&self) -> String {
        let mut out = format!("t={}", self.timestamp);
        for s in &self.signatures {
            out.push_str(",v1=");
            out.push_str(&hex::encode(s));
        }
        out
    }
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

fn parse_unix(value: &str) -> Result<i64, HeaderError> {
    if value.is_empty() || value.len() > 18 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderError::BadTimestamp(clip(value)));
    }
    value
        .parse()
        .map_err(|_| HeaderError::BadTimestamp(clip(value)))
}

fn parse_hex32(value: &str) -> Result<[u8; 32], HeaderError> {
    let mut out = [0u8; 32];
    if value.len() != 64 || hex::decode_to_slice(value, &mut out).is_err() {
        return Err(HeaderError::BadSignature(clip(value)));
    }
    Ok(out)
}

/// HMAC-SHA256 of `<timestamp>.<body>` under `secret`.
pub fn compute(secret: &WebhookSecret, timestamp: i64, body: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail; the fallback key keeps the
    // function total without a panic path.
    let mut mac = match Hmac::<Sha256>::new_from_slice(&secret.0) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The header Stripe would send for `body` signed with `secret` at `timestamp`.
pub fn sign(secret: &WebhookSecret, timestamp: i64, body: &[u8]) -> String {
    SignatureHeader {
        timestamp,
        signatures: vec![compute(secret, timestamp, body)],
    }
    .render()
}

/// Checks `header` for `body`: some `v1` must match under some secret, and the timestamp
/// must be within `tolerance` seconds of `now` (past or future). Returns the parsed header.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[WebhookSecret],
    now: i64,
    tolerance: i64,
) -> Result<SignatureHeader, VerifyError> {
    let parsed = SignatureHeader::parse(header)?;
    if secrets.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let mut matched = subtle::Choice::from(0);
    for secret in secrets {
        let expected = compute(secret, parsed.timestamp, body);
        for got in &parsed.signatures {
            // Every pair is compared, so the time taken does not tell which one matched.
            matched |= expected.ct_eq(got);
        }
    }
    if !bool::from(matched) {
        return Err(VerifyError::Mismatch);
    }
    let skew = now.saturating_sub(parsed.timestamp);
    if skew.saturating_abs() > tolerance {
        return Err(VerifyError::Timestamp {
            timestamp: parsed.timestamp,
            now,
            skew: skew.saturating_abs(),
            direction: if skew > 0 { "before" } else { "after" },
            tolerance,
        });
    }
    Ok(parsed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;

    fn secret() -> WebhookSecret {
        WebhookSecret::new("whsec_test_secret")
    }

    #[test]
    fn known_answer() {
        // Computed independently: printf '1700000000.{"id":"evt_1","type":"checkout.session.completed"}' |
        //   openssl dgst -sha256 -hmac whsec_test_secret
        let want = "a13d4b1f9003bc2fb6c06224e878b6056185eaa50d40e1e7dc05517f8af41d7b";
        let got = hex::encode(compute(&secret(), NOW, BODY));
        assert_eq!(got.len(), 64);
        assert_eq!(got, want);
    }

    #[test]
    fn good_signature_verifies() {
        let h = sign(&secret(), NOW, BODY);
        assert!(h.starts_with("t=1700000000,v1="));
        let p = verify(&h, BODY, &[secret()], NOW, 300).unwrap();
        assert_eq!(p.timestamp, NOW);
        // At the tolerance edges, both directions.
        verify(&h, BODY, &[secret()], NOW + 300, 300).unwrap();
        verify(&h, BODY, &[secret()], NOW - 300, 300).unwrap();
    }

    #[test]
    fn wrong_secret_tampered_body_and_timestamp_fail() {
        let h = sign(&secret(), NOW, BODY);
        let other = WebhookSecret::new("whsec_other");
        assert_eq!(
            verify(&h, BODY, &[other], NOW, 300),
            Err(VerifyError::Mismatch)
        );
        let mut tampered = BODY.to_vec();
        tampered[2] ^= 1;
        assert_eq!(
            verify(&h, &tampered, &[secret()], NOW, 300),
            Err(VerifyError::Mismatch)
        );
        // The timestamp is part of what is signed: changing it breaks the signature.
        let moved = h.replacen("t=1700000000", "t=1700000001", 1);
        assert_eq!(
            verify(&moved, BODY, &[secret()], NOW, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(verify(&h, BODY, &[], NOW, 300), Err(VerifyError::NoSecret));
    }

    #[test]
    fn expired_and_future_timestamps_fail() {
        let h = sign(&secret(), NOW, BODY);
        let old = verify(&h, BODY, &[secret()], NOW + 301, 300).unwrap_err();
        assert!(
            matches!(
                old,
                VerifyError::Timestamp {
                    skew: 301,
                    direction: "before",
                    ..
                }
            ),
            "{old:?}"
        );
        assert!(old.to_string().contains("301s before"), "{old}");
        let future = verify(&h, BODY, &[secret()], NOW - 301, 300).unwrap_err();
        assert!(
            matches!(
                future,
                VerifyError::Timestamp {
                    skew: 301,
                    direction: "after",
                    ..
                }
            ),
            "{future:?}"
        );
    }

    #[test]
    fn any_of_several_v1_and_any_of_several_secrets() {
        let good = hex::encode(compute(&secret(), NOW, BODY));
        let bad = "ab".repeat(32);
        let h = format!("t={NOW},v1={bad},v1={good},v0={bad}");
        verify(&h, BODY, &[secret()], NOW, 300).unwrap();
        let h = format!("t={NOW}, v1={bad}, v0={good}");
        assert_eq!(
            verify(&h, BODY, &[secret()], NOW, 300),
            Err(VerifyError::Mismatch),
            "v0 signatures are not accepted"
        );
        let h = sign(&secret(), NOW, BODY);
        verify(
            &h,
            BODY,
            &[WebhookSecret::new("whsec_old"), secret()],
            NOW,
            300,
        )
        .unwrap();
    }

    #[test]
    fn malformed_headers() {
        let sig = "0".repeat(64);
        let cases: Vec<(String, HeaderError)> = vec![
            (String::new(), HeaderError::Empty),
            ("  ".into(), HeaderError::Empty),
            (format!("v1={sig}"), HeaderError::MissingTimestamp),
            (format!("t={NOW}"), HeaderError::NoSignature),
            (format!("t={NOW},v0={sig}"), HeaderError::NoSignature),
            (
                format!("t={NOW},t={NOW},v1={sig}"),
                HeaderError::DuplicateTimestamp,
            ),
            (
                format!("t=-5,v1={sig}"),
                HeaderError::BadTimestamp("-5".into()),
            ),
            (
                format!("t=,v1={sig}"),
                HeaderError::BadTimestamp(String::new()),
            ),
            (
                format!("t=1e9,v1={sig}"),
                HeaderError::BadTimestamp("1e9".into()),
            ),
            (
                format!("t={NOW},v1=abc"),
                HeaderError::BadSignature("abc".into()),
            ),
            (
                format!("t={NOW},v1={}", "g".repeat(64)),
                HeaderError::BadSignature("g".repeat(40)),
            ),
            (
                format!("t={NOW},garbage,v1={sig}"),
                HeaderError::NotKeyValue("garbage".into()),
            ),
            (
                format!("t={NOW},=x,v1={sig}"),
                HeaderError::NotKeyValue("=x".into()),
            ),
            (
                format!("t={NOW},,v1={sig}"),
                HeaderError::NotKeyValue(String::new()),
            ),
            (
                format!("t={NOW}{}", format!(",v1={sig}").repeat(17)),
                HeaderError::TooManySignatures,
            ),
            ("x".repeat(5000), HeaderError::TooLong(5000)),
        ];
        for (header, want) in cases {
            assert_eq!(SignatureHeader::parse(&header), Err(want), "{header:?}");
            assert!(matches!(
                verify(&header, BODY, &[secret()], NOW, 300),
                Err(VerifyError::Header(_))
            ));
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,300}") {
            let _ = SignatureHeader::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_header_like_text(s in "[tv01=,a-f0-9 ]{0,200}") {
            let _ = SignatureHeader::parse(&s);
        }

        #[test]
        fn render_parse_roundtrip(
            t in 0i64..=999_999_999_999,
            sigs in proptest::collection::vec(proptest::array::uniform32(any::<u8>()), 1..=MAX_SIGNATURES),
        ) {
            let h = SignatureHeader { timestamp: t, signatures: sigs };
            prop_assert_eq!(SignatureHeader::parse(&h.render()), Ok(h));
        }

        #[test]
        fn signed_bodies_verify_and_any_change_fails(
            body in proptest::collection::vec(any::<u8>(), 0..200),
            flip in any::<usize>(),
            t in 1i64..=999_999_999_999,
            skew in -300i64..=300,
        ) {
            let h = sign(&secret(), t, &body);
            prop_assert!(verify(&h, &body, &[secret()], t + skew, 300).is_ok());
            if !body.is_empty() {
                let mut changed = body.clone();
                let i = flip % changed.len();
                changed[i] ^= 0x01;
                prop_assert_eq!(verify(&h, &changed, &[secret()], t, 300), Err(VerifyError::Mismatch));
            }
        }
    }
}
