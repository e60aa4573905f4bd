//! Reading and writing the identity key files `key.seed` (0600) and `key.pub` (0644).
//!
//! The byte formats come from `wireleap_proto::keys` (protocol.md §2); this module only does
//! the file I/O: permissions, atomic replacement, the legacy-format rewrite, and refusing to
//! replace an existing identity by accident.

use crate::durable::{write_atomic, WriteError};
use crate::home::Home;
use std::path::PathBuf;
use wireleap_proto::keys::{self, KeyError, Keypair};

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// `key.seed` exists and replacing it was not requested.
    #[error(
        "{} already exists; refusing to replace this identity. Run `init --force` to \
         generate a new key (the old identity is lost)",
        path.display()
    )]
    Exists {
        /// The existing seed file.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("could not read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file content is not a valid seed.
    #[error("{} has {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: KeyError,
    },
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Loads the identity from `key.seed`, rewriting a legacy bare-base64 file in the JSON form.
pub fn load_keypair(home: &Home) -> Result<Keypair, KeyFileError> {
    let path = home.key_seed_file();
    let bytes = std::fs::read(&path).map_err(|source| KeyFileError::Read {
        path: path.clone(),
        source,
    })?;
    let loaded = keys::parse_seed_file(&bytes).map_err(|source| KeyFileError::Parse {
        path: path.clone(),
        source,
    })?;
    if let Some(rewrite) = loaded.rewrite {
        write_atomic(&path, &rewrite, 0o600)?;
    }
    Ok(loaded.keypair)
}

/// Writes `key.seed` (0600) and `key.pub` (0644) for `keypair`, replacing existing files.
pub fn write_keypair(home: &Home, keypair: &Keypair) -> Result<(), KeyFileError> {
    write_atomic(&home.key_seed_file(), &keys::seed_file(keypair), 0o600)?;
    write_atomic(
        &home.key_pub_file(),
        &keys::pub_file(&keypair.public()),
        0o644,
    )?;
    Ok(())
}

/// Generates a fresh identity and writes its files; refuses if `key.seed` exists unless
/// `force`.
pub fn generate(home: &Home, force: bool) -> Result<Keypair, KeyFileError> {
    let path = home.key_seed_file();
    if !force && path.exists() {
        return Err(KeyFileError::Exists { path });
    }
    let keypair = Keypair::generate();
    write_keypair(home, &keypair)?;
    Ok(keypair)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn generate_writes_modes_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path(), "x");
        let kp = generate(&home, false).unwrap();
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(home.key_seed_file()), 0o600);
        assert_eq!(mode(home.key_pub_file()), 0o644);
        assert_eq!(load_keypair(&home).unwrap().public(), kp.public());
        let pub_text = std::fs::read(home.key_pub_file()).unwrap();
        assert_eq!(pub_text, keys::pub_file(&kp.public()));

        let e = generate(&home, false).unwrap_err();
        assert!(matches!(e, KeyFileError::Exists { .. }), "{e}");
        assert!(e.to_string().contains("--force"));
        assert_eq!(load_keypair(&home).unwrap().public(), kp.public());

        let kp2 = generate(&home, true).unwrap();
        assert_ne!(kp2.public(), kp.public());
        assert_eq!(load_keypair(&home).unwrap().public(), kp2.public());
    }

    #[test]
    fn legacy_seed_is_rewritten_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path(), "x");
        std::fs::write(
            home.key_seed_file(),
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE\n",
        )
        .unwrap();
        let kp = load_keypair(&home).unwrap();
        assert_eq!(kp.seed(), [1u8; 32]);
        assert_eq!(
            std::fs::read(home.key_seed_file()).unwrap(),
            b"\"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE\""
        );
    }

    #[test]
    fn bad_seed_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path(), "x");
        std::fs::write(home.key_seed_file(), "\"AQEB\"").unwrap();
        let msg = load_keypair(&home).unwrap_err().to_string();
        assert!(msg.contains("key.seed has invalid seed size: 3"), "{msg}");
    }
}
