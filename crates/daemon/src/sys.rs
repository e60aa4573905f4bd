//! The only code in this crate that needs `unsafe`: taking ownership of inherited file
//! descriptors, and the steps that must run between fork and exec when starting a child
//! (new session; placing listening sockets at fds 3, 4, …).
#![allow(unsafe_code)]

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::process::Command;

/// Takes ownership of descriptor `fd`, inherited through exec, and marks it close-on-exec so
/// it does not leak into processes we start.
pub(crate) fn adopt_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // F_GETFD fails with EBADF when the number is not open; then nobody owns it.
    let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD)?);
    fcntl(fd, FcntlArg::F_SETFD(flags | FdFlag::FD_CLOEXEC))?;
    // SAFETY: `fd` is open (F_GETFD succeeded). It was passed to this process by its parent
    // under the LISTEN_FDS protocol (the caller checked that LISTEN_PID names this process),
    // nothing in this process opened it (the environment is read once, at the start of
    // `main`, and cleared), and each number is adopted at most once, so the returned OwnedFd
    // is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes the child start a new session (setsid), so it has no controlling terminal and a
/// Ctrl-C or hang-up in the starting terminal does not reach it.
pub(crate) fn new_session(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // operations are allowed. setsid(2) is async-signal-safe; building the error from errno
    // does not allocate; the closure captures nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Arranges for `fds[i]` to be open in the child as descriptor `3 + i`, without
/// close-on-exec, and nothing else of ours to leak.
///
/// The descriptors are first duplicated in the parent to numbers at or above `3 + fds.len()`
/// (close-on-exec), so in the child each `dup2` onto `3 + i` cannot overwrite a source not yet
/// moved; the duplicates live inside the command and close when it is dropped.
pub(crate) fn place_fds_from_3(cmd: &mut Command, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let count = RawFd::try_from(fds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors"))?;
    let first_free = 3 + count;
    let mut high: Vec<OwnedFd> = Vec::with_capacity(fds.len());
    for fd in fds {
        let n = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(first_free))?;
        // SAFETY: F_DUPFD_CLOEXEC just created descriptor `n`; nothing else knows it.
        high.push(unsafe { OwnedFd::from_raw_fd(n) });
    }
    let raw: Vec<RawFd> = high.iter().map(|fd| fd.as_raw_fd()).collect();
    // SAFETY: the closure runs in the forked child before exec. It only calls dup2(2), which
    // is async-signal-safe, reads the `raw` vector allocated before fork, and allocates
    // nothing. Targets 3..3+n may hold descriptors std opened for its own use (the pipe that
    // reports exec failure); dup2 replaces them, which at worst loses that report — the
    // program exec'd is /bin/sh, and its own failures show as the child's exit status.
    // `high` is moved in so the sources stay open until the command is dropped.
    unsafe {
        cmd.pre_exec(move || {
            let _keep_open = &high;
            for (i, fd) in raw.iter().enumerate() {
                // `i < count`, which fits in RawFd (checked above).
                let target = 3 + i as RawFd;
                if libc::dup2(*fd, target) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}
