//! `config.json` of `wireleap-dir`: every key, its default, and validation.
//!
//! The original directory's configuration is not public (services.md §2.3); the key names
//! follow network.md where it fixes them (`address`, `endpoint`, `database`, `tls`,
//! `contract`, `pow_cost`, `ping_check`, `relay_ttl`, `enrollment_keys`, `upgrade_channels`)
//! and are our choice otherwise. Durations are written as Wireleap duration strings
//! (`"15m"`, `"30s"`, `"2d"`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use wireleap_daemon::{check_listen_address, Config, ConfigProblem};
use wireleap_proto::duration::Duration;
use wireleap_proto::keys::PublicKey;
use wireleap_proto::relayentry::Role;
use wireleap_proto::{pow, version};

/// `config.json` of `wireleap-dir`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryConfig {
    /// HTTP API listen address, `host:port`.
    pub address: String,
    /// Public base URL of this directory (published in `/info`).
    pub endpoint: String,
    /// `sqlite://PATH` (relative paths are relative to the home directory) or `postgres://...`.
    pub database: String,
    /// Serve HTTPS with these files instead of plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// The service contract this directory serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract: Option<ContractRef>,
    /// Human-readable information URL published in `/info`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    /// Roles relays may enroll in (all three by default).
    pub roles: Vec<Role>,
    /// Enrollment keys per role; a role with at least one key is restricted.
    pub enrollment_keys: BTreeMap<Role, Vec<String>>,
    /// bcrypt proof-of-work cost demanded from new enrollments; 0 turns it off.
    pub pow_cost: u32,
    /// Most relays enrolled at once; further enrollments are refused.
    pub max_relays: usize,
    /// How long an issued proof-of-work challenge stays valid.
    pub pow_challenge_ttl: Duration,
    /// PING a relay through the tunnel protocol before listing it.
    pub ping_check: bool,
    /// Limit for the whole PING exchange (connect, TLS, HTTP/2, reply).
    pub ping_timeout: Duration,
    /// A relay whose last heartbeat is older than this is not listed, not counted, and
    /// purged.
    pub relay_ttl: Duration,
    /// How often heartbeat timestamps kept in memory are written to the database.
    pub heartbeat_flush_interval: Duration,
    /// How often the upgrade channel table is re-read from the database (so `channel set`
    /// reaches a running directory).
    pub channel_refresh_interval: Duration,
    /// Initial upgrade channels, copied into the database for channels it does not have yet.
    pub upgrade_channels: ChannelsConfig,
    /// How this directory upgrades itself (release repository, keys, channel, timeouts).
    pub upgrade: wireleap_upgrade::UpgradeConfig,
}

/// `tls`: certificate chain and private key (PEM files, relative to the home directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key.
    pub key_file: String,
}

/// `contract`: the service contract served by this directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractRef {
    /// Contract base URL.
    pub endpoint: String,
    /// Contract public key.
    pub public_key: PublicKey,
}

/// `upgrade_channels`: per component, channel name → target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelsConfig {
    /// Relay channels.
    pub relay: BTreeMap<String, ChannelConfig>,
    /// Client channels (clients read `default`).
    pub client: BTreeMap<String, ChannelConfig>,
}

/// One channel's target version and staged rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// The version relays on this channel should run.
    #[serde(with = "version::serde_strict")]
    pub version: semver::Version,
    /// Share of relays (0–100, two decimals) told to upgrade.
    #[serde(default = "full_rollout")]
    pub rollout_percent: f64,
}

