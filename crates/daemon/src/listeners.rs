//! Listening sockets that survive a process hand-over.
//!
//! Receiving side: [`bind_tcp`] first looks for a listener inherited from the previous process
//! under the systemd convention (`LISTEN_PID` = our pid, `LISTEN_FDS` = count, fds from 3,
//! `LISTEN_FDNAMES` = colon-separated names) and only binds fresh when there is none, so a
//! port handed over never stops accepting. The environment is read once, at the start of
//! `main` ([`take_inherited_from_env`]), and cleared so our own children do not see it.
//!
//! Sending side: [`command_with_listeners`] builds a [`Command`] that starts a program with
//! given listeners at fds 3.. and the variables set. It works under systemd socket activation
//! too. What to hand over and when to stop accepting is the upgrade crate's business.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd, RawFd};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// `LISTEN_PID`: the pid the inherited descriptors are meant for.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// `LISTEN_FDS`: how many descriptors, starting at 3.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// `LISTEN_FDNAMES`: their names, colon-separated.
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// The first inherited descriptor.
pub const LISTEN_FDS_START: RawFd = 3;
/// More inherited descriptors than this is taken as a malformed environment.
pub const MAX_INHERITED: usize = 64;

/// Why a listener could not be adopted, bound or handed over.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerError {
    /// The `LISTEN_*` variables are malformed.
    #[error("malformed {var}={value:?}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The address did not resolve.
    #[error("listener {name}: could not resolve {addr:?}: {source}")]
    Resolve {
        /// Listener name.
        name: String,
        /// The address text.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Binding failed.
    #[error("listener {name}: could not listen on {addr}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// The address text.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A listener name cannot be passed in `LISTEN_FDNAMES`.
    #[error("listener name {name:?} is invalid: {reason}")]
    Name {
        /// The name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Preparing descriptors for a child failed.
    #[error("could not pass listeners to the child: {0}")]
    Pass(#[source] std::io::Error),
}

/// What the `LISTEN_*` variables say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenEnv {
    /// No descriptors were passed.
    None,
    /// Descriptors were passed to another process (`LISTEN_PID` differs or is missing);
    /// systemd's rule is to ignore them.
    NotForUs,
    /// Descriptors for us: `(fd, name)` from fd 3 upwards.
    Fds(Vec<(RawFd, String)>),
}

/// Interprets the `LISTEN_*` values (pure; the caller reads the environment).
pub fn parse_listen_env(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    our_pid: u32,
) -> Result<ListenEnv, ListenerError> {
    let Some(fds) = fds else {
        return Ok(ListenEnv::None);
    };
    let env_err = |var, value: &str, reason: String| ListenerError::Env {
        var,
        value: value.to_string(),
        reason,
    };
    match pid.map(|p| p.parse::<u32>()) {
        None => return Ok(ListenEnv::NotForUs),
        Some(Err(e)) => return Err(env_err(LISTEN_PID, pid.unwrap_or(""), e.to_string())),
        Some(Ok(p)) if p != our_pid => return Ok(ListenEnv::NotForUs),
        Some(Ok(_)) => {}
    }
    let count: usize = fds
        .parse()
        .map_err(|e: std::num::ParseIntError| env_err(LISTEN_FDS, fds, e.to_string()))?;
    if count > MAX_INHERITED {
        return Err(env_err(
            LISTEN_FDS,
            fds,
            format!("more than {MAX_INHERITED} descriptors"),
        ));
    }
    if count == 0 {
        return Ok(ListenEnv::None);
    }
    let names: Vec<String> = match names {
        // systemd names unnamed descriptors "unknown".
        None => vec!["unknown".to_string(); count],
        Some(n) => n.split(':').map(str::to_string).collect(),
    };
    if names.len() != count {
        return Err(env_err(
            LISTEN_FDNAMES,
            &names.join(":"),
            format!("{} names for {count} descriptors", names.len()),
        ));
    }
    Ok(ListenEnv::Fds(
        names
            .into_iter()
            .enumerate()
            // count <= MAX_INHERITED, so the index fits.
            .map(|(i, n)| (LISTEN_FDS_START + i as RawFd, n))
            .collect(),
    ))
}

#[derive(Default)]
struct Inherited {
    fds: Vec<(String, OwnedFd)>,
    /// Problems met while reading the environment, reported once tracing is up.
    problems: Vec<String>,
}

static INHERITED: OnceLock<Mutex<Inherited>> = OnceLock::new();

fn inherited() -> std::sync::MutexGuard<'static, Inherited> {
    INHERITED
        .get_or_init(|| Mutex::new(read_env()))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_env() -> Inherited {
    let get = |k| std::env::var(k).ok();
    let parsed = parse_listen_env(
        get(LISTEN_PID).as_deref(),
        get(LISTEN_FDS).as_deref(),
        get(LISTEN_FDNAMES).as_deref(),
        std::process::id(),
    );
    for var in [LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES] {
        std::env::remove_var(var);
    }
    let mut out = Inherited::default();
    match parsed {
        Ok(ListenEnv::None) => {}
        Ok(ListenEnv::NotForUs) => out
            .problems
            .push("LISTEN_FDS is set but LISTEN_PID does not name this process; ignored".into()),
        Ok(ListenEnv::Fds(list)) => {
            for (fd, name) in list {
                match crate::sys::adopt_inherited_fd(fd) {
                    Ok(owned) => out.fds.push((name, owned)),
                    Err(e) => out
                        .problems
                        .push(format!("inherited fd {fd} ({name}) is unusable: {e}")),
                }
            }
        }
        Err(e) => out
            .problems
            .push(format!("{e}; inherited descriptors ignored")),
    }
    out
}

/// Reads the `LISTEN_*` environment once, adopts the descriptors and clears the variables.
/// Idempotent. [`crate::main`] calls it first thing, before threads exist (changing the
/// environment is only sound then); other entry points should too. Returns how many
/// descriptors are held.
pub fn take_inherited_from_env() -> usize {
    inherited().fds.len()
}

/// Logs what was inherited and any problem with the environment (call once tracing is up).
pub fn log_inherited() {
    let inh = inherited();
    for p in &inh.problems {
        tracing::warn!("{p}");
    }
    for (name, _) in &inh.fds {
        tracing::info!(listener = %name, "inherited a listening socket");
    }
}

/// Names of inherited descriptors not yet taken.
pub fn inherited_names() -> Vec<String> {
    inherited().fds.iter().map(|(n, _)| n.clone()).collect()
}

/// Takes the inherited descriptor called `name`, if any (for socket kinds other than TCP).
pub fn take_inherited(name: &str) -> Option<OwnedFd> {
    let mut inh = inherited();
    let i = inh.fds.iter().position(|(n, _)| n == name)?;
    Some(inh.fds.remove(i).1)
}

/// Closes inherited descriptors nobody took (their addresses left the config) and returns
/// their names.
pub fn close_unclaimed() -> Vec<String> {
    std::mem::take(&mut inherited().fds)
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// A TCP listener called `name` on `addr` (`host:port`): the inherited one of that name if
/// it listens on that address, else a fresh one. Needs a tokio runtime.
pub async fn bind_tcp(name: &str, addr: &str) -> Result<tokio::net::TcpListener, ListenerError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|source| ListenerError::Resolve {
            name: name.into(),
            addr: addr.into(),
            source,
        })?
        .collect();
    let std = bind_resolved(name, addr, &addrs)?;
    let bind_err = |source| ListenerError::Bind {
        name: name.into(),
        addr: addr.into(),
        source,
    };
    std.set_nonblocking(true).map_err(bind_err)?;
    tokio::net::TcpListener::from_std(std).map_err(bind_err)
}

