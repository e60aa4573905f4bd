//! The zero-downtime hand-over from the running process (old) to a new one, and the same
//! procedure without a running process (offline install).
//!
//! Old process, in order (each step journaled first, see [`crate::install`]):
//! 1. stage: the verified binary becomes `<bin>.next` (its digest checked again right there);
//! 2. migrate: the newer binary migrates copies (`config.json.next`, `<data>.next`): going up
//!    the new binary runs `migrate --from <old> --to <new>`; going down (a rollback) this
//!    process migrates down in-process, since it is the one that knows the migrations;
//! 3. start: `<bin>.next --config-next start --fg --replacing <old pid>` with every registered
//!    listener inherited (LISTEN_FDS), its readiness reported to a private notify socket. Its
//!    accept gate stays closed until it reports ready, so a build that never gets ready is
//!    never seen by a client;
//! 4. ready: the new process reports READY within the ready timeout (it does so only once its
//!    listeners work and, for a relay, a heartbeat went through); then the old one stops
//!    accepting, and a probe connects to every listener, which now only the new process
//!    answers;
//! 5. watch: for the watch window the old process keeps its listeners and stays ready to
//!    resume. If the new one exits, reports STOPPING, or fails a probe, the old one resumes
//!    accepting (connections waiting in the shared backlog are not lost), kills the new one,
//!    removes `.next` files and gets its pid file back;
//! 6. commit: files are swapped (`<bin>.prev`, `config.json.prev` kept for `rollback`); the
//!    caller then drains and exits without disenrolling.
//!
//! Nothing here records failures or reports them; the caller does (it knows whether the
//! attempt was automatic).

use crate::check::{unix_now, Component};
use crate::fetch;
use crate::install::{self, Journal, Kind, Layout, Step};
use crate::manifest::Target;
use crate::migrate;
use crate::settings::Settings;
use semver::Version;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use wireleap_daemon::notify::{NotifyMessage, NotifyReceiver};
use wireleap_daemon::Home;

/// Environment variable telling a successor the pid of the process it replaces.
pub const PREDECESSOR_ENV: &str = "WIRELEAP_UPGRADE_PREDECESSOR";

/// A check that a listener is served by the new process: gets the address and the version the
/// new process should be. The default only connects.
pub type Probe = Arc<
    dyn Fn(SocketAddr, Version) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// Whether accept loops may accept. The agent closes it once the successor is ready and opens
/// it again if the successor fails.
#[derive(Debug, Clone)]
pub struct AcceptGate {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for AcceptGate {
    fn default() -> Self {
        Self::new()
    }
}

impl AcceptGate {
    /// An open gate.
    pub fn new() -> Self {
        AcceptGate {
            tx: Arc::new(watch::Sender::new(true)),
        }
    }

    /// Whether accepting is allowed now.
    pub fn is_open(&self) -> bool {
        *self.tx.borrow()
    }

    /// A receiver of the gate's state, for accept loops that take a `watch` receiver
    /// (`wireleap_net::tunnel::ServeConfig::accept_gate`).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    pub(crate) fn set(&self, open: bool) {
        self.tx.send_replace(open);
    }

    /// Waits until the gate is open.
    pub async fn opened(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }

    /// Accepts the next connection, but only while the gate is open: while it is closed the
    /// connection stays in the kernel's backlog, where the process that is accepting takes it.
    /// Cancel-safe.
    pub async fn accept(
        &self,
        listener: &tokio::net::TcpListener,
    ) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
        let mut rx = self.tx.subscribe();
        loop {
            let _ = rx.wait_for(|open| *open).await;
            tokio::select! {
                r = listener.accept() => return r,
                _ = rx.wait_for(|open| !*open) => {}
            }
        }
    }
}

/// How a hand-over failed, which decides what the caller records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureClass {
    /// The verified build misbehaved: skip this version.
    BadBuild,
    /// Local or network trouble: try again later.
    Transient,
    /// The new process was stopped by the operator: stop altogether.
    Stopped,
    /// This process is shutting down.
    Aborted,
}

/// A failed hand-over (already rolled back).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Failure {
    /// How it counts.
    pub class: FailureClass,
    /// What happened.
    pub reason: String,
}

