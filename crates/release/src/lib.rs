//! The release tool's work: release keys, the release repository (binaries, changelogs and the
//! signed metadata per component), build stamps, and a static HTTP server for a repository
//! (the devnet's and the tests' release server; any static web server will do in production).
//!
//! Repository layout (what `wireleap_upgrade::fetch` reads):
//! ```text
//! <repo>/<component>/metadata.json                          signed envelope
//! <repo>/<component>/<version>/<platform>/<component>       the binary
//! <repo>/<component>/<version>/changelog.md                 release notes
//! ```
//! Not here: verification policy on the installing side (`wireleap-upgrade`).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod cli;
pub mod repo;
pub mod serve;

use std::path::{Path, PathBuf};
use wireleap_proto::keys::{self, Keypair, PublicKey};

/// File name of a release signing key (seed) written by `keygen`.
pub const SEED_FILE: &str = "release.seed";
/// File name of its public key.
pub const PUB_FILE: &str = "release.pub";

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The target exists and `force` was not given.
    #[error("{} exists; pass --force to replace it (releases signed with the old key will no longer verify against the new one)", .0.display())]
    Exists(PathBuf),
    /// File trouble.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a key file.
    #[error("{} is not a release key file: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Durable write failed.
    #[error(transparent)]
    Write(#[from] wireleap_daemon::durable::WriteError),
}

/// Makes a new release key in `dir` (`release.seed` 0600, `release.pub` 0644) and returns it.
pub fn keygen(dir: &Path, force: bool) -> Result<Keypair, KeyFileError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| KeyFileError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    let seed = dir.join(SEED_FILE);
    if seed.exists() && !force {
        return Err(KeyFileError::Exists(seed));
    }
    let kp = Keypair::generate();
    wireleap_daemon::write_atomic(&seed, &keys::seed_file(&kp), 0o600)?;
    wireleap_daemon::write_atomic(&dir.join(PUB_FILE), &keys::pub_file(&kp.public()), 0o644)?;
    Ok(kp)
}

/// Reads a release key (a `release.seed` file).
pub fn load_key(path: &Path) -> Result<Keypair, KeyFileError> {
    let bytes = std::fs::read(path).map_err(|source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    keys::parse_seed_file(&bytes)
        .map(|l| l.keypair)
        .map_err(|e| KeyFileError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Reads a public key: a `release.pub` file, or the base64url text itself.
pub fn load_pub(spec: &str) -> Result<PublicKey, KeyFileError> {
    let path = Path::new(spec);
    let text = if path.exists() {
        let bytes = std::fs::read(path).map_err(|source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice::<String>(&bytes)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string())
    } else {
        spec.to_string()
    };
    PublicKey::from_b64(&text).map_err(|e| KeyFileError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn keygen_writes_private_key_0600_and_refuses_to_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let kp = keygen(d.path(), false).unwrap();
        let mode = std::fs::metadata(d.path().join(SEED_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            load_key(&d.path().join(SEED_FILE)).unwrap().public(),
            kp.public()
        );
        let p = d.path().join(PUB_FILE);
        assert_eq!(load_pub(p.to_str().unwrap()).unwrap(), kp.public());
        assert_eq!(load_pub(&kp.public().to_b64()).unwrap(), kp.public());
        assert!(matches!(
            keygen(d.path(), false),
            Err(KeyFileError::Exists(_))
        ));
        let again = keygen(d.path(), true).unwrap();
        assert_ne!(again.public(), kp.public());
    }
}
