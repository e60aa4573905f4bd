//! Servicekeys and the contract's signed settlement window (protocol.md §4).
//!
//! A [`ContractSection`] is what `POST /servicekey/activate` returns: the contract's signature
//! over `<contract key>:<settlement_open>:<settlement_close>`. It is self-certifying (checked
//! against the key it carries) and binds nothing else: trust in that key is the relay's
//! decision (see `sharetoken`). A [`ServiceKey`] is the client's `servicekey.json`: its
//! keypair plus the section once activated. File I/O is not done here.

use crate::json::{self, JsonError};
use crate::keys::{self, KeyError, Keypair, PublicKey, Signature};
use crate::verified::Verified;
use serde::{Deserialize, Serialize};

/// The contract-signed settlement window ("contract" object); all fields omitempty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractSection {
    /// Unix seconds from which sharetokens of this servicekey are expired and settleable.
    #[serde(default, skip_serializing_if = "json::is_zero")]
    pub settlement_open: i64,
    /// Unix seconds at which submission of those sharetokens closes.
    #[serde(default, skip_serializing_if = "json::is_zero")]
    pub settlement_close: i64,
    /// The contract's key; the signature is checked against it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "keys::opt_b64"
    )]
    pub public_key: Option<PublicKey>,
    /// The contract's signature over [`ContractSection::digest`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "keys::opt_b64"
    )]
    pub signature: Option<Signature>,
}

/// Why a contract section was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContractError {
    /// No `public_key` to check the signature against (the original crashes here).
    #[error("contract public key is null")]
    MissingPublicKey,
    /// The signature is absent or does not verify over `data` under the carried key.
    #[error("contract data `{data}` are not signed by signature `{signature}`")]
    BadSignature {
        /// The digest that was checked.
        data: String,
        /// The signature as base64url (empty when absent).
        signature: String,
    },
}

impl ContractSection {
    /// Builds and signs a section as the contract does on activation.
    pub fn new_signed(contract: &Keypair, settlement_open: i64, settlement_close: i64) -> Self {
        let mut section = Self {
            settlement_open,
            settlement_close,
            public_key: Some(contract.public()),
            signature: None,
        };
        section.signature = Some(contract.sign(section.digest().as_bytes()));
        section
    }

    /// The signed string `<public_key b64url>:<open>:<close>` (empty first field if no key).
    pub fn digest(&self) -> String {
        format!(
            "{}:{}:{}",
            self.public_key.map(|k| k.to_b64()).unwrap_or_default(),
            self.settlement_open,
            self.settlement_close
        )
    }

    /// Checks the signature against the key the section carries. Says nothing about whether
    /// that key is trusted.
    pub fn verify(&self) -> Result<Verified<ContractSection>, ContractError> {
        let key = self.public_key.ok_or(ContractError::MissingPublicKey)?;
        let data = self.digest();
        match &self.signature {
            Some(sig) if key.verify(data.as_bytes(), sig).is_ok() => {
                Ok(Verified::vouch(self.clone()))
            }
            _ => Err(ContractError::BadSignature {
                data,
                signature: self.signature.map(|s| s.to_b64()).unwrap_or_default(),
            }),
        }
    }

    /// Expired iff `settlement_open <= now` (a servicekey stops being usable when settlement
    /// opens, not when it closes).
    pub fn is_expired(&self, now: i64) -> bool {
        self.settlement_open <= now
    }

    /// Inside the settlement window: `settlement_open <= now < settlement_close`.
    pub fn settleable(&self, now: i64) -> bool {
        self.settlement_open <= now && now < self.settlement_close
    }

    /// Go's `json.Marshal` bytes (the activation reply body).
    pub fn to_json(&self) -> Result<Vec<u8>, JsonError> {
        json::to_vec(self)
    }

    /// Parses with the original's JSON rules; the signature is not checked.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JsonError> {
        json::from_slice(bytes)
    }
}

/// The client's servicekey (`servicekey.json`): its keypair and, once activated, the
/// contract's section. A fresh key carries an empty section and serialises `"contract":{}`.
#[derive(Debug, Clone)]
pub struct ServiceKey {
    /// The key that signs sharetokens.
    pub keypair: Keypair,
    /// The contract's signed settlement window (empty until activated).
    pub contract: ContractSection,
}

/// Why a servicekey object was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceKeyError {
    /// Not JSON of the expected shape.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// No `private_key` field (or an empty one).
    #[error("servicekey has no private_key")]
    MissingPrivateKey,
    /// `private_key` is not base64url of a 64-byte ed25519 private key.
    #[error("servicekey private_key is invalid: {0}")]
    BadPrivateKey(#[source] KeyError),
    /// `public_key` does not match the public half of `private_key`.
    #[error(
        "servicekey public_key {stored} does not match its private key (public half {derived})"
    )]
    PublicKeyMismatch {
        /// The stored `public_key`.
        stored: PublicKey,
        /// The key derived from `private_key`.
        derived: PublicKey,
    },
}

/// Wire shape of a servicekey: every field omitempty, but `contract` is a struct and so is
/// always written.
#[derive(Serialize, Deserialize)]
struct ServiceKeyWire {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    private_key: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "keys::opt_b64"
    )]
    public_key: Option<PublicKey>,
    #[serde(default)]
    contract: ContractSection,
}

