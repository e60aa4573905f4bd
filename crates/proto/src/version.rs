//! Interface versions, their headers and the compatibility rule (protocol.md §16, §7.4).
//!
//! Versions on the wire are parsed as *strict* semver by the original (three numbers without
//! leading zeroes, no `v`, no spaces; pre-release and build allowed). [`parse_strict`] applies
//! exactly those rules and words its errors as the original does, because the text of a failed
//! check travels to the peer as a status cause. The `semver` crate's own parser is only used
//! after these checks, to build the value.
//!
//! Not here: the HTTP gate itself (see `request`), software upgrade decisions (upgrade crate).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// A version text that is not strict semver. `Display` is the original's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SemverError {
    /// Empty input.
    #[error("Version string empty")]
    Empty,
    /// Fewer than three dot-separated parts.
    #[error("No Major.Minor.Patch elements found")]
    MissingParts,
    /// A number part holds something other than ASCII digits.
    #[error("Invalid character(s) found in {part} number {text:?}")]
    InvalidNumber {
        /// `major`, `minor` or `patch`.
        part: &'static str,
        /// The offending part.
        text: String,
    },
    /// A number part starts with `0` and has more digits.
    #[error("{part} number must not contain leading zeroes {text:?}")]
    LeadingZero {
        /// `Major`, `Minor` or `Patch`.
        part: &'static str,
        /// The offending part.
        text: String,
    },
    /// A number part is empty or larger than 64 bits.
    #[error("strconv.ParseUint: parsing {text:?}: {reason}")]
    Number {
        /// The offending part.
        text: String,
        /// `invalid syntax` or `value out of range`.
        reason: &'static str,
    },
    /// An empty pre-release identifier.
    #[error("Prerelease is empty")]
    EmptyPrerelease,
    /// A numeric pre-release identifier with a leading zero.
    #[error("Numeric PreRelease version must not contain leading zeroes {0:?}")]
    PrereleaseLeadingZero(String),
    /// A pre-release identifier with characters outside `[0-9A-Za-z-]`.
    #[error("Invalid character(s) found in prerelease {0:?}")]
    InvalidPrerelease(String),
    /// An empty build identifier.
    #[error("Build meta data is empty")]
    EmptyBuild,
    /// A build identifier with characters outside `[0-9A-Za-z-]`.
    #[error("Invalid character(s) found in build meta data {0:?}")]
    InvalidBuild(String),
}

/// A failed interface version check. `Display` is the text the original puts in the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    /// The other side's value is not strict semver.
    #[error("error when parsing version: {0}")]
    Parse(#[from] SemverError),
    /// Parsed, but the minor differs from ours.
    #[error("expecting version {major}.{minor}.x, got {got}")]
    Incompatible {
        /// Our major.
        major: u64,
        /// Our minor.
        minor: u64,
        /// Their version as sent.
        got: String,
    },
}

fn is_alnum_dash(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn number(text: &str, lower: &'static str, upper: &'static str) -> Result<u64, SemverError> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SemverError::InvalidNumber {
            part: lower,
            text: text.to_string(),
        });
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(SemverError::LeadingZero {
            part: upper,
            text: text.to_string(),
        });
    }
    if text.is_empty() {
        return Err(SemverError::Number {
            text: String::new(),
            reason: "invalid syntax",
        });
    }
    text.parse::<u64>().map_err(|_| SemverError::Number {
        text: text.to_string(),
        reason: "value out of range",
    })
}

/// Parses strict semver with the original's rules and error texts.
pub fn parse_strict(text: &str) -> Result<semver::Version, SemverError> {
    if text.is_empty() {
        return Err(SemverError::Empty);
    }
    let mut parts = text.splitn(3, '.');
    let (Some(major), Some(minor), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SemverError::MissingParts);
    };
    let major = number(major, "major", "Major")?;
    let minor = number(minor, "minor", "Minor")?;
    let (rest, build) = match rest.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (rest, None),
    };
    let (patch, pre) = match rest.split_once('-') {
        Some((p, pre)) => (p, Some(pre)),
        None => (rest, None),
    };
    let patch = number(patch, "patch", "Patch")?;
    if let Some(pre) = pre {
        for id in pre.split('.') {
            if id.is_empty() {
                return Err(SemverError::EmptyPrerelease);
            }
            if id.bytes().all(|b| b.is_ascii_digit()) {
                if id.len() > 1 && id.starts_with('0') {
                    return Err(SemverError::PrereleaseLeadingZero(id.to_string()));
                }
                if id.parse::<u64>().is_err() {
                    return Err(SemverError::Number {
                        text: id.to_string(),
                        reason: "value out of range",
                    });
                }
            } else if !is_alnum_dash(id) {
                return Err(SemverError::InvalidPrerelease(id.to_string()));
            }
        }
    }
    if let Some(build) = build {
        for id in build.split('.') {
            if id.is_empty() {
                return Err(SemverError::EmptyBuild);
            }
            if !is_alnum_dash(id) {
                return Err(SemverError::InvalidBuild(id.to_string()));
            }
        }
    }
    let mut v = semver::Version::new(major, minor, patch);
    // The checks above are the semver 2.0 identifier grammar, which the semver crate also
    // implements, so these constructors accept everything that reaches them.
    if let Some(pre) = pre {
        v.pre = semver::Prerelease::new(pre)
            .map_err(|_| SemverError::InvalidPrerelease(pre.to_string()))?;
    }
    if let Some(build) = build {
        v.build = semver::BuildMetadata::new(build)
            .map_err(|_| SemverError::InvalidBuild(build.to_string()))?;
    }
    Ok(v)
}

