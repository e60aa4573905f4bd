//! Sharetokens: the client's per-relay payment tokens (protocol.md §5).
//!
//! A [`Sharetoken`] as parsed is unverified. The relay turns it into a [`VerifiedSharetoken`]
//! with [`Sharetoken::verify`], which applies relay 0.6.1's acceptance order; the contract
//! uses [`Sharetoken::verify_for_settlement`] on submission. Error texts are the original's
//! where they travel on the wire as status causes. Replay detection needs state and lives with
//! the caller, keyed by [`Sharetoken::id`]; [`SharetokenError::Duplicate`] carries its text.

use crate::json::{self, JsonError};
use crate::keys::{Keypair, PublicKey, Signature};
use crate::servicekey::{ContractError, ContractSection};
use crate::verified::Verified;
use serde::{Deserialize, Serialize};

/// A sharetoken in wire field order; only `contract` is omitempty.
///
/// `public_key`, `relay_pubkey` and `signature` must decode to exactly 32/32/64 bytes at parse
/// time: the original crashes on a wrong-size key, so such a token is refused before any check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sharetoken {
    /// Always 0 from the client; part of the digest.
    #[serde(default)]
    pub version: i64,
    /// The servicekey that signed the token.
    pub public_key: PublicKey,
    /// Creation time, unix seconds (never checked against the clock by the original).
    #[serde(default)]
    pub timestamp: i64,
    /// The relay this token pays.
    pub relay_pubkey: PublicKey,
    /// Always `""` from the client; part of the digest.
    #[serde(default)]
    pub share_key: String,
    /// Servicekey signature over [`Sharetoken::digest`].
    pub signature: Signature,
    /// 32 lowercase hex characters from the client (not checked for uniqueness).
    #[serde(default)]
    pub nonce: String,
    /// The servicekey's contract section, copied verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<ContractSection>,
}

/// A sharetoken that passed [`Sharetoken::verify`] or [`Sharetoken::verify_for_settlement`].
pub type VerifiedSharetoken = Verified<Sharetoken>;

/// What a token is identical in when it is replayed: signatures are deterministic, so the
/// same contract, servicekey and signature means the same token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SharetokenId {
    /// The contract's key (`None` if the token carries none).
    pub contract: Option<PublicKey>,
    /// The servicekey.
    pub servicekey: PublicKey,
    /// The servicekey's signature.
    pub signature: Signature,
}

/// What the relay checks a token against.
#[derive(Clone, Copy)]
pub struct VerifyContext<'a> {
    /// This relay's own public key.
    pub relay: PublicKey,
    /// The contracts this relay is configured for.
    pub trusted_contracts: &'a [PublicKey],
    /// Whether a configured contract is enrolled right now. `None` skips the first stage (the
    /// relay's stream handler) and starts with the relay-key check, as the start command's
    /// callback does on its own.
    pub enrolled: Option<&'a (dyn Fn(&PublicKey) -> bool + Sync)>,
    /// Unix seconds.
    pub now: i64,
}

impl<'a> VerifyContext<'a> {
    /// A context without the enrollment stage.
    pub fn new(relay: PublicKey, trusted_contracts: &'a [PublicKey], now: i64) -> Self {
        Self {
            relay,
            trusted_contracts,
            enrolled: None,
            now,
        }
    }

    /// Adds the enrollment stage ("relay contract not found/not available").
    pub fn with_enrollment(mut self, enrolled: &'a (dyn Fn(&PublicKey) -> bool + Sync)) -> Self {
        self.enrolled = Some(enrolled);
        self
    }
}

impl std::fmt::Debug for VerifyContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyContext")
            .field("relay", &self.relay)
            .field("trusted_contracts", &self.trusted_contracts)
            .field("enrolled", &self.enrolled.map(|_| "<fn>"))
            .field("now", &self.now)
            .finish()
    }
}

