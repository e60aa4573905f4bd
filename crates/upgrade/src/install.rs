//! The files of an installation and the crash-safe journal of an upgrade in progress.
//!
//! During an upgrade the new binary waits as `<bin>.next` and its migrated files as
//! `config.json.next` (and `<data>.next`). Nothing the running version uses changes until the
//! new version has proven itself; then [`commit`] swaps: for each file `x` with a copy,
//! `x.prev` becomes a hard link to the current `x` (so `x` never disappears, even for an
//! instant) and `x.next` is renamed over `x`. The binary goes first, the config after it, so
//! an interrupted commit can leave a new binary with an old config (which it can read) but
//! never an old binary with a new config.
//!
//! The journal (`upgrade-journal.json`) says which step an upgrade is in; it is written before
//! each step's effects. [`recover`] reads it at the next start: an upgrade interrupted before
//! the commit is undone (the `.next` files removed), an interrupted commit is finished, and a
//! journal whose processes are still alive is left to them.

use crate::migrate::next_path;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name of the journal.
pub const JOURNAL_FILE: &str = "upgrade-journal.json";
/// Journal format.
pub const JOURNAL_SCHEMA: u32 = 1;

/// Where an installation's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    home: PathBuf,
    bin: PathBuf,
}

impl Layout {
    /// The installation in `home` whose binary is `<home>/<name>`.
    pub fn new(home: impl Into<PathBuf>, name: &str) -> Self {
        let home = home.into();
        let bin = home.join(name);
        Layout { home, bin }
    }

    /// The same, with the binary elsewhere.
    pub fn with_binary(mut self, bin: impl Into<PathBuf>) -> Self {
        self.bin = bin.into();
        self
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// `<bin>.next`.
    pub fn bin_next(&self) -> PathBuf {
        next_path(&self.bin)
    }

    /// `<bin>.prev`.
    pub fn bin_prev(&self) -> PathBuf {
        prev_path(&self.bin)
    }

    /// The journal.
    pub fn journal(&self) -> PathBuf {
        self.home.join(JOURNAL_FILE)
    }

    /// A home-relative file.
    pub fn file(&self, rel: &str) -> PathBuf {
        self.home.join(rel)
    }
}

/// `<path>.prev`.
pub fn prev_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".prev");
    PathBuf::from(s)
}

/// What kind of change is in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// To a newer version.
    Upgrade,
    /// Back to `<bin>.prev`.
    Rollback,
}

/// The step an upgrade is in. Ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// `<bin>.next` is in place and verified.
    Staged,
    /// The `.next` copies are migrated.
    Migrated,
    /// The new process was started.
    Started,
    /// The new process is ready and the old one stopped accepting.
    Serving,
    /// The files are being swapped (finish it on recovery).
    Committing,
}

/// The journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// [`JOURNAL_SCHEMA`].
    pub schema_version: u32,
    /// Upgrade or rollback.
    pub kind: Kind,
    /// Version before.
    pub from: String,
    /// Version after.
    pub to: String,
    /// The process handing over (none for an offline install).
    pub old_pid: Option<i32>,
    /// The new process, once started.
    pub new_pid: Option<i32>,
    /// The step.
    pub step: Step,
    /// Home-relative files with a `.next` copy (config.json, data files).
    pub files: Vec<String>,
    /// Unix seconds.
    pub started_at: i64,
}

