//! The relay's `config.json` (services.md §1.3), typed and validated.
//!
//! Durations use the Wireleap syntax (`5m`, `30d`, `0.5s`; proto `duration`), byte sizes the
//! datasize syntax (`2TB`; proto `bytesize`). Unlike the original, a bad duration is an error
//! naming the key instead of silently keeping the default. Keys beyond the original's:
//! `h2c_address`, `heartbeat_interval`, `drain_timeout`, `database` and
//! `danger_zone.allow_private`; they all have defaults, so an original config still loads.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use wireleap_daemon::{check_listen_address, Config, ConfigProblem};
use wireleap_proto::address::{Address, Scheme};
use wireleap_proto::bytesize::ByteSize;
use wireleap_proto::duration::Duration;
pub use wireleap_proto::relayentry::Role;

/// The channel a single-contract relay follows when none is configured.
pub const DEFAULT_CHANNEL: &str = "default";

/// `config.json` of the relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// TLS + HTTP/2 listen address for `wireleap://` traffic, `host:port`.
    pub address: String,
    /// Optional plaintext HTTP/2 (h2c, prior knowledge) listener for a fronting relay behind
    /// a web server that terminates TLS (nginx `grpc_pass`, Apache `h2c://`). Bind it to
    /// loopback: whoever reaches it skips TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2c_address: Option<String>,
    /// Sharetoken submission tick and retry interval; `0s` disables auto-submission.
    pub auto_submit_interval: Duration,
    /// If set, accepted sharetokens are also written here as
    /// `<contract key>/<signature>.json` once the contract accepted them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_dir: Option<PathBuf>,
    /// Maximum lifetime of one spliced connection; `0s` = no limit.
    pub maxtime: Duration,
    /// Dial timeout for the next hop or target.
    pub timeout: Duration,
    /// Splice buffer size in bytes, per direction and stream, allocated when the direction's
    /// first bytes arrive; a bulk direction's buffer grows from it to 128 KiB.
    pub bufsize: u32,
    /// Time between heartbeats to each directory.
    pub heartbeat_interval: Duration,
    /// On shutdown (or hand-over), how long open streams may keep running before they are cut.
    pub drain_timeout: Duration,
    /// Where sharetokens, usage counters and cached contract info are kept:
    /// `sqlite://PATH` (relative to the home directory) or `postgres://...`.
    pub database: String,
    /// Usage metering; absent = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_usage: Option<NetworkUsage>,
    /// Contracts served, keyed by contract URL.
    pub contracts: BTreeMap<String, ContractEntry>,
    /// Local status API; absent = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rest_api: Option<RestApi>,
    /// Act on the directory's upgrade notices (read by the upgrade code).
    pub auto_upgrade: bool,
    /// Where releases come from and which keys sign them, and the hand-over timings. Its
    /// `channel`, `auto` and `drain_timeout` are not used by the relay: the channel is the
    /// contracts' `upgrade_channel` (setting `upgrade.channel` is an error), `auto_upgrade`
    /// and the top-level `drain_timeout` decide the others. Without `releases` and
    /// `release_keys`, upgrade notices are only logged.
    pub upgrade: wireleap_upgrade::UpgradeConfig,
    /// Settings that open the relay to its own networks; for tests and private networks.
    pub danger_zone: DangerZone,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            address: String::new(),
            h2c_address: None,
            auto_submit_interval: Duration::from_mins(5),
            archive_dir: None,
            maxtime: Duration::ZERO,
            timeout: Duration::from_secs(5),
            bufsize: 4096,
            heartbeat_interval: Duration::from_mins(5),
            drain_timeout: Duration::from_secs(8),
            database: "sqlite://relay.db".into(),
            network_usage: None,
            contracts: BTreeMap::new(),
            rest_api: None,
            auto_upgrade: true,
            upgrade: wireleap_upgrade::UpgradeConfig::default(),
            danger_zone: DangerZone::default(),
        }
    }
}

