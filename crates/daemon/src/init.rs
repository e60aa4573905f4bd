//! The default `init`: create the home directory, the identity key files and a starting
//! `config.json`. Services with other needs override [`crate::Service::init`] and can reuse
//! the pieces here.

use crate::config::{self, Config};
use crate::durable::write_atomic;
use crate::home::Home;
use crate::keyfile;
use crate::service::Service;
use anyhow::Context as _;

/// Generates the identity (refusing to replace one unless `force`) and writes the initial
/// config if none exists. An existing `config.json` is never overwritten.
pub fn default_init<S: Service + ?Sized>(home: &Home, force: bool) -> anyhow::Result<()> {
    create_home(home)?;
    let keypair = keyfile::generate(home, force)?;
    println!(
        "wrote {} and {} (public key {})",
        home.key_seed_file().display(),
        home.key_pub_file().display(),
        keypair.public()
    );
    write_initial_config::<S::Config>(home, false)?;
    Ok(())
}

/// Creates the home directory (and parents) if missing.
pub fn create_home(home: &Home) -> anyhow::Result<()> {
    std::fs::create_dir_all(home.dir())
        .with_context(|| format!("could not create {}", home.dir().display()))
}

/// Writes `C::initial()` to `config.json` (0644). Without `overwrite` an existing file is
/// kept; returns whether it was written.
pub fn write_initial_config<C: Config>(home: &Home, overwrite: bool) -> anyhow::Result<bool> {
    let path = home.config_file();
    if !overwrite && path.exists() {
        println!("kept the existing {}", path.display());
        return Ok(false);
    }
    write_atomic(&path, &config::render(&C::initial())?, 0o644)?;
    println!("wrote {}", path.display());
    Ok(true)
}