/// Blocking variant of [`bind_tcp`] returning a std listener (blocking mode).
pub fn bind_tcp_std(name: &str, addr: &str) -> Result<std::net::TcpListener, ListenerError> {
    use std::net::ToSocketAddrs as _;
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|source| ListenerError::Resolve {
            name: name.into(),
            addr: addr.into(),
            source,
        })?
        .collect();
    bind_resolved(name, addr, &addrs)
}

fn bind_resolved(
    name: &str,
    addr: &str,
    addrs: &[SocketAddr],
) -> Result<std::net::TcpListener, ListenerError> {
    if let Some(fd) = take_inherited(name) {
        match check_inherited(fd, addrs) {
            Ok(l) => {
                tracing::info!(listener = %name, %addr, "adopted the inherited listener");
                return Ok(l);
            }
            Err(why) => {
                tracing::warn!(listener = %name, %addr, "not using the inherited listener: {why}")
            }
        }
    }
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "resolved to no address");
    for a in addrs {
        match std::net::TcpListener::bind(a) {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(ListenerError::Bind {
        name: name.into(),
        addr: addr.into(),
        source: last,
    })
}

/// The inherited socket as a TCP listener, if it is a listening stream socket on one of
/// `wanted` (port 0 in `wanted` matches any port on that IP).
fn check_inherited(fd: OwnedFd, wanted: &[SocketAddr]) -> Result<std::net::TcpListener, String> {
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    let kind = getsockopt(&fd, sockopt::SockType).map_err(|e| format!("not a socket ({e})"))?;
    if kind != SockType::Stream {
        return Err(format!("socket type is {kind:?}, not a stream"));
    }
    if !getsockopt(&fd, sockopt::AcceptConn).map_err(|e| e.to_string())? {
        return Err("socket is not listening".into());
    }
    let l = std::net::TcpListener::from(fd);
    let local = l
        .local_addr()
        .map_err(|e| format!("no local address ({e})"))?;
    let matches = wanted
        .iter()
        .any(|w| *w == local || (w.port() == 0 && w.ip() == local.ip()));
    if matches {
        Ok(l)
    } else {
        Err(format!(
            "it listens on {local}, the config asks for {wanted:?}"
        ))
    }
}

/// The shell line that sets `LISTEN_PID` to the pid the program will run as (the shell's own:
/// `exec` keeps it) before replacing itself with the program (`$0`, with its arguments `$@`).
/// Setting the variable after fork in Rust is not async-signal-safe, hence the shell.
const TRAMPOLINE: &str = "LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"";

/// A command that runs `program` with `listeners` open at fds 3, 4, … and `LISTEN_FDS`,
/// `LISTEN_FDNAMES`, `LISTEN_PID` set for it. Add arguments, environment and stdio to the
/// returned command as usual (but do not `env_clear` it), then spawn; the child's pid is the
/// program's. The listeners stay open in this process too: stop accepting on them only when
/// the child has reported ready.
pub fn command_with_listeners(
    program: impl AsRef<OsStr>,
    listeners: &[(&str, BorrowedFd<'_>)],
) -> Result<Command, ListenerError> {
    let mut names: Vec<&str> = Vec::with_capacity(listeners.len());
    for (name, _) in listeners {
        check_name(name)?;
        if names.contains(name) {
            return Err(ListenerError::Name {
                name: (*name).into(),
                reason: "used twice",
            });
        }
        names.push(name);
    }
    if listeners.len() > MAX_INHERITED {
        return Err(ListenerError::Pass(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("at most {MAX_INHERITED} listeners"),
        )));
    }
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(TRAMPOLINE).arg(program);
    cmd.env_remove(LISTEN_PID);
    if listeners.is_empty() {
        cmd.env_remove(LISTEN_FDS).env_remove(LISTEN_FDNAMES);
        return Ok(cmd);
    }
    cmd.env(LISTEN_FDS, listeners.len().to_string())
        .env(LISTEN_FDNAMES, names.join(":"));
    let fds: Vec<BorrowedFd<'_>> = listeners.iter().map(|(_, fd)| fd.as_fd()).collect();
    crate::sys::place_fds_from_3(&mut cmd, &fds).map_err(ListenerError::Pass)?;
    Ok(cmd)
}

fn check_name(name: &str) -> Result<(), ListenerError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.contains(':') {
        "contains ':'"
    } else if name.len() > 255 {
        "longer than 255 bytes"
    } else if name.chars().any(|c| c.is_control()) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(ListenerError::Name {
        name: name.into(),
        reason,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn env_rules() {
        assert_eq!(
            parse_listen_env(None, None, None, 5).unwrap(),
            ListenEnv::None
        );
        assert_eq!(
            parse_listen_env(None, Some("1"), None, 5).unwrap(),
            ListenEnv::NotForUs
        );
        assert_eq!(
            parse_listen_env(Some("6"), Some("1"), None, 5).unwrap(),
            ListenEnv::NotForUs
        );
        assert_eq!(
            parse_listen_env(Some("5"), Some("2"), Some("api:relay"), 5).unwrap(),
            ListenEnv::Fds(vec![(3, "api".into()), (4, "relay".into())])
        );
        assert_eq!(
            parse_listen_env(Some("5"), Some("1"), None, 5).unwrap(),
            ListenEnv::Fds(vec![(3, "unknown".into())])
        );
        assert_eq!(
            parse_listen_env(Some("5"), Some("0"), None, 5).unwrap(),
            ListenEnv::None
        );
        for (pid, fds, names) in [
            ("x", "1", None),
            ("5", "-1", None),
            ("5", "65", None),
            ("5", "2", Some("one")),
            ("5", "1", Some("a:b")),
        ] {
            assert!(
                parse_listen_env(Some(pid), Some(fds), names, 5).is_err(),
                "{pid} {fds} {names:?}"
            );
        }
    }

    #[test]
    fn names_are_checked() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        for bad in ["", "a:b", "a\nb"] {
            assert!(command_with_listeners("x", &[(bad, l.as_fd())]).is_err());
        }
        assert!(command_with_listeners("x", &[("a", l.as_fd()), ("a", l.as_fd())]).is_err());
        assert!(command_with_listeners("x", &[("a", l.as_fd())]).is_ok());
    }

    #[test]
    fn inherited_listener_must_match_the_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = l.local_addr().unwrap();
        let fd = OwnedFd::from(l.try_clone().unwrap());
        assert!(check_inherited(fd, &[local]).is_ok());
        let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let fd = OwnedFd::from(l.try_clone().unwrap());
        assert!(check_inherited(fd, &[any_port]).is_ok());
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let fd = OwnedFd::from(l.try_clone().unwrap());
        assert!(check_inherited(fd, &[other])
            .unwrap_err()
            .contains("listens on"));
        // A connected (non-listening) socket is refused.
        let s = std::net::TcpStream::connect(local).unwrap();
        assert!(check_inherited(OwnedFd::from(s), &[local])
            .unwrap_err()
            .contains("not listening"));
    }

    #[test]
    fn child_gets_listener_at_fd_3_and_its_own_pid() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // The child prints its pid and LISTEN_* and whether fd 3 is a socket.
        let mut cmd = command_with_listeners("/bin/sh", &[("main", l.as_fd())]).unwrap();
        cmd.arg("-c")
            .arg("echo $$ $LISTEN_PID $LISTEN_FDS $LISTEN_FDNAMES; test -S /proc/self/fd/3 && echo sock")
            .stdout(std::process::Stdio::piped());
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), format!("{pid} {pid} 1 main"));
        #[cfg(target_os = "linux")]
        assert_eq!(lines.next(), Some("sock"));
    }

    proptest::proptest! {
        #[test]
        fn env_parser_never_panics(pid in proptest::option::of(".{0,12}"), fds in proptest::option::of(".{0,6}"), names in proptest::option::of(".{0,40}")) {
            let r = parse_listen_env(pid.as_deref(), fds.as_deref(), names.as_deref(), 7);
            if let Ok(ListenEnv::Fds(list)) = r {
                proptest::prop_assert!(!list.is_empty() && list.len() <= MAX_INHERITED);
                proptest::prop_assert_eq!(list[0].0, LISTEN_FDS_START);
            }
        }
    }
}
