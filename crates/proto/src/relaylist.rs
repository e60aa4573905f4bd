//! The directory's signed relay list, `GET /relays` (protocol.md §10).
//!
//! The body maps each relay's address to its entry (keys in byte order, as Go writes maps);
//! the directory signs the exact body bytes. Unlike the original client, which accepted a list
//! signed by *any* key named in the headers, [`RelayList::verify`] pins the directory key the
//! contract announces (`/info` `directory.public_key`). No time is signed, so an old list stays
//! valid; freshness is the caller's concern.

use crate::keys::{Keypair, PublicKey};
use crate::relayentry::{RelayEntry, RelayEntryError};
use crate::request::{self, AuthError, Headers, VersionGateError};
use crate::version::{Component, Interface};
use std::collections::BTreeMap;

/// Address → relay entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayList {
    /// The entries that parsed, keyed as in the body.
    pub relays: BTreeMap<String, RelayEntry>,
}

/// An entry of a received list that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The entry's key in the list.
    pub key: String,
    /// What was wrong with it.
    pub error: RelayEntryError,
}

/// Why a relay list was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayListError {
    /// Signature headers missing, malformed, not verifying, or by an unexpected key.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The response's client-dir version header is incompatible.
    #[error(transparent)]
    Version(#[from] VersionGateError),
    /// The body is not a JSON object.
    #[error("invalid relay list: {0}")]
    Json(String),
}

/// A list that verified and parsed, with the entries that had to be skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRelayList {
    /// The usable entries.
    pub list: RelayList,
    /// Entries skipped because they did not parse or validate.
    pub rejected: Vec<Rejected>,
}

impl RelayList {
    /// Adds `entry` under its address. Returns `false` (and adds nothing) if it has none.
    pub fn insert(&mut self, entry: RelayEntry) -> bool {
        match entry.address.as_ref().map(|a| a.to_string()) {
            Some(key) => {
                self.relays.insert(key, entry);
                true
            }
            None => false,
        }
    }

    /// The body the directory sends and signs (compact, HTML-escaped, keys sorted).
    pub fn to_body(&self) -> Vec<u8> {
        // Maps of strings to entries always encode.
        crate::json::to_vec(&self.relays).unwrap_or_default()
    }

    /// The body and its signature headers (`Wireleap-Directory-Pubkey`, `-Signature`).
    pub fn sign(&self, directory: &Keypair) -> (Vec<u8>, Vec<(&'static str, String)>) {
        let body = self.to_body();
        let headers = request::sign_body(directory, Component::Directory, &body);
        (body, headers)
    }

    /// Parses a body without checking any signature. Entries that do not parse or validate
    /// are returned apart instead of failing the whole list.
    pub fn parse(body: &[u8]) -> Result<(RelayList, Vec<Rejected>), RelayListError> {
        let value: serde_json::Value =
            crate::json::from_slice(body).map_err(|e| RelayListError::Json(e.to_string()))?;
        let serde_json::Value::Object(map) = value else {
            return Err(RelayListError::Json("expected a JSON object".into()));
        };
        let mut list = RelayList::default();
        let mut rejected = Vec::new();
        for (key, v) in map {
            let entry = serde_json::from_value::<RelayEntry>(v)
                .map_err(|e| RelayEntryError::Json(e.to_string()))
                .and_then(|e| e.validate().map(|()| e));
            match entry {
                Ok(e) => {
                    list.relays.insert(key, e);
                }
                Err(error) => rejected.push(Rejected { key, error }),
            }
        }
        Ok((list, rejected))
    }

    /// Verifies a received list: signed by exactly `directory` (the key from the contract's
    /// `/info`), client-dir version header compatible if present, then parsed.
    pub fn verify(
        body: &[u8],
        headers: &(impl Headers + ?Sized),
        directory: &PublicKey,
    ) -> Result<VerifiedRelayList, RelayListError> {
        request::verify_body_pinned(Component::Directory, directory, headers, body)?;
        request::check_response_versions(&[Interface::ClientDir], headers)?;
        let (list, rejected) = Self::parse(body)?;
        Ok(VerifiedRelayList { list, rejected })
    }
}
