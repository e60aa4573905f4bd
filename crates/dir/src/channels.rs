//! Upgrade channels: the target version per channel and component, the staged rollout, and
//! the rule that decides whether a heartbeat is answered with an upgrade notice.
//!
//! The rule (network.md; upgrade.md §13 items 7–8): a relay on channel `c` running `v` is
//! told to upgrade to `t` = the channel's relay version only if `t > v` (never an equal or
//! older version, whatever the operator set), its rollout bucket is admitted, and it has not
//! reported that upgrading to `t` failed. The bucket is deterministic per (relay key,
//! channel, version), so widening a rollout only adds relays, and each new version picks a
//! fresh cohort of early upgraders.
//!
//! Storage of the table is in [`crate::store`]; this module is pure.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use wireleap_proto::dirinfo::Channels;
use wireleap_proto::keys::PublicKey;

/// Rollout buckets per version: a bucket is admitted when it is below the basis points.
pub const BUCKETS: u64 = 10_000;

/// Which software a channel is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelComponent {
    /// `wireleap-relay` (heartbeat upgrade notices).
    Relay,
    /// `wireleap` client (reads `/info` at start).
    Client,
}

impl ChannelComponent {
    /// Both components.
    pub const ALL: [ChannelComponent; 2] = [ChannelComponent::Relay, ChannelComponent::Client];

    /// The name used in `/info` and in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChannelComponent::Relay => "relay",
            ChannelComponent::Client => "client",
        }
    }

    /// Parses `relay` or `client`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for ChannelComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One channel's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// The version to run.
    pub version: semver::Version,
    /// Admitted share of relays in basis points (0–10000).
    pub rollout_bp: u32,
    /// When the operator last changed it (unix seconds).
    pub updated_at: i64,
}

/// Every channel of both components.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelTable {
    /// Relay channels by name.
    pub relay: BTreeMap<String, Channel>,
    /// Client channels by name.
    pub client: BTreeMap<String, Channel>,
}

impl ChannelTable {
    /// The channels of `component`.
    pub fn get(&self, component: ChannelComponent) -> &BTreeMap<String, Channel> {
        match component {
            ChannelComponent::Relay => &self.relay,
            ChannelComponent::Client => &self.client,
        }
    }

    /// The channels of `component`, mutable.
    pub fn get_mut(&mut self, component: ChannelComponent) -> &mut BTreeMap<String, Channel> {
        match component {
            ChannelComponent::Relay => &mut self.relay,
            ChannelComponent::Client => &mut self.client,
        }
    }

    /// Channel → version, as `/info` publishes it.
    pub fn versions(&self, component: ChannelComponent) -> Channels {
        self.get(component)
            .iter()
            .map(|(name, c)| (name.clone(), c.version.clone()))
            .collect()
    }
}

