//! The relay entry (enroll / heartbeat / disenroll body and relay list element) and the
//! classification of the directory's replies to it (protocol.md §8).
//!
//! Field order, omission rules and HTML escaping follow the original so that our relays send
//! the exact bytes a Go directory expects and our directory reads Go relays' bodies. Building
//! and sending the signed request is the api crate's job (with `request`); answering a
//! challenge is `pow`'s.

use crate::address::{Address, AddressError, Scheme};
use crate::bytesize::ByteSize;
use crate::fields;
use crate::keys::PublicKey;
use crate::status::{Status, StatusError};
use crate::version::{self, Interface, SemverError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a relay does in a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// First hop: the relay clients connect to.
    Fronting,
    /// Middle hop.
    Entropic,
    /// Last hop: dials the target.
    Backing,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Fronting, Role::Entropic, Role::Backing];

    /// The wire name (`fronting`, `entropic`, `backing`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Fronting => "fronting",
            Role::Entropic => "entropic",
            Role::Backing => "backing",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = RelayEntryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| RelayEntryError::BadRole(s.to_string()))
    }
}

/// The versions a relay announces. Each is omitted when unknown; the object itself is always
/// written (`{}` when empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// Relay software version.
    #[serde(
        default,
        with = "version::serde_strict_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub software: Option<semver::Version>,
    /// client-relay interface version.
    #[serde(
        rename = "client-relay",
        default,
        with = "version::serde_strict_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_relay: Option<semver::Version>,
    /// relay-relay interface version.
    #[serde(
        rename = "relay-relay",
        default,
        with = "version::serde_strict_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub relay_relay: Option<semver::Version>,
    /// relay-dir interface version.
    #[serde(
        rename = "relay-dir",
        default,
        with = "version::serde_strict_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub relay_dir: Option<semver::Version>,
    /// relay-contract interface version.
    #[serde(
        rename = "relay-contract",
        default,
        with = "version::serde_strict_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub relay_contract: Option<semver::Version>,
}

impl Versions {
    /// All five versions as a relay of software version `software` announces them.
    pub fn ours(software: semver::Version) -> Self {
        Self {
            software: Some(software),
            client_relay: Some(Interface::ClientRelay.version()),
            relay_relay: Some(Interface::RelayRelay.version()),
            relay_dir: Some(Interface::RelayDir.version()),
            relay_contract: Some(Interface::RelayContract.version()),
        }
    }

    /// Whether a client (speaking client-relay `ours`) may use this relay: its client-relay
    /// version must be present and have the same minor.
    pub fn client_relay_compatible(&self) -> bool {
        self.client_relay
            .as_ref()
            .is_some_and(|v| v.minor == Interface::ClientRelay.version().minor)
    }
}

/// A relay entry as sent to and published by the directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayEntry {
    /// The relay's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Public address clients use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// The relay's identity key.
    #[serde(
        default,
        with = "fields::opt_pubkey",
        skip_serializing_if = "Option::is_none"
    )]
    pub pubkey: Option<PublicKey>,
    /// Announced versions (always written).
    #[serde(default, deserialize_with = "fields::null_default")]
    pub versions: Versions,
    /// Enrollment key for restricted roles (sent in clear).
    #[serde(
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub key: Option<String>,
    /// Deprecated name of `upgrade_channel` (relays ≤ 0.4); read and written as is.
    #[serde(
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub update_channel: Option<String>,
    /// Upgrade channel the relay follows.
    #[serde(
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub upgrade_channel: Option<String>,
    /// Traffic cap per metering timeframe for this contract.
    #[serde(
        default,
        deserialize_with = "nonzero_limit",
        skip_serializing_if = "Option::is_none"
    )]
    pub network_usage_limit: Option<ByteSize>,
}

/// A zero limit is what Go's omitempty drops, i.e. "no limit": read it as `None` so that a
/// parsed entry re-encodes to the same body.
fn nonzero_limit<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<ByteSize>, D::Error> {
    Ok(Option::<ByteSize>::deserialize(de)?.filter(|b| b.0 != 0))
}

/// Why a relay entry, or a directory reply to it, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayEntryError {
    /// The body is not a relay entry.
    #[error("invalid relay entry: {0}")]
    Json(String),
    /// Role missing.
    #[error("relay entry has no role")]
    MissingRole,
    /// Role text not one of the three.
    #[error("invalid relay role {0:?} (expected fronting, entropic or backing)")]
    BadRole(String),
    /// Address missing.
    #[error("relay entry has no address")]
    MissingAddress,
    /// Address not a wireleap:// or https:// URL.
    #[error(transparent)]
    BadAddress(#[from] AddressError),
    /// Public key missing.
    #[error("relay entry has no public key")]
    MissingPubkey,
}

impl RelayEntry {
    /// The entry a relay sends: role, address, key and our versions; nothing else set.
    pub fn new(role: Role, address: Address, pubkey: PublicKey, software: semver::Version) -> Self {
        Self {
            role: Some(role),
            address: Some(address),
            pubkey: Some(pubkey),
            versions: Versions::ours(software),
            ..Self::default()
        }
    }