/// Why a sharetoken was refused, one variant per stage. The texts of the relay stages are the
/// original's and go to the client as the status cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SharetokenError {
    /// The token has no `contract` object (the original crashes here).
    #[error("sharetoken has no contract section")]
    MissingContract,
    /// Stage 1: the token's contract is not configured on this relay (id: the contract key
    /// as base64url, empty if absent).
    #[error("relay contract not found: {0}")]
    ContractNotFound(String),
    /// Stage 1: configured but not currently enrolled.
    #[error("relay contract not available: {0}")]
    ContractNotAvailable(String),
    /// Stage 2: the token is for another relay.
    #[error("sharetoken relay public key mismatch: expecting {expected}, got {got}")]
    RelayMismatch {
        /// This relay's key.
        expected: PublicKey,
        /// The token's `relay_pubkey`.
        got: PublicKey,
    },
    /// Stage 3: `settlement_open <= now`.
    #[error("sharetoken is expired")]
    Expired,
    /// Stage 4: the contract key is not one of this relay's contracts.
    #[error("this sharetoken was not signed by a trusted service contract")]
    UntrustedContract,
    /// Stage 5: the servicekey signature does not verify over the digest.
    #[error("sharetoken client signature is invalid")]
    BadClientSignature,
    /// Stage 6: the contract section has no public key.
    #[error("contract public key is null")]
    MissingContractKey,
    /// Stage 7: the contract's signature over the settlement window does not verify.
    #[error("error while verifying sharetoken contract data: {0}")]
    BadContractSignature(#[source] ContractError),
    /// Settlement: the token names another contract.
    #[error("sharetoken contract {got} is not this contract ({expected})")]
    WrongContract {
        /// The settling contract's key.
        expected: PublicKey,
        /// The token's contract key.
        got: PublicKey,
    },
    /// Settlement: `now` is outside `[settlement_open, settlement_close)`.
    #[error("sharetoken is not settleable at {now}: settlement window is [{open}, {close})")]
    NotSettleable {
        /// Unix seconds of the check.
        now: i64,
        /// `contract.settlement_open`.
        open: i64,
        /// `contract.settlement_close`.
        close: i64,
    },
    /// A replay of a token already stored (the caller's store decides this).
    #[error("duplicate sharetoken")]
    Duplicate,
}

impl Sharetoken {
    /// Builds and signs a token as the client does (version 0, empty share_key). `nonce` is
    /// 32 lowercase hex characters (protocol.md §18), drawn by the caller.
    pub fn new_signed(
        servicekey: &Keypair,
        contract: ContractSection,
        relay: PublicKey,
        timestamp: i64,
        nonce: String,
    ) -> Self {
        let mut token = Self {
            version: 0,
            public_key: servicekey.public(),
            timestamp,
            relay_pubkey: relay,
            share_key: String::new(),
            signature: Signature([0; 64]),
            nonce,
            contract: Some(contract),
        };
        token.signature = servicekey.sign(token.digest_with(&token.contract_or_empty()).as_bytes());
        token
    }

    /// Sets `public_key` to the servicekey's and re-signs.
    pub fn sign(&mut self, servicekey: &Keypair) -> Result<(), SharetokenError> {
        self.public_key = servicekey.public();
        self.signature = servicekey.sign(self.digest()?.as_bytes());
        Ok(())
    }

    /// The signed string: version, public_key, timestamp, relay_pubkey, share_key, nonce,
    /// contract public_key, contract signature, settlement_open, settlement_close joined by
    /// `:` (absent binary values are empty fields).
    pub fn digest(&self) -> Result<String, SharetokenError> {
        Ok(self.digest_with(self.contract()?))
    }

    fn digest_with(&self, c: &ContractSection) -> String {
        format!(
            "{}:{}:{}:{}:{}:{}:{}:{}:{}:{}",
            self.version,
            self.public_key,
            self.timestamp,
            self.relay_pubkey,
            self.share_key,
            self.nonce,
            c.public_key.map(|k| k.to_b64()).unwrap_or_default(),
            c.signature.map(|s| s.to_b64()).unwrap_or_default(),
            c.settlement_open,
            c.settlement_close
        )
    }

    fn contract_or_empty(&self) -> ContractSection {
        self.contract.clone().unwrap_or_default()
    }

    fn contract(&self) -> Result<&ContractSection, SharetokenError> {
        self.contract
            .as_ref()
            .ok_or(SharetokenError::MissingContract)
    }

    /// The replay identity (contract key, servicekey, signature).
    pub fn id(&self) -> SharetokenId {
        SharetokenId {
            contract: self.contract.as_ref().and_then(|c| c.public_key),
            servicekey: self.public_key,
            signature: self.signature,
        }
    }

    /// Expired iff `settlement_open <= now`; a token without contract counts as expired.
    pub fn is_expired(&self, now: i64) -> bool {
        self.contract.as_ref().is_none_or(|c| c.is_expired(now))
    }

    /// Submittable to the contract: `settlement_open <= now < settlement_close`.
    pub fn settleable(&self, now: i64) -> bool {
        self.contract.as_ref().is_some_and(|c| c.settleable(now))
    }

