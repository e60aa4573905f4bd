//! What to install, decided from verified metadata and local state; pure, no I/O, the clock
//! passed in.
//!
//! The directory's upgrade notice is only a hint that something may be new. A version is
//! installed only if the signed metadata lists it for this installation's channel, it is newer
//! than what runs (never a downgrade), the metadata serial did not go back (rollback of the
//! metadata), the release supports upgrading from the running version, a build exists for this
//! platform, the version is not skipped or waiting out a retry delay, and this installation's
//! rollout bucket is admitted. A manual upgrade may override the last two (the operator asked),
//! never the others.

use crate::manifest::{Release, Target, VerifiedMetadata};
use crate::state::{MetadataSeen, UpgradeState};
use semver::Version;
use sha2::{Digest as _, Sha256};

/// Number of rollout buckets (basis points).
pub const BUCKETS: u64 = 10_000;

/// The rollout bucket of an installation for `version` on `channel`: the first 8 bytes of
/// SHA-256(rollout id ‖ channel ‖ version text), big-endian, modulo [`BUCKETS`]. For a relay
/// the rollout id is its public key, so the directory computes the same bucket (network.md).
/// Each version picks a fresh early cohort.
pub fn rollout_bucket(rollout_id: &[u8; 32], channel: &str, version: &Version) -> u32 {
    let mut h = Sha256::new();
    h.update(rollout_id);
    h.update(channel.as_bytes());
    h.update(version.to_string().as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The remainder is below BUCKETS, so it fits in u32.
    (u64::from_be_bytes(first) % BUCKETS) as u32
}

/// Who decided to upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A notice, a timer: rollout and skip records apply.
    Auto,
    /// An operator's command: rollout and skip records are reported, not enforced.
    Manual,
}

/// The installation's situation.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The version running now.
    pub running: &'a Version,
    /// The channel followed.
    pub channel: &'a str,
    /// Platform key of this build (`linux-x86_64`).
    pub platform: &'a str,
    /// The installation's rollout id (a relay's public key bytes).
    pub rollout_id: &'a [u8; 32],
    /// Unix seconds now.
    pub now: i64,
    /// Auto or manual.
    pub mode: Mode,
    /// For a manual upgrade: this exact version instead of the channel's.
    pub pinned: Option<&'a Version>,
    /// The version in the original's `.skip-upgrade-version`, if any.
    pub skip_file: Option<&'a Version>,
}

/// Something worth installing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The version.
    pub version: Version,
    /// The binary for this platform.
    pub target: Target,
    /// The signed changelog.
    pub changelog: Target,
    /// The metadata serial it came from.
    pub serial: u64,
    /// Warnings a manual upgrade overrode (skipped before, outside the rollout, ...).
    pub notes: Vec<String>,
}

/// Why nothing is installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The metadata serial is lower than one seen before: a replay of old metadata.
    #[error("release metadata serial {got} is older than serial {seen} seen before (replayed metadata refused)")]
    MetadataRollback {
        /// Seen before.
        seen: u64,
        /// Offered now.
        got: u64,
    },
    /// Same serial, different content: the publisher re-used a serial.
    #[error("release metadata serial {serial} was seen before with different content; refused")]
    MetadataConflict {
        /// The serial.
        serial: u64,
    },
    /// The channel is not in the metadata.
    #[error("the release metadata has no channel {0:?}")]
    NoChannel(String),
    /// The pinned version is not released.
    #[error("version {0} is not among the signed releases")]
    NotReleased(Version),
    /// Nothing newer.
    #[error("{running} is up to date (channel offers {offered})")]
    UpToDate {
        /// Running.
        running: Version,
        /// Offered.
        offered: Version,
    },
    /// The offer is older than what runs.
    #[error("refusing to downgrade from {running} to {offered}")]
    Downgrade {
        /// Running.
        running: Version,
        /// Offered.
        offered: Version,
    },
    /// The release cannot be installed over this version.
    #[error("{offered} can only be installed over {min_from} or newer; {running} runs (upgrade in steps)")]
    TooOld {
        /// Running.
        running: Version,
        /// Offered.
        offered: Version,
        /// Its minimum.
        min_from: Version,
    },
    /// No build for this platform.
    #[error("{version} has no build for platform {platform}")]
    NoTarget {
        /// The version.
        version: Version,
        /// Our platform.
        platform: String,
    },
    /// Skipped (failed before as a bad build, or listed in the skip file).
    #[error("{version} is skipped: {reason}")]
    Skipped {
        /// The version.
        version: Version,
        /// Why.
        reason: String,
    },
    /// Failed transiently before; retry later.
    #[error("{version} failed before ({reason}); next attempt after {retry_after}")]
    RetryLater {
        /// The version.
        version: Version,
        /// Last failure.
        reason: String,
        /// Unix seconds.
        retry_after: i64,
    },
    /// Outside the staged rollout.
    #[error("{version} is rolling out to {rollout_bp}/10000 of installations on channel {channel}; this one (bucket {bucket}) waits")]
    NotInRollout {
        /// The version.
        version: Version,
        /// The channel.
        channel: String,
        /// Our bucket.
        bucket: u32,
        /// Admitted below.
        rollout_bp: u32,
    },
    /// The metadata is unusable (a release version that does not parse).
    #[error("release metadata lists an unusable version {0:?}")]
    BadVersion(String),
}

