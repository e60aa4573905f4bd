//! Looking for an upgrade and bringing it into quarantine: fetch the metadata, verify it,
//! remember its serial, decide with [`crate::policy`], then download the changelog and the
//! binary and check both against the signed digests. Shared by the daemon's agent and the
//! manual `upgrade` command.

use crate::fetch::{self, FetchError, Limits, Progress, ReleaseClient};
use crate::manifest::{this_platform, MetadataError, UnverifiedMetadata, VerifiedMetadata};
use crate::policy::{self, Mode, Offer, Refusal};
use crate::settings::Settings;
use crate::state::{self, StateError, UpgradeState};
use semver::Version;
use std::path::{Path, PathBuf};

/// What is being upgraded: the binary's name (also the release component), the version that
/// runs, and the migrations this binary knows.
#[derive(Debug, Clone)]
pub struct Component {
    /// Binary and component name, e.g. `wireleap-relay`.
    pub name: &'static str,
    /// The running version.
    pub version: Version,
    /// This version's migrations (all of them, from every release).
    pub migrations: &'static [crate::migrate::Migration],
}

/// Why a check found nothing to install.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// Upgrades are not configured.
    #[error("upgrades are not configured (set upgrade.releases and upgrade.release_keys in config.json)")]
    NotConfigured,
    /// The release server could not be reached or sent garbage.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The metadata failed verification (signature, expiry, format).
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The local state is unusable.
    #[error(transparent)]
    State(#[from] StateError),
    /// Verified, but nothing to install.
    #[error(transparent)]
    Refused(Box<Refusal>),
}

impl From<Refusal> for CheckError {
    fn from(r: Refusal) -> Self {
        CheckError::Refused(Box::new(r))
    }
}

impl CheckError {
    /// The refusal, if the check verified but found nothing to install.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            CheckError::Refused(r) => Some(r),
            _ => None,
        }
    }
}

/// Current unix time.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Checks and stages releases for one installation.
#[derive(Debug, Clone)]
pub struct Checker {
    home: PathBuf,
    component: Component,
    settings: Settings,
    rollout_id: [u8; 32],
}

/// A verified offer with the metadata it came from.
#[derive(Debug, Clone)]
pub struct Checked {
    /// What to install.
    pub offer: Offer,
    /// The verified metadata.
    pub metadata: VerifiedMetadata,
}

impl Checker {
    /// A checker for the installation in `home`.
    pub fn new(
        home: &Path,
        component: Component,
        settings: Settings,
        rollout_id: [u8; 32],
    ) -> Self {
        Checker {
            home: home.to_path_buf(),
            component,
            settings,
            rollout_id,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The component.
    pub fn component(&self) -> &Component {
        &self.component
    }

    fn client(&self) -> Result<ReleaseClient, CheckError> {
        let base = self
            .settings
            .releases
            .as_deref()
            .ok_or(CheckError::NotConfigured)?;
        Ok(ReleaseClient::new(
            base,
            self.component.name,
            Limits::default(),
        )?)
    }

    /// Fetches and verifies the metadata, records its serial (refusing a replay), and decides.
    pub async fn check(&self, mode: Mode, pinned: Option<&Version>) -> Result<Checked, CheckError> {
        let trust = self
            .settings
            .trust
            .as_ref()
            .ok_or(CheckError::NotConfigured)?;
        let bytes = self.client()?.metadata().await?;
        let now = unix_now();
        let meta =
            UnverifiedMetadata::from_bytes(&bytes)?.verify(trust, self.component.name, now)?;
        let mut st = UpgradeState::load(&self.home)?;
        policy::check_serial(st.metadata.get(self.component.name), &meta)?;
        st.note_metadata(self.component.name, &meta);
        st.save(&self.home)?;
        let skip = state::read_skip_file(&self.home);
        let platform = this_platform();
        let ctx = policy::Context {
            running: &self.component.version,
            channel: &self.settings.channel,
            platform: &platform,
            rollout_id: &self.rollout_id,
            now,
            mode,
            pinned,
            skip_file: skip.as_ref(),
        };
        let offer = policy::select(&meta, &ctx, &st)?;
        Ok(Checked {
            offer,
            metadata: meta,
        })
    }

    /// Where the verified binary of `version` waits.
    pub fn quarantined(&self, version: &Version) -> PathBuf {
        self.home
            .join(fetch::QUARANTINE_DIR)
            .join(format!("{}-{version}", self.component.name))
    }

    /// Downloads (or reuses, if already there and intact) the binary of `offer` into the
    /// quarantine directory, verified and executable; returns its path.
    pub async fn stage(&self, offer: &Offer, progress: Progress) -> Result<PathBuf, CheckError> {
        fetch::quarantine_dir(&self.home)?;
        let path = self.quarantined(&offer.version);
        if path.exists() && fetch::check_file(&path, &offer.target).is_ok() {
            tracing::info!(file = %path.display(), "verified binary already in quarantine");
        } else {
            let _ = std::fs::remove_file(&path);
            self.client()?
                .download(&offer.target, &path, progress)
                .await?;
        }
        fetch::make_executable(&path)?;
        Ok(path)
    }

    /// Downloads the signed changelog of `offer` and returns its text (at most 64 KiB shown).
    pub async fn changelog(&self, offer: &Offer) -> Result<String, CheckError> {
        fetch::quarantine_dir(&self.home)?;
        let path = self
            .home
            .join(fetch::QUARANTINE_DIR)
            .join(format!("{}-{}.md", self.component.name, offer.version));
        let _ = std::fs::remove_file(&path);
        self.client()?
            .download(&offer.changelog, &path, Progress::Quiet)
            .await?;
        let bytes = std::fs::read(&path).map_err(|source| FetchError::Io {
            path: path.clone(),
            source,
        })?;
        let shown = &bytes[..bytes.len().min(64 * 1024)];
        Ok(String::from_utf8_lossy(shown).into_owned())
    }
}