impl ServiceKey {
    /// A fresh, not yet activated servicekey.
    pub fn new(keypair: Keypair) -> Self {
        Self {
            keypair,
            contract: ContractSection::default(),
        }
    }

    /// The servicekey's public key (what sharetokens and the activation request carry).
    pub fn public_key(&self) -> PublicKey {
        self.keypair.public()
    }

    /// Expired iff `contract.settlement_open <= now`; a fresh key (open = 0) is expired.
    pub fn is_expired(&self, now: i64) -> bool {
        self.contract.is_expired(now)
    }

    /// Go's `json.Marshal` bytes.
    pub fn to_json(&self) -> Result<Vec<u8>, JsonError> {
        json::to_vec(&self.wire())
    }

    /// The `servicekey.json` file bytes: 4-space indentation, no trailing newline.
    pub fn to_file(&self) -> Result<Vec<u8>, JsonError> {
        json::to_vec_indented(&self.wire())
    }

    /// Parses a servicekey object or file (both layouts are the same JSON).
    pub fn parse(bytes: &[u8]) -> Result<Self, ServiceKeyError> {
        let wire: ServiceKeyWire = json::from_slice(bytes)?;
        let raw = crate::b64::decode(&wire.private_key)
            .map_err(|e| ServiceKeyError::BadPrivateKey(KeyError::Encoding(e)))?;
        if raw.is_empty() {
            return Err(ServiceKeyError::MissingPrivateKey);
        }
        let keypair = Keypair::from_private_key_64(&raw).map_err(ServiceKeyError::BadPrivateKey)?;
        if let Some(stored) = wire.public_key {
            let derived = keypair.public();
            if stored != derived {
                return Err(ServiceKeyError::PublicKeyMismatch { stored, derived });
            }
        }
        Ok(Self {
            keypair,
            contract: wire.contract,
        })
    }

    fn wire(&self) -> ServiceKeyWire {
        ServiceKeyWire {
            private_key: crate::b64::encode(self.keypair.private_key_64()),
            public_key: Some(self.keypair.public()),
            contract: self.contract.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn section(seed: u8, open: i64, close: i64) -> ContractSection {
        ContractSection::new_signed(&Keypair::from_seed([seed; 32]), open, close)
    }

    proptest! {
        #[test]
        fn section_round_trips(seed: u8, open: i64, close: i64) {
            let s = section(seed, open, close);
            let bytes = s.to_json().unwrap();
            let back = ContractSection::from_json(&bytes).unwrap();
            prop_assert_eq!(&back, &s);
            prop_assert_eq!(back.to_json().unwrap(), bytes);
            prop_assert!(back.verify().is_ok());
        }

        #[test]
        fn any_bit_flip_breaks_the_section(seed: u8, open: i64, close: i64, field in 0usize..4, bit: usize) {
            let mut s = section(seed, open, close);
            match field {
                0 => s.settlement_open ^= 1 << (bit % 64),
                1 => s.settlement_close ^= 1 << (bit % 64),
                2 => {
                    let mut k = s.public_key.unwrap();
                    k.0[(bit / 8) % 32] ^= 1 << (bit % 8);
                    s.public_key = Some(k);
                }
                _ => {
                    let mut sig = s.signature.unwrap();
                    sig.0[(bit / 8) % 64] ^= 1 << (bit % 8);
                    s.signature = Some(sig);
                }
            }
            prop_assert!(s.verify().is_err());
        }

        #[test]
        fn servicekey_file_round_trips(seed: [u8; 32], activated: bool, open: i64, close: i64) {
            let mut sk = ServiceKey::new(Keypair::from_seed(seed));
            if activated {
                sk.contract = section(2, open, close);
            }
            let file = sk.to_file().unwrap();
            let back = ServiceKey::parse(&file).unwrap();
            prop_assert_eq!(back.to_file().unwrap(), file);
            prop_assert_eq!(back.public_key(), sk.public_key());
            prop_assert_eq!(&back.contract, &sk.contract);
        }
    }

    #[test]
    fn missing_key_or_signature_is_an_error() {
        let mut s = section(2, 10, 20);
        s.public_key = None;
        assert_eq!(s.verify(), Err(ContractError::MissingPublicKey));
        let mut s = section(2, 10, 20);
        s.signature = None;
        assert!(
            matches!(s.verify(), Err(ContractError::BadSignature { signature, .. }) if signature.is_empty())
        );
    }

    #[test]
    fn servicekey_refuses_inconsistent_files() {
        assert!(matches!(
            ServiceKey::parse(b"{}"),
            Err(ServiceKeyError::MissingPrivateKey)
        ));
        assert!(matches!(
            ServiceKey::parse(br#"{"private_key":"AQID"}"#),
            Err(ServiceKeyError::BadPrivateKey(_))
        ));
        let sk = ServiceKey::new(Keypair::from_seed([5; 32]));
        let other = Keypair::from_seed([6; 32]).public();
        let text = String::from_utf8(sk.to_json().unwrap())
            .unwrap()
            .replace(&sk.public_key().to_b64(), &other.to_b64());
        assert!(matches!(
            ServiceKey::parse(text.as_bytes()),
            Err(ServiceKeyError::PublicKeyMismatch { .. })
        ));
    }
}
