//! The `<name>.pid` file: the pid of the running daemon as a JSON integer.
//!
//! Written atomically by `start --fg`, removed by the daemon on a clean exit (only if it still
//! names that daemon, so a successor's file survives) and by `stop`.

use crate::durable::{write_atomic, WriteError};
use std::path::{Path, PathBuf};

/// Why a pid file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// The file exists but could not be read.
    #[error("could not read {}: {source}", path.display())]
    Read {
        /// The pid file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The content is not a positive JSON integer.
    #[error("{} does not hold a pid: {reason} (content {content:?})", path.display())]
    Parse {
        /// The pid file.
        path: PathBuf,
        /// The first bytes of the content.
        content: String,
        /// What is wrong.
        reason: String,
    },
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Removing failed.
    #[error("could not remove {}: {source}", path.display())]
    Remove {
        /// The pid file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Parses pid file content: a positive JSON integer, surrounding whitespace allowed.
pub fn parse(bytes: &[u8]) -> Result<i32, String> {
    let value: i64 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match i32::try_from(value) {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(format!("{value} is not a valid process id")),
    }
}

/// Reads the pid file; `Ok(None)` when it does not exist.
pub fn read(path: &Path) -> Result<Option<i32>, PidFileError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PidFileError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse(&bytes)
        .map(Some)
        .map_err(|reason| PidFileError::Parse {
            path: path.to_path_buf(),
            content: String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned(),
            reason,
        })
}

/// Writes `pid` to the pid file atomically (mode 0644).
pub fn write(path: &Path, pid: i32) -> Result<(), PidFileError> {
    Ok(write_atomic(path, pid.to_string().as_bytes(), 0o644)?)
}

/// Removes the pid file if it names `pid`; returns whether it was removed. A file naming
/// another process (a successor after a hand-over) is left alone.
pub fn remove_if_names(path: &Path, pid: i32) -> Result<bool, PidFileError> {
    match read(path) {
        Ok(Some(p)) if p == pid => remove(path).map(|()| true),
        Ok(_) => Ok(false),
        Err(PidFileError::Parse { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes the pid file; a missing file is not an error.
pub fn remove(path: &Path) -> Result<(), PidFileError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PidFileError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_json_integers_only() {
        assert_eq!(parse(b"1234"), Ok(1234));
        assert_eq!(parse(b" 42\n"), Ok(42));
        for bad in [
            &b""[..],
            b"0",
            b"-5",
            b"\"12\"",
            b"12.5",
            b"99999999999",
            b"1 2",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        assert_eq!(read(&path).unwrap(), None);
        write(&path, 777).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"777");
        assert_eq!(read(&path).unwrap(), Some(777));
        assert!(!remove_if_names(&path, 778).unwrap());
        assert!(path.exists());
        assert!(remove_if_names(&path, 777).unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn garbage_is_reported_with_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        std::fs::write(&path, "hello").unwrap();
        let msg = read(&path).unwrap_err().to_string();
        assert!(msg.contains("d.pid") && msg.contains("hello"), "{msg}");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..32), pid in 1..i32::MAX) {
            let _ = parse(&bytes);
            proptest::prop_assert_eq!(parse(pid.to_string().as_bytes()), Ok(pid));
        }
    }
}
