//! The client's `config.json`: defaults, validation, and the values derived from it.
//!
//! The layout is the flat one of client 0.3–0.5 (client.md §2.1) that the brief asks for:
//! `address_socks`, `address_h2c`, `circuit`, `contract`; plus `address` for the REST API.
//! The 0.6 key `broker.address` is still read, as another name for `address_h2c`.
//! Whitelist semantics follow the seed note: absent or `null` = any relay, `[]` = no relay.
//!
//! `upgrade` is the section every upgradable daemon has (`wireleap_upgrade::UpgradeConfig`):
//! release server, trusted release keys, channel, hand-over timings. The original client had
//! no upgrade keys at all (client.md §12): it followed the directory's
//! `upgrade_channels.client["default"]` and never upgraded by itself. Here the directory's
//! advertised client version still only produces a log line; what `wireleap upgrade`
//! installs comes from `upgrade.releases` on `upgrade.channel` (absent: `default`, the
//! channel the original hard-coded). Without `upgrade.check_interval` nothing is ever
//! installed unasked, as in the original; with it, `upgrade.auto` decides whether the
//! client installs what it finds or only logs it.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use wireleap_daemon::{check_listen_address, Config, ConfigProblem};

/// Most hops a circuit may have (fronting, up to six entropic, backing).
pub const MAX_HOPS: u32 = 8;

/// `config.json` of the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// REST API listen address (`host:port`, loopback recommended). Also serves the local
    /// h2c broker at `/broker` unless `address_h2c` names another address.
    pub address: String,
    /// SOCKSv5 listen address (TCP, and UDP relays bound on the same host).
    pub address_socks: String,
    /// A separate local h2c broker listener (client.md §6.1); `null` = served on `address`.
    pub address_h2c: Option<String>,
    /// 0.6 layout: `broker.address` is another name for `address_h2c`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<LegacyBroker>,
    /// The service contract's base URL (set by `import`).
    pub contract: Option<String>,
    /// Per-step timeout for relays, contract and directory (connect, TLS, HTTP/2 setup).
    pub timeout: String,
    /// How access keys are used.
    pub accesskey: AccessKeyUse,
    /// Circuit shape and relay choice.
    pub circuit: CircuitConfig,
    /// Where releases come from and how upgrades run (see the module doc).
    pub upgrade: wireleap_upgrade::UpgradeConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            address: "127.0.0.1:13490".into(),
            address_socks: "127.0.0.1:13491".into(),
            address_h2c: None,
            broker: None,
            contract: None,
            timeout: "5s".into(),
            accesskey: AccessKeyUse::default(),
            circuit: CircuitConfig::default(),
            upgrade: wireleap_upgrade::UpgradeConfig::default(),
        }
    }
}

/// `broker` (0.6 layout, read for compatibility).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LegacyBroker {
    /// Same as `address_h2c`.
    pub address: Option<String>,
}

/// `accesskey`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessKeyUse {
    /// Activate servicekeys from stored pofs automatically when none is valid.
    pub use_on_demand: bool,
}

impl Default for AccessKeyUse {
    fn default() -> Self {
        AccessKeyUse {
            use_on_demand: true,
        }
    }
}

/// `circuit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitConfig {
    /// Relays per circuit: 1 = backing; 2 = fronting, backing; n ≥ 3 = fronting, n−2
    /// entropic, backing.
    pub hops: u32,
    /// Relay addresses circuits may use: `null` = any, `[]` = none, a list = only those.
    pub whitelist: Option<Vec<String>>,
    /// How often the relay list is fetched again (also after circuit errors).
    pub refresh: String,
    /// Extra milliseconds a SOCKS CONNECT waits for the target's first bytes after the
    /// circuit reported the target connected, before replying success (0, the default,
    /// replies as soon as the backing relay has connected the target).
    pub target_wait_ms: u64,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            hops: 1,
            whitelist: None,
            refresh: "5m".into(),
            target_wait_ms: 0,
        }
    }
}

impl ClientConfig {
    /// The separate h2c listener address, if any (`address_h2c`, else `broker.address`),
    /// `None` when it equals `address` (one listener serves both).
    pub fn h2c_address(&self) -> Option<&str> {
        let h2c = self
            .address_h2c
            .as_deref()
            .or_else(|| self.broker.as_ref().and_then(|b| b.address.as_deref()))?;
        (h2c != self.address).then_some(h2c)
    }

    /// `timeout` as a duration (5 s if unparsable; validation reports it).
    pub fn timeout(&self) -> Duration {
        parse_duration(&self.timeout).unwrap_or(Duration::from_secs(5))
    }

    /// `circuit.refresh` as a duration (5 min if unparsable; validation reports it).
    pub fn refresh(&self) -> Duration {
        parse_duration(&self.circuit.refresh).unwrap_or(Duration::from_secs(300))
    }

    /// `circuit.target_wait_ms` as a duration.
    pub fn target_wait(&self) -> Duration {
        Duration::from_millis(self.circuit.target_wait_ms)
    }
}

/// Parses a Wireleap duration string (protocol.md §17; note `ms` means minutes there).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let d = wireleap_proto::duration::Duration::parse(text).ok()?;
    (d.as_nanos() > 0).then(|| d.to_std())
}