    /// The original library's three signature checks, in its order: client signature,
    /// contract key present, contract signature. No trust or time decisions.
    pub fn verify_signatures(&self) -> Result<(), SharetokenError> {
        let contract = self.contract()?;
        self.public_key
            .verify(self.digest_with(contract).as_bytes(), &self.signature)
            .map_err(|_| SharetokenError::BadClientSignature)?;
        if contract.public_key.is_none() {
            return Err(SharetokenError::MissingContractKey);
        }
        contract
            .verify()
            .map(drop)
            .map_err(SharetokenError::BadContractSignature)
    }

    /// The relay's acceptance checks, in relay 0.6.1's order: contract configured and enrolled
    /// (only with [`VerifyContext::enrolled`]), `relay_pubkey` is ours, not expired, contract
    /// key configured, then [`Sharetoken::verify_signatures`]. Replays are the caller's check.
    pub fn verify(&self, ctx: &VerifyContext<'_>) -> Result<VerifiedSharetoken, SharetokenError> {
        let contract = self.contract()?;
        let contract_key = contract.public_key;
        let trusted = contract_key.is_some_and(|k| ctx.trusted_contracts.contains(&k));
        if let Some(enrolled) = ctx.enrolled {
            let id = || contract_key.map(|k| k.to_b64()).unwrap_or_default();
            match contract_key {
                Some(k) if trusted && enrolled(&k) => {}
                Some(_) if trusted => return Err(SharetokenError::ContractNotAvailable(id())),
                _ => return Err(SharetokenError::ContractNotFound(id())),
            }
        }
        if self.relay_pubkey != ctx.relay {
            return Err(SharetokenError::RelayMismatch {
                expected: ctx.relay,
                got: self.relay_pubkey,
            });
        }
        if contract.is_expired(ctx.now) {
            return Err(SharetokenError::Expired);
        }
        if !trusted {
            return Err(SharetokenError::UntrustedContract);
        }
        self.verify_signatures()?;
        Ok(Verified::vouch(self.clone()))
    }

    /// The contract's checks on submission: the token names this contract, `now` is inside
    /// the settlement window, and both signatures verify.
    pub fn verify_for_settlement(
        &self,
        contract: &PublicKey,
        now: i64,
    ) -> Result<VerifiedSharetoken, SharetokenError> {
        let section = self.contract()?;
        let got = section
            .public_key
            .ok_or(SharetokenError::MissingContractKey)?;
        if got != *contract {
            return Err(SharetokenError::WrongContract {
                expected: *contract,
                got,
            });
        }
        if !section.settleable(now) {
            return Err(SharetokenError::NotSettleable {
                now,
                open: section.settlement_open,
                close: section.settlement_close,
            });
        }
        self.verify_signatures()?;
        Ok(Verified::vouch(self.clone()))
    }

    /// Go's `json.Marshal` bytes (the body of the relay's `POST /submit`).
    pub fn to_json(&self) -> Result<Vec<u8>, JsonError> {
        json::to_vec(self)
    }