/// Checks `theirs` (a header value as received) against `ours`: strict semver, same minor.
/// Returns their parsed version.
pub fn check_compatible(
    ours: &semver::Version,
    theirs: &str,
) -> Result<semver::Version, VersionError> {
    let v = parse_strict(theirs)?;
    if v.minor != ours.minor {
        return Err(VersionError::Incompatible {
            major: ours.major,
            minor: ours.minor,
            got: theirs.to_string(),
        });
    }
    Ok(v)
}

/// One consumer→provider API of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interface {
    /// Client → service contract.
    ClientContract,
    /// Client → directory.
    ClientDir,
    /// Client → relay (tunnel payload).
    ClientRelay,
    /// Contract → payment service.
    ContractPs,
    /// Payment service → auth.
    PsAuth,
    /// Relay → service contract.
    RelayContract,
    /// Relay → directory.
    RelayDir,
    /// Relay → relay.
    RelayRelay,
}

impl Interface {
    /// Every interface, in the original's (alphabetical) order.
    pub const ALL: [Interface; 8] = [
        Interface::ClientContract,
        Interface::ClientDir,
        Interface::ClientRelay,
        Interface::ContractPs,
        Interface::PsAuth,
        Interface::RelayContract,
        Interface::RelayDir,
        Interface::RelayRelay,
    ];

    /// The name used in version maps, e.g. `client-relay`.
    pub const fn name(self) -> &'static str {
        match self {
            Interface::ClientContract => "client-contract",
            Interface::ClientDir => "client-dir",
            Interface::ClientRelay => "client-relay",
            Interface::ContractPs => "contract-ps",
            Interface::PsAuth => "ps-auth",
            Interface::RelayContract => "relay-contract",
            Interface::RelayDir => "relay-dir",
            Interface::RelayRelay => "relay-relay",
        }
    }

    /// Looks an interface up by [`Interface::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.name() == name)
    }

    /// The version header name in Go's canonical form, e.g. `Wireleap-Relay-Dir-Version`.
    pub const fn header_name(self) -> &'static str {
        match self {
            Interface::ClientContract => "Wireleap-Client-Contract-Version",
            Interface::ClientDir => "Wireleap-Client-Dir-Version",
            Interface::ClientRelay => "Wireleap-Client-Relay-Version",
            Interface::ContractPs => "Wireleap-Contract-Ps-Version",
            Interface::PsAuth => "Wireleap-Ps-Auth-Version",
            Interface::RelayContract => "Wireleap-Relay-Contract-Version",
            Interface::RelayDir => "Wireleap-Relay-Dir-Version",
            Interface::RelayRelay => "Wireleap-Relay-Relay-Version",
        }
    }

    /// The version we implement.
    pub const fn version(self) -> semver::Version {
        match self {
            Interface::ClientDir
            | Interface::ClientRelay
            | Interface::RelayDir
            | Interface::RelayRelay => semver::Version::new(0, 2, 0),
            Interface::ClientContract
            | Interface::ContractPs
            | Interface::PsAuth
            | Interface::RelayContract => semver::Version::new(0, 1, 0),
        }
    }

    /// Checks the other side's version header value against ours.
    pub fn check(self, theirs: &str) -> Result<semver::Version, VersionError> {
        check_compatible(&self.version(), theirs)
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The header carrying a relay's software version.
pub const RELAY_SOFTWARE_VERSION_HEADER: &str = "Wireleap-Relay-Version";

/// A program of the network, for listing the interfaces it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// The client.
    Client,
    /// A relay.
    Relay,
    /// The directory.
    Directory,
    /// The service contract.
    Contract,
    /// The auth service.
    Auth,
    /// A payment service.
    PaymentService,
}

