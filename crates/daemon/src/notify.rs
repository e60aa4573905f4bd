//! Readiness reporting between a starting daemon and whoever started it, using the sd_notify
//! datagram protocol (`NOTIFY_SOCKET`, `READY=1`, `STOPPING=1`, `MAINPID=`).
//!
//! The child side ([`Readiness`]) is what a service calls once its listeners are bound. The
//! parent side ([`NotifyReceiver`]) is used by `start` and, later, by the upgrade supervisor
//! to wait for a new process. Because the protocol is systemd's, `start --fg` under a
//! `Type=notify` unit reports readiness to systemd with no extra code.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The environment variable naming the notify socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Why the parent side could not be set up or read.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Creating the private directory or binding the socket failed.
    #[error("could not create the notify socket {}: {source}", path.display())]
    Setup {
        /// The directory or socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Receiving failed.
    #[error("could not read the notify socket: {0}")]
    Recv(#[source] std::io::Error),
}

/// A parsed notify datagram (newline-separated `KEY=VALUE` assignments; unknown keys are
/// ignored, as systemd does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyMessage {
    /// `READY=1` was present.
    pub ready: bool,
    /// `STOPPING=1` was present.
    pub stopping: bool,
    /// `MAINPID=` value, if present and numeric.
    pub main_pid: Option<u32>,
    /// `STATUS=` value, if present.
    pub status: Option<String>,
}

/// Parses one datagram. Never fails: garbage yields an empty message.
pub fn parse_message(bytes: &[u8]) -> NotifyMessage {
    let mut msg = NotifyMessage::default();
    for line in String::from_utf8_lossy(bytes).lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => msg.ready = true,
            Some(("STOPPING", "1")) => msg.stopping = true,
            Some(("MAINPID", v)) => msg.main_pid = v.parse().ok(),
            Some(("STATUS", v)) => msg.status = Some(v.to_string()),
            _ => {}
        }
    }
    msg
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    #[cfg(target_os = "linux")]
    Abstract(Vec<u8>),
}

type Hook = Box<dyn FnOnce() + Send>;

struct Inner {
    target: Option<Target>,
    ready: AtomicBool,
    hooks: Mutex<Vec<Hook>>,
}