impl Config for ClientConfig {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        p.extend(check_listen_address("address", &self.address));
        p.extend(check_listen_address("address_socks", &self.address_socks));
        if let Some(h2c) = &self.address_h2c {
            p.extend(check_listen_address("address_h2c", h2c));
        }
        if let Some(b) = self.broker.as_ref().and_then(|b| b.address.as_ref()) {
            p.extend(check_listen_address("broker.address", b));
        }
        if !(1..=MAX_HOPS).contains(&self.circuit.hops) {
            p.push(ConfigProblem::new(
                "circuit.hops",
                format!("must be from 1 to {MAX_HOPS}, got {}", self.circuit.hops),
            ));
        }
        if let Some(list) = &self.circuit.whitelist {
            for (i, a) in list.iter().enumerate() {
                if let Err(e) = wireleap_proto::address::Address::parse_relay(a) {
                    p.push(ConfigProblem::new(
                        format!("circuit.whitelist[{i}]"),
                        format!("not a relay address: {e}"),
                    ));
                }
            }
        }
        if parse_duration(&self.timeout).is_none() {
            p.push(ConfigProblem::new(
                "timeout",
                format!(
                    "must be a positive duration such as \"5s\", got {:?}",
                    self.timeout
                ),
            ));
        }
        if parse_duration(&self.circuit.refresh).is_none() {
            p.push(ConfigProblem::new(
                "circuit.refresh",
                format!(
                    "must be a positive duration such as \"5m\", got {:?}",
                    self.circuit.refresh
                ),
            ));
        }
        if self.circuit.target_wait_ms > 60_000 {
            p.push(ConfigProblem::new(
                "circuit.target_wait_ms",
                format!("must be at most 60000, got {}", self.circuit.target_wait_ms),
            ));
        }
        if let Some(c) = &self.contract {
            if let Err(e) = check_contract_url(c) {
                p.push(ConfigProblem::new("contract", e));
            }
        }
        p.extend(self.upgrade.problems("upgrade"));
        p
    }
}

/// A contract URL must be absolute `http(s)://host[:port][/path]`. Plain HTTP is allowed for
/// private networks such as the devnet; access key files themselves are only fetched over
/// HTTPS.
pub fn check_contract_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("must start with https:// or http://, got {url:?}"))?;
    if rest.is_empty() || rest.starts_with('/') || url.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(format!("has no host, got {url:?}"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_partial_configs_keep_defaults() {
        assert_eq!(ClientConfig::default().validate(), vec![]);
        let c: ClientConfig = serde_json::from_str(r#"{"circuit": {"hops": 3}}"#).unwrap();
        assert_eq!(c.circuit.hops, 3);
        assert_eq!(c.timeout, "5s");
        assert_eq!(c.circuit.whitelist, None);
        assert!(c.accesskey.use_on_demand);
        assert_eq!(c.address_socks, "127.0.0.1:13491");
    }

    #[test]
    fn null_and_empty_whitelists_differ() {
        let null: ClientConfig =
            serde_json::from_str(r#"{"circuit": {"whitelist": null}}"#).unwrap();
        let empty: ClientConfig =
            serde_json::from_str(r#"{"circuit": {"whitelist": []}}"#).unwrap();
        assert_eq!(null.circuit.whitelist, None);
        assert_eq!(empty.circuit.whitelist, Some(vec![]));
        // Written back, they stay apart.
        let text = serde_json::to_string(&empty).unwrap();
        assert!(text.contains(r#""whitelist":[]"#), "{text}");
        let text = serde_json::to_string(&null).unwrap();
        assert!(text.contains(r#""whitelist":null"#), "{text}");
    }

    #[test]
    fn problems_are_reported() {
        let c: ClientConfig = serde_json::from_str(
            r#"{"circuit": {"hops": 0, "whitelist": ["wireleap://ok.example:1", "nope"], "refresh": "x"},
                "timeout": "0", "contract": "ftp://c", "address_socks": "13491"}"#,
        )
        .unwrap();
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "address_socks",
                "circuit.hops",
                "circuit.whitelist[1]",
                "timeout",
                "circuit.refresh",
                "contract"
            ]
        );
        assert!(serde_json::from_str::<ClientConfig>(r#"{"circuit": {"hop": 1}}"#).is_err());
    }

    #[test]
    fn upgrade_section_is_optional_and_validated() {
        let c: ClientConfig = serde_json::from_str(r#"{"circuit": {"hops": 2}}"#).unwrap();
        assert_eq!(c.upgrade, wireleap_upgrade::UpgradeConfig::default());
        let c: ClientConfig = serde_json::from_str(
            r#"{"upgrade": {"channel": "beta", "auto": false, "drain_timeout": "5s"}}"#,
        )
        .unwrap();
        assert_eq!(c.upgrade.channel.as_deref(), Some("beta"));
        assert!(!c.upgrade.auto);
        assert_eq!(c.validate(), vec![]);
        assert!(serde_json::from_str::<ClientConfig>(r#"{"upgrade": {"chanel": "x"}}"#).is_err());
        let bad: ClientConfig =
            serde_json::from_str(r#"{"upgrade": {"releases": "ftp://x", "channel": "no way"}}"#)
                .unwrap();
        let keys: Vec<_> = bad.validate().into_iter().map(|p| p.key).collect();
        assert!(keys.iter().any(|k| k == "upgrade.releases"), "{keys:?}");
        assert!(keys.iter().any(|k| k == "upgrade.channel"), "{keys:?}");
    }

    #[test]
    fn legacy_broker_address_is_the_h2c_address() {
        let c: ClientConfig = serde_json::from_str(
            r#"{"address": "127.0.0.1:1", "broker": {"address": "127.0.0.1:1"}}"#,
        )
        .unwrap();
        assert_eq!(c.validate(), vec![]);
        assert_eq!(c.h2c_address(), None, "same address: one listener");
        let c: ClientConfig = serde_json::from_str(r#"{"address_h2c": "127.0.0.1:2"}"#).unwrap();
        assert_eq!(c.h2c_address(), Some("127.0.0.1:2"));
    }
}