fn full_rollout() -> f64 {
    100.0
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig {
            // Our choice: the original's default port is not public.
            address: "127.0.0.1:13500".into(),
            endpoint: "http://127.0.0.1:13500".into(),
            database: "sqlite://wireleap-dir.db".into(),
            tls: None,
            contract: None,
            info: None,
            roles: Role::ALL.to_vec(),
            enrollment_keys: BTreeMap::new(),
            max_relays: 100_000,
            pow_cost: 0,
            pow_challenge_ttl: Duration::from_mins(5),
            ping_check: true,
            ping_timeout: Duration::from_secs(5),
            // Three missed beats of the relays' 5-minute heartbeat (services.md §2.3).
            relay_ttl: Duration::from_mins(15),
            heartbeat_flush_interval: Duration::from_secs(5),
            channel_refresh_interval: Duration::from_secs(2),
            upgrade_channels: ChannelsConfig::default(),
            upgrade: wireleap_upgrade::UpgradeConfig::default(),
        }
    }
}

/// Longest channel name accepted (it is hashed into rollout buckets and stored).
pub const MAX_CHANNEL_NAME: usize = 64;

/// Whether `name` can be a channel name: 1–64 characters of `A-Za-z0-9._-`.
pub fn valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A rollout percentage as basis points (0–10000), or why it is unusable.
pub fn rollout_basis_points(percent: f64) -> Result<u32, String> {
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(format!(
            "rollout percentage {percent} is not between 0 and 100"
        ));
    }
    // In range, so the cast cannot overflow.
    Ok((percent * 100.0).round() as u32)
}

