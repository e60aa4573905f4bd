//! The home directory of a daemon and the names of the files the lifecycle keeps there.
//!
//! Also decides which config file is read: `config.json`, or `config.json.next` when the
//! process was told to prefer it (the upgrade supervisor starts a new binary that way, before
//! the files are swapped). The preference is opt-in so an old binary never picks up a config
//! migrated for a newer version (upgrade.md §13 item 3).

use crate::config::{self, Config, ConfigError};
use std::path::{Path, PathBuf};

/// File name of the configuration.
pub const CONFIG_FILE: &str = "config.json";
/// File name of a migrated configuration waiting for the upgrade swap.
pub const CONFIG_NEXT_FILE: &str = "config.json.next";
/// File name of the identity seed.
pub const KEY_SEED_FILE: &str = "key.seed";
/// File name of the identity public key.
pub const KEY_PUB_FILE: &str = "key.pub";

/// A daemon's home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    dir: PathBuf,
    name: &'static str,
    prefer_next_config: bool,
}

/// Why the default home directory could not be determined.
#[derive(Debug, thiserror::Error)]
#[error("could not locate the executable to derive the home directory (pass --home DIR): {0}")]
pub struct HomeError(#[source] pub std::io::Error);

impl Home {
    /// The home `dir` of the daemon called `name` (e.g. `wireleap-relay`). `dir` should be
    /// absolute: a background child is started with this path.
    pub fn new(dir: impl Into<PathBuf>, name: &'static str) -> Self {
        Home {
            dir: dir.into(),
            name,
            prefer_next_config: false,
        }
    }

    /// The directory holding the symlink-resolved executable (the original's default home).
    pub fn default_dir() -> Result<PathBuf, HomeError> {
        let exe = std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .map_err(HomeError)?;
        exe.parent().map(Path::to_path_buf).ok_or_else(|| {
            HomeError(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "executable has no parent directory",
            ))
        })
    }

    /// Makes config loading prefer `config.json.next` when it exists.
    pub fn with_next_config(mut self, prefer: bool) -> Self {
        self.prefer_next_config = prefer;
        self
    }

    /// Whether `config.json.next` is preferred.
    pub fn prefers_next_config(&self) -> bool {
        self.prefer_next_config
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's name; file names derive from it.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A path relative to the home directory (absolute paths are returned unchanged).
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.join(rel)
    }

    /// `<name>.pid`.
    pub fn pid_file(&self) -> PathBuf {
        self.join(format!("{}.pid", self.name))
    }

    /// `<name>.log`.
    pub fn log_file(&self) -> PathBuf {
        self.join(format!("{}.log", self.name))
    }

    /// `config.json` (the file `init` writes and operators edit).
    pub fn config_file(&self) -> PathBuf {
        self.join(CONFIG_FILE)
    }

    /// The config file that loading reads now: `config.json.next` if preferred and present,
    /// else `config.json`.
    pub fn effective_config_file(&self) -> PathBuf {
        if self.prefer_next_config {
            let next = self.join(CONFIG_NEXT_FILE);
            if next.exists() {
                return next;
            }
        }
        self.config_file()
    }

    /// `key.seed`.
    pub fn key_seed_file(&self) -> PathBuf {
        self.join(KEY_SEED_FILE)
    }

    /// `key.pub`.
    pub fn key_pub_file(&self) -> PathBuf {
        self.join(KEY_PUB_FILE)
    }

    /// Reads, parses and validates the effective config file; returns it with its path.
    pub fn load_config<C: Config>(&self) -> Result<(C, PathBuf), ConfigError> {
        let path = self.effective_config_file();
        config::load_file(&path).map(|c| (c, path))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_the_daemon_name() {
        let h = Home::new("/srv/relay", "wireleap-relay");
        assert_eq!(h.pid_file(), Path::new("/srv/relay/wireleap-relay.pid"));
        assert_eq!(h.log_file(), Path::new("/srv/relay/wireleap-relay.log"));
        assert_eq!(h.key_seed_file(), Path::new("/srv/relay/key.seed"));
    }

    #[test]
    fn next_config_only_when_asked_and_present() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_NEXT_FILE), "{}").unwrap();
        let plain = Home::new(dir.path(), "x");
        assert_eq!(plain.effective_config_file(), dir.path().join(CONFIG_FILE));
        let next = plain.clone().with_next_config(true);
        assert_eq!(
            next.effective_config_file(),
            dir.path().join(CONFIG_NEXT_FILE)
        );
        std::fs::remove_file(dir.path().join(CONFIG_NEXT_FILE)).unwrap();
        assert_eq!(next.effective_config_file(), dir.path().join(CONFIG_FILE));
    }
}
