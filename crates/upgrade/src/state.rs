//! What the upgrade machinery remembers between runs, in `upgrade-state.json` in the home:
//! the last metadata serial seen per component (rollback protection), failure records per
//! version with a reason (transient failures retried with backoff, bad builds skipped), the
//! previous version kept for `rollback`, and the last outcome (for status displays).
//!
//! Also reads and writes the original's `.skip-upgrade-version` (one JSON semver string), which
//! is honoured as a permanent skip and written when a build proves bad, so operators' existing
//! tooling keeps working.

use crate::manifest::VerifiedMetadata;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name of the state in the home.
pub const STATE_FILE: &str = "upgrade-state.json";
/// The original's skip file.
pub const SKIP_FILE: &str = ".skip-upgrade-version";
/// The state format this code reads and writes.
pub const STATE_SCHEMA: u32 = 1;
/// First retry delay after a transient failure; doubles per attempt.
pub const RETRY_BASE_SECS: i64 = 300;
/// Longest retry delay.
pub const RETRY_CAP_SECS: i64 = 6 * 3600;

/// Why the state could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading failed.
    #[error("could not read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not our JSON.
    #[error("{} is malformed: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Written by a newer version: this one must not act on it or overwrite it.
    #[error("{} has schema_version {found}; this version understands {STATE_SCHEMA} (written by a newer release; roll forward or remove the file)", path.display())]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its schema.
        found: u32,
    },
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] wireleap_daemon::durable::WriteError),
}

/// The last metadata accepted for a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataSeen {
    /// Its serial.
    pub serial: u64,
    /// Hex SHA-256 of its signed bytes.
    pub digest: String,
}

/// How a failed attempt counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Network, disk, a download that did not match: try again later.
    Transient,
    /// The verified build itself failed (migration, start, readiness, crash in the watch
    /// window): skipped until an operator upgrades to it by hand.
    BadBuild,
    /// An operator rolled it back: skipped like a bad build.
    RolledBack,
}

impl FailureKind {
    /// Whether the version is skipped for automatic upgrades.
    pub fn is_permanent(self) -> bool {
        !matches!(self, FailureKind::Transient)
    }

    /// A few words for messages.
    pub fn describe(self) -> &'static str {
        match self {
            FailureKind::Transient => "transient failure, will retry",
            FailureKind::BadBuild => "the build failed, skipped",
            FailureKind::RolledBack => "rolled back by the operator, skipped",
        }
    }
}

/// What went wrong with one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRecord {
    /// Transient or permanent.
    pub kind: FailureKind,
    /// The last error.
    pub reason: String,
    /// Attempts that failed.
    pub attempts: u32,
    /// Unix seconds of the first failure.
    pub first_at: i64,
    /// Unix seconds of the last failure.
    pub last_at: i64,
    /// No automatic attempt before this (unix seconds).
    pub retry_after: i64,
}

/// The outcome of the last upgrade or rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastOutcome {
    /// `upgrade` or `rollback`.
    pub kind: String,
    /// Version before.
    pub from: String,
    /// Version aimed at.
    pub to: String,
    /// Whether it took effect.
    pub ok: bool,
    /// What happened.
    pub message: String,
    /// Unix seconds.
    pub at: i64,
}

/// The contents of `upgrade-state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeState {
    /// [`STATE_SCHEMA`].
    pub schema_version: u32,
    /// Component → last metadata accepted.
    #[serde(default)]
    pub metadata: BTreeMap<String, MetadataSeen>,
    /// Version → failure record.
    #[serde(default)]
    pub failures: BTreeMap<String, FailureRecord>,
    /// The version `<bin>.prev` holds (what `rollback` returns to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// The last outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<LastOutcome>,
}

impl Default for UpgradeState {
    fn default() -> Self {
        UpgradeState {
            schema_version: STATE_SCHEMA,
            metadata: BTreeMap::new(),
            failures: BTreeMap::new(),
            previous: None,
            last: None,
        }
    }
}

