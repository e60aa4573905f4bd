//! `wireleap exec NAME [ARGS...]` (client.md §6.4): runs a script from the home's
//! `scripts/` (the user's) or `scripts/default/` (bundled, written by `init`) with the SOCKS
//! forwarder's address in its environment.

use anyhow::{bail, Context as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::Duration;
use wireleap_daemon::control::{self, Found};
use wireleap_daemon::Home;

/// The bundled scripts: name and contents.
pub const SCRIPTS: [(&str, &str); 6] = [
    ("curl", include_str!("../scripts/curl")),
    ("git", include_str!("../scripts/git")),
    ("firefox", include_str!("../scripts/firefox")),
    ("chromium", include_str!("../scripts/chromium")),
    ("list", include_str!("../scripts/list")),
    ("README", include_str!("../scripts/README")),
];

/// Writes the bundled scripts into `scripts/default/` (replacing older copies) and creates
/// `scripts/` for the user's own.
pub fn install_scripts(home: &Home) -> anyhow::Result<()> {
    let dir = home.join("scripts").join("default");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in SCRIPTS {
        let mode = if name == "README" { 0o644 } else { 0o755 };
        wireleap_daemon::write_atomic(&dir.join(name), text.as_bytes(), mode)?;
    }
    Ok(())
}

/// Finds `scripts/NAME`, else `scripts/default/NAME`; it must be an executable file.
pub fn find_script(home: &Home, name: &str) -> anyhow::Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        bail!("invalid script name {name:?}");
    }
    let user = home.join("scripts").join(name);
    let bundled = home.join("scripts").join("default").join(name);
    let path = if user.is_file() { user } else { bundled };
    let meta = std::fs::metadata(&path).map_err(|_| {
        anyhow::anyhow!(
            "no script {name:?} in {}/scripts or scripts/default (run `wireleap exec list`; `wireleap init --force` restores the bundled ones)",
            home.dir().display()
        )
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        bail!("{} is not an executable file (chmod +x it)", path.display());
    }
    Ok(path)
}

/// Replaces this process with the script (returns only on failure).
pub fn exec(home: &Home, socks: &str, name: &str, args: &[String]) -> anyhow::Result<()> {
    let path = find_script(home, name)?;
    // `list` only reads the scripts directory; everything else needs a working forwarder.
    if name != "list" {
        if !matches!(control::inspect(home), Found::Running(_)) {
            bail!("wireleap is not running: start it with `wireleap start`");
        }
        let addr: SocketAddr = socks
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| anyhow::anyhow!("cannot resolve the SOCKS address {socks:?}"))?;
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            bail!("the SOCKS forwarder does not answer on {socks}: see `wireleap status`");
        }
    }
    let (host, port) = socks
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("SOCKS address {socks:?} is not host:port"))?;
    use std::os::unix::process::CommandExt as _;
    let err = std::process::Command::new(&path)
        .args(args)
        .env("WIRELEAP_HOME", home.dir())
        .env("WIRELEAP_SOCKS", socks)
        .env(
            "WIRELEAP_SOCKS_HOST",
            host.trim_start_matches('[').trim_end_matches(']'),
        )
        .env("WIRELEAP_SOCKS_PORT", port)
        .exec();
    Err(anyhow::anyhow!("cannot run {}: {err}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn scripts_install_and_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path(), "wireleap");
        install_scripts(&home).unwrap();
        let curl = find_script(&home, "curl").unwrap();
        assert!(curl.ends_with("scripts/default/curl"));
        // A user's script wins over the bundled one.
        let mine = home.join("scripts").join("curl");
        std::fs::write(&mine, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_script(&home, "curl").unwrap(), mine);
        assert!(find_script(&home, "README").is_err(), "not executable");
        assert!(find_script(&home, "../x").is_err());
        assert!(find_script(&home, "nope").is_err());
    }
}