impl Component {
    /// The name used in `Wireleap-<Name>-Pubkey` / `-Signature` headers and auth errors.
    pub const fn name(self) -> &'static str {
        match self {
            Component::Client => "Client",
            Component::Relay => "Relay",
            Component::Directory => "Directory",
            Component::Contract => "Contract",
            Component::Auth => "Auth",
            Component::PaymentService => "Ps",
        }
    }

    /// The interfaces this component consumes or provides, as `version --json` lists them.
    pub const fn interfaces(self) -> &'static [Interface] {
        match self {
            Component::Client => &[
                Interface::ClientContract,
                Interface::ClientDir,
                Interface::ClientRelay,
            ],
            Component::Relay => &[
                Interface::ClientRelay,
                Interface::RelayContract,
                Interface::RelayDir,
                Interface::RelayRelay,
            ],
            Component::Directory => &[Interface::ClientDir, Interface::RelayDir],
            Component::Contract => &[
                Interface::ClientContract,
                Interface::ContractPs,
                Interface::RelayContract,
            ],
            Component::Auth => &[Interface::PsAuth],
            Component::PaymentService => &[Interface::ContractPs, Interface::PsAuth],
        }
    }

    /// `(interface, our version)` for every interface the component speaks.
    pub fn interface_versions(self) -> Vec<(Interface, semver::Version)> {
        self.interfaces()
            .iter()
            .map(|i| (*i, i.version()))
            .collect()
    }
}

/// The shape printed by `version --json`: software version and interface versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionReport {
    /// The program's own version.
    #[serde(serialize_with = "serialize_version")]
    pub software: semver::Version,
    /// Interface name → version (sorted by name).
    pub interfaces: BTreeMap<&'static str, String>,
}

impl VersionReport {
    /// The report for `component` running software version `software`.
    pub fn new(component: Component, software: semver::Version) -> Self {
        Self {
            software,
            interfaces: component
                .interface_versions()
                .into_iter()
                .map(|(i, v)| (i.name(), v.to_string()))
                .collect(),
        }
    }
}

fn serialize_version<S: Serializer>(v: &semver::Version, ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_str(v)
}

/// serde for a required `semver::Version` as a strict-semver string.
pub mod serde_strict {
    use super::*;

    /// Writes the version text.
    pub fn serialize<S: Serializer>(v: &semver::Version, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(v)
    }

    /// Reads strict semver; errors carry the original's wording.
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<semver::Version, D::Error> {
        let s = String::deserialize(de)?;
        parse_strict(&s).map_err(serde::de::Error::custom)
    }
}

/// serde for an optional `semver::Version`: `null` and absent are `None`; `""` is an error
/// as in the original. Use with `skip_serializing_if = "Option::is_none"`.
pub mod serde_strict_opt {
    use super::*;

    /// Writes the version text (`None` as `null`, normally skipped).
    pub fn serialize<S: Serializer>(
        v: &Option<semver::Version>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => ser.collect_str(v),
            None => ser.serialize_none(),
        }
    }

    /// Reads strict semver or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<Option<semver::Version>, D::Error> {
        match Option::<String>::deserialize(de)? {
            None => Ok(None),
            Some(s) => parse_strict(&s).map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// serde for a map of name → strict semver (upgrade channels, version maps).
pub mod serde_strict_map {
    use super::*;

    /// Writes name → version text, keys sorted.
    pub fn serialize<S: Serializer>(
        v: &BTreeMap<String, semver::Version>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        ser.collect_map(v.iter().map(|(k, v)| (k, v.to_string())))
    }

    /// Reads name → strict semver; `null` is an empty map.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<BTreeMap<String, semver::Version>, D::Error> {
        let raw = Option::<BTreeMap<String, String>>::deserialize(de)?.unwrap_or_default();
        raw.into_iter()
            .map(|(k, v)| {
                parse_strict(&v)
                    .map(|v| (k, v))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_edge_cases() {
        assert!(parse_strict("1.2.3-").is_err());
        assert!(parse_strict("1.2.3+").is_err());
        assert!(parse_strict("1.2.3-01").is_err());
        assert!(parse_strict("1.2.3+01").is_ok());
        assert!(parse_strict("1.2.3-a.b-c+x.y").is_ok());
        assert!(parse_strict("1..3").is_err());
        assert!(parse_strict("1.2.99999999999999999999").is_err());
        assert_eq!(
            parse_strict("1.2.3-rc.1").map(|v| v.to_string()),
            Ok("1.2.3-rc.1".to_string())
        );
    }

    #[test]
    fn header_names_are_built_from_parts() {
        for i in Interface::ALL {
            let parts: Vec<String> = i
                .name()
                .split('-')
                .map(|p| {
                    let mut c = p.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect();
            assert_eq!(
                i.header_name(),
                format!("Wireleap-{}-Version", parts.join("-"))
            );
            assert_eq!(Interface::from_name(i.name()), Some(i));
        }
    }
}
