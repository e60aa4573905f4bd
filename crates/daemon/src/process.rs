//! Looking at and signalling the process a pid file names.
//!
//! Liveness is `kill(pid, 0)` (EPERM counts as alive). Beyond the original, on Linux a pid
//! whose process is a zombie, or whose command line is not a foreground daemon (`start --fg`),
//! is treated as gone: after a crash and a reboot the pid may name an unrelated process, which
//! `stop` must not signal.

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// What the pid in a pid file refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidState {
    /// A live process that looks like our daemon.
    Running,
    /// No such process (or a zombie).
    Gone,
    /// A live process that is not a daemon started with `start --fg`: the pid was reused.
    Reused,
}

/// Why signalling failed.
#[derive(Debug, thiserror::Error)]
#[error("could not send {signal} to pid {pid}: {errno}")]
pub struct SignalError {
    /// The target.
    pub pid: i32,
    /// The signal.
    pub signal: Signal,
    /// The OS error.
    pub errno: Errno,
}

/// Whether any process with this pid exists (zombies included).
pub fn exists(pid: i32) -> bool {
    matches!(kill(Pid::from_raw(pid), None), Ok(()) | Err(Errno::EPERM))
}

/// Classifies the process named by a pid file.
pub fn state(pid: i32) -> PidState {
    if !exists(pid) || is_zombie(pid) {
        return PidState::Gone;
    }
    match is_foreground_daemon(pid) {
        Some(false) => PidState::Reused,
        _ => PidState::Running,
    }
}

/// Sends `signal` to `pid`.
pub fn send(pid: i32, signal: Signal) -> Result<(), SignalError> {
    kill(Pid::from_raw(pid), signal).map_err(|errno| SignalError { pid, signal, errno })
}

#[cfg(target_os = "linux")]
fn is_zombie(pid: i32) -> bool {
    // Field 3 of /proc/<pid>/stat, after the parenthesised command name (which may itself
    // contain spaces and parentheses, hence rfind).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next().map(|f| f == "Z"))
        })
        .unwrap_or(false)
}

#[cfg(not(target_os = "linux"))]
fn is_zombie(_pid: i32) -> bool {
    false
}

/// `Some(true)` if the process's arguments contain `start` and `--fg`, `Some(false)` if they
/// do not, `None` if they cannot be read (then the caller trusts the pid file).
#[cfg(target_os = "linux")]
fn is_foreground_daemon(pid: i32) -> Option<bool> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(cmdline_is_foreground_daemon(&cmdline))
}

#[cfg(not(target_os = "linux"))]
fn is_foreground_daemon(_pid: i32) -> Option<bool> {
    None
}

/// Whether a NUL-separated argument list is that of `… start … --fg …`.
pub fn cmdline_is_foreground_daemon(cmdline: &[u8]) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.contains(&&b"start"[..]) && args.contains(&&b"--fg"[..])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn own_process_exists_but_is_no_daemon() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(exists(me));
        // The test runner is not `start --fg`, so a pid file naming it is a reused pid.
        #[cfg(target_os = "linux")]
        assert_eq!(state(me), PidState::Reused);
    }

    #[test]
    fn reaped_child_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        child.wait().unwrap();
        assert_eq!(state(pid), PidState::Gone);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn unreaped_child_is_a_zombie_and_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !is_zombie(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(exists(pid));
        assert_eq!(state(pid), PidState::Gone);
        child.wait().unwrap();
    }

    #[test]
    fn cmdline_match() {
        assert!(cmdline_is_foreground_daemon(
            b"/srv/wireleap-relay\0--home\0/srv\0start\0--fg\0"
        ));
        assert!(!cmdline_is_foreground_daemon(b"/usr/bin/vim\0start\0"));
        assert!(!cmdline_is_foreground_daemon(b"x\0start--fg\0"));
        assert!(!cmdline_is_foreground_daemon(b""));
    }
}
