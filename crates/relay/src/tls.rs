//! The relay's TLS files `relay-cert.pem` / `relay-key.pem` (protocol.md §15): written by
//! `init` from the identity key, checked at start.
//!
//! Clients pin the relay's ed25519 key from the directory's list, so a certificate that does
//! not carry `key.seed`'s key makes the relay unreachable; the original never checked this.
//! Missing files (a home made by an older `init`) are created; mismatching ones refuse the
//! start with what to do.

use anyhow::{bail, Context as _};
use std::sync::Arc;
use std::time::SystemTime;
use wireleap_daemon::{write_atomic, Home};
use wireleap_net::cert;
use wireleap_proto::keys::Keypair;

/// Certificate file name.
pub const CERT_FILE: &str = "relay-cert.pem";
/// Private key file name.
pub const KEY_FILE: &str = "relay-key.pem";

/// Writes both files for `keypair` (cert 0644, key 0600), replacing existing ones.
pub fn write_files(home: &Home, keypair: &Keypair) -> anyhow::Result<()> {
    let rc = cert::generate(&keypair.seed(), SystemTime::now())?;
    write_atomic(&home.join(KEY_FILE), rc.key_pem.as_bytes(), 0o600)?;
    write_atomic(&home.join(CERT_FILE), rc.cert_pem.as_bytes(), 0o644)?;
    Ok(())
}

/// The server config from the home's files, creating them if both are missing and checking
/// that the certificate carries the relay's key.
pub fn load_or_create(home: &Home, keypair: &Keypair) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let cert_path = home.join(CERT_FILE);
    let key_path = home.join(KEY_FILE);
    if !cert_path.exists() && !key_path.exists() {
        tracing::info!("{CERT_FILE} and {KEY_FILE} are missing; creating them from key.seed");
        write_files(home, keypair)?;
    }
    let pem = std::fs::read(&cert_path)
        .with_context(|| format!("could not read {}", cert_path.display()))?;
    let mut rd = pem.as_slice();
    let der = rustls_pemfile::certs(&mut rd)
        .next()
        .transpose()
        .with_context(|| format!("{} is not PEM", cert_path.display()))?
        .with_context(|| format!("{} holds no certificate", cert_path.display()))?;
    if cert::spki_pubkey(&der) != Some(keypair.public().0) {
        bail!(
            "{} does not carry this relay's key {} (clients pin it); delete {CERT_FILE} and \
             {KEY_FILE} to have them made again from key.seed",
            cert_path.display(),
            keypair.public()
        );
    }
    Ok(wireleap_net::tls::server_config_from_files(
        &cert_path, &key_path,
    )?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn creates_checks_and_refuses_foreign_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path(), "wireleap-relay");
        let kp = Keypair::from_seed([1; 32]);
        load_or_create(&home, &kp).unwrap();
        assert!(home.join(CERT_FILE).exists());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(home.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another identity's certificate is refused.
        let other = Keypair::from_seed([6; 32]);
        let e = load_or_create(&home, &other).unwrap_err().to_string();
        assert!(e.contains("does not carry this relay's key"), "{e}");
    }
}