/// Checks the metadata serial against the last one seen: lower is a replay, equal must be the
/// same bytes.
pub fn check_serial(seen: Option<&MetadataSeen>, meta: &VerifiedMetadata) -> Result<(), Refusal> {
    let got = meta.manifest().version;
    match seen {
        Some(s) if got < s.serial => Err(Refusal::MetadataRollback {
            seen: s.serial,
            got,
        }),
        Some(s) if got == s.serial && s.digest != hex::encode(meta.digest()) => {
            Err(Refusal::MetadataConflict { serial: got })
        }
        _ => Ok(()),
    }
}

fn parse(v: &str) -> Result<Version, Refusal> {
    wireleap_proto::version::parse_strict(v).map_err(|_| Refusal::BadVersion(v.to_string()))
}

/// Decides what to install. `state` supplies the serial seen and the failure records.
pub fn select(
    meta: &VerifiedMetadata,
    ctx: &Context<'_>,
    state: &UpgradeState,
) -> Result<Offer, Refusal> {
    let m = meta.manifest();
    check_serial(state.metadata.get(&m.component), meta)?;
    let channel = m
        .channels
        .get(ctx.channel)
        .ok_or_else(|| Refusal::NoChannel(ctx.channel.to_string()))?;
    let (version, release): (Version, &Release) = match ctx.pinned {
        Some(p) => {
            let r = m
                .releases
                .iter()
                .find(|(k, _)| parse(k).is_ok_and(|v| v == *p))
                .map(|(_, r)| r)
                .ok_or_else(|| Refusal::NotReleased(p.clone()))?;
            (p.clone(), r)
        }
        None => {
            let v = parse(&channel.version)?;
            let r = m
                .releases
                .get(&channel.version)
                .ok_or_else(|| Refusal::NotReleased(v.clone()))?;
            (v, r)
        }
    };
    if version == *ctx.running {
        return Err(Refusal::UpToDate {
            running: ctx.running.clone(),
            offered: version,
        });
    }
    if version < *ctx.running {
        return Err(Refusal::Downgrade {
            running: ctx.running.clone(),
            offered: version,
        });
    }
    if let Some(min) = &release.min_from {
        let min = parse(min)?;
        if *ctx.running < min {
            return Err(Refusal::TooOld {
                running: ctx.running.clone(),
                offered: version,
                min_from: min,
            });
        }
    }
    let target = release
        .targets
        .get(ctx.platform)
        .ok_or_else(|| Refusal::NoTarget {
            version: version.clone(),
            platform: ctx.platform.to_string(),
        })?
        .clone();

    let mut notes = Vec::new();
    let mut enforce = |refusal: Refusal| -> Result<(), Refusal> {
        match ctx.mode {
            Mode::Auto => Err(refusal),
            Mode::Manual => {
                notes.push(refusal.to_string());
                Ok(())
            }
        }
    };
    if ctx.skip_file == Some(&version) {
        enforce(Refusal::Skipped {
            version: version.clone(),
            reason: "listed in .skip-upgrade-version (it failed before)".into(),
        })?;
    }
    if let Some(rec) = state.failures.get(&version.to_string()) {
        if rec.kind.is_permanent() {
            enforce(Refusal::Skipped {
                version: version.clone(),
                reason: format!("{} ({})", rec.reason, rec.kind.describe()),
            })?;
        } else if ctx.now < rec.retry_after {
            enforce(Refusal::RetryLater {
                version: version.clone(),
                reason: rec.reason.clone(),
                retry_after: rec.retry_after,
            })?;
        }
    }
    // A pinned manual choice is off-channel: rollout shares do not apply to it.
    if ctx.pinned.is_none() {
        let bucket = rollout_bucket(ctx.rollout_id, ctx.channel, &version);
        if bucket >= channel.rollout_bp {
            enforce(Refusal::NotInRollout {
                version: version.clone(),
                channel: ctx.channel.to_string(),
                bucket,
                rollout_bp: channel.rollout_bp,
            })?;
        }
    }
    Ok(Offer {
        version,
        target,
        changelog: release.changelog.clone(),
        serial: m.version,
        notes,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::manifest::{sign_envelope, Channel, Manifest, TrustedKeys, UnverifiedMetadata};
    use crate::state::{FailureKind, FailureRecord};
    use proptest::prelude::*;
    use wireleap_proto::keys::Keypair;

    fn target(path: &str) -> Target {
        Target {
            path: path.into(),
            sha512: "0".repeat(128),
            length: 1,
        }
    }

    fn meta(serial: u64, channel_version: &str, bp: u32, extra: &[&str]) -> VerifiedMetadata {
        let mut releases = std::collections::BTreeMap::new();
        for v in std::iter::once(&channel_version).chain(extra) {
            releases.insert(
                v.to_string(),
                Release {
                    targets: [("linux-x86_64".to_string(), target(&format!("{v}/bin")))].into(),
                    changelog: target(&format!("{v}/changelog.md")),
                    min_from: None,
                },
            );
        }
        let m = Manifest {
            schema_version: 1,
            component: "c".into(),
            version: serial,
            expires: 100,
            channels: [(
                "default".to_string(),
                Channel {
                    version: channel_version.into(),
                    rollout_bp: bp,
                },
            )]
            .into(),
            releases,
        };
        let k = Keypair::from_seed([1; 32]);
        let env = sign_envelope(&m.to_bytes().unwrap(), &[&k]).unwrap();
        UnverifiedMetadata::from_bytes(&env)
            .unwrap()
            .verify(&TrustedKeys::new([k.public()], 1).unwrap(), "c", 0)
            .unwrap()
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn ctx<'a>(running: &'a Version, id: &'a [u8; 32]) -> Context<'a> {
        Context {
            running,
            channel: "default",
            platform: "linux-x86_64",
            rollout_id: id,
            now: 50,
            mode: Mode::Auto,
            pinned: None,
            skip_file: None,
        }
    }

    #[test]
    fn newer_is_offered_equal_and_older_are_not() {
        let id = [0; 32];
        let st = UpgradeState::default();
        let running = v("0.1.0");
        let o = select(&meta(1, "0.2.0", 10_000, &[]), &ctx(&running, &id), &st).unwrap();
        assert_eq!(o.version, v("0.2.0"));
        assert_eq!(o.target.path, "0.2.0/bin");
        let running = v("0.2.0");
        assert!(matches!(
            select(&meta(1, "0.2.0", 10_000, &[]), &ctx(&running, &id), &st),
            Err(Refusal::UpToDate { .. })
        ));
        let running = v("0.3.0");
        for mode in [Mode::Auto, Mode::Manual] {
            let mut c = ctx(&running, &id);
            c.mode = mode;
            assert!(matches!(
                select(&meta(1, "0.2.0", 10_000, &[]), &c, &st),
                Err(Refusal::Downgrade { .. })
            ));
        }
        // A pre-release sorts below its release: no "upgrade" from 0.2.0 to 0.2.0-rc.1.
        let running = v("0.2.0");
        assert!(matches!(
            select(
                &meta(1, "0.2.0-rc.1", 10_000, &[]),
                &ctx(&running, &id),
                &st
            ),
            Err(Refusal::Downgrade { .. })
        ));
    }

    #[test]
    fn serial_must_not_go_back() {
        let id = [0; 32];
        let running = v("0.1.0");
        let m5 = meta(5, "0.2.0", 10_000, &[]);
        let mut st = UpgradeState::default();
        st.note_metadata("c", &m5);
        assert!(select(&m5, &ctx(&running, &id), &st).is_ok());
        let m4 = meta(4, "0.2.0", 10_000, &[]);
        assert_eq!(
            select(&m4, &ctx(&running, &id), &st),
            Err(Refusal::MetadataRollback { seen: 5, got: 4 })
        );
        let other5 = meta(5, "0.3.0", 10_000, &[]);
        assert_eq!(
            select(&other5, &ctx(&running, &id), &st),
            Err(Refusal::MetadataConflict { serial: 5 })
        );
        assert!(select(&meta(6, "0.3.0", 10_000, &[]), &ctx(&running, &id), &st).is_ok());
    }

    #[test]
    fn skips_and_retry_delays_bind_auto_not_manual() {
        let id = [0; 32];
        let running = v("0.1.0");
        let m = meta(1, "0.2.0", 10_000, &[]);
        let mut st = UpgradeState::default();
        st.failures.insert(
            "0.2.0".into(),
            FailureRecord {
                kind: FailureKind::Transient,
                reason: "connection refused".into(),
                attempts: 1,
                first_at: 10,
                last_at: 10,
                retry_after: 60,
            },
        );
        assert!(matches!(
            select(&m, &ctx(&running, &id), &st),
            Err(Refusal::RetryLater {
                retry_after: 60,
                ..
            })
        ));
        let mut later = ctx(&running, &id);
        later.now = 60;
        assert!(select(&m, &later, &st).is_ok());
        st.failures.get_mut("0.2.0").unwrap().kind = FailureKind::BadBuild;
        assert!(matches!(
            select(&m, &later, &st),
            Err(Refusal::Skipped { .. })
        ));
        let mut manual = later.clone();
        manual.mode = Mode::Manual;
        let o = select(&m, &manual, &st).unwrap();
        assert_eq!(o.notes.len(), 1);
        let st = UpgradeState::default();
        let skip = v("0.2.0");
        let mut c = ctx(&running, &id);
        c.skip_file = Some(&skip);
        assert!(matches!(select(&m, &c, &st), Err(Refusal::Skipped { .. })));
    }

    #[test]
    fn pinned_versions_and_platforms() {
        let id = [0; 32];
        let running = v("0.1.0");
        let st = UpgradeState::default();
        let m = meta(1, "0.2.0", 0, &["0.1.5"]);
        let pin = v("0.1.5");
        let mut c = ctx(&running, &id);
        c.mode = Mode::Manual;
        c.pinned = Some(&pin);
        let o = select(&m, &c, &st).unwrap();
        assert_eq!(o.version, pin);
        assert!(o.notes.is_empty(), "a pinned version is off the rollout");
        let missing = v("0.1.7");
        c.pinned = Some(&missing);
        assert!(matches!(select(&m, &c, &st), Err(Refusal::NotReleased(_))));
        let mut c = ctx(&running, &id);
        c.platform = "windows-aarch64";
        assert!(matches!(
            select(&meta(1, "0.2.0", 10_000, &[]), &c, &st),
            Err(Refusal::NoTarget { .. })
        ));
    }

    #[test]
    fn bucket_is_stable_and_spread() {
        // Known answer for an all-zero id, so the directory's computation can be checked.
        // (python3: int.from_bytes(sha256(b"\0"*32 + b"default" + b"0.2.0")[:8], "big") % 10000)
        assert_eq!(rollout_bucket(&[0; 32], "default", &v("0.2.0")), 3741);
        let mut admitted = 0;
        for i in 0..1000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            if rollout_bucket(&id, "default", &v("0.2.0")) < 2_500 {
                admitted += 1;
            }
        }
        assert!(
            (150..350).contains(&admitted),
            "{admitted} of 1000 in a 25% rollout"
        );
    }

    proptest! {
        #[test]
        fn rollout_zero_admits_none_full_admits_all(id: [u8; 32], minor in 0u64..50) {
            let running = v("0.0.1");
            let st = UpgradeState::default();
            let ver = format!("0.{}.0", minor + 1);
            let c = ctx(&running, &id);
            prop_assert!(select(&meta(1, &ver, 10_000, &[]), &c, &st).is_ok());
            let is_rollout_refusal = matches!(select(&meta(1, &ver, 0, &[]), &c, &st), Err(Refusal::NotInRollout { .. }));
            prop_assert!(is_rollout_refusal);
            // Widening a rollout only adds installations.
            let b = rollout_bucket(&id, "default", &Version::parse(&ver).unwrap());
            prop_assert_eq!(select(&meta(1, &ver, b, &[]), &c, &st).is_ok(), false);
            prop_assert!(select(&meta(1, &ver, b + 1, &[]), &c, &st).is_ok());
        }

        #[test]
        fn never_offers_a_version_not_newer(a in 0u64..5, b in 0u64..5, c in 0u64..5, x in 0u64..5, y in 0u64..5, z in 0u64..5) {
            let running = Version::new(a, b, c);
            let offered = Version::new(x, y, z);
            let id = [1; 32];
            let st = UpgradeState::default();
            let r = select(&meta(1, &offered.to_string(), 10_000, &[]), &ctx(&running, &id), &st);
            prop_assert_eq!(r.is_ok(), offered > running);
        }
    }
}
