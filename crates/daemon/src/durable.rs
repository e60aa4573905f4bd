//! Crash-safe file replacement for the small files a daemon owns (pid, keys, config).
//!
//! A reader either sees the old content or the new one, never a torn write, and the new content
//! survives a power cut once the call returns. Not for large or append-only files (logs).

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a durable write failed; names the file and the step.
#[derive(Debug, thiserror::Error)]
#[error("could not write {path}: {step}: {source}")]
pub struct WriteError {
    /// The file that was being replaced.
    pub path: PathBuf,
    /// Which step failed (create temp file, write, fsync, rename, fsync directory).
    pub step: &'static str,
    /// The underlying error.
    #[source]
    pub source: std::io::Error,
}

/// Distinguishes temp files of concurrent writers inside one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes`, file mode exactly `mode` (the umask does not apply):
/// writes a temp file in the same directory, fsyncs it, renames it over `path`, fsyncs the
/// directory. On failure the temp file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    let err = |step: &'static str| {
        let path = path.to_path_buf();
        move |source| WriteError { path, step, source }
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))
        .map_err(err("check path"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_then_rename(&tmp, path, bytes, mode);
    if result.is_err() {
        // Best effort: the temp file is garbage either way.
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|(step, source)| err(step)(source))?;
    sync_dir(&dir).map_err(err("fsync directory"))
}

fn write_then_rename(
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(), (&'static str, std::io::Error)> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(|e| ("create temp file", e))?;
    // The mode given to open() is filtered by the umask; the caller asked for an exact mode.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| ("set mode", e))?;
    file.write_all(bytes).map_err(|e| ("write", e))?;
    file.sync_all().map_err(|e| ("fsync", e))?;
    drop(file);
    fs::rename(tmp, path).map_err(|e| ("rename", e))
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn replaces_content_with_exact_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.seed");
        write_atomic(&path, b"first", 0o644).unwrap();
        write_atomic(&path, b"second", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.seed")]);
    }

    #[test]
    fn failure_names_the_file_and_keeps_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the way makes the rename fail after the temp file was written.
        let path = dir.path().join("config.json");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inner"), b"x").unwrap();
        let e = write_atomic(&path, b"{}", 0o644).unwrap_err();
        assert_eq!(e.step, "rename");
        assert!(e.to_string().contains("config.json"), "{e}");
        assert!(path.is_dir());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
