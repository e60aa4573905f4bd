//! Accesskey files (protocol.md §6): what a payment service hands a user and the client imports.
//!
//! The file is not signed; each pof inside carries its issuer's signature, and the binding to a
//! contract is checked by the client against the live contract `/info` key
//! ([`ImportedAccessKey::check_contract`]). [`AccessKey`] is the wire shape as parsed;
//! [`AccessKey::import`] applies the client's checks and yields an [`ImportedAccessKey`] whose
//! required parts are no longer optional. Reading the file and storing pofs is the client's job.

use crate::fields;
use crate::json::{self, JsonError};
use crate::keys::{self, PublicKey};
use crate::pof::Pof;
use crate::version;
use serde::{Deserialize, Serialize};

/// The accesskey format version this implementation writes.
pub const SUPPORTED_VERSION: semver::Version = semver::Version::new(0, 1, 0);

/// An accesskey as parsed: `version` is always written (`null` when absent), the rest is
/// omitempty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// Format version (strict semver).
    #[serde(default, with = "version::serde_strict_opt")]
    pub version: Option<semver::Version>,
    /// The contract the pofs are for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<AccessKeyContract>,
    /// The pofs; `Some(vec![])` (an empty array) counts as present, as in the original.
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub pofs: Option<Vec<Pof>>,
}

/// The accesskey's `contract` object; both fields omitempty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyContract {
    /// The contract's base URL.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "fields::opt_string"
    )]
    pub endpoint: Option<String>,
    /// The contract's public key.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "keys::opt_b64"
    )]
    pub public_key: Option<PublicKey>,
}

fn is_none_or_empty(v: &Option<Vec<Pof>>) -> bool {
    v.as_ref().is_none_or(Vec::is_empty)
}

/// An accesskey that passed the client's import checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedAccessKey {
    /// Format version (compatible with [`SUPPORTED_VERSION`]).
    pub version: semver::Version,
    /// The contract's base URL (not validated as a URL here).
    pub endpoint: String,
    /// The contract's public key as the file states it.
    pub contract: PublicKey,
    /// The pofs, possibly none.
    pub pofs: Vec<Pof>,
}

/// A required accesskey field that was absent (or `null`, or empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessKeyField {
    /// `version`.
    #[error("version")]
    Version,
    /// `contract`.
    #[error("contract")]
    Contract,
    /// `pofs`.
    #[error("pofs")]
    Pofs,
    /// `contract.endpoint`.
    #[error("contract.endpoint")]
    Endpoint,
    /// `contract.public_key`.
    #[error("contract.public_key")]
    PublicKey,
}