impl Config for DirectoryConfig {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems: Vec<ConfigProblem> = check_listen_address("address", &self.address)
            .into_iter()
            .collect();
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            problems.push(ConfigProblem::new(
                "endpoint",
                format!("{:?} is not an http:// or https:// URL", self.endpoint),
            ));
        }
        if !(self.database.starts_with("sqlite:")
            || self.database.starts_with("postgres:")
            || self.database.starts_with("postgresql:"))
        {
            problems.push(ConfigProblem::new(
                "database",
                format!(
                    "{:?} is not a sqlite://PATH or postgres://... URL",
                    self.database
                ),
            ));
        }
        if let Some(tls) = &self.tls {
            for (key, v) in [
                ("tls.cert_file", &tls.cert_file),
                ("tls.key_file", &tls.key_file),
            ] {
                if v.is_empty() {
                    problems.push(ConfigProblem::new(key, "must name a PEM file"));
                }
            }
        }
        if self.roles.is_empty() {
            problems.push(ConfigProblem::new(
                "roles",
                "no role allowed: list at least one of fronting, entropic, backing",
            ));
        }
        for (role, keys) in &self.enrollment_keys {
            if keys.iter().any(String::is_empty) {
                problems.push(ConfigProblem::new(
                    format!("enrollment_keys.{role}"),
                    "an empty enrollment key would admit relays that send no key",
                ));
            }
        }
        if self.pow_cost != 0 && !(pow::MIN_COST..=pow::MAX_COST).contains(&self.pow_cost) {
            problems.push(ConfigProblem::new(
                "pow_cost",
                format!(
                    "{} is not 0 (off) or a bcrypt cost between {} and {}",
                    self.pow_cost,
                    pow::MIN_COST,
                    pow::MAX_COST
                ),
            ));
        }
        for (key, d) in [
            ("pow_challenge_ttl", self.pow_challenge_ttl),
            ("ping_timeout", self.ping_timeout),
            ("relay_ttl", self.relay_ttl),
            ("heartbeat_flush_interval", self.heartbeat_flush_interval),
            ("channel_refresh_interval", self.channel_refresh_interval),
        ] {
            if d.as_nanos() <= 0 {
                problems.push(ConfigProblem::new(key, format!("{d} is not positive")));
            }
        }
        if self.relay_ttl.as_secs() < 1 {
            problems.push(ConfigProblem::new(
                "relay_ttl",
                format!("{} is shorter than a second", self.relay_ttl),
            ));
        }
        for (component, channels) in [
            ("relay", &self.upgrade_channels.relay),
            ("client", &self.upgrade_channels.client),
        ] {
            for (name, ch) in channels {
                let key = format!("upgrade_channels.{component}.{name}");
                if !valid_channel_name(name) {
                    problems.push(ConfigProblem::new(
                        &key,
                        format!(
                            "channel name {name:?} must be 1-{MAX_CHANNEL_NAME} characters of A-Z a-z 0-9 . _ -"
                        ),
                    ));
                }
                if let Err(e) = rollout_basis_points(ch.rollout_percent) {
                    problems.push(ConfigProblem::new(format!("{key}.rollout_percent"), e));
                }
            }
        }
        problems.extend(self.upgrade.problems("upgrade"));
        problems
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_unknown_keys_are_rejected() {
        assert_eq!(DirectoryConfig::default().validate(), vec![]);
        assert!(serde_json::from_str::<DirectoryConfig>(r#"{"adress": "x:1"}"#).is_err());
        let c: DirectoryConfig = serde_json::from_str(r#"{"address": "nowhere"}"#).unwrap();
        assert_eq!(c.validate().len(), 1);
    }

    #[test]
    fn written_config_reads_back() {
        let mut c = DirectoryConfig::default();
        c.enrollment_keys.insert(Role::Backing, vec!["k".into()]);
        c.upgrade_channels.relay.insert(
            "default".into(),
            ChannelConfig {
                version: semver::Version::new(0, 6, 2),
                rollout_percent: 12.5,
            },
        );
        let text = serde_json::to_string_pretty(&c).unwrap();
        let back: DirectoryConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c, "{text}");
        assert!(text.contains("\"relay_ttl\": \"15m0s\""), "{text}");
    }

    #[test]
    fn devnet_config_parses() {
        let text = r#"{
            "address": "127.0.0.1:4000",
            "endpoint": "http://127.0.0.1:4000",
            "contract": {"endpoint": "http://127.0.0.1:4001", "public_key": "gTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q"},
            "pow_cost": 0,
            "relay_ttl": "30s",
            "upgrade_channels": {"relay": {"default": {"version": "0.1.0", "rollout_percent": 100}}}
        }"#;
        let c: DirectoryConfig = serde_json::from_str(text).unwrap();
        assert_eq!(c.validate(), vec![]);
        assert_eq!(c.relay_ttl, Duration::from_secs(30));
        assert_eq!(
            c.upgrade_channels.relay["default"].version,
            semver::Version::new(0, 1, 0)
        );
        assert!(c.ping_check);
    }

    #[test]
    fn every_problem_is_reported() {
        let text = r#"{
            "endpoint": "ftp://x",
            "database": "mysql://x",
            "roles": [],
            "enrollment_keys": {"backing": [""]},
            "pow_cost": 3,
            "relay_ttl": "0s",
            "upgrade_channels": {"relay": {"bad name": {"version": "1.0.0", "rollout_percent": 101}}},
            "upgrade": {"releases": "ftp://x", "release_keys": ["k"]}
        }"#;
        let c: DirectoryConfig = serde_json::from_str(text).unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
        for k in [
            "endpoint",
            "database",
            "roles",
            "enrollment_keys.backing",
            "pow_cost",
            "relay_ttl",
            "upgrade_channels.relay.bad name",
            "upgrade_channels.relay.bad name.rollout_percent",
            "upgrade.releases",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
        assert!(serde_json::from_str::<DirectoryConfig>(r#"{"roles": ["middle"]}"#).is_err());
        assert!(
            serde_json::from_str::<DirectoryConfig>(r#"{"upgrade": {"auto_upgrade": true}}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<DirectoryConfig>(
            r#"{"upgrade_channels": {"relay": {"d": {"version": "v1.0.0"}}}}"#
        )
        .is_err());
    }

    #[test]
    fn rollout_percent_to_basis_points() {
        assert_eq!(rollout_basis_points(100.0), Ok(10_000));
        assert_eq!(rollout_basis_points(0.0), Ok(0));
        assert_eq!(rollout_basis_points(12.345), Ok(1235));
        assert!(rollout_basis_points(-0.5).is_err());
        assert!(rollout_basis_points(f64::NAN).is_err());
        assert!(rollout_basis_points(100.01).is_err());
    }
}