/// Why the journal or a file operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// File system trouble.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The journal is unreadable.
    #[error("{} is malformed ({reason}); inspect it, then remove it to continue", path.display())]
    Journal {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Durable write failed.
    #[error(transparent)]
    Write(#[from] wireleap_daemon::durable::WriteError),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> InstallError + 'a {
    move |source| InstallError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Journal {
    /// Reads the journal; `None` if there is none.
    pub fn load(layout: &Layout) -> Result<Option<Journal>, InstallError> {
        let path = layout.journal();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path)(e)),
        };
        let j: Journal = serde_json::from_slice(&bytes).map_err(|e| InstallError::Journal {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if j.schema_version != JOURNAL_SCHEMA {
            return Err(InstallError::Journal {
                path,
                reason: format!(
                    "schema_version {} is not {JOURNAL_SCHEMA}",
                    j.schema_version
                ),
            });
        }
        Ok(Some(j))
    }

    /// Writes the journal durably.
    pub fn save(&self, layout: &Layout) -> Result<(), InstallError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| InstallError::Journal {
            path: layout.journal(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        wireleap_daemon::write_atomic(&layout.journal(), &bytes, 0o644)?;
        Ok(())
    }

    /// Moves to `step` and saves.
    pub fn advance(&mut self, layout: &Layout, step: Step) -> Result<(), InstallError> {
        self.step = step;
        self.save(layout)
    }

    /// Removes the journal file.
    pub fn remove(layout: &Layout) -> Result<(), InstallError> {
        match std::fs::remove_file(layout.journal()) {
            Ok(()) => sync_dir(layout.home()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &layout.journal())(e)),
        }
    }

    fn paths(&self, layout: &Layout) -> Vec<PathBuf> {
        std::iter::once(layout.bin().to_path_buf())
            .chain(self.files.iter().map(|f| layout.file(f)))
            .collect()
    }
}

fn sync_dir(dir: &Path) -> Result<(), InstallError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Swaps one file `x`: `x.prev` := current `x`, `x` := `x.next`. Idempotent: a repeated call
/// after an interruption finishes the job.
fn swap_one(x: &Path) -> Result<(), InstallError> {
    let next = next_path(x);
    let prev = prev_path(x);
    if std::fs::symlink_metadata(&next).is_err() {
        return Ok(());
    }
    match std::fs::symlink_metadata(x) {
        Ok(m) if m.is_dir() => {
            remove_any(&prev).map_err(io("remove", &prev))?;
            std::fs::rename(x, &prev).map_err(io("rename", x))?;
        }
        Ok(_) => {
            remove_any(&prev).map_err(io("remove", &prev))?;
            std::fs::hard_link(x, &prev).map_err(io("link", x))?;
        }
        Err(_) => {}
    }
    std::fs::rename(&next, x).map_err(io("rename", &next))
}

/// Swaps the binary and then each file of the journal, then removes the journal. The caller
/// has saved the journal at [`Step::Committing`].
pub fn commit(layout: &Layout, journal: &Journal) -> Result<(), InstallError> {
    for path in journal.paths(layout) {
        swap_one(&path)?;
    }
    sync_dir(layout.home())?;
    Journal::remove(layout)
}

/// Removes the `.next` binary and copies of the journal, then the journal.
pub fn discard(layout: &Layout, journal: &Journal) -> Result<(), InstallError> {
    for path in journal.paths(layout) {
        let next = next_path(&path);
        remove_any(&next).map_err(io("remove", &next))?;
    }
    sync_dir(layout.home())?;
    Journal::remove(layout)
}

/// What [`recover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// No journal.
    Clean,
    /// A process of the journal is alive and owns it.
    InProgress(Journal),
    /// An interrupted upgrade was undone.
    Undone(Journal),
    /// An interrupted commit was finished.
    Finished(Journal),
}

/// Whether `pid` is a live daemon process.
pub fn daemon_alive(pid: i32) -> bool {
    wireleap_daemon::process::state(pid) == wireleap_daemon::process::PidState::Running
}