impl UpgradeState {
    /// Parses state bytes; refuses a newer schema.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, StateError> {
        #[derive(Deserialize)]
        struct Probe {
            schema_version: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| StateError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if probe.schema_version > STATE_SCHEMA {
            return Err(StateError::Newer {
                path: path.to_path_buf(),
                found: probe.schema_version,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| StateError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Loads the state from `home`; a missing file is an empty state.
    pub fn load(home: &Path) -> Result<Self, StateError> {
        let path = home.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Self::parse(&path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(StateError::Read { path, source }),
        }
    }

    /// Writes the state to `home` atomically.
    pub fn save(&self, home: &Path) -> Result<(), StateError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| StateError::Parse {
            path: home.join(STATE_FILE),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        wireleap_daemon::write_atomic(&home.join(STATE_FILE), &bytes, 0o644)?;
        Ok(())
    }

    /// Remembers verified metadata as the newest seen (never lowers the serial).
    pub fn note_metadata(&mut self, component: &str, meta: &VerifiedMetadata) {
        let serial = meta.manifest().version;
        let keep = self
            .metadata
            .get(component)
            .is_some_and(|s| s.serial > serial);
        if !keep {
            self.metadata.insert(
                component.to_string(),
                MetadataSeen {
                    serial,
                    digest: hex::encode(meta.digest()),
                },
            );
        }
    }

    /// Records a failed attempt at `version`. Transient failures back off exponentially from
    /// [`RETRY_BASE_SECS`] up to [`RETRY_CAP_SECS`]; a permanent kind stays permanent.
    pub fn record_failure(&mut self, version: &str, kind: FailureKind, reason: &str, now: i64) {
        let rec = self
            .failures
            .entry(version.to_string())
            .or_insert(FailureRecord {
                kind,
                reason: String::new(),
                attempts: 0,
                first_at: now,
                last_at: now,
                retry_after: now,
            });
        rec.attempts = rec.attempts.saturating_add(1);
        if !rec.kind.is_permanent() {
            rec.kind = kind;
        }
        rec.reason = reason.chars().take(1000).collect();
        rec.last_at = now;
        rec.retry_after = if rec.kind.is_permanent() {
            i64::MAX
        } else {
            let shift = rec.attempts.saturating_sub(1).min(20);
            now.saturating_add((RETRY_BASE_SECS << shift).min(RETRY_CAP_SECS))
        };
    }

    /// Forgets failures of `version` (it was installed successfully).
    pub fn clear_failure(&mut self, version: &str) {
        self.failures.remove(version);
    }
}

/// Reads `.skip-upgrade-version`: `None` if absent or unreadable (logged).
pub fn read_skip_file(home: &Path) -> Option<semver::Version> {
    let path = home.join(SKIP_FILE);
    let bytes = std::fs::read(&path).ok()?;
    match parse_skip(&bytes) {
        Some(v) => Some(v),
        None => {
            tracing::warn!(file = %path.display(), "ignoring a malformed skip file");
            None
        }
    }
}

/// Parses skip file content: a JSON string holding a strict semver.
pub fn parse_skip(bytes: &[u8]) -> Option<semver::Version> {
    let text: String = serde_json::from_slice(bytes).ok()?;
    wireleap_proto::version::parse_strict(&text).ok()
}

/// Writes `.skip-upgrade-version` (as the original: a quoted semver).
pub fn write_skip_file(home: &Path, version: &semver::Version) -> Result<(), StateError> {
    let text = format!("\"{version}\"");
    wireleap_daemon::write_atomic(&home.join(SKIP_FILE), text.as_bytes(), 0o644)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn transient_backs_off_and_permanent_sticks() {
        let mut s = UpgradeState::default();
        s.record_failure("1.0.0", FailureKind::Transient, "timeout", 1000);
        assert_eq!(s.failures["1.0.0"].retry_after, 1000 + RETRY_BASE_SECS);
        s.record_failure("1.0.0", FailureKind::Transient, "timeout", 2000);
        assert_eq!(s.failures["1.0.0"].retry_after, 2000 + 2 * RETRY_BASE_SECS);
        for _ in 0..30 {
            s.record_failure("1.0.0", FailureKind::Transient, "timeout", 3000);
        }
        assert_eq!(s.failures["1.0.0"].retry_after, 3000 + RETRY_CAP_SECS);
        s.record_failure("1.0.0", FailureKind::BadBuild, "crashed", 4000);
        s.record_failure("1.0.0", FailureKind::Transient, "timeout", 5000);
        let r = &s.failures["1.0.0"];
        assert_eq!(r.kind, FailureKind::BadBuild);
        assert_eq!(r.reason, "timeout");
        assert_eq!(r.attempts, 34);
        assert_eq!(r.first_at, 1000);
        s.clear_failure("1.0.0");
        assert!(s.failures.is_empty());
    }

    #[test]
    fn save_load_and_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            UpgradeState::load(dir.path()).unwrap(),
            UpgradeState::default()
        );
        let mut s = UpgradeState::default();
        s.record_failure("0.2.0", FailureKind::BadBuild, "exited with status 3", 7);
        s.previous = Some("0.1.0".into());
        s.save(dir.path()).unwrap();
        assert_eq!(UpgradeState::load(dir.path()).unwrap(), s);
        std::fs::write(
            dir.path().join(STATE_FILE),
            r#"{"schema_version": 2, "x": 1}"#,
        )
        .unwrap();
        assert!(matches!(
            UpgradeState::load(dir.path()),
            Err(StateError::Newer { found: 2, .. })
        ));
        std::fs::write(
            dir.path().join(STATE_FILE),
            r#"{"schema_version": 1, "x": 1}"#,
        )
        .unwrap();
        assert!(matches!(
            UpgradeState::load(dir.path()),
            Err(StateError::Parse { .. })
        ));
    }

    #[test]
    fn skip_file_format() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_skip_file(dir.path()), None);
        let v = semver::Version::new(0, 3, 1);
        write_skip_file(dir.path(), &v).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(SKIP_FILE)).unwrap(),
            b"\"0.3.1\""
        );
        assert_eq!(read_skip_file(dir.path()), Some(v));
        assert_eq!(parse_skip(b"0.3.1"), None);
        assert_eq!(parse_skip(b"\"v0.3.1\""), None);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = UpgradeState::parse(Path::new("x"), &bytes);
            let _ = parse_skip(&bytes);
        }

        #[test]
        fn retry_after_never_before_now(times in proptest::collection::vec(0i64..1_000_000_000, 1..40)) {
            let mut s = UpgradeState::default();
            for t in times {
                s.record_failure("1.2.3", FailureKind::Transient, "x", t);
                let r = &s.failures["1.2.3"];
                prop_assert!(r.retry_after > t && r.retry_after <= t + RETRY_CAP_SECS);
            }
        }
    }
}
