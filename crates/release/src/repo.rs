//! Writing a release repository: adding a release (binary and changelog copied in, hashed),
//! pointing a channel at a version with a rollout share, re-signing with a fresh expiry, and
//! reading it back for display.
//!
//! Every change raises the metadata serial by one and re-signs `metadata.json` with the given
//! keys, written atomically, so an installation never sees a half-written file. A channel's
//! version only goes up unless the downgrade is explicitly allowed (installations refuse
//! downgrades anyway; this catches mistakes at the source). A version, once published with a
//! binary for a platform, cannot be re-published with a different one.

use semver::Version;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use wireleap_proto::keys::Keypair;
use wireleap_upgrade::fetch::{digest_file, METADATA_FILE};
use wireleap_upgrade::manifest::{
    self, peek_unverified, sign_envelope, Channel, Manifest, Release, Target, ROLLOUT_FULL,
    SCHEMA_VERSION,
};

/// Why a repository change was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    /// The channel would go down.
    #[error("channel {channel} offers {current}; {requested} is older (pass --allow-downgrade to force it; installations still refuse to downgrade)")]
    Downgrade {
        /// The channel.
        channel: String,
        /// Its version now.
        current: String,
        /// Asked for.
        requested: String,
    },
    /// A different build under a published version.
    #[error("{version} for {platform} is already published with sha512 {existing}; publish a new version instead")]
    Republish {
        /// The version.
        version: String,
        /// The platform.
        platform: String,
        /// The published digest.
        existing: String,
    },
    /// The existing metadata is unreadable.
    #[error("existing {}: {source}", path.display())]
    Metadata {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: manifest::MetadataError,
    },
    /// File trouble.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Durable write failed.
    #[error(transparent)]
    Write(#[from] wireleap_daemon::durable::WriteError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a component's files live in a repository.
pub fn component_dir(repo: &Path, component: &str) -> PathBuf {
    repo.join(component)
}

/// Path of a binary relative to the component directory.
pub fn binary_rel(version: &Version, platform: &str, component: &str) -> String {
    format!("{version}/{platform}/{component}")
}

/// Path of a changelog relative to the component directory.
pub fn changelog_rel(version: &Version) -> String {
    format!("{version}/changelog.md")
}

/// Converts a rollout percentage (0–100, fractions allowed) to basis points.
pub fn percent_to_bp(percent: f64) -> Result<u32, RepoError> {
    if !(0.0..=100.0).contains(&percent) {
        return Err(RepoError::Invalid(format!(
            "rollout must be between 0 and 100 percent, got {percent}"
        )));
    }
    // In range, so the product fits.
    Ok((percent * 100.0).round() as u32)
}

/// The manifest currently in the repository for `component`, if any (read without checking
/// signatures: this is the publisher's own repository).
pub fn current(repo: &Path, component: &str) -> Result<Option<Manifest>, RepoError> {
    let path = component_dir(repo, component).join(METADATA_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => peek_unverified(&bytes)
            .map(|(m, _)| Some(m))
            .map_err(|source| RepoError::Metadata { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

fn empty(component: &str) -> Manifest {
    Manifest {
        schema_version: SCHEMA_VERSION,
        component: component.to_string(),
        version: 0,
        expires: 0,
        channels: BTreeMap::new(),
        releases: BTreeMap::new(),
    }
}

/// Sets `m`'s channel, refusing to lower its version unless allowed.
fn set_channel(
    m: &mut Manifest,
    channel: &str,
    version: &Version,
    rollout_bp: u32,
    allow_downgrade: bool,
) -> Result<(), RepoError> {
    if !manifest::valid_name(channel) {
        return Err(RepoError::Invalid(format!(
            "channel name {channel:?} is not valid"
        )));
    }
    if rollout_bp > ROLLOUT_FULL {
        return Err(RepoError::Invalid(format!(
            "rollout {rollout_bp} bp is above {ROLLOUT_FULL}"
        )));
    }
    if !m.releases.contains_key(&version.to_string()) {
        return Err(RepoError::Invalid(format!(
            "version {version} is not released in this repository"
        )));
    }
    if let Some(cur) = m.channels.get(channel) {
        let cur_v = Version::parse(&cur.version).ok();
        if cur_v.is_some_and(|c| *version < c) && !allow_downgrade {
            return Err(RepoError::Downgrade {
                channel: channel.to_string(),
                current: cur.version.clone(),
                requested: version.to_string(),
            });
        }
    }
    m.channels.insert(
        channel.to_string(),
        Channel {
            version: version.to_string(),
            rollout_bp,
        },
    );
    Ok(())
}

/// Bumps the serial, sets the expiry, signs with `keys` and writes `metadata.json`.
pub fn publish(
    repo: &Path,
    mut m: Manifest,
    keys: &[&Keypair],
    expires: i64,
) -> Result<Manifest, RepoError> {
    if keys.is_empty() {
        return Err(RepoError::Invalid(
            "at least one --key is needed to sign".into(),
        ));
    }
    m.version = m.version.saturating_add(1);
    m.expires = expires;
    let problems = m.problems();
    if !problems.is_empty() {
        return Err(RepoError::Invalid(problems.join("; ")));
    }
    let payload = m
        .to_bytes()
        .map_err(|e| RepoError::Invalid(e.to_string()))?;
    let env = sign_envelope(&payload, keys).map_err(|e| RepoError::Invalid(e.to_string()))?;
    let dir = component_dir(repo, &m.component);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    wireleap_daemon::write_atomic(&dir.join(METADATA_FILE), &env, 0o644)?;
    Ok(m)
}

/// What `build` adds.
#[derive(Debug, Clone)]
pub struct BuildSpec<'a> {
    /// Component name (the binary's name).
    pub component: &'a str,
    /// The version.
    pub version: Version,
    /// The binary to publish.
    pub binary: &'a Path,
    /// Its release notes.
    pub changelog: &'a Path,
    /// Platform key.
    pub platform: &'a str,
    /// Channel to point at the version (None: only add the release).
    pub channel: Option<&'a str>,
    /// Rollout share for the channel.
    pub rollout_bp: u32,
    /// Oldest version it installs over.
    pub min_from: Option<Version>,
    /// Allow the channel to go down.
    pub allow_downgrade: bool,
    /// Unix seconds.
    pub expires: i64,
}

fn copy_in(src: &Path, dst: &Path, mode: u32) -> Result<Target, RepoError> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let bytes = std::fs::read(src).map_err(io(src))?;
    wireleap_daemon::write_atomic(dst, &bytes, mode)?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode)).map_err(io(dst))?;
    let (sha512, length) = digest_file(dst).map_err(io(dst))?;
    Ok(Target {
        path: String::new(),
        sha512,
        length,
    })
}

/// Adds a release to the repository (copying binary and changelog in) and optionally points a
/// channel at it; re-signs.
pub fn build(repo: &Path, spec: &BuildSpec<'_>, keys: &[&Keypair]) -> Result<Manifest, RepoError> {
    if !manifest::valid_name(spec.component) {
        return Err(RepoError::Invalid(format!(
            "component name {:?} is not valid",
            spec.component
        )));
    }
    if !manifest::valid_name(spec.platform) {
        return Err(RepoError::Invalid(format!(
            "platform name {:?} is not valid",
            spec.platform
        )));
    }
    let mut m = current(repo, spec.component)?.unwrap_or_else(|| empty(spec.component));
    let vtext = spec.version.to_string();
    let dir = component_dir(repo, spec.component);
    let bin_rel = binary_rel(&spec.version, spec.platform, spec.component);
    let (new_sha, _) = digest_file(spec.binary).map_err(io(spec.binary))?;
    if let Some(existing) = m
        .releases
        .get(&vtext)
        .and_then(|r| r.targets.get(spec.platform))
    {
        if existing.sha512 != new_sha {
            return Err(RepoError::Republish {
                version: vtext,
                platform: spec.platform.to_string(),
                existing: existing.sha512.clone(),
            });
        }
    }
    // Refuse a channel downgrade before anything is copied into the repository.
    if let Some(channel) = spec.channel {
        let current = m
            .channels
            .get(channel)
            .and_then(|c| Version::parse(&c.version).ok());
        if let Some(cur) = current.filter(|c| spec.version < *c && !spec.allow_downgrade) {
            return Err(RepoError::Downgrade {
                channel: channel.to_string(),
                current: cur.to_string(),
                requested: vtext,
            });
        }
    }
    let mut bin = copy_in(spec.binary, &dir.join(&bin_rel), 0o755)?;
    bin.path = bin_rel;
    let cl_rel = changelog_rel(&spec.version);
    let mut cl = copy_in(spec.changelog, &dir.join(&cl_rel), 0o644)?;
    cl.path = cl_rel;
    let release = m.releases.entry(vtext).or_insert_with(|| Release {
        targets: BTreeMap::new(),
        changelog: cl.clone(),
        min_from: None,
    });
    release.targets.insert(spec.platform.to_string(), bin);
    release.changelog = cl;
    if let Some(min) = &spec.min_from {
        release.min_from = Some(min.to_string());
    }
    if let Some(channel) = spec.channel {
        set_channel(
            &mut m,
            channel,
            &spec.version,
            spec.rollout_bp,
            spec.allow_downgrade,
        )?;
    }
    publish(repo, m, keys, spec.expires)
}

/// Points `channel` at an already released `version` with a rollout share; re-signs.
#[allow(clippy::too_many_arguments)]
pub fn channel(
    repo: &Path,
    component: &str,
    channel: &str,
    version: &Version,
    rollout_bp: u32,
    allow_downgrade: bool,
    keys: &[&Keypair],
    expires: i64,
) -> Result<Manifest, RepoError> {
    let mut m = current(repo, component)?.ok_or_else(|| {
        RepoError::Invalid(format!("no releases of {component} in this repository yet"))
    })?;
    set_channel(&mut m, channel, version, rollout_bp, allow_downgrade)?;
    publish(repo, m, keys, expires)
}

/// Re-signs unchanged metadata with a new serial and expiry (run it well before the old
/// expiry, or installations stop trusting the repository).
pub fn refresh(
    repo: &Path,
    component: &str,
    keys: &[&Keypair],
    expires: i64,
) -> Result<Manifest, RepoError> {
    let m = current(repo, component)?.ok_or_else(|| {
        RepoError::Invalid(format!("no releases of {component} in this repository yet"))
    })?;
    publish(repo, m, keys, expires)
}

/// A human-readable summary of a manifest.
pub fn describe(m: &Manifest, now: i64) -> String {
    let mut out = format!(
        "component {}\nmetadata serial {}\nexpires {} ({})\n",
        m.component,
        m.version,
        m.expires,
        if m.expires > now {
            format!("in {}s", m.expires - now)
        } else {
            "EXPIRED".to_string()
        }
    );
    for (name, ch) in &m.channels {
        out.push_str(&format!(
            "channel {name}: {} at {:.2}%\n",
            ch.version,
            f64::from(ch.rollout_bp) / 100.0
        ));
    }
    for (v, r) in &m.releases {
        out.push_str(&format!("release {v}"));
        if let Some(min) = &r.min_from {
            out.push_str(&format!(" (from {min} or newer)"));
        }
        out.push('\n');
        for (p, t) in &r.targets {
            out.push_str(&format!(
                "  {p}: {} {} bytes sha512 {}\n",
                t.path, t.length, t.sha512
            ));
        }
        out.push_str(&format!(
            "  changelog: {} {} bytes\n",
            r.changelog.path, r.changelog.length
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use wireleap_upgrade::manifest::{TrustedKeys, UnverifiedMetadata};

    struct Fx {
        dir: tempfile::TempDir,
        key: Keypair,
    }

    impl Fx {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("bin-a"), "binary A").unwrap();
            std::fs::write(dir.path().join("bin-b"), "binary B").unwrap();
            std::fs::write(dir.path().join("notes.md"), "# notes").unwrap();
            Fx {
                dir,
                key: Keypair::from_seed([4; 32]),
            }
        }
        fn repo(&self) -> PathBuf {
            self.dir.path().join("repo")
        }
        fn build(
            &self,
            version: &str,
            bin: &str,
            allow_downgrade: bool,
        ) -> Result<Manifest, RepoError> {
            let binary = self.dir.path().join(bin);
            let changelog = self.dir.path().join("notes.md");
            build(
                &self.repo(),
                &BuildSpec {
                    component: "wireleap-relay",
                    version: Version::parse(version).unwrap(),
                    binary: &binary,
                    changelog: &changelog,
                    platform: "linux-x86_64",
                    channel: Some("default"),
                    rollout_bp: 10_000,
                    min_from: None,
                    allow_downgrade,
                    expires: 1000,
                },
                &[&self.key],
            )
        }
        fn verified(&self) -> Manifest {
            let bytes = std::fs::read(self.repo().join("wireleap-relay/metadata.json")).unwrap();
            UnverifiedMetadata::from_bytes(&bytes)
                .unwrap()
                .verify(
                    &TrustedKeys::new([self.key.public()], 1).unwrap(),
                    "wireleap-relay",
                    1,
                )
                .unwrap()
                .manifest()
                .clone()
        }
    }

    #[test]
    fn build_copies_hashes_and_signs() {
        let fx = Fx::new();
        let m = fx.build("0.2.0", "bin-a", false).unwrap();
        assert_eq!(m.version, 1);
        assert_eq!(fx.verified(), m);
        let t = &m.releases["0.2.0"].targets["linux-x86_64"];
        assert_eq!(t.path, "0.2.0/linux-x86_64/wireleap-relay");
        assert_eq!(t.length, 8);
        let copied = fx.repo().join("wireleap-relay").join(&t.path);
        assert_eq!(std::fs::read(&copied).unwrap(), b"binary A");
        assert_eq!(digest_file(&copied).unwrap().0, t.sha512);
        let m = fx.build("0.3.0", "bin-b", false).unwrap();
        assert_eq!(m.version, 2);
        assert_eq!(m.channels["default"].version, "0.3.0");
        assert!(m.releases.contains_key("0.2.0"));
    }

    #[test]
    fn channel_versions_only_go_up_unless_allowed() {
        let fx = Fx::new();
        fx.build("0.3.0", "bin-a", false).unwrap();
        let e = fx.build("0.2.0", "bin-b", false).unwrap_err();
        assert!(matches!(e, RepoError::Downgrade { .. }), "{e}");
        // The refused build changed nothing.
        assert_eq!(fx.verified().version, 1);
        assert!(!fx.repo().join("wireleap-relay/0.2.0").exists());
        let m = fx.build("0.2.0", "bin-b", true).unwrap();
        assert_eq!(m.channels["default"].version, "0.2.0");
    }

    #[test]
    fn a_published_version_keeps_its_binary() {
        let fx = Fx::new();
        fx.build("0.2.0", "bin-a", false).unwrap();
        assert!(fx.build("0.2.0", "bin-a", false).is_ok());
        assert!(matches!(
            fx.build("0.2.0", "bin-b", false),
            Err(RepoError::Republish { .. })
        ));
    }

    #[test]
    fn channel_and_refresh_bump_the_serial() {
        let fx = Fx::new();
        fx.build("0.2.0", "bin-a", false).unwrap();
        let m = channel(
            &fx.repo(),
            "wireleap-relay",
            "beta",
            &Version::new(0, 2, 0),
            2500,
            false,
            &[&fx.key],
            2000,
        )
        .unwrap();
        assert_eq!(m.version, 2);
        assert_eq!(m.channels["beta"].rollout_bp, 2500);
        assert!(channel(
            &fx.repo(),
            "wireleap-relay",
            "beta",
            &Version::new(0, 9, 0),
            1,
            false,
            &[&fx.key],
            2000
        )
        .is_err());
        let m = refresh(&fx.repo(), "wireleap-relay", &[&fx.key], 5000).unwrap();
        assert_eq!((m.version, m.expires), (3, 5000));
        assert!(describe(&m, 0).contains("channel beta: 0.2.0 at 25.00%"));
    }

    #[test]
    fn percentages() {
        assert_eq!(percent_to_bp(100.0).unwrap(), 10_000);
        assert_eq!(percent_to_bp(12.5).unwrap(), 1250);
        assert!(percent_to_bp(100.1).is_err());
        assert!(percent_to_bp(-1.0).is_err());
        assert!(percent_to_bp(f64::NAN).is_err());
    }
}
