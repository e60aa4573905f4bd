//! The Wireleap relay (`wireleap-relay`): accepts tunnelled connections, forwards them to the
//! next hop, collects sharetokens and submits them for payment (services.md §1).
//!
//! LIFECYCLE SHELL: this crate currently holds only what the shared lifecycle needs — the
//! `config.json` type with every key services.md §1.3 lists, and a `run` that binds the
//! listen address, reports ready and waits for reload or shutdown. The relay service issue
//! replaces `run` (and refines the simple types below: durations and byte sizes are still
//! plain strings). Not here: TLS, tunnelling, enrollment, sharetokens — those come with it.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use wireleap_daemon::{
    check_listen_address, listeners, Config, ConfigProblem, NoCommands, RunContext, Service,
    VersionInfo,
};

/// The relay binary.
#[derive(Debug)]
pub struct Relay;

impl Service for Relay {
    const NAME: &'static str = "wireleap-relay";
    const ABOUT: &'static str = "Wireleap relay: forwards tunnelled connections for payment";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        // protocol.md §16.
        interfaces: &[
            ("client-relay", "0.2.0"),
            ("relay-contract", "0.1.0"),
            ("relay-dir", "0.2.0"),
            ("relay-relay", "0.2.0"),
        ],
    };
    type Config = RelayConfig;
    type Command = NoCommands;

    async fn run(mut ctx: RunContext<RelayConfig>) -> anyhow::Result<()> {
        let listener = listeners::bind_tcp("relay", &ctx.config.address).await?;
        tracing::info!(
            address = %listener.local_addr()?,
            "listening (lifecycle shell: the relay service is not in this build yet)"
        );
        ctx.readiness.ready();
        let address = ctx.config.address.clone();
        ctx.reload_until_shutdown(|new| {
            if new.address != address {
                tracing::warn!(old = %address, new = %new.address, "a new address takes effect on restart");
            }
        })
        .await;
        drop(listener);
        Ok(())
    }
}

/// A relay's role in a contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// First hop; usually behind a web server.
    Fronting,
    /// Middle hop.
    Entropic,
    /// Exit; dials the final target.
    Backing,
}

/// `config.json` of the relay (services.md §1.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// TLS + HTTP/2 listen address, `host:port`.
    pub address: String,
    /// Sharetoken submission tick (duration; `0` disables auto-submission).
    pub auto_submit_interval: String,
    /// Where submitted sharetokens are archived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_dir: Option<PathBuf>,
    /// Maximum lifetime of one spliced connection (duration; absent or `0` = no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxtime: Option<String>,
    /// Dial timeout (duration).
    pub timeout: String,
    /// Splice buffer size in bytes.
    pub bufsize: u32,
    /// Usage metering; absent = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_usage: Option<NetworkUsage>,
    /// Contracts served, keyed by contract URL.
    pub contracts: BTreeMap<String, ContractEntry>,
    /// Local status API; absent = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rest_api: Option<RestApi>,
    /// Act on the directory's upgrade notices.
    pub auto_upgrade: bool,
    /// Settings for tests only.
    pub danger_zone: DangerZone,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            address: String::new(),
            auto_submit_interval: "5m0s".into(),
            archive_dir: None,
            maxtime: None,
            timeout: "5s".into(),
            bufsize: 4096,
            network_usage: None,
            contracts: BTreeMap::new(),
            rest_api: None,
            auto_upgrade: true,
            danger_zone: DangerZone::default(),
        }
    }
}

/// `network_usage` (services.md §1.3).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkUsage {
    /// Window length (duration, e.g. `30d`).
    pub timeframe: Option<String>,
    /// Cap per window (byte size, e.g. `2TB`).
    pub global_limit: Option<String>,
    /// Stats autosave period (duration; `0` disables metering).
    pub write_interval: Option<String>,
    /// Where finished windows are archived.
    pub archive_dir: Option<PathBuf>,
}

/// One entry of `contracts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractEntry {
    /// Public address announced to the directory (`wireleap://host:port[/path]` or `https://`).
    pub address: String,
    /// Role in this contract.
    pub role: Role,
    /// Enrollment key for restricted roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Per-contract usage cap (byte size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_usage_limit: Option<String>,
    /// Upgrade channel to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_channel: Option<String>,
    /// Deprecated name of `upgrade_channel` (relay ≤ 0.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_channel: Option<String>,
}

/// `rest_api`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestApi {
    /// `http://host:port` or `file:///absolute/socket/path`.
    pub address: String,
    /// Mode of the unix socket, three octal digits (despite the name).
    pub socket_umask: String,
}

