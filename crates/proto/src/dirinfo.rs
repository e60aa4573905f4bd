//! The directory's `GET /info` object (protocol.md §11).
//!
//! Carries the directory key (which signs relay lists), per-role enrollment counts and the
//! upgrade channels: `upgrade_channels.relay` / `.client` map a channel name to the version
//! relays or clients on that channel should run; `update_channels` is the deprecated flat map
//! read by relays ≤ 0.4. Every version is strict semver or the whole object is refused.

use crate::fields;
use crate::keys::PublicKey;
use crate::relayentry::Role;
use crate::version;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Channel name → version.
pub type Channels = BTreeMap<String, semver::Version>;

/// Directory `/info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirInfo {
    /// Directory key (`""` when unset).
    #[serde(default, with = "fields::opt_pubkey")]
    pub public_key: Option<PublicKey>,
    /// Directory software version, free text (not parsed by the original).
    #[serde(default, deserialize_with = "fields::null_default")]
    pub version: String,
    /// Base URL (`null` when unset).
    #[serde(default, deserialize_with = "fields::null_default")]
    pub endpoint: Option<String>,
    /// Human-readable information URL.
    #[serde(
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub info: Option<String>,
    /// Enrollment state per role (always written).
    #[serde(default, deserialize_with = "fields::null_default")]
    pub enrollment: Enrollment,
    /// Deprecated flat channel map (relays ≤ 0.4); omitted when empty.
    #[serde(
        default,
        with = "version::serde_strict_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub update_channels: Channels,
    /// Upgrade channels (always written, `{}` when empty).
    #[serde(default, deserialize_with = "fields::null_default")]
    pub upgrade_channels: UpgradeChannels,
}

/// Per-role enrollment state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// Fronting relays.
    #[serde(default, deserialize_with = "fields::null_default")]
    pub fronting: RoleEnrollment,
    /// Entropic relays.
    #[serde(default, deserialize_with = "fields::null_default")]
    pub entropic: RoleEnrollment,
    /// Backing relays.
    #[serde(default, deserialize_with = "fields::null_default")]
    pub backing: RoleEnrollment,
}

impl Enrollment {
    /// The entry for `role`.
    pub fn get(&self, role: Role) -> &RoleEnrollment {
        match role {
            Role::Fronting => &self.fronting,
            Role::Entropic => &self.entropic,
            Role::Backing => &self.backing,
        }
    }

    /// The entry for `role`, mutable.
    pub fn get_mut(&mut self, role: Role) -> &mut RoleEnrollment {
        match role {
            Role::Fronting => &mut self.fronting,
            Role::Entropic => &mut self.entropic,
            Role::Backing => &mut self.backing,
        }
    }
}

/// Enrollment state of one role (both fields always written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleEnrollment {
    /// Enrolled relays of this role.
    #[serde(default, deserialize_with = "fields::null_default")]
    pub count: u64,
    /// Whether enrolling in this role needs an enrollment key.
    #[serde(default, deserialize_with = "fields::null_default")]
    pub restricted: bool,
}

/// Upgrade channels for relays and clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeChannels {
    /// Relay channel → version.
    #[serde(
        default,
        with = "version::serde_strict_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub relay: Channels,
    /// Client channel → version (clients read `default`).
    #[serde(
        default,
        with = "version::serde_strict_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub client: Channels,
}

/// The channel clients follow.
pub const DEFAULT_CHANNEL: &str = "default";

/// A directory `/info` body that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid directory info: {0}")]
pub struct DirInfoError(pub String);

impl DirInfo {
    /// The version relays on `channel` should run, if the directory names one.
    pub fn relay_version(&self, channel: &str) -> Option<&semver::Version> {
        self.upgrade_channels.relay.get(channel)
    }

    /// The version clients should run (`upgrade_channels.client.default`).
    pub fn client_version(&self) -> Option<&semver::Version> {
        self.upgrade_channels.client.get(DEFAULT_CHANNEL)
    }

    /// The JSON body (compact, HTML-escaped as the original writes it).
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, integers, booleans and maps of them always encode.
        crate::json::to_vec(self).unwrap_or_default()
    }

    /// Parses a `/info` body.
    pub fn from_json(body: &[u8]) -> Result<Self, DirInfoError> {
        fields::from_json_object(body).map_err(DirInfoError)
    }
}
