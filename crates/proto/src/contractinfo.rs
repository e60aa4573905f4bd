//! The service contract's `GET /info` object (protocol.md §12).
//!
//! Serialised in the original's field order with its omission rules (nested sections are
//! always written; some empty values are written as `null`, `""` or `"0s"`). Durations are
//! read leniently as the original reads them (a bad duration string becomes zero), so that a
//! Go contract's `/info` means the same to our relays and clients as to Go ones. Building the
//! object from the contract's configuration is the contract crate's job.

use crate::duration::{self, Duration};
use crate::fields;
use crate::keys::PublicKey;
use crate::rational::Rational;
use crate::version;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Contract `/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractInfo {
    /// The contract's key (its identity for relays and clients); `""` when unset.
    #[serde(default, with = "fields::opt_pubkey")]
    pub pubkey: Option<PublicKey>,
    /// Contract software version (strict semver; `0.0.0` when unset).
    #[serde(
        default = "zero_version",
        serialize_with = "ser_version",
        deserialize_with = "de_version"
    )]
    pub version: semver::Version,
    /// Public base URL.
    #[serde(
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint: Option<String>,
    /// Accepted proof-of-funding issuers.
    #[serde(
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub proof_of_funding: Vec<PofIssuer>,
    /// Servicekey price and lifetime.
    #[serde(default, deserialize_with = "fields::null_default")]
    pub servicekey: ServicekeyInfo,
    /// Settlement rules.
    #[serde(default, deserialize_with = "fields::null_default")]
    pub settlement: SettlementInfo,
    /// Payout rules.
    #[serde(default, deserialize_with = "fields::null_default")]
    pub payout: PayoutInfo,
    /// The directory this contract uses.
    #[serde(default, deserialize_with = "fields::null_default")]
    pub directory: DirectoryRef,
    /// Operator details.
    #[serde(default, deserialize_with = "fields::null_default")]
    pub metadata: Metadata,
}

impl Default for ContractInfo {
    fn default() -> Self {
        Self {
            pubkey: None,
            version: zero_version(),
            endpoint: None,
            proof_of_funding: Vec::new(),
            servicekey: ServicekeyInfo::default(),
            settlement: SettlementInfo::default(),
            payout: PayoutInfo::default(),
            directory: DirectoryRef::default(),
            metadata: Metadata::default(),
        }
    }
}

/// An accepted proof-of-funding issuer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PofIssuer {
    /// Where to buy pofs.
    #[serde(
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint: Option<String>,
    /// Pof type (`dummy`, `stripe`, ...).
    #[serde(
        rename = "type",
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<String>,
    /// The issuer's signing key (always written).
    #[serde(default, with = "fields::opt_pubkey")]
    pub pubkey: Option<PublicKey>,
}

/// `servicekey` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicekeyInfo {
    /// Currency of `value`.
    #[serde(
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub currency: Option<String>,
    /// Price of one servicekey (written `null` when unset).
    #[serde(default)]
    pub value: Option<Rational>,
    /// How long a servicekey lasts (omitted when zero).
    #[serde(
        default,
        deserialize_with = "duration::lenient",
        skip_serializing_if = "Duration::is_zero"
    )]
    pub duration: Duration,
}

/// `settlement` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementInfo {
    /// The contract's fee in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_percent: Option<Rational>,
    /// How long after a servicekey expires its sharetokens may be submitted (always written).
    #[serde(default, deserialize_with = "duration::lenient")]
    pub submission_window: Duration,
}

/// `payout` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutInfo {
    /// Payment service URL (written `null` when unset).
    #[serde(default, deserialize_with = "fields::null_default")]
    pub endpoint: Option<String>,
    /// Payout kind (always written, possibly `""`).
    #[serde(rename = "type", default, deserialize_with = "fields::null_default")]
    pub kind: String,
    /// How often pending payouts are checked (omitted when zero).
    #[serde(
        default,
        deserialize_with = "duration::lenient",
        skip_serializing_if = "Duration::is_zero"
    )]
    pub check_period: Duration,
    /// Smallest withdrawal in minor units (omitted when zero).
    #[serde(
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "is_zero"
    )]
    pub min_withdrawal: i64,
    /// Largest withdrawal in minor units (omitted when zero).
    #[serde(
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "is_zero"
    )]
    pub max_withdrawal: i64,
    /// Human-readable payout information URL.
    #[serde(
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub info: Option<String>,
}

/// `directory` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryRef {
    /// Directory base URL (written `null` when unset).
    #[serde(default, deserialize_with = "fields::null_default")]
    pub endpoint: Option<String>,
    /// Directory key, which signs relay lists (written `""` when unset).
    #[serde(default, with = "fields::opt_pubkey")]
    pub public_key: Option<PublicKey>,
}

/// `metadata` section (all omitted when empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Operator name.
    #[serde(
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub operator: Option<String>,
    /// Operator web site.
    #[serde(
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub operator_url: Option<String>,
    /// Contract name.
    #[serde(
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
    /// Terms of service URL.
    #[serde(
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub terms_of_service: Option<String>,
    /// Privacy policy URL.
    #[serde(
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub privacy_policy: Option<String>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn zero_version() -> semver::Version {
    semver::Version::new(0, 0, 0)
}

fn ser_version<S: Serializer>(v: &semver::Version, ser: S) -> Result<S::Ok, S::Error> {
    version::serde_strict::serialize(v, ser)
}

fn de_version<'de, D: Deserializer<'de>>(de: D) -> Result<semver::Version, D::Error> {
    version::serde_strict_opt::deserialize(de).map(|v| v.unwrap_or_else(zero_version))
}

/// A contract `/info` body that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid contract info: {0}")]
pub struct ContractInfoError(pub String);

impl ContractInfo {
    /// The JSON body (compact, HTML-escaped as the original writes it).
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, integers and nested structs of them always encode.
        crate::json::to_vec(self).unwrap_or_default()
    }

    /// Parses a `/info` body.
    pub fn from_json(body: &[u8]) -> Result<Self, ContractInfoError> {
        fields::from_json_object(body).map_err(ContractInfoError)
    }
}
