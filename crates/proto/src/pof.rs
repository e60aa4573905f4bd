//! Proofs of funding (protocol.md §3): issuer-signed vouchers a client trades for a servicekey.
//!
//! Covers the pof object and its digest, signing and verification against the issuer keys a
//! contract lists in `/info`, the activation request body, and the client's `pofs.json`
//! layout. Which issuer keys to trust, and remembering spent pofs, is the contract's business.

use crate::json::{self, JsonError};
use crate::keys::{self, Keypair, PublicKey, Signature};
use crate::verified::Verified;
use serde::{Deserialize, Serialize};

/// A proof of funding; every field is omitempty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pof {
    /// The pof kind (`dummy`, `stripe`, ...), JSON `type`.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Unix seconds; expired iff `expiration <= now`.
    #[serde(default, skip_serializing_if = "json::is_zero")]
    pub expiration: i64,
    /// Issuer's nonce (18 lowercase hex characters from the common constructor).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nonce: String,
    /// Issuer's signature over [`Pof::digest`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "keys::opt_b64"
    )]
    pub signature: Option<Signature>,
}

/// Why a pof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PofError {
    /// `expiration <= now`.
    #[error("pof expired at {expiration} (now {now})")]
    Expired {
        /// The pof's expiration.
        expiration: i64,
        /// The time of the check.
        now: i64,
    },
    /// The pof carries no signature.
    #[error("pof `{digest}` has no signature")]
    MissingSignature {
        /// The pof's digest.
        digest: String,
    },
    /// No trusted issuer key verifies the signature.
    #[error("pof `{digest}` is not signed by any of the {issuers} trusted issuer key(s)")]
    BadSignature {
        /// The pof's digest.
        digest: String,
        /// How many keys were tried.
        issuers: usize,
    },
}

impl Pof {
    /// Builds and signs a pof as an issuer does.
    pub fn new_signed(issuer: &Keypair, kind: String, expiration: i64, nonce: String) -> Self {
        let mut pof = Self {
            kind,
            expiration,
            nonce,
            signature: None,
        };
        pof.sign(issuer);
        pof
    }

    /// Signs (or re-signs) with the issuer key.
    pub fn sign(&mut self, issuer: &Keypair) {
        self.signature = Some(issuer.sign(self.digest().as_bytes()));
    }

    /// The signed string `type:expiration:nonce`. Also the pof's identity for de-duplication
    /// (the signature is deliberately not part of it).
    pub fn digest(&self) -> String {
        format!("{}:{}:{}", self.kind, self.expiration, self.nonce)
    }

    /// Expired iff `expiration <= now`.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expiration <= now
    }

    /// Checks only that one of `issuers` signed the digest.
    pub fn verify_signature(&self, issuers: &[PublicKey]) -> Result<(), PofError> {
        let digest = self.digest();
        let Some(sig) = &self.signature else {
            return Err(PofError::MissingSignature { digest });
        };
        if issuers
            .iter()
            .any(|k| k.verify(digest.as_bytes(), sig).is_ok())
        {
            Ok(())
        } else {
            Err(PofError::BadSignature {
                digest,
                issuers: issuers.len(),
            })
        }
    }

    /// A usable pof: not expired at `now` and signed by one of `issuers` (the contract's
    /// `/info` `proof_of_funding[].pubkey` list; inferred, the contract is closed source).
    pub fn verify(&self, issuers: &[PublicKey], now: i64) -> Result<Verified<Pof>, PofError> {
        if self.is_expired(now) {
            return Err(PofError::Expired {
                expiration: self.expiration,
                now,
            });
        }
        self.verify_signature(issuers)?;
        Ok(Verified::vouch(self.clone()))
    }

    /// Go's `json.Marshal` bytes.
    pub fn to_json(&self) -> Result<Vec<u8>, JsonError> {
        json::to_vec(self)
    }

    /// Parses with the original's JSON rules; nothing is verified.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JsonError> {
        json::from_slice(bytes)
    }
}

/// Body of the client's unsigned `POST {contract}/servicekey/activate`; both fields omitempty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationRequest {
    /// The servicekey to activate.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "keys::opt_b64"
    )]
    pub pubkey: Option<PublicKey>,
    /// The pof paying for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pof: Option<Pof>,
}

impl ActivationRequest {
    /// The request for `servicekey` paid by `pof`.
    pub fn new(servicekey: PublicKey, pof: Pof) -> Self {
        Self {
            pubkey: Some(servicekey),
            pof: Some(pof),
        }
    }

    /// Go's `json.Marshal` bytes.
    pub fn to_json(&self) -> Result<Vec<u8>, JsonError> {
        json::to_vec(self)
    }

    /// Parses with the original's JSON rules (contract side); nothing is verified.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JsonError> {
        json::from_slice(bytes)
    }
}