/// `network_usage` (services.md §1.9).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkUsage {
    /// Window length (e.g. `30d`); absent or `0s` = metering off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeframe: Option<Duration>,
    /// Cap for all contracts together per window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_limit: Option<ByteSize>,
    /// How often counters are written to the database (default `1m`; `0s` turns metering
    /// off, as in the original).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_interval: Option<Duration>,
    /// Where finished windows are archived as JSON files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_dir: Option<PathBuf>,
}

impl NetworkUsage {
    /// The window length when metering is on.
    pub fn active_timeframe(&self) -> Option<Duration> {
        let tf = self.timeframe.filter(|t| t.0 > 0)?;
        match self.write_interval {
            Some(w) if w.0 <= 0 => None,
            _ => Some(tf),
        }
    }

    /// The autosave period (default one minute).
    pub fn write_every(&self) -> Duration {
        self.write_interval
            .filter(|w| w.0 > 0)
            .unwrap_or(Duration::from_mins(1))
    }
}

/// One entry of `contracts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractEntry {
    /// Public address announced to the directory (`wireleap://host:port[/path]` or `https://`).
    pub address: Address,
    /// Role in this contract.
    pub role: Role,
    /// Enrollment key for restricted roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Per-contract usage cap per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_usage_limit: Option<ByteSize>,
    /// Upgrade channel to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_channel: Option<String>,
    /// Deprecated name of `upgrade_channel` (relay ≤ 0.4), accepted as an alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_channel: Option<String>,
}

impl ContractEntry {
    /// The configured channel (`upgrade_channel`, else `update_channel`), if non-empty.
    pub fn configured_channel(&self) -> Option<&str> {
        self.upgrade_channel
            .as_deref()
            .or(self.update_channel.as_deref())
            .filter(|c| !c.is_empty())
    }
}

/// `rest_api`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestApi {
    /// `http://host:port` or `file:///absolute/socket/path`.
    pub address: String,
    /// Mode of the unix socket, three octal digits (despite the name, as in the original).
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

/// Where the REST API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestAddress {
    /// TCP `host:port`.
    Tcp(String),
    /// A unix socket at this path, chmod'ed to `mode`.
    Unix {
        /// Socket path.
        path: PathBuf,
        /// File mode.
        mode: u32,
    },
}

impl RestApi {
    /// The parsed listen address (`None` if invalid; validation reports why).
    pub fn listen(&self) -> Option<RestAddress> {
        let mode = u32::from_str_radix(&self.socket_umask, 8).ok()?;
        if let Some(path) = self.address.strip_prefix("file://") {
            path.starts_with('/').then(|| RestAddress::Unix {
                path: PathBuf::from(path),
                mode,
            })
        } else {
            self.address
                .strip_prefix("http://")
                .map(|h| RestAddress::Tcp(h.trim_end_matches('/').to_string()))
        }
    }
}

/// `danger_zone`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DangerZone {
    /// Allow dialing loopback and unspecified addresses (`localhost`, 127/8, ::1, 0.0.0.0,
    /// ::) — the relay's own machine. The devnet sets it; never on a public relay.
    pub allow_loopback: bool,
    /// Allow dialing private, link-local, shared (CGNAT), multicast and broadcast addresses —
    /// the relay's own network. For relays inside a private network only.
    pub allow_private: bool,
}

impl RelayConfig {
    /// The upgrade channel each contract's enrollment announces: the configured one, or
    /// `default` when there is exactly one contract.
    pub fn channel_of(&self, entry: &ContractEntry) -> Option<String> {
        match entry.configured_channel() {
            Some(c) => Some(c.to_string()),
            None if self.contracts.len() == 1 => Some(DEFAULT_CHANNEL.to_string()),
            None => None,
        }
    }