/// The child side: tells the starter that this process is ready (listeners bound) or
/// stopping. Cloneable; [`Readiness::ready`] acts once.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("target", &self.inner.target)
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl Readiness {
    /// Takes `NOTIFY_SOCKET` from the environment and removes it, so processes this daemon
    /// starts do not report to our starter. Call before other threads exist.
    pub fn from_env() -> Self {
        let target = std::env::var_os(NOTIFY_SOCKET_ENV).and_then(|v| {
            std::env::remove_var(NOTIFY_SOCKET_ENV);
            parse_target(v.as_encoded_bytes())
        });
        Self::with_target(target)
    }

    /// A handle that reports to nobody (tests, in-process use).
    pub fn disabled() -> Self {
        Self::with_target(None)
    }

    /// A handle that reports to the socket at `path`.
    pub fn to_path(path: impl Into<PathBuf>) -> Self {
        Self::with_target(Some(Target::Path(path.into())))
    }

    fn with_target(target: Option<Target>) -> Self {
        Readiness {
            inner: Arc::new(Inner {
                target,
                ready: AtomicBool::new(false),
                hooks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Whether a notify socket was given.
    pub fn has_target(&self) -> bool {
        self.inner.target.is_some()
    }

    /// Whether [`Readiness::ready`] was called.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    /// Reports that the service is ready: its listeners are bound and it serves. Runs the
    /// lifecycle's ready hooks first (e.g. a deferred pid file), then sends `READY=1`. Only
    /// the first call has an effect.
    pub fn ready(&self) {
        if self.inner.ready.swap(true, Ordering::SeqCst) {
            return;
        }
        let hooks = std::mem::take(&mut *lock(&self.inner.hooks));
        for hook in hooks {
            hook();
        }
        tracing::info!("ready");
        self.send(&format!("READY=1\nMAINPID={}", std::process::id()));
    }

    /// Reports that the service is shutting down.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Registers something to do right before readiness is reported (runs immediately if
    /// already ready).
    pub fn on_ready(&self, hook: impl FnOnce() + Send + 'static) {
        if self.is_ready() {
            hook();
        } else {
            lock(&self.inner.hooks).push(Box::new(hook));
        }
    }

    fn send(&self, text: &str) {
        let Some(target) = &self.inner.target else {
            return;
        };
        let result = UnixDatagram::unbound().and_then(|sock| {
            // A full receive buffer must not stall the service.
            sock.set_nonblocking(true)?;
            match target {
                Target::Path(p) => sock.send_to(text.as_bytes(), p),
                #[cfg(target_os = "linux")]
                Target::Abstract(name) => {
                    use std::os::linux::net::SocketAddrExt as _;
                    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                    sock.send_to_addr(text.as_bytes(), &addr)
                }
            }
        });
        match result {
            Ok(_) => {}
            // `start` closes its socket once it has seen READY; later messages have no reader.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                tracing::debug!(socket = ?target, error = %e, "notify socket gone");
            }
            Err(e) => {
                tracing::warn!(socket = ?target, error = %e, "could not send to the notify socket")
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking hook cannot leave the list in a broken state worth refusing.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Parses a `NOTIFY_SOCKET` value: an absolute path, or `@name` for the Linux abstract
/// namespace. Anything else is ignored (systemd does the same).
fn parse_target(value: &[u8]) -> Option<Target> {
    match value.first() {
        Some(b'/') => {
            use std::os::unix::ffi::OsStrExt as _;
            Some(Target::Path(PathBuf::from(std::ffi::OsStr::from_bytes(
                value,
            ))))
        }
        #[cfg(target_os = "linux")]
        Some(b'@') if value.len() > 1 => Some(Target::Abstract(value[1..].to_vec())),
        _ => None,
    }
}

/// The parent side: a datagram socket in a fresh private (0700) directory, whose path is
/// given to the child as `NOTIFY_SOCKET`. Removed on drop.
#[derive(Debug)]
pub struct NotifyReceiver {
    socket: UnixDatagram,
    dir: PathBuf,
    path: PathBuf,
}

static RECEIVER_COUNTER: AtomicU64 = AtomicU64::new(0);

impl NotifyReceiver {
    /// Creates the socket under the system temp directory (kept short: socket paths are
    /// limited to about 100 bytes, and home directories can be long).
    pub fn new() -> Result<Self, NotifyError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            "wireleap-notify.{}.{}.{nanos}",
            std::process::id(),
            RECEIVER_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // mode 0700: only our user may send us readiness.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| NotifyError::Setup {
                path: dir.clone(),
                source,
            })?;
        // The new directory is ours, so its owner is our uid (no libc call needed).
        if let Ok(meta) = std::fs::metadata(&dir) {
            use std::os::unix::fs::MetadataExt as _;
            sweep_stale(&base, meta.uid());
        }
        let path = dir.join("notify");
        let socket = match UnixDatagram::bind(&path) {
            Ok(s) => s,
            Err(source) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(NotifyError::Setup { path, source });
            }
        };
        Ok(NotifyReceiver { socket, dir, path })
    }

    /// The socket path, to put in the child's `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `timeout` for one datagram; `Ok(None)` on timeout.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<NotifyMessage>, NotifyError> {
        // A zero timeout means "block forever" to the OS.
        let timeout = timeout.max(Duration::from_millis(1));
        self.socket
            .set_read_timeout(Some(timeout))
            .map_err(NotifyError::Recv)?;
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Ok(Some(parse_message(&buf[..n]))),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(NotifyError::Recv(e)),
        }
    }
}

/// Removes receiver directories left by starters that were killed while waiting (their
/// `Drop` never ran): ours only, and only when the pid in the name is gone.
fn sweep_stale(base: &Path, uid: u32) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("wireleap-notify."))
            .and_then(|rest| rest.split('.').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let ours = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if ours && !crate::process::exists(pid) {
            let _ = std::fs::remove_file(dir.join("notify"));
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

impl Drop for NotifyReceiver {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_keys() {
        let m = parse_message(b"READY=1\nSTATUS=listening on 1.2.3.4:5\nMAINPID=42\nX=1");
        assert!(m.ready);
        assert!(!m.stopping);
        assert_eq!(m.main_pid, Some(42));
        assert_eq!(m.status.as_deref(), Some("listening on 1.2.3.4:5"));
        assert!(!parse_message(b"READY=0\nSTOPPING=1").ready);
        assert!(parse_message(b"STOPPING=1").stopping);
    }

    #[test]
    fn ready_reaches_the_receiver_once_after_hooks() {
        let rx = NotifyReceiver::new().unwrap();
        let path = rx.path().to_path_buf();
        let r = Readiness::to_path(&path);
        let hook_ran = Arc::new(AtomicBool::new(false));
        let h = hook_ran.clone();
        r.on_ready(move || h.store(true, Ordering::SeqCst));
        assert!(rx
            .recv_timeout(Duration::from_millis(20))
            .unwrap()
            .is_none());
        r.ready();
        r.ready();
        assert!(hook_ran.load(Ordering::SeqCst));
        let m = rx.recv_timeout(Duration::from_secs(2)).unwrap().unwrap();
        assert!(m.ready);
        assert_eq!(m.main_pid, Some(std::process::id()));
        assert!(rx
            .recv_timeout(Duration::from_millis(50))
            .unwrap()
            .is_none());
        drop(rx);
        assert!(!path.exists());
        assert!(!path.parent().unwrap().exists());
    }

    #[test]
    fn receivers_of_dead_starters_are_swept() {
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let pid = dead.id();
        dead.wait().unwrap();
        let base = std::env::temp_dir();
        let stale = base.join(format!("wireleap-notify.{pid}.0.1"));
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("notify"), b"").unwrap();
        let live = NotifyReceiver::new().unwrap();
        assert!(!stale.exists());
        // A receiver of a live process survives a sweep.
        let _other = NotifyReceiver::new().unwrap();
        assert!(live.path().exists());
    }

    #[test]
    fn notify_targets() {
        assert!(matches!(parse_target(b"/run/x"), Some(Target::Path(_))));
        assert!(parse_target(b"relative").is_none());
        assert!(parse_target(b"").is_none());
        #[cfg(target_os = "linux")]
        assert!(matches!(parse_target(b"@abc"), Some(Target::Abstract(n)) if n == b"abc"));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_message(&bytes);
            let _ = parse_target(&bytes);
        }

        #[test]
        fn mainpid_round_trips(pid: u32) {
            let m = parse_message(format!("READY=1\nMAINPID={pid}").as_bytes());
            proptest::prop_assert!(m.ready);
            proptest::prop_assert_eq!(m.main_pid, Some(pid));
        }
    }
}