/// Why an accesskey was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessKeyError {
    /// Not JSON of the accesskey shape (including a version that is not strict semver).
    #[error("invalid accesskey: {0}")]
    Json(#[from] JsonError),
    /// Required fields are missing; all of them are listed.
    #[error("accesskey is missing required field(s): {}", list(.0))]
    Missing(Vec<AccessKeyField>),
    /// A version text that is not strict semver.
    #[error("invalid accesskey version: {0}")]
    BadVersion(#[source] version::SemverError),
    /// The version's minor number is not the supported one.
    #[error("incompatible accesskey version {got}: expecting x.{}.x", SUPPORTED_VERSION.minor)]
    IncompatibleVersion {
        /// The file's version.
        got: semver::Version,
    },
    /// The file's contract key is not the key the contract itself publishes.
    #[error("accesskey is for contract {file}, but the contract's /info key is {live}")]
    ContractMismatch {
        /// The key in the file.
        file: PublicKey,
        /// The key from the contract's `/info`.
        live: PublicKey,
    },
}

fn list(fields: &[AccessKeyField]) -> String {
    fields
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compatible iff the minor number equals the supported one (major and patch are ignored, as
/// in the original: `1.1.0` is accepted, `0.2.0` is not).
pub fn version_compatible(v: &semver::Version) -> bool {
    v.minor == SUPPORTED_VERSION.minor
}

/// Parses a version text strictly and checks compatibility.
pub fn check_version(text: &str) -> Result<semver::Version, AccessKeyError> {
    let v = version::parse_strict(text).map_err(AccessKeyError::BadVersion)?;
    if version_compatible(&v) {
        Ok(v)
    } else {
        Err(AccessKeyError::IncompatibleVersion { got: v })
    }
}

impl AccessKey {
    /// A current-version accesskey for `contract` at `endpoint` carrying `pofs`.
    pub fn new(endpoint: String, contract: PublicKey, pofs: Vec<Pof>) -> Self {
        Self {
            version: Some(SUPPORTED_VERSION),
            contract: Some(AccessKeyContract {
                endpoint: Some(endpoint),
                public_key: Some(contract),
            }),
            pofs: Some(pofs),
        }
    }

    /// Go's `json.Marshal` bytes.
    pub fn to_json(&self) -> Result<Vec<u8>, JsonError> {
        json::to_vec(self)
    }

    /// Parses with the original's JSON rules; nothing is checked beyond the shape.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JsonError> {
        json::from_slice(bytes)
    }

    /// The client's import checks: `version`, `contract`, `pofs`, `contract.endpoint` and
    /// `contract.public_key` present (every missing one is named), then the version rule.
    pub fn validate(self) -> Result<ImportedAccessKey, AccessKeyError> {
        let mut missing = Vec::new();
        if self.version.is_none() {
            missing.push(AccessKeyField::Version);
        }
        let contract = self.contract.unwrap_or_else(|| {
            missing.push(AccessKeyField::Contract);
            AccessKeyContract::default()
        });
        if self.pofs.is_none() {
            missing.push(AccessKeyField::Pofs);
        }
        let has_contract = !missing.contains(&AccessKeyField::Contract);
        if has_contract && contract.endpoint.is_none() {
            missing.push(AccessKeyField::Endpoint);
        }
        if has_contract && contract.public_key.is_none() {
            missing.push(AccessKeyField::PublicKey);
        }
        match (
            self.version,
            contract.endpoint,
            contract.public_key,
            self.pofs,
        ) {
            (Some(version), Some(endpoint), Some(key), Some(pofs)) if missing.is_empty() => {
                if !version_compatible(&version) {
                    return Err(AccessKeyError::IncompatibleVersion { got: version });
                }
                Ok(ImportedAccessKey {
                    version,
                    endpoint,
                    contract: key,
                    pofs,
                })
            }
            _ => Err(AccessKeyError::Missing(missing)),
        }
    }

    /// Parses and validates a file in one step.
    pub fn import(bytes: &[u8]) -> Result<ImportedAccessKey, AccessKeyError> {
        Self::from_json(bytes)?.validate()
    }
}

impl ImportedAccessKey {
    /// Checks the file's contract key against the key the contract publishes in `/info`.
    pub fn check_contract(&self, live: &PublicKey) -> Result<(), AccessKeyError> {
        if self.contract == *live {
            Ok(())
        } else {
            Err(AccessKeyError::ContractMismatch {
                file: self.contract,
                live: *live,
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::keys::Keypair;
    use proptest::prelude::*;

    fn pof(n: u8) -> Pof {
        Pof::new_signed(
            &Keypair::from_seed([4; 32]),
            "dummy".into(),
            1_700_086_400,
            format!("{n:018x}"),
        )
    }

    proptest! {
        #[test]
        fn round_trips(endpoint in "[ -~]{1,30}", seed: u8, n in 0u8..4, minor in 0u64..3, version: bool) {
            let mut ak = AccessKey::new(
                endpoint,
                Keypair::from_seed([seed; 32]).public(),
                (0..n).map(pof).collect(),
            );
            if let Some(v) = ak.version.as_mut() {
                v.minor = minor;
            }
            if !version {
                ak.version = None;
            }
            let bytes = ak.to_json().unwrap();
            let back = AccessKey::from_json(&bytes).unwrap();
            prop_assert_eq!(back.to_json().unwrap(), bytes);
            // An empty pof list is written as absent (omitempty), so compare past that.
            prop_assert_eq!(back.version.clone(), ak.version.clone());
            prop_assert_eq!(back.contract.clone(), ak.contract.clone());
            let imported = back.validate();
            prop_assert_eq!(imported.is_ok(), version && minor == 1 && n > 0);
        }
    }

    #[test]
    fn every_missing_field_is_named() {
        let err = AccessKey::import(b"{}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "accesskey is missing required field(s): version, contract, pofs"
        );
        let err = AccessKey::import(br#"{"version":"0.1.0","contract":{},"pofs":[]}"#).unwrap_err();
        assert!(matches!(
            err,
            AccessKeyError::Missing(ref f) if f == &[AccessKeyField::Endpoint, AccessKeyField::PublicKey]
        ));
        let ok = AccessKey::import(
            br#"{"version":"0.1.0","contract":{"endpoint":"https://c","public_key":"gTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q"},"pofs":[]}"#,
        )
        .unwrap();
        assert!(ok.pofs.is_empty());
        assert!(ok
            .check_contract(&Keypair::from_seed([2; 32]).public())
            .is_ok());
        assert!(matches!(
            ok.check_contract(&Keypair::from_seed([3; 32]).public()),
            Err(AccessKeyError::ContractMismatch { .. })
        ));
    }

    #[test]
    fn bad_versions_are_refused() {
        assert!(matches!(
            AccessKey::import(br#"{"version":"v0.1.0"}"#),
            Err(AccessKeyError::Json(_))
        ));
        let ak = AccessKey {
            version: Some(semver::Version::new(0, 2, 0)),
            ..AccessKey::new(
                "https://c".into(),
                Keypair::from_seed([2; 32]).public(),
                vec![],
            )
        };
        assert!(matches!(
            ak.validate(),
            Err(AccessKeyError::IncompatibleVersion { .. })
        ));
    }
}
