//! The `upgrade` section a daemon's `config.json` embeds, and the resolved settings the agent
//! and the commands use.
//!
//! ```json
//! "upgrade": {
//!   "releases": "https://releases.example.org",
//!   "release_keys": ["<base64url ed25519 public key>"],
//!   "threshold": 1,
//!   "channel": "default",
//!   "auto": true,
//!   "check_interval": "6h",
//!   "ready_timeout": "30s",
//!   "watch_window": "10s",
//!   "drain_timeout": "30s"
//! }
//! ```
//! Without `releases` and `release_keys` nothing is ever installed. The relay takes its channel
//! from its contracts (`upgrade_channel`) and `auto` from its top-level `auto_upgrade`; other
//! daemons from here. `check_interval` makes the daemon poll the release server itself (for
//! daemons that get no upgrade notices from a directory).

use crate::manifest::{TrustError, TrustedKeys};
use serde::{Deserialize, Serialize};
use std::time::Duration as StdDuration;
use wireleap_daemon::ConfigProblem;
use wireleap_proto::duration::Duration;

fn secs(s: i64) -> Duration {
    Duration(s * 1_000_000_000)
}

/// The `upgrade` config section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpgradeConfig {
    /// Base URL of the release repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub releases: Option<String>,
    /// Trusted release public keys (base64url).
    pub release_keys: Vec<String>,
    /// How many of them must sign the metadata.
    pub threshold: usize,
    /// Channel to follow (the relay uses its contracts' `upgrade_channel` instead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Install what the channel offers without asking (the relay uses `auto_upgrade`).
    pub auto: bool,
    /// Poll the release server this often (absent: only on notices and commands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_interval: Option<Duration>,
    /// The new process must report ready within this time.
    pub ready_timeout: Duration,
    /// After the hand-over, the old process stays ready to take over again for this long.
    pub watch_window: Duration,
    /// Open streams of the old process get this long to finish.
    pub drain_timeout: Duration,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        UpgradeConfig {
            releases: None,
            release_keys: Vec::new(),
            threshold: 1,
            channel: None,
            auto: true,
            check_interval: None,
            ready_timeout: secs(30),
            watch_window: secs(10),
            drain_timeout: secs(30),
        }
    }
}

impl UpgradeConfig {
    /// Every problem, with keys prefixed by `prefix` (e.g. `upgrade`).
    pub fn problems(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let key = |k: &str| format!("{prefix}.{k}");
        if let Some(url) = &self.releases {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(u) => p.push(ConfigProblem::new(
                    key("releases"),
                    format!("scheme must be http or https, got {:?}", u.scheme()),
                )),
                Err(e) => p.push(ConfigProblem::new(key("releases"), format!("{url:?}: {e}"))),
            }
            if self.release_keys.is_empty() {
                p.push(ConfigProblem::new(
                    key("release_keys"),
                    "at least one trusted release key is needed when releases is set",
                ));
            }
        }
        if !self.release_keys.is_empty() {
            if let Err(e) = self.trust() {
                p.push(ConfigProblem::new(key("release_keys"), e.to_string()));
            }
        }
        if let Some(c) = &self.channel {
            if !crate::manifest::valid_name(c) {
                p.push(ConfigProblem::new(
                    key("channel"),
                    format!("{c:?} is not a valid channel name"),
                ));
            }
        }
        for (k, d, min) in [
            ("ready_timeout", self.ready_timeout, 1),
            ("watch_window", self.watch_window, 0),
            ("drain_timeout", self.drain_timeout, 0),
        ] {
            if d.0 < min * 1_000_000_000 && !(min == 0 && d.0 == 0) {
                p.push(ConfigProblem::new(
                    key(k),
                    format!("must be at least {min}s, got {d}"),
                ));
            }
        }
        if let Some(d) = self.check_interval {
            if d.0 < 1_000_000_000 {
                p.push(ConfigProblem::new(
                    key("check_interval"),
                    format!("must be at least 1s, got {d}"),
                ));
            }
        }
        p
    }

    /// The trusted keys.
    pub fn trust(&self) -> Result<TrustedKeys, TrustError> {
        TrustedKeys::from_b64(&self.release_keys, self.threshold)
    }
}