/// The client's `pofs.json`: a JSON array, 4-space indentation, no trailing newline.
pub fn pofs_file(pofs: &[Pof]) -> Result<Vec<u8>, JsonError> {
    json::to_vec_indented(pofs)
}

/// Parses `pofs.json`; `null` (Go's nil slice) is an empty list.
pub fn parse_pofs_file(bytes: &[u8]) -> Result<Vec<Pof>, JsonError> {
    json::from_slice::<Option<Vec<Pof>>>(bytes).map(Option::unwrap_or_default)
}

/// Appends the pofs of `new` whose digest is not already in `pofs` (nor earlier in `new`), as
/// the client does when importing; returns how many were added.
pub fn merge_pofs(pofs: &mut Vec<Pof>, new: impl IntoIterator<Item = Pof>) -> usize {
    let mut seen: std::collections::HashSet<String> = pofs.iter().map(Pof::digest).collect();
    let before = pofs.len();
    for pof in new {
        if seen.insert(pof.digest()) {
            pofs.push(pof);
        }
    }
    pofs.len() - before
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn issuer() -> Keypair {
        Keypair::from_seed([4; 32])
    }

    fn arb_pof() -> impl Strategy<Value = Pof> {
        ("[ -~]{0,12}", any::<i64>(), "[0-9a-f]{0,18}", any::<bool>()).prop_map(
            |(kind, expiration, nonce, signed)| {
                let mut p = Pof {
                    kind,
                    expiration,
                    nonce,
                    signature: None,
                };
                if signed {
                    p.sign(&issuer());
                }
                p
            },
        )
    }

    proptest! {
        #[test]
        fn round_trips(p in arb_pof()) {
            let bytes = p.to_json().unwrap();
            let back = Pof::from_json(&bytes).unwrap();
            prop_assert_eq!(&back, &p);
            prop_assert_eq!(back.to_json().unwrap(), bytes);
        }

        #[test]
        fn file_round_trips(pofs in proptest::collection::vec(arb_pof(), 0..4)) {
            let file = pofs_file(&pofs).unwrap();
            let back = parse_pofs_file(&file).unwrap();
            prop_assert_eq!(&back, &pofs);
            prop_assert_eq!(pofs_file(&back).unwrap(), file);
        }

        #[test]
        fn any_bit_flip_fails(kind in "[a-z]{1,8}", expiration: i64, nonce in "[0-9a-f]{18}", field in 0usize..4, bit in 0usize..512) {
            let mut p = Pof::new_signed(&issuer(), kind, expiration, nonce);
            let flip_ascii = |s: &mut String| {
                let mut b = s.clone().into_bytes();
                let i = (bit / 7) % b.len();
                b[i] ^= 1 << (bit % 7);
                *s = String::from_utf8(b).unwrap();
            };
            match field {
                0 => flip_ascii(&mut p.kind),
                1 => p.expiration ^= 1 << (bit % 64),
                2 => flip_ascii(&mut p.nonce),
                _ => {
                    let mut s = p.signature.unwrap();
                    s.0[(bit / 8) % 64] ^= 1 << (bit % 8);
                    p.signature = Some(s);
                }
            }
            prop_assert!(p.verify_signature(&[issuer().public()]).is_err());
        }
    }

    #[test]
    fn verify_checks_expiry_then_issuer() {
        let p = Pof::new_signed(&issuer(), "dummy".into(), 100, "ab".into());
        let keys = [Keypair::from_seed([9; 32]).public(), issuer().public()];
        assert!(p.verify(&keys, 99).is_ok());
        assert_eq!(
            p.verify(&keys, 100),
            Err(PofError::Expired {
                expiration: 100,
                now: 100
            })
        );
        assert!(matches!(
            p.verify(&keys[..1], 99),
            Err(PofError::BadSignature { issuers: 1, .. })
        ));
        let unsigned = Pof {
            signature: None,
            ..p
        };
        assert!(matches!(
            unsigned.verify(&keys, 99),
            Err(PofError::MissingSignature { .. })
        ));
    }

    #[test]
    fn merge_dedups_by_digest() {
        let a = Pof::new_signed(&issuer(), "dummy".into(), 1, "a".into());
        let b = Pof::new_signed(&issuer(), "dummy".into(), 1, "b".into());
        let a_other_sig =
            Pof::new_signed(&Keypair::from_seed([8; 32]), "dummy".into(), 1, "a".into());
        let mut pofs = vec![a.clone()];
        assert_eq!(
            merge_pofs(&mut pofs, [a_other_sig, b.clone(), b.clone()]),
            1
        );
        assert_eq!(pofs, vec![a, b]);
    }

    #[test]
    fn null_file_is_empty() {
        assert_eq!(parse_pofs_file(b"null").unwrap(), vec![]);
        assert!(parse_pofs_file(b"{}").is_err());
    }
}