impl Failure {
    fn bad(reason: impl Into<String>) -> Self {
        Failure {
            class: FailureClass::BadBuild,
            reason: reason.into(),
        }
    }
    fn transient(reason: impl Into<String>) -> Self {
        Failure {
            class: FailureClass::Transient,
            reason: reason.into(),
        }
    }
}

/// Where the new binary comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A verified download in quarantine (moved into place).
    Staged {
        /// The quarantined file.
        path: PathBuf,
        /// What it must hash to.
        target: Target,
    },
    /// `<bin>.prev` (copied into place; a rollback).
    Previous,
}

/// One upgrade or rollback.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Upgrade or rollback.
    pub kind: Kind,
    /// Running version.
    pub from: Version,
    /// Target version.
    pub to: Version,
    /// The new binary.
    pub source: Source,
}

/// What the hand-over works with.
pub struct Env<'a> {
    /// The daemon's home (pid and log files).
    pub home: &'a Home,
    /// The installation's files.
    pub layout: &'a Layout,
    /// The running component.
    pub component: &'a Component,
    /// Timeouts.
    pub settings: &'a Settings,
    /// Listeners to pass on (name, duplicate descriptor).
    pub listeners: &'a [(String, OwnedFd)],
    /// The old process's accept gate.
    pub gate: &'a AcceptGate,
    /// This process's shutdown.
    pub shutdown: &'a CancellationToken,
    /// Extra listener check.
    pub probe: Option<&'a Probe>,
}

fn own_pid() -> i32 {
    i32::try_from(std::process::id()).unwrap_or(i32::MAX)
}

/// Puts the new binary in place as `<bin>.next` and checks it.
fn stage(layout: &Layout, source: &Source) -> Result<(), Failure> {
    let next = layout.bin_next();
    let _ = std::fs::remove_file(&next);
    match source {
        Source::Staged { path, target } => {
            std::fs::rename(path, &next)
                .or_else(|_| std::fs::copy(path, &next).map(|_| ()))
                .map_err(|e| {
                    Failure::transient(format!("could not stage {}: {e}", next.display()))
                })?;
            // Checked again where it will run: nothing between download and exec goes unverified.
            fetch::check_file(&next, target).map_err(|e| Failure::transient(e.to_string()))?;
        }
        Source::Previous => {
            let prev = layout.bin_prev();
            std::fs::copy(&prev, &next).map_err(|e| {
                Failure::transient(format!("could not copy {}: {e}", prev.display()))
            })?;
        }
    }
    fetch::make_executable(&next).map_err(|e| Failure::transient(e.to_string()))
}

/// The `migrate` command's report on stdout.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct MigrateReport {
    /// Files with a `.next` copy.
    pub files: Vec<String>,
}

/// Runs the migrations for `plan`, always in the newer of the two binaries, since only it
/// knows the migrations between them: going up, the new binary's `migrate`; going down (a
/// rollback), in this process. Returns the files with copies.
async fn migrate_step(
    env_home: &Path,
    layout: &Layout,
    component: &Component,
    settings: &Settings,
    plan: &Plan,
) -> Result<Vec<String>, Failure> {
    let going_down = plan.to <= plan.from;
    match going_down {
        true => migrate::migrate_copies(env_home, component.migrations, &plan.from, &plan.to)
            .map_err(|e| Failure::bad(e.to_string())),
        false => {
            let mut cmd = tokio::process::Command::new(layout.bin_next());
            cmd.arg("--home")
                .arg(env_home)
                .arg("migrate")
                .arg("--from")
                .arg(plan.from.to_string())
                .arg("--to")
                .arg(plan.to.to_string())
                .env_remove(PREDECESSOR_ENV)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let child = cmd.spawn().map_err(|e| {
                Failure::transient(format!("could not run the new binary's migrate: {e}"))
            })?;
            let out = tokio::time::timeout(settings.migrate_timeout, child.wait_with_output())
                .await
                .map_err(|_| {
                    Failure::bad(format!(
                        "migrate did not finish within {:?}",
                        settings.migrate_timeout
                    ))
                })?
                .map_err(|e| Failure::transient(format!("waiting for migrate: {e}")))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(Failure::bad(format!(
                    "migration to {} failed ({}): {}",
                    plan.to,
                    out.status,
                    tail.join(" | ")
                )));
            }
            let report: MigrateReport = stdout
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str(l).ok())
                .ok_or_else(|| Failure::bad(format!("migrate printed no report: {stdout:?}")))?;
            if report
                .files
                .iter()
                .any(|f| f.contains("..") || Path::new(f).is_absolute())
            {
                return Err(Failure::bad(format!(
                    "migrate reported unsafe paths {:?}",
                    report.files
                )));
            }
            Ok(report.files)
        }
    }
}