/// Settings resolved from a config, for the agent and the commands.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Release repository base URL (None: upgrades are off).
    pub releases: Option<String>,
    /// Trusted keys (None: upgrades are off).
    pub trust: Option<TrustedKeys>,
    /// Channel followed.
    pub channel: String,
    /// Install automatically.
    pub auto: bool,
    /// Poll interval.
    pub check_interval: Option<StdDuration>,
    /// Readiness deadline of a successor.
    pub ready_timeout: StdDuration,
    /// Watch window after hand-over.
    pub watch_window: StdDuration,
    /// Drain deadline.
    pub drain_timeout: StdDuration,
    /// Deadline of the migration step.
    pub migrate_timeout: StdDuration,
}

impl Settings {
    /// Resolves `c`; `channel` and `auto` override the section's own (relay).
    pub fn from_config(
        c: &UpgradeConfig,
        channel: Option<&str>,
        auto: Option<bool>,
    ) -> Result<Self, TrustError> {
        let trust = if c.release_keys.is_empty() {
            None
        } else {
            Some(c.trust()?)
        };
        Ok(Settings {
            releases: c.releases.clone(),
            trust,
            channel: channel
                .map(str::to_string)
                .or_else(|| c.channel.clone())
                .unwrap_or_else(|| "default".to_string()),
            auto: auto.unwrap_or(c.auto),
            check_interval: c.check_interval.map(|d| d.to_std()),
            ready_timeout: c.ready_timeout.to_std(),
            watch_window: c.watch_window.to_std(),
            drain_timeout: c.drain_timeout.to_std(),
            migrate_timeout: StdDuration::from_secs(120),
        })
    }

    /// Whether a release source and trusted keys are configured.
    pub fn enabled(&self) -> bool {
        self.releases.is_some() && self.trust.is_some()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_problems() {
        let c: UpgradeConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, UpgradeConfig::default());
        assert!(c.problems("upgrade").is_empty());
        let s = Settings::from_config(&c, None, None).unwrap();
        assert!(!s.enabled());
        assert_eq!(s.channel, "default");
        assert_eq!(s.ready_timeout, StdDuration::from_secs(30));

        let bad: UpgradeConfig = serde_json::from_str(
            r#"{"releases": "ftp://x", "release_keys": ["nope"], "threshold": 2, "channel": "a/b", "ready_timeout": "1ms", "check_interval": "1h"}"#,
        )
        .unwrap();
        let keys: Vec<_> = bad.problems("upgrade").into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "upgrade.releases",
                "upgrade.release_keys",
                "upgrade.channel"
            ],
            "1ms is a minute in Go rules"
        );
        assert!(serde_json::from_str::<UpgradeConfig>(r#"{"relases": "x"}"#).is_err());
    }

    #[test]
    fn resolved_overrides() {
        let k = wireleap_proto::keys::Keypair::from_seed([1; 32])
            .public()
            .to_b64();
        let c: UpgradeConfig = serde_json::from_str(&format!(
            r#"{{"releases": "http://127.0.0.1:1", "release_keys": ["{k}"], "channel": "beta", "auto": false, "watch_window": "2s"}}"#
        ))
        .unwrap();
        assert!(c.problems("u").is_empty());
        let s = Settings::from_config(&c, Some("stable"), Some(true)).unwrap();
        assert!(s.enabled() && s.auto);
        assert_eq!(s.channel, "stable");
        assert_eq!(s.watch_window, StdDuration::from_secs(2));
        assert_eq!(
            Settings::from_config(&c, None, None).unwrap().channel,
            "beta"
        );
    }
}
