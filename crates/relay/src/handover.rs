//! The hand-over mark: how another process (the upgrade supervisor) tells a running relay
//! that its next stop is a hand-over to a new version, so it must not disenroll.
//!
//! The mark is `wireleap-relay.handover` in the home, holding the pid (JSON integer) of the
//! process it is meant for; a mark naming another pid (a stale one from a crash) is ignored
//! and removed. In-process callers use `RelayHandle::set_shutdown_mode` instead.

use std::io;
use std::path::PathBuf;
use wireleap_daemon::Home;

/// File name of the mark.
pub const HANDOVER_FILE: &str = "wireleap-relay.handover";

fn path(home: &Home) -> PathBuf {
    home.join(HANDOVER_FILE)
}

/// Marks the relay process `pid` for a hand-over stop (write before sending it SIGTERM).
pub fn mark(home: &Home, pid: u32) -> io::Result<()> {
    wireleap_daemon::write_atomic(&path(home), pid.to_string().as_bytes(), 0o644)
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Whether a mark names `pid`; removes any mark found.
pub fn take(home: &Home, pid: u32) -> bool {
    let p = path(home);
    let Ok(text) = std::fs::read_to_string(&p) else {
        return false;
    };
    let ours = text.trim().parse::<u32>().ok() == Some(pid);
    if let Err(e) = std::fs::remove_file(&p) {
        tracing::warn!(path = %p.display(), "could not remove the hand-over mark: {e}");
    }
    if !ours {
        tracing::warn!(path = %p.display(), "ignoring a hand-over mark for another process");
    }
    ours
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mark_is_for_one_pid_and_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path(), "wireleap-relay");
        assert!(!take(&home, 42));
        mark(&home, 42).unwrap();
        assert!(take(&home, 42));
        assert!(!take(&home, 42));
        mark(&home, 41).unwrap();
        assert!(!take(&home, 42));
        assert!(!path(&home).exists());
    }
}