/// Brings the files back to a consistent state after a crash (see the module doc). `me` is
/// this process's pid: a journal naming it is ours and left alone.
pub fn recover(layout: &Layout, me: i32) -> Result<Recovery, InstallError> {
    let Some(j) = Journal::load(layout)? else {
        return Ok(Recovery::Clean);
    };
    let owned = |pid: Option<i32>| pid.is_some_and(|p| p == me || daemon_alive(p));
    if owned(j.old_pid) || owned(j.new_pid) {
        return Ok(Recovery::InProgress(j));
    }
    if j.step == Step::Committing {
        commit(layout, &j)?;
        Ok(Recovery::Finished(j))
    } else {
        discard(layout, &j)?;
        Ok(Recovery::Undone(j))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Layout, Journal) {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path(), "svc");
        std::fs::write(l.bin(), "old-bin").unwrap();
        std::fs::write(l.bin_next(), "new-bin").unwrap();
        std::fs::write(l.file("config.json"), "old-cfg").unwrap();
        std::fs::write(l.file("config.json.next"), "new-cfg").unwrap();
        std::fs::create_dir(l.file("data")).unwrap();
        std::fs::write(l.file("data/x"), "old-data").unwrap();
        std::fs::create_dir(l.file("data.next")).unwrap();
        std::fs::write(l.file("data.next/x"), "new-data").unwrap();
        let j = Journal {
            schema_version: JOURNAL_SCHEMA,
            kind: Kind::Upgrade,
            from: "0.1.0".into(),
            to: "0.2.0".into(),
            old_pid: None,
            new_pid: None,
            step: Step::Migrated,
            files: vec!["config.json".into(), "data".into()],
            started_at: 1,
        };
        j.save(&l).unwrap();
        (d, l, j)
    }

    fn read(l: &Layout, rel: &str) -> String {
        std::fs::read_to_string(l.file(rel)).unwrap()
    }

    #[test]
    fn commit_swaps_and_keeps_prev() {
        let (_d, l, mut j) = setup();
        j.advance(&l, Step::Committing).unwrap();
        commit(&l, &j).unwrap();
        assert_eq!(read(&l, "svc"), "new-bin");
        assert_eq!(read(&l, "svc.prev"), "old-bin");
        assert_eq!(read(&l, "config.json"), "new-cfg");
        assert_eq!(read(&l, "config.json.prev"), "old-cfg");
        assert_eq!(read(&l, "data/x"), "new-data");
        assert_eq!(read(&l, "data.prev/x"), "old-data");
        assert!(!l.bin_next().exists() && !l.file("config.json.next").exists());
        assert_eq!(Journal::load(&l).unwrap(), None);
    }

    #[test]
    fn interrupted_commit_is_finished_by_recovery() {
        let (_d, l, mut j) = setup();
        j.advance(&l, Step::Committing).unwrap();
        // The crash came after the binary was swapped and the config linked.
        swap_one(l.bin()).unwrap();
        std::fs::hard_link(l.file("config.json"), l.file("config.json.prev")).unwrap();
        assert_eq!(recover(&l, 1).unwrap(), Recovery::Finished(j));
        assert_eq!(read(&l, "svc"), "new-bin");
        assert_eq!(read(&l, "svc.prev"), "old-bin");
        assert_eq!(read(&l, "config.json"), "new-cfg");
        assert_eq!(read(&l, "config.json.prev"), "old-cfg");
        assert_eq!(recover(&l, 1).unwrap(), Recovery::Clean);
    }

    #[test]
    fn interrupted_upgrade_is_undone() {
        let (_d, l, j) = setup();
        assert_eq!(recover(&l, 1).unwrap(), Recovery::Undone(j));
        assert_eq!(read(&l, "svc"), "old-bin");
        assert_eq!(read(&l, "config.json"), "old-cfg");
        assert!(!l.bin_next().exists());
        assert!(!l.file("config.json.next").exists());
        assert!(!l.file("data.next").exists());
        assert!(!l.bin_prev().exists());
    }

    #[test]
    fn a_live_owner_keeps_its_journal() {
        let (_d, l, mut j) = setup();
        j.old_pid = Some(4242);
        j.save(&l).unwrap();
        assert!(matches!(
            recover(&l, 4242).unwrap(),
            Recovery::InProgress(_)
        ));
        assert!(l.bin_next().exists());
    }

    #[test]
    fn garbage_journal_is_reported() {
        let (_d, l, _) = setup();
        std::fs::write(l.journal(), "{").unwrap();
        assert!(matches!(recover(&l, 1), Err(InstallError::Journal { .. })));
    }
}
