//! Crash recovery before a daemon reads its config.
//!
//! Call [`recover_at_start`] first thing in `main`, before `wireleap_daemon::main`. On a
//! `start` command it finishes or undoes an upgrade a crash interrupted (see
//! [`crate::install::recover`]), so that the config read next belongs to the binary that reads
//! it. If finishing the commit replaced the binary this process was started from, the process
//! re-executes the new binary with the same arguments and environment (same pid; nothing was
//! read or bound yet), so an old binary never runs on a new config.

use crate::agent::predecessor;
use crate::install::{self, Layout, Recovery};
use std::ffi::OsString;
use std::path::PathBuf;

fn home_from_args(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--home" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--home=")) {
            return Some(PathBuf::from(v));
        }
    }
    None
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Recovers the installation of daemon `name` if the command line is a `start`. Prints what
/// it did to stderr (tracing is not set up yet). Never fails the start: problems are printed
/// and the daemon's own checks take over.
pub fn recover_at_start(name: &'static str) {
    let args: Vec<OsString> = std::env::args_os().collect();
    if !args.iter().skip(1).any(|a| a == "start") || predecessor().is_some() {
        return;
    }
    let home = match home_from_args(&args) {
        Some(h) => std::path::absolute(&h).unwrap_or(h),
        None => match wireleap_daemon::Home::default_dir() {
            Ok(d) => d,
            Err(_) => return,
        },
    };
    let layout = Layout::new(&home, name);
    // Before recovery: once the commit renamed a new binary over ours, the kernel reports our
    // executable as "<path> (deleted)".
    let exe = std::env::current_exe().ok();
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let r = match install::recover(&layout, me) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: could not recover an interrupted upgrade: {e}");
            return;
        }
    };
    let finished = matches!(r, Recovery::Finished(_));
    match &r {
        Recovery::Undone(j) => eprintln!(
            "{name}: undid an upgrade to {} interrupted at step {:?}",
            j.to, j.step
        ),
        Recovery::Finished(j) => eprintln!("{name}: finished an interrupted upgrade to {}", j.to),
        _ => {}
    }
    crate::agent::note_recovery(&wireleap_daemon::Home::new(&home, name), r);
    if !finished {
        return;
    }
    let Some(exe) = exe else {
        return;
    };
    // /proc/self/exe is the file this process runs, even after a rename replaced its path.
    let running = PathBuf::from("/proc/self/exe");
    if exe == layout.bin() && !same_file(&running, layout.bin()) {
        use std::os::unix::process::CommandExt as _;
        eprintln!("{name}: restarting as the upgraded binary");
        let err = std::process::Command::new(layout.bin())
            .args(&args[1..])
            .exec();
        eprintln!("{name}: could not run {}: {err}", layout.bin().display());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn home_argument_forms() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            home_from_args(&a(&["x", "--home", "/h", "start"])),
            Some("/h".into())
        );
        assert_eq!(
            home_from_args(&a(&["x", "start", "--home=/h"])),
            Some("/h".into())
        );
        assert_eq!(home_from_args(&a(&["x", "start"])), None);
        assert_eq!(home_from_args(&a(&["x", "--home"])), None);
    }
}