impl Default for RestApi {
    fn default() -> Self {
        RestApi {
            address: String::new(),
            socket_umask: "600".into(),
        }
    }
}

/// `danger_zone`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DangerZone {
    /// Allow dialing loopback and unspecified addresses.
    pub allow_loopback: bool,
}

impl Config for RelayConfig {
    fn initial() -> Self {
        RelayConfig {
            address: "0.0.0.0:13499".into(),
            ..RelayConfig::default()
        }
    }

    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.address.is_empty() {
            p.push(ConfigProblem::new("address", "is required"));
        } else {
            p.extend(check_listen_address("address", &self.address));
        }
        if self.bufsize == 0 {
            p.push(ConfigProblem::new("bufsize", "must be positive, got 0"));
        }
        if self.contracts.is_empty() {
            p.push(ConfigProblem::new(
                "contracts",
                "at least one contract is required",
            ));
        }
        for (url, c) in &self.contracts {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                p.push(ConfigProblem::new(
                    format!("contracts.{url}"),
                    "the key must be the contract's http(s) URL",
                ));
            }
            if !(c.address.starts_with("wireleap://") || c.address.starts_with("https://")) {
                p.push(ConfigProblem::new(
                    format!("contracts.{url}.address"),
                    format!("must be a wireleap:// or https:// URL, got {:?}", c.address),
                ));
            }
        }
        let with_channel = self
            .contracts
            .values()
            .filter(|c| c.upgrade_channel.as_deref().is_some_and(|s| !s.is_empty()))
            .count();
        if self.contracts.len() > 1 && with_channel != 1 {
            p.push(ConfigProblem::new(
                "contracts",
                format!(
                    "with several contracts exactly one must set upgrade_channel, {with_channel} do"
                ),
            ));
        }
        if let Some(api) = &self.rest_api {
            if let Some(path) = api.address.strip_prefix("file://") {
                if !path.starts_with('/') {
                    p.push(ConfigProblem::new(
                        "rest_api.address",
                        format!(
                            "a file:// address needs an absolute path (file:///...), got {:?}",
                            api.address
                        ),
                    ));
                }
            } else if let Some(hostport) = api.address.strip_prefix("http://") {
                p.extend(check_listen_address("rest_api.address", hostport));
            } else {
                p.push(ConfigProblem::new(
                    "rest_api.address",
                    format!("scheme must be http or file, got {:?}", api.address),
                ));
            }
            let mode_ok = api.socket_umask.len() == 3
                && api.socket_umask.chars().all(|c| ('0'..='7').contains(&c));
            if !mode_ok {
                p.push(ConfigProblem::new(
                    "rest_api.socket_umask",
                    format!("must be three octal digits, got {:?}", api.socket_umask),
                ));
            }
        }
        p
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(json: &str) -> RelayConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn minimal_valid_config() {
        let c = parse(
            r#"{"address": "0.0.0.0:13499",
                "contracts": {"https://c.example": {"address": "wireleap://r.example:13499", "role": "backing"}}}"#,
        );
        assert_eq!(c.validate(), vec![]);
        assert_eq!(c.timeout, "5s");
        assert!(c.auto_upgrade);
    }

    #[test]
    fn every_problem_is_reported() {
        let c = parse(
            r#"{"bufsize": 0,
                "contracts": {
                  "https://a.example": {"address": "tcp://x", "role": "fronting"},
                  "https://b.example": {"address": "wireleap://y:1", "role": "entropic"}},
                "rest_api": {"address": "ftp://x", "socket_umask": "999"}}"#,
        );
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "address",
                "bufsize",
                "contracts.https://a.example.address",
                "contracts",
                "rest_api.address",
                "rest_api.socket_umask"
            ]
        );
    }

    #[test]
    fn unknown_keys_and_roles_are_rejected() {
        assert!(serde_json::from_str::<RelayConfig>(r#"{"adress": "x"}"#).is_err());
        assert!(serde_json::from_str::<RelayConfig>(
            r#"{"contracts": {"https://c": {"address": "wireleap://x:1", "role": "exit"}}}"#
        )
        .is_err());
        assert!(
            serde_json::from_str::<RelayConfig>(r#"{"danger_zone": {"allow": true}}"#).is_err()
        );
    }

    #[test]
    fn initial_config_round_trips() {
        let text = serde_json::to_string(&RelayConfig::initial()).unwrap();
        assert_eq!(parse(&text), RelayConfig::initial());
    }
}