    /// The channel the relay follows for upgrades and the contract URL that carries it.
    pub fn upgrade_channel(&self) -> Option<(String, String)> {
        self.contracts
            .iter()
            .find_map(|(url, e)| self.channel_of(e).map(|c| (url.clone(), c)))
    }
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
        if let Some(h2c) = &self.h2c_address {
            p.extend(check_listen_address("h2c_address", h2c));
        }
        p.extend(self.upgrade.problems("upgrade"));
        if self.upgrade.channel.is_some() {
            p.push(ConfigProblem::new(
                "upgrade.channel",
                "the relay follows its contracts' upgrade_channel; remove this key",
            ));
        }
        // Two more keys of the shared section that the relay takes from its own settings;
        // a changed value would otherwise be silently ignored.
        let shared = wireleap_upgrade::settings::UpgradeConfig::default();
        if self.upgrade.auto != shared.auto {
            p.push(ConfigProblem::new(
                "upgrade.auto",
                "the relay upgrades automatically per auto_upgrade; set that instead and remove this key",
            ));
        }
        if self.upgrade.drain_timeout != shared.drain_timeout {
            p.push(ConfigProblem::new(
                "upgrade.drain_timeout",
                "the relay drains for its own drain_timeout; set that instead and remove this key",
            ));
        }
        if self.bufsize < 512 {
            p.push(ConfigProblem::new(
                "bufsize",
                format!("must be at least 512 bytes, got {}", self.bufsize),
            ));
        }
        for (key, d) in [
            ("timeout", self.timeout),
            ("heartbeat_interval", self.heartbeat_interval),
        ] {
            if d.0 <= 0 {
                p.push(ConfigProblem::new(
                    key,
                    format!("must be positive, got {d}"),
                ));
            }
        }
        for (key, d) in [
            ("auto_submit_interval", self.auto_submit_interval),
            ("maxtime", self.maxtime),
            ("drain_timeout", self.drain_timeout),
        ] {
            if d.0 < 0 {
                p.push(ConfigProblem::new(
                    key,
                    format!("must not be negative, got {d}"),
                ));
            }
        }
        if !(self.database.starts_with("sqlite:") || self.database.starts_with("postgres")) {
            p.push(ConfigProblem::new(
                "database",
                format!(
                    "must be sqlite://PATH or postgres://..., got {:?}",
                    self.database
                ),
            ));
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
            if c.address.scheme() == Scheme::Target {
                p.push(ConfigProblem::new(
                    format!("contracts.{url}.address"),
                    format!(
                        "must be a wireleap:// or https:// URL, got {:?}",
                        c.address.as_str()
                    ),
                ));
            }
            if let (Some(a), Some(b)) = (&c.upgrade_channel, &c.update_channel) {
                if a != b && !a.is_empty() && !b.is_empty() {
                    p.push(ConfigProblem::new(
                        format!("contracts.{url}"),
                        format!(
                            "upgrade_channel {a:?} and its old name update_channel {b:?} disagree"
                        ),
                    ));
                }
            }
        }
        let with_channel = self
            .contracts
            .values()
            .filter(|c| c.configured_channel().is_some())
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
                p.extend(check_listen_address(
                    "rest_api.address",
                    hostport.trim_end_matches('/'),
                ));
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
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.heartbeat_interval, Duration::from_mins(5));
        assert!(c.auto_upgrade);
        let entry = &c.contracts["https://c.example"];
        assert_eq!(c.channel_of(entry).as_deref(), Some("default"));
        assert_eq!(
            c.upgrade_channel(),
            Some(("https://c.example".into(), "default".into()))
        );
    }

    #[test]
    fn original_keys_and_values_load() {
        let c = parse(
            r#"{"address": "0.0.0.0:13490", "auto_submit_interval": "0s", "maxtime": "1h",
                "timeout": "10s", "bufsize": 8192, "archive_dir": "archive",
                "network_usage": {"timeframe": "30d", "global_limit": "2TB", "write_interval": "5m0s"},
                "contracts": {"https://c.example": {"address": "wireleap://r.example:443/wl",
                   "role": "fronting", "key": "u:p", "network_usage_limit": "10GB",
                   "update_channel": "beta"}},
                "rest_api": {"address": "file:///run/relay.sock", "socket_umask": "660"},
                "danger_zone": {"allow_loopback": true}}"#,
        );
        assert_eq!(c.validate(), vec![]);
        assert!(c.auto_submit_interval.is_zero());
        let nu = c.network_usage.as_ref().unwrap();
        assert_eq!(nu.active_timeframe(), Some(Duration::from_hours(720)));
        assert_eq!(nu.global_limit, Some(ByteSize::tb(2)));
        let e = &c.contracts["https://c.example"];
        assert_eq!(c.channel_of(e).as_deref(), Some("beta"));
        assert_eq!(
            c.rest_api.as_ref().unwrap().listen(),
            Some(RestAddress::Unix {
                path: "/run/relay.sock".into(),
                mode: 0o660
            })
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let c = parse(
            r#"{"bufsize": 0, "timeout": "0s",
                "contracts": {
                  "https://a.example": {"address": "target://x:1", "role": "fronting"},
                  "https://b.example": {"address": "wireleap://y:1", "role": "entropic"}},
                "rest_api": {"address": "ftp://x", "socket_umask": "999"}}"#,
        );
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "address",
                "bufsize",
                "timeout",
                "contracts.https://a.example.address",
                "contracts",
                "rest_api.address",
                "rest_api.socket_umask"
            ]
        );
    }

    #[test]
    fn unknown_keys_bad_values_and_roles_are_rejected() {
        assert!(serde_json::from_str::<RelayConfig>(r#"{"adress": "x"}"#).is_err());
        assert!(serde_json::from_str::<RelayConfig>(
            r#"{"contracts": {"https://c": {"address": "wireleap://x:1", "role": "exit"}}}"#
        )
        .is_err());
        assert!(
            serde_json::from_str::<RelayConfig>(r#"{"danger_zone": {"allow": true}}"#).is_err()
        );
        // "0" is not a duration (the original silently kept the default).
        let e = serde_json::from_str::<RelayConfig>(r#"{"timeout": "0"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid duration"), "{e}");
        assert!(serde_json::from_str::<RelayConfig>(
            r#"{"contracts": {"https://c": {"address": "tcp://x:1", "role": "backing"}}}"#
        )
        .is_err());
    }

    #[test]
    fn several_contracts_need_exactly_one_channel() {
        let c = parse(
            r#"{"address": "0.0.0.0:1", "contracts": {
                "https://a": {"address": "wireleap://x:1", "role": "backing", "upgrade_channel": "stable"},
                "https://b": {"address": "wireleap://x:1", "role": "backing"}}}"#,
        );
        assert_eq!(c.validate(), vec![]);
        assert_eq!(
            c.upgrade_channel(),
            Some(("https://a".into(), "stable".into()))
        );
        assert_eq!(c.channel_of(&c.contracts["https://b"]), None);
    }

    #[test]
    fn shared_upgrade_keys_the_relay_takes_elsewhere_are_refused() {
        let c = parse(
            r#"{"address": "0.0.0.0:1", "upgrade": {"auto": false, "drain_timeout": "5s", "channel": "x"}}"#,
        );
        let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
        for k in ["upgrade.channel", "upgrade.auto", "upgrade.drain_timeout"] {
            assert!(keys.iter().any(|x| x == k), "{k} in {keys:?}");
        }
        // The initial config (what `init` writes) raises none of them.
        let initial = RelayConfig::initial().validate();
        assert!(
            initial.iter().all(|p| !p.key.starts_with("upgrade")),
            "{initial:?}"
        );
    }

    #[test]
    fn initial_config_round_trips() {
        let text = serde_json::to_string(&RelayConfig::initial()).unwrap();
        assert_eq!(parse(&text), RelayConfig::initial());
    }
}