    /// Parses with the original's JSON rules; nothing is verified.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JsonError> {
        json::from_slice(bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000;

    fn token(open: i64, close: i64, ts: i64, nonce: String) -> Sharetoken {
        let contract = ContractSection::new_signed(&Keypair::from_seed([2; 32]), open, close);
        Sharetoken::new_signed(
            &Keypair::from_seed([5; 32]),
            contract,
            Keypair::from_seed([1; 32]).public(),
            ts,
            nonce,
        )
    }

    fn ctx_keys() -> (PublicKey, [PublicKey; 1]) {
        (
            Keypair::from_seed([1; 32]).public(),
            [Keypair::from_seed([2; 32]).public()],
        )
    }

    fn flip(bytes: &mut [u8], bit: usize) {
        let len = bytes.len();
        bytes[(bit / 8) % len] ^= 1 << (bit % 8);
    }

    proptest! {
        #[test]
        fn round_trips(open: i64, close: i64, ts: i64, nonce in "[ -~]{0,40}") {
            let t = token(open, close, ts, nonce);
            let bytes = t.to_json().unwrap();
            let back = Sharetoken::from_json(&bytes).unwrap();
            prop_assert_eq!(&back, &t);
            prop_assert_eq!(back.to_json().unwrap(), bytes);
            prop_assert!(back.verify_signatures().is_ok());
        }

        #[test]
        fn any_bit_flip_fails(field in 0usize..12, bit in 0usize..512, open in 1i64.., ts: i64) {
            let mut t = token(open, open.saturating_add(3600), ts, "00112233445566778899aabbccddeeff".into());
            let c = t.contract.as_mut().unwrap();
            match field {
                0 => t.version ^= 1 << (bit % 64),
                1 => flip(&mut t.public_key.0, bit),
                2 => t.timestamp ^= 1 << (bit % 64),
                3 => flip(&mut t.relay_pubkey.0, bit),
                4 => t.share_key.push(char::from(b'a' + (bit % 26) as u8)),
                5 => flip(&mut t.signature.0, bit),
                6 => {
                    // Stay ASCII so the change is a single bit of the signed bytes.
                    let mut n = t.nonce.clone().into_bytes();
                    let i = (bit / 7) % n.len();
                    n[i] ^= 1 << (bit % 7);
                    t.nonce = String::from_utf8(n).unwrap();
                }
                7 => flip(&mut c.public_key.as_mut().unwrap().0, bit),
                8 => flip(&mut c.signature.as_mut().unwrap().0, bit),
                9 => c.settlement_open ^= 1 << (bit % 64),
                10 => c.settlement_close ^= 1 << (bit % 64),
                _ => {
                    // Client re-signs over a tampered window: only the contract check can catch it.
                    c.settlement_close ^= 1 << (bit % 64);
                    t.sign(&Keypair::from_seed([5; 32])).unwrap();
                }
            }
            prop_assert!(t.verify_signatures().is_err());
        }
    }

    #[test]
    fn acceptance_order_and_enrollment() {
        let t = token(NOW + 600, NOW + 4200, NOW + 100, "n".into());
        let (relay, trusted) = ctx_keys();
        let enrolled_yes = |_: &PublicKey| true;
        let enrolled_no = |_: &PublicKey| false;
        let ctx = VerifyContext::new(relay, &trusted, NOW).with_enrollment(&enrolled_yes);
        let ok = t.verify(&ctx).unwrap();
        assert_eq!(ok.get(), &t);

        let ctx = VerifyContext::new(relay, &trusted, NOW).with_enrollment(&enrolled_no);
        assert_eq!(
            t.verify(&ctx),
            Err(SharetokenError::ContractNotAvailable(trusted[0].to_b64()))
        );
        // Unknown contract: stage 1 fires before the (also failing) relay-key check.
        let ctx = VerifyContext::new(trusted[0], &[], NOW).with_enrollment(&enrolled_yes);
        assert_eq!(
            t.verify(&ctx),
            Err(SharetokenError::ContractNotFound(trusted[0].to_b64()))
        );
        // Expiry is checked before trust.
        let ctx = VerifyContext::new(relay, &[], NOW + 600);
        assert_eq!(t.verify(&ctx), Err(SharetokenError::Expired));
    }

    #[test]
    fn missing_contract_parts_are_errors() {
        let (relay, trusted) = ctx_keys();
        let mut t = token(NOW + 600, NOW + 4200, NOW + 100, "n".into());
        t.contract = None;
        let ctx = VerifyContext::new(relay, &trusted, NOW);
        assert_eq!(t.verify(&ctx), Err(SharetokenError::MissingContract));
        assert_eq!(t.digest(), Err(SharetokenError::MissingContract));
        assert!(t.is_expired(NOW) && !t.settleable(NOW));

        let mut t = token(NOW + 600, NOW + 4200, NOW + 100, "n".into());
        if let Some(c) = t.contract.as_mut() {
            c.public_key = None;
        }
        t.sign(&Keypair::from_seed([5; 32])).unwrap();
        assert_eq!(
            t.verify_signatures(),
            Err(SharetokenError::MissingContractKey)
        );
        assert_eq!(t.verify(&ctx), Err(SharetokenError::UntrustedContract));
        assert_eq!(
            t.verify_for_settlement(&trusted[0], NOW + 600),
            Err(SharetokenError::MissingContractKey)
        );
    }

    #[test]
    fn settlement_window() {
        let t = token(NOW + 600, NOW + 4200, NOW + 100, "n".into());
        let contract = Keypair::from_seed([2; 32]).public();
        assert!(matches!(
            t.verify_for_settlement(&contract, NOW + 599),
            Err(SharetokenError::NotSettleable { .. })
        ));
        assert!(t.verify_for_settlement(&contract, NOW + 600).is_ok());
        assert!(t.verify_for_settlement(&contract, NOW + 4199).is_ok());
        assert!(t.verify_for_settlement(&contract, NOW + 4200).is_err());
        let other = Keypair::from_seed([3; 32]).public();
        assert!(matches!(
            t.verify_for_settlement(&other, NOW + 600),
            Err(SharetokenError::WrongContract { .. })
        ));
    }

    #[test]
    fn id_ignores_everything_but_the_replay_triple() {
        let a = token(NOW + 600, NOW + 4200, NOW + 100, "n".into());
        let b = token(NOW + 600, NOW + 4200, NOW + 101, "n".into());
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), a.clone().id());
    }
}