    /// The upgrade channel, preferring `upgrade_channel` over the deprecated `update_channel`.
    pub fn channel(&self) -> Option<&str> {
        self.upgrade_channel
            .as_deref()
            .or(self.update_channel.as_deref())
    }

    /// The request body: Go-compatible compact JSON, HTML-escaped, no newline.
    pub fn to_body(&self) -> Vec<u8> {
        // Strings, integers and maps of them always encode; the fallback is never used.
        crate::json::to_vec(self).unwrap_or_default()
    }

    /// Parses a body (unknown keys ignored, last duplicate wins, as in the original).
    pub fn from_body(body: &[u8]) -> Result<Self, RelayEntryError> {
        let value: serde_json::Value =
            crate::json::from_slice(body).map_err(|e| RelayEntryError::Json(e.to_string()))?;
        if !value.is_object() {
            return Err(RelayEntryError::Json("not a JSON object".into()));
        }
        serde_json::from_value(value).map_err(|e| RelayEntryError::Json(e.to_string()))
    }

    /// The original's validation: a role and a `wireleap://` or `https://` address; we also
    /// require the public key, without which the entry is useless to anyone.
    pub fn validate(&self) -> Result<(), RelayEntryError> {
        if self.role.is_none() {
            return Err(RelayEntryError::MissingRole);
        }
        let address = self
            .address
            .as_ref()
            .ok_or(RelayEntryError::MissingAddress)?;
        if address.scheme() == Scheme::Target {
            return Err(AddressError::SchemeNotAllowed {
                text: address.to_string(),
                scheme: Scheme::Target.as_str(),
            }
            .into());
        }
        if self.pubkey.is_none() {
            return Err(RelayEntryError::MissingPubkey);
        }
        Ok(())
    }
}

/// The header a directory uses to send a proof-of-work challenge.
pub const CHALLENGE_HEADER: &str = "Wireleap-Directory-Challenge";
/// The header a relay uses to send its answer to a challenge.
pub const RESPONSE_HEADER: &str = "Wireleap-Directory-Response";

/// What one directory reply to an enroll or heartbeat means (§8.4). Each reply is classified
/// on its own, so the reply to a PoW answer is read as fully as the first one (the original
/// returned the first reply's status and so lost upgrade notices sent after a PoW round).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollReply {
    /// Accepted; the status as sent (any JSON object counts, e.g. `{}`).
    Ok(Status),
    /// Proof of work demanded: repeat with an answer to this challenge (§9).
    Challenge(String),
    /// Accepted, and the directory asks the relay to upgrade to this version.
    Upgrade(semver::Version),
    /// Refused with this status (non-2xx).
    Error(Status),
}

/// A directory reply that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollReplyError {
    /// A 2xx reply without body.
    #[error("directory reply {http_status} has an empty body")]
    EmptyBody {
        /// HTTP status.
        http_status: u16,
    },
    /// A 2xx reply whose body is JSON `null` (crashes the original relay).
    #[error("directory reply {http_status} has a null body")]
    NullBody {
        /// HTTP status.
        http_status: u16,
    },
    /// The body is not a JSON object of the status shape.
    #[error("directory reply {http_status} is not a status object: {source}")]
    NotStatus {
        /// HTTP status.
        http_status: u16,
        /// Why it did not parse.
        source: StatusError,
    },
    /// A challenge status without the challenge header (or with an empty one).
    #[error("directory asked for proof of work but sent no {CHALLENGE_HEADER} header")]
    MissingChallenge,
    /// An upgrade notice whose cause is not a strict semver version.
    #[error("directory upgrade notice carries invalid version {cause:?}: {source}")]
    BadUpgradeVersion {
        /// The `cause` text.
        cause: String,
        /// Why it did not parse.
        source: SemverError,
    },
}

/// Classifies one directory reply from its HTTP status, body and challenge header.
///
/// The interface version headers of the reply are checked separately
/// ([`crate::request::check_response_versions`]).
pub fn classify_enroll_reply(
    http_status: u16,
    body: &[u8],
    challenge: Option<&str>,
) -> Result<EnrollReply, EnrollReplyError> {
    let success = (200..300).contains(&http_status);
    if success && body.iter().all(u8::is_ascii_whitespace) {
        return Err(EnrollReplyError::EmptyBody { http_status });
    }
    let status = match Status::parse(body) {
        Ok(s) => s,
        Err(StatusError::Null) if success => {
            return Err(EnrollReplyError::NullBody { http_status })
        }
        Err(source) => {
            return Err(EnrollReplyError::NotStatus {
                http_status,
                source,
            })
        }
    };
    if !success {
        return Ok(EnrollReply::Error(status));
    }
    if status.is_challenge() {
        return match challenge {
            Some(c) if !c.is_empty() => Ok(EnrollReply::Challenge(c.to_string())),
            _ => Err(EnrollReplyError::MissingChallenge),
        };
    }
    if status.is_upgrade_notice() {
        let cause = status.cause.clone().unwrap_or_default();
        return version::parse_strict(&cause)
            .map(EnrollReply::Upgrade)
            .map_err(|source| EnrollReplyError::BadUpgradeVersion { cause, source });
    }
    Ok(EnrollReply::Ok(status))
}