/// The relay's rollout bucket for `version` on `channel`: the first 8 bytes of
/// SHA-256(public key ‖ channel ‖ version text), big-endian, modulo [`BUCKETS`].
pub fn rollout_bucket(relay: &PublicKey, channel: &str, version: &semver::Version) -> u32 {
    let mut h = Sha256::new();
    h.update(relay.0);
    h.update(channel.as_bytes());
    h.update(version.to_string().as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // Below BUCKETS, so it fits.
    (u64::from_be_bytes(first) % BUCKETS) as u32
}

/// Whether `relay` is in the admitted share of a rollout of `version` on `channel`.
pub fn admitted(
    relay: &PublicKey,
    channel: &str,
    version: &semver::Version,
    rollout_bp: u32,
) -> bool {
    rollout_bucket(relay, channel, version) < rollout_bp
}

/// The version a heartbeat should tell the relay to upgrade to, if any.
///
/// `running` is the relay's software version (`None`: unknown, never notified);
/// `failed(t)` says whether the relay reported a failed upgrade to `t`.
pub fn upgrade_target(
    table: &ChannelTable,
    channel: &str,
    relay: &PublicKey,
    running: Option<&semver::Version>,
    failed: impl FnOnce(&semver::Version) -> bool,
) -> Option<semver::Version> {
    let running = running?;
    let target = table.relay.get(channel)?;
    if target.version <= *running {
        return None;
    }
    if !admitted(relay, channel, &target.version, target.rollout_bp) {
        return None;
    }
    if failed(&target.version) {
        return None;
    }
    Some(target.version.clone())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    fn table(version: &str, bp: u32) -> ChannelTable {
        let mut t = ChannelTable::default();
        t.relay.insert(
            "default".into(),
            Channel {
                version: v(version),
                rollout_bp: bp,
                updated_at: 0,
            },
        );
        t
    }

    #[test]
    fn bucket_is_the_documented_hash() {
        // Recomputed by hand: SHA-256 of 32 bytes 0x01, "default", "0.6.2".
        let pk = PublicKey([1; 32]);
        let mut h = Sha256::new();
        h.update([1u8; 32]);
        h.update(b"default0.6.2");
        let d = h.finalize();
        let want = u64::from_be_bytes(d[..8].try_into().unwrap()) % 10_000;
        assert_eq!(u64::from(rollout_bucket(&pk, "default", &v("0.6.2"))), want);
        assert_ne!(
            rollout_bucket(&pk, "default", &v("0.6.2")),
            rollout_bucket(&pk, "default", &v("0.6.3")),
            "a new version should usually pick another bucket (true for this key)"
        );
    }

    #[test]
    fn notices_only_upgrades() {
        let pk = PublicKey([7; 32]);
        let t = table("0.6.2", 10_000);
        assert_eq!(
            upgrade_target(&t, "default", &pk, Some(&v("0.6.1")), |_| false),
            Some(v("0.6.2"))
        );
        assert_eq!(
            upgrade_target(&t, "default", &pk, Some(&v("0.6.2")), |_| false),
            None
        );
        assert_eq!(
            upgrade_target(&t, "default", &pk, Some(&v("0.7.0")), |_| false),
            None
        );
        assert_eq!(upgrade_target(&t, "default", &pk, None, |_| false), None);
        assert_eq!(
            upgrade_target(&t, "beta", &pk, Some(&v("0.1.0")), |_| false),
            None
        );
        // A pre-release of the target is older than the target.
        assert_eq!(
            upgrade_target(&t, "default", &pk, Some(&v("0.6.2-rc.1")), |_| false),
            Some(v("0.6.2"))
        );
        assert_eq!(
            upgrade_target(&t, "default", &pk, Some(&v("0.6.1")), |_| true),
            None
        );
        let closed = table("0.6.2", 0);
        assert_eq!(
            upgrade_target(&closed, "default", &pk, Some(&v("0.6.1")), |_| false),
            None
        );
    }

    #[test]
    fn rollout_share_is_close_to_the_percentage() {
        let version = v("1.2.3");
        let admitted_count = (0u32..4000)
            .filter(|i| {
                let mut k = [0u8; 32];
                k[..4].copy_from_slice(&i.to_le_bytes());
                admitted(&PublicKey(k), "default", &version, 2500)
            })
            .count();
        // 25 % of 4000 = 1000; a fair hash stays well within ±150.
        assert!((850..=1150).contains(&admitted_count), "{admitted_count}");
    }

    proptest! {
        #[test]
        fn widening_never_removes_a_relay(key in any::<[u8; 32]>(), a in 0u32..=10_000, b in 0u32..=10_000) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let pk = PublicKey(key);
            let version = v("0.9.0");
            prop_assert!(rollout_bucket(&pk, "default", &version) < 10_000);
            if admitted(&pk, "default", &version, lo) {
                prop_assert!(admitted(&pk, "default", &version, hi));
            }
            prop_assert!(admitted(&pk, "default", &version, 10_000));
            prop_assert!(!admitted(&pk, "default", &version, 0));
        }

        #[test]
        fn never_a_downgrade(
            key in any::<[u8; 32]>(),
            (a, b, c) in (0u64..5, 0u64..5, 0u64..5),
            (x, y, z) in (0u64..5, 0u64..5, 0u64..5),
        ) {
            let target = semver::Version::new(a, b, c);
            let running = semver::Version::new(x, y, z);
            let t = ChannelTable {
                relay: [("default".to_string(), Channel { version: target.clone(), rollout_bp: 10_000, updated_at: 0 })].into(),
                client: BTreeMap::new(),
            };
            let got = upgrade_target(&t, "default", &PublicKey(key), Some(&running), |_| false);
            prop_assert_eq!(got.is_some(), target > running);
        }
    }
}