/// Reads notify datagrams on a blocking thread and hands them to async code.
struct NotifyPump {
    rx: mpsc::Receiver<NotifyMessage>,
    stop: Arc<AtomicBool>,
    path: PathBuf,
}

impl NotifyPump {
    fn start() -> Result<Self, Failure> {
        let receiver = NotifyReceiver::new().map_err(|e| Failure::transient(e.to_string()))?;
        let path = receiver.path().to_path_buf();
        let (tx, rx) = mpsc::channel(16);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::Builder::new()
            .name("upgrade-notify".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    match receiver.recv_timeout(Duration::from_millis(100)) {
                        Ok(Some(m)) => {
                            if tx.blocking_send(m).is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!("notify socket: {e}");
                            return;
                        }
                    }
                }
            })
            .map_err(|e| Failure::transient(format!("could not start a thread: {e}")))?;
        Ok(NotifyPump { rx, stop, path })
    }
}

impl Drop for NotifyPump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The started successor.
struct Successor {
    child: tokio::process::Child,
    pid: i32,
    notify: NotifyPump,
}

impl Successor {
    fn spawn(env: &Env<'_>, notify: NotifyPump) -> Result<Self, Failure> {
        use std::os::unix::process::CommandExt as _;
        let fds: Vec<(&str, std::os::fd::BorrowedFd<'_>)> = env
            .listeners
            .iter()
            .map(|(n, fd)| (n.as_str(), fd.as_fd()))
            .collect();
        let mut cmd =
            wireleap_daemon::listeners::command_with_listeners(env.layout.bin_next(), &fds)
                .map_err(|e| Failure::transient(e.to_string()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(env.home.log_file())
            .map_err(|e| Failure::transient(format!("{}: {e}", env.home.log_file().display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Failure::transient(format!("log handle: {e}")))?;
        cmd.arg("--home")
            .arg(env.home.dir())
            .arg("--config-next")
            .arg("start")
            .arg("--fg")
            .arg("--replacing")
            .arg(own_pid().to_string())
            .current_dir(env.home.dir())
            .env(wireleap_daemon::notify::NOTIFY_SOCKET_ENV, &notify.path)
            .env(PREDECESSOR_ENV, own_pid().to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: a signal to ours (a terminal's Ctrl-C) must not reach it.
            .process_group(0);
        let child = tokio::process::Command::from(cmd).spawn().map_err(|e| {
            Failure::transient(format!(
                "could not start {}: {e}",
                env.layout.bin_next().display()
            ))
        })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| Failure::transient("the new process has no pid"))?;
        Ok(Successor { child, pid, notify })
    }

    /// SIGTERM, a short grace period, SIGKILL; reaps.
    async fn terminate(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Connects to every listener (an unspecified address via loopback) and runs the probe.
async fn probe_all(env: &Env<'_>, to: &Version) -> Result<(), String> {
    for (name, fd) in env.listeners {
        let addr = match listener_addr(fd) {
            Ok(a) => a,
            Err(e) => match unix_listener_path(fd) {
                // A unix socket (a local API): only a connect check; the probe takes
                // network addresses.
                Some(path) => {
                    tokio::time::timeout(
                        Duration::from_secs(3),
                        tokio::net::UnixStream::connect(&path),
                    )
                    .await
                    .map_err(|_| {
                        format!("listener {name} ({}): connect timed out", path.display())
                    })?
                    .map_err(|e| format!("listener {name} ({}): {e}", path.display()))?;
                    continue;
                }
                None => return Err(format!("listener {name}: {e}")),
            },
        };
        let s = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| format!("listener {name} ({addr}): connect timed out"))?
            .map_err(|e| format!("listener {name} ({addr}): {e}"))?;
        drop(s);
        if let Some(p) = env.probe {
            tokio::time::timeout(Duration::from_secs(5), p(addr, to.clone()))
                .await
                .map_err(|_| format!("listener {name} ({addr}): probe timed out"))?
                .map_err(|e| format!("listener {name} ({addr}): {e}"))?;
        }
    }
    Ok(())
}

/// The path of a unix listening socket, if `fd` is one bound to a path.
fn unix_listener_path(fd: &OwnedFd) -> Option<PathBuf> {
    let l = std::os::unix::net::UnixListener::from(fd.try_clone().ok()?);
    let path = l.local_addr().ok()?.as_pathname()?.to_path_buf();
    Some(path)
}

/// The address to reach a listener at.
pub fn listener_addr(fd: &OwnedFd) -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::from(fd.try_clone()?);
    let mut a = l.local_addr()?;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(a)
}

/// The outcome of a successful hand-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedOver {
    /// The new process.
    pub new_pid: i32,
}

/// Runs the hand-over (module doc). On failure everything is rolled back before returning:
/// the old process accepts again, the new one is gone, `.next` files are removed, the pid file
/// names this process.
pub async fn hand_over(env: &Env<'_>, plan: &Plan) -> Result<HandedOver, Failure> {
    let mut journal = Journal {
        schema_version: install::JOURNAL_SCHEMA,
        kind: plan.kind,
        from: plan.from.to_string(),
        to: plan.to.to_string(),
        old_pid: Some(own_pid()),
        new_pid: None,
        step: Step::Staged,
        files: Vec::new(),
        started_at: unix_now(),
    };
    let mut successor: Option<Successor> = None;
    let result = run_steps(env, plan, &mut journal, &mut successor).await;
    match result {
        Ok(h) => Ok(h),
        Err(f) => {
            roll_back(env, &journal, successor.as_mut()).await;
            Err(f)
        }
    }
}

async fn run_steps(
    env: &Env<'_>,
    plan: &Plan,
    journal: &mut Journal,
    successor: &mut Option<Successor>,
) -> Result<HandedOver, Failure> {
    let layout = env.layout;
    let io = |e: install::InstallError| Failure::transient(e.to_string());
    journal.save(layout).map_err(io)?;
    stage(layout, &plan.source)?;
    tracing::info!(from = %plan.from, to = %plan.to, kind = ?plan.kind, "hand-over: staged");

    let files = tokio::select! {
        r = migrate_step(env.home.dir(), layout, env.component, env.settings, plan) => r?,
        () = env.shutdown.cancelled() => return Err(aborted()),
    };
    journal.files = files;
    journal.advance(layout, Step::Migrated).map_err(io)?;
    tracing::info!(files = ?journal.files, "hand-over: migrated copies");

    let notify = NotifyPump::start()?;
    let s = successor.insert(Successor::spawn(env, notify)?);
    journal.new_pid = Some(s.pid);
    journal.advance(layout, Step::Started).map_err(io)?;
    tracing::info!(pid = s.pid, "hand-over: started the new process");

    let deadline = tokio::time::sleep(env.settings.ready_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            m = s.notify.rx.recv() => match m {
                Some(m) if m.ready && m.main_pid.is_none_or(|p| i64::from(p) == i64::from(s.pid)) => break,
                Some(_) => {}
                None => return Err(Failure::transient("the notify socket closed")),
            },
            st = s.child.wait() => {
                return Err(Failure::bad(format!("the new process exited before it was ready ({})", describe(st))));
            }
            () = &mut deadline => {
                return Err(Failure::bad(format!("the new process was not ready within {:?}", env.settings.ready_timeout)));
            }
            () = env.shutdown.cancelled() => return Err(aborted()),
        }
    }
    env.gate.set(false);
    journal.advance(layout, Step::Serving).map_err(io)?;
    tracing::info!(
        pid = s.pid,
        "hand-over: the new process is ready; stopped accepting"
    );

    let mut last = String::new();
    let mut probed = false;
    for _ in 0..3 {
        match probe_all(env, &plan.to).await {
            Ok(()) => {
                probed = true;
                break;
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !probed {
        return Err(Failure::bad(format!(
            "the new process does not serve: {last}"
        )));
    }

    let window = tokio::time::sleep(env.settings.watch_window);
    tokio::pin!(window);
    let every = (env.settings.watch_window / 4).max(Duration::from_millis(500));
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut notify_open = true;
    loop {
        tokio::select! {
            () = &mut window => break,
            st = s.child.wait() => {
                return Err(Failure::bad(format!("the new process exited during the watch window ({})", describe(st))));
            }
            m = s.notify.rx.recv(), if notify_open => match m {
                Some(m) if m.stopping => {
                    return Err(Failure { class: FailureClass::Stopped, reason: "the new process was told to stop during the watch window".into() });
                }
                Some(_) => {}
                None => notify_open = false,
            },
            _ = tick.tick() => {
                if let Err(e) = probe_all(env, &plan.to).await {
                    return Err(Failure::bad(format!("the new process stopped serving during the watch window: {e}")));
                }
            }
            () = env.shutdown.cancelled() => return Err(aborted()),
        }
    }

    journal.advance(layout, Step::Committing).map_err(io)?;
    install::commit(layout, journal).map_err(|e| {
        // The commit is journaled; recovery finishes it. The new process keeps serving.
        Failure::transient(format!(
            "swapping files failed (recovery will finish it): {e}"
        ))
    })?;
    tracing::info!(pid = s.pid, to = %plan.to, "hand-over: committed");
    Ok(HandedOver { new_pid: s.pid })
}

fn aborted() -> Failure {
    Failure {
        class: FailureClass::Aborted,
        reason: "this process is shutting down".into(),
    }
}

fn describe(st: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match st {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => s.to_string(),
        },
        Err(e) => format!("cannot tell: {e}"),
    }
}

async fn roll_back(env: &Env<'_>, journal: &Journal, successor: Option<&mut Successor>) {
    // Accept again first: from here the old process serves whatever the new one leaves.
    env.gate.set(true);
    if let Some(s) = successor {
        s.terminate().await;
        // The new process may have written the pid file once ready and removed it again on
        // its way out: either way it must name this process again, or `stop` finds nothing.
        let ours = match wireleap_daemon::pidfile::read(&env.home.pid_file()) {
            Ok(Some(p)) => p == own_pid(),
            Ok(None) | Err(_) => false,
        };
        if !ours {
            if let Err(e) = wireleap_daemon::pidfile::write(&env.home.pid_file(), own_pid()) {
                tracing::error!("could not take the pid file back: {e}");
            }
        }
    }
    if journal.step >= Step::Committing {
        // Committing failed half-way: recovery at the next start finishes it; leave the journal.
        return;
    }
    if let Err(e) = install::discard(env.layout, journal) {
        tracing::error!("could not remove the new version's files: {e}");
    }
}

/// Upgrade or rollback while no process runs: stage, migrate, commit. Nothing is started.
pub async fn install_offline(
    home: &Home,
    layout: &Layout,
    component: &Component,
    settings: &Settings,
    plan: &Plan,
) -> Result<(), Failure> {
    let mut journal = Journal {
        schema_version: install::JOURNAL_SCHEMA,
        kind: plan.kind,
        from: plan.from.to_string(),
        to: plan.to.to_string(),
        old_pid: None,
        new_pid: None,
        step: Step::Staged,
        files: Vec::new(),
        started_at: unix_now(),
    };
    let io = |e: install::InstallError| Failure::transient(e.to_string());
    let steps = async {
        journal.save(layout).map_err(io)?;
        stage(layout, &plan.source)?;
        journal.files = migrate_step(home.dir(), layout, component, settings, plan).await?;
        journal.advance(layout, Step::Committing).map_err(io)?;
        install::commit(layout, &journal).map_err(io)
    };
    let r = steps.await;
    if r.is_err() && journal.step < Step::Committing {
        if let Err(e) = install::discard(layout, &journal) {
            tracing::error!("could not remove the new version's files: {e}");
        }
    }
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gate_holds_connections_in_the_backlog() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let gate = AcceptGate::new();
        gate.set(false);
        let g = gate.clone();
        let task = tokio::spawn(async move { g.accept(&l).await.map(|(_, a)| a) });
        // Connecting succeeds (the kernel completes the handshake) but nobody accepts.
        let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished());
        gate.set(true);
        let got = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(got.is_ok());
    }

    #[test]
    fn unspecified_listener_is_probed_on_loopback() {
        let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let fd = OwnedFd::from(l);
        let a = listener_addr(&fd).unwrap();
        assert!(a.ip().is_loopback());
    }
}
