//! The client's state files in its home directory (client.md §3): `pofs.json`,
//! `servicekey.json`, `contract.json`, `relays.json`, and the `contract` key of
//! `config.json`.
//!
//! Every write is atomic (temp file, fsync, rename). `pofs.json` is changed by two processes
//! (the CLI's `import` adds, the daemon's activation removes), so each read-modify-write runs
//! under an exclusive lock on `pofs.json.lock`.

use std::fs::File;
use std::path::{Path, PathBuf};
use wireleap_daemon::{durable, Home};
use wireleap_proto::contractinfo::ContractInfo;
use wireleap_proto::pof::{self, Pof};
use wireleap_proto::relaylist::RelayList;
use wireleap_proto::servicekey::ServiceKey;

/// File names.
pub const POFS: &str = "pofs.json";
/// Lock taken around every change of `pofs.json`.
pub const POFS_LOCK: &str = "pofs.json.lock";
/// The active servicekey (private key inside: mode 0600).
pub const SERVICEKEY: &str = "servicekey.json";
/// The contract's `/info` as last seen; its `pubkey` is the pinned contract key.
pub const CONTRACT: &str = "contract.json";
/// The last verified relay list (the directory's signed body, as received).
pub const RELAYS: &str = "relays.json";

/// What went wrong with a state file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The contents are not what the file should hold.
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] durable::WriteError),
    /// The lock could not be taken.
    #[error("cannot lock {}: {reason}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn corrupt(path: &Path, reason: impl ToString) -> FileError {
    FileError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Holds the `pofs.json` lock until dropped.
pub struct PofsLock {
    _lock: nix::fcntl::Flock<File>,
    path: PathBuf,
}

impl std::fmt::Debug for PofsLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PofsLock")
            .field("path", &self.path)
            .finish()
    }
}

impl PofsLock {
    /// Takes the lock (blocking; holders only read and write one small file).
    pub fn take(home: &Home) -> Result<Self, FileError> {
        let path = home.join(POFS_LOCK);
        let lock_err = |reason: String| FileError::Lock {
            path: path.clone(),
            reason,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| lock_err(e.to_string()))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| lock_err(errno.to_string()))?;
        Ok(PofsLock { _lock: lock, path })
    }

    /// The stored pofs (none if the file does not exist).
    pub fn read(&self, home: &Home) -> Result<Vec<Pof>, FileError> {
        read_pofs(home)
    }

    /// Replaces the stored pofs.
    pub fn write(&self, home: &Home, pofs: &[Pof]) -> Result<(), FileError> {
        let path = home.join(POFS);
        let bytes = pof::pofs_file(pofs).map_err(|e| corrupt(&path, e))?;
        durable::write_atomic(&path, &bytes, 0o600)?;
        Ok(())
    }
}

/// Reads `pofs.json` without the lock (for display).
pub fn read_pofs(home: &Home) -> Result<Vec<Pof>, FileError> {
    let path = home.join(POFS);
    match read_opt(&path)? {
        None => Ok(Vec::new()),
        Some(b) => pof::parse_pofs_file(&b).map_err(|e| corrupt(&path, e)),
    }
}

/// Reads `servicekey.json`, if there is one.
pub fn read_servicekey(home: &Home) -> Result<Option<ServiceKey>, FileError> {
    let path = home.join(SERVICEKEY);
    match read_opt(&path)? {
        None => Ok(None),
        Some(b) => ServiceKey::parse(&b)
            .map(Some)
            .map_err(|e| corrupt(&path, e)),
    }
}

/// Writes `servicekey.json` (mode 0600: it holds a private key).
pub fn write_servicekey(home: &Home, sk: &ServiceKey) -> Result<(), FileError> {
    let path = home.join(SERVICEKEY);
    let bytes = sk.to_file().map_err(|e| corrupt(&path, e))?;
    durable::write_atomic(&path, &bytes, 0o600)?;
    Ok(())
}

/// Reads `contract.json`, if there is one.
pub fn read_contract(home: &Home) -> Result<Option<ContractInfo>, FileError> {
    let path = home.join(CONTRACT);
    match read_opt(&path)? {
        None => Ok(None),
        Some(b) => ContractInfo::from_json(&b)
            .map(Some)
            .map_err(|e| corrupt(&path, e)),
    }
}

/// Writes `contract.json`.
pub fn write_contract(home: &Home, info: &ContractInfo) -> Result<(), FileError> {
    durable::write_atomic(&home.join(CONTRACT), &info.to_json(), 0o644)?;
    Ok(())
}

/// Writes `relays.json` (the verified list as the directory sent it).
pub fn write_relays(home: &Home, list: &RelayList) -> Result<(), FileError> {
    durable::write_atomic(&home.join(RELAYS), &list.to_body(), 0o644)?;
    Ok(())
}

/// Reads `relays.json` (not re-verified: it was verified before it was written).
pub fn read_relays(home: &Home) -> Result<Option<RelayList>, FileError> {
    let path = home.join(RELAYS);
    match read_opt(&path)? {
        None => Ok(None),
        Some(b) => RelayList::parse(&b)
            .map(|(list, _)| Some(list))
            .map_err(|e| corrupt(&path, e)),
    }
}

/// Sets the `contract` key of `config.json`, keeping every other key as written.
pub fn set_config_contract(home: &Home, contract: &str) -> Result<(), FileError> {
    let path = home.config_file();
    let mut value: serde_json::Value = match read_opt(&path)? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| corrupt(&path, e))?,
        None => {
            serde_json::to_value(crate::ClientConfig::default()).map_err(|e| corrupt(&path, e))?
        }
    };
    let Some(obj) = value.as_object_mut() else {
        return Err(corrupt(&path, "not a JSON object"));
    };
    obj.insert("contract".into(), serde_json::Value::from(contract));
    let mut bytes = serde_json::to_vec_pretty(&value).map_err(|e| corrupt(&path, e))?;
    bytes.push(b'\n');
    durable::write_atomic(&path, &bytes, 0o644)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use wireleap_proto::keys::Keypair;

    #[test]
    fn pofs_and_config_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path(), "wireleap");
        assert!(read_pofs(&home).unwrap().is_empty());
        let p = Pof::new_signed(&Keypair::from_seed([4; 32]), "dummy".into(), 5, "ab".into());
        let lock = PofsLock::take(&home).unwrap();
        lock.write(&home, std::slice::from_ref(&p)).unwrap();
        drop(lock);
        assert_eq!(read_pofs(&home).unwrap(), vec![p]);

        std::fs::write(home.config_file(), r#"{"circuit": {"hops": 2}}"#).unwrap();
        set_config_contract(&home, "https://c.example").unwrap();
        let c: crate::ClientConfig =
            serde_json::from_slice(&std::fs::read(home.config_file()).unwrap()).unwrap();
        assert_eq!(c.circuit.hops, 2);
        assert_eq!(c.contract.as_deref(), Some("https://c.example"));

        std::fs::write(home.join(POFS), "{").unwrap();
        assert!(matches!(read_pofs(&home), Err(FileError::Corrupt { .. })));
    }
}
