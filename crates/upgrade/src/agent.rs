//! The upgrade agent living inside a running daemon: it holds duplicates of the daemon's
//! listening sockets, acts on upgrade notices (relay heartbeats) or its own polling, answers
//! the `upgrade`/`rollback`/`upgrade-status` commands over the control socket, performs the
//! hand-over, records and reports failures, and tells the service when to stop and whether to
//! disenroll.
//!
//! What the service does with it (see the crate's end-to-end test daemon for a complete one):
//! ```text
//! let agent = Agent::start(AgentContext { .. })?;          // first thing in Service::run
//! let l = listeners::bind_tcp("main", &addr).await?;     // adopts the inherited socket
//! agent.register_listener("main", &l)?;
//! accept loop: agent.gate().accept(&l)                    // pauses while handed over
//! if agent.is_successor() { one heartbeat must succeed }  // relay: before readiness
//! ctx.readiness.ready();
//! heartbeats: skip while !agent.is_primary(); on a 202 notice: agent.notice(&version)
//! let reason = agent.stopped().await;                     // instead of ctx.shutdown
//! drain open streams (up to agent.drain_timeout()); disenroll only if reason.disenroll()
//! ```
//! A successor (started by a predecessor's agent) accepts only once it reports ready, and is
//! not primary until the predecessor commits or dies; until then it serves traffic but leaves
//! upgrades to the predecessor.

use crate::check::{unix_now, Checker, Component};
use crate::control::{self, ControlReply, ControlRequest};
use crate::fetch::Progress;
use crate::handover::{self, AcceptGate, FailureClass, Plan, Probe, Source, PREDECESSOR_ENV};
use crate::install::{self, Journal, Kind, Layout, Recovery, Step};
use crate::policy::{Mode, Refusal};
use crate::report::Reporter;
use crate::settings::Settings;
use crate::state::{self, FailureKind, LastOutcome, UpgradeState};
use semver::Version;
use serde::Serialize;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use wireleap_daemon::{Home, Readiness};

/// Everything the agent needs from its daemon.
pub struct AgentContext {
    /// The daemon's home.
    pub home: Home,
    /// What runs.
    pub component: Component,
    /// Upgrade settings from the config.
    pub settings: Settings,
    /// Rollout id (a relay's public key).
    pub rollout_id: [u8; 32],
    /// The daemon's readiness (a successor becomes primary only once ready).
    pub readiness: Readiness,
    /// The daemon's shutdown signal.
    pub shutdown: CancellationToken,
    /// Where failed upgrades are reported.
    pub reporter: Option<Arc<dyn Reporter>>,
    /// An extra check of the new process's listeners.
    pub probe: Option<Probe>,
    /// The binary if not `<home>/<name>`.
    pub binary: Option<PathBuf>,
}

/// Why the service should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A normal shutdown: drain, disenroll, exit.
    Shutdown,
    /// A successor took over: drain and exit, do NOT disenroll (same identity lives on).
    HandedOver,
    /// This process was a successor that was rolled back: exit, do NOT disenroll (the
    /// predecessor still serves).
    Abandoned,
}

impl StopReason {
    /// Whether the service should disenroll from its directories.
    pub fn disenroll(self) -> bool {
        self == StopReason::Shutdown
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Recovery of an interrupted upgrade failed.
    #[error("recovering an interrupted upgrade: {0}")]
    Recovery(#[from] install::InstallError),
    /// A listener could not be duplicated.
    #[error("listener {name}: {source}")]
    Listener {
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the agent is doing, for status displays (relay REST API, `upgrade-status`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentStatus {
    /// The running version.
    pub version: String,
    /// Whether this process is in charge (not a successor on probation).
    pub primary: bool,
    /// What is in progress, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy: Option<String>,
    /// The last check's result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
}

enum Request {
    Notice(Version),
    Poll,
    Control(ControlRequest, oneshot::Sender<ControlReply>),
}

struct Inner {
    ctx: AgentContext,
    layout: Layout,
    gate: AcceptGate,
    listeners: Mutex<Vec<(String, OwnedFd)>>,
    requests: mpsc::Sender<Request>,
    stop: watch::Sender<Option<StopReason>>,
    status: Mutex<AgentStatus>,
    predecessor: Option<i32>,
    primary: std::sync::atomic::AtomicBool,
    noticed: Mutex<Option<Version>>,
}

/// The agent handle (cheap to clone).
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("component", &self.inner.ctx.component.name)
            .field("primary", &self.is_primary())
            .finish()
    }
}

fn own_pid() -> i32 {
    i32::try_from(std::process::id()).unwrap_or(i32::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The pid of the process this one replaces, if it was started as a successor.
pub fn predecessor() -> Option<i32> {
    std::env::var(PREDECESSOR_ENV).ok()?.parse().ok()
}

impl Agent {
    /// Starts the agent: recovers from an interrupted upgrade (unless this process is the
    /// successor of a live one), then runs in the background until the service stops.
    /// Needs a tokio runtime.
    pub fn start(ctx: AgentContext) -> Result<Agent, AgentError> {
        let mut layout = Layout::new(ctx.home.dir(), ctx.component.name);
        if let Some(b) = &ctx.binary {
            layout = layout.with_binary(b);
        }
        let predecessor = predecessor().filter(|p| *p != own_pid());
        if predecessor.is_none() {
            note_recovery(&ctx.home, install::recover(&layout, own_pid())?);
        }
        let (tx, rx) = mpsc::channel(8);
        let agent = Agent {
            inner: Arc::new(Inner {
                status: Mutex::new(AgentStatus {
                    version: ctx.component.version.to_string(),
                    primary: predecessor.is_none(),
                    ..AgentStatus::default()
                }),
                ctx,
                layout,
                gate: AcceptGate::new(),
                listeners: Mutex::new(Vec::new()),
                requests: tx,
                stop: watch::Sender::new(None),
                predecessor,
                primary: std::sync::atomic::AtomicBool::new(predecessor.is_none()),
                noticed: Mutex::new(None),
            }),
        };
        if agent.inner.predecessor.is_some() {
            // A successor takes no connection before it is ready: a build that never gets
            // ready (or dies first) is never seen by a client. The hook runs right before READY
            // is sent; the predecessor stops accepting right after it arrives.
            agent.inner.gate.set(false);
            let gate = agent.inner.gate.clone();
            agent.inner.ctx.readiness.on_ready(move || gate.set(true));
        }
        tokio::spawn(agent.clone().run(rx));
        Ok(agent)
    }

    /// Keeps a duplicate of a listening socket to pass to a successor under `name` (the name
    /// given to `listeners::bind_tcp`).
    pub fn register_listener(&self, name: &str, listener: &impl AsFd) -> Result<(), AgentError> {
        let fd = listener
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| AgentError::Listener {
                name: name.to_string(),
                source,
            })?;
        let mut l = lock(&self.inner.listeners);
        l.retain(|(n, _)| n != name);
        l.push((name.to_string(), fd));
        Ok(())
    }

    /// The accept gate every accept loop should use.
    pub fn gate(&self) -> AcceptGate {
        self.inner.gate.clone()
    }

    /// Whether this process was started as a successor (a relay then heartbeats once before
    /// reporting ready).
    pub fn is_successor(&self) -> bool {
        self.inner.predecessor.is_some()
    }

    /// Whether this process is in charge: not a successor on probation, and not handed over.
    /// Heartbeats should only be sent while primary and accepting.
    pub fn is_primary(&self) -> bool {
        self.inner.primary.load(std::sync::atomic::Ordering::SeqCst) && self.inner.gate.is_open()
    }

    /// How long to drain open streams when stopping.
    pub fn drain_timeout(&self) -> Duration {
        self.inner.ctx.settings.drain_timeout
    }

    /// A directory's upgrade notice naming `version` (non-blocking; a notice arriving while
    /// another is handled is dropped, the next heartbeat repeats it).
    pub fn notice(&self, version: &str) {
        let v = match wireleap_proto::version::parse_strict(version) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(
                    version,
                    "ignoring an upgrade notice with a bad version: {e}"
                );
                return;
            }
        };
        if v <= self.inner.ctx.component.version {
            tracing::debug!(%v, "ignoring an upgrade notice for a version not newer than ours");
            return;
        }
        if self.inner.requests.try_send(Request::Notice(v)).is_err() {
            tracing::debug!(version, "upgrade agent busy; notice dropped");
        }
    }

    /// The agent's status.
    pub fn status(&self) -> AgentStatus {
        lock(&self.inner.status).clone()
    }

    /// Resolves when the service should stop, saying how.
    pub async fn stopped(&self) -> StopReason {
        let mut rx = self.inner.stop.subscribe();
        loop {
            if let Some(r) = *rx.borrow_and_update() {
                return r;
            }
            if rx.changed().await.is_err() {
                return StopReason::Shutdown;
            }
        }
    }

    fn set_busy(&self, what: Option<String>) {
        lock(&self.inner.status).busy = what;
    }

    fn checker(&self) -> Checker {
        let c = &self.inner.ctx;
        Checker::new(
            c.home.dir(),
            c.component.clone(),
            c.settings.clone(),
            c.rollout_id,
        )
    }

    async fn run(self, mut rx: mpsc::Receiver<Request>) {
        let ctx = &self.inner.ctx;
        let mut control: Option<tokio::net::UnixListener> = None;
        if self.inner.predecessor.is_none() {
            control = self.bind_control();
        }
        let poll_every = ctx.settings.check_interval;
        let mut poll = tokio::time::interval(poll_every.unwrap_or(Duration::from_secs(3600)));
        poll.tick().await;
        let mut watch_tick = tokio::time::interval(Duration::from_millis(200));
        let reason = loop {
            let primary = self.inner.primary.load(std::sync::atomic::Ordering::SeqCst);
            tokio::select! {
                () = ctx.shutdown.cancelled() => {
                    let abandoned = !primary && self.inner.predecessor.is_some_and(install::daemon_alive);
                    break if abandoned { StopReason::Abandoned } else { StopReason::Shutdown };
                }
                req = rx.recv() => {
                    let Some(req) = req else { break StopReason::Shutdown };
                    if let Some(reason) = self.handle(req, primary).await {
                        break reason;
                    }
                }
                _ = poll.tick(), if poll_every.is_some() && primary => {
                    if let Some(reason) = self.handle(Request::Poll, primary).await {
                        break reason;
                    }
                }
                _ = watch_tick.tick(), if !primary => {
                    if self.watch_predecessor() {
                        control = self.bind_control();
                    }
                }
                conn = accept_control(control.as_ref()), if control.is_some() => {
                    if let Ok((stream, _)) = conn {
                        let requests = self.inner.requests.clone();
                        tokio::spawn(serve_control(stream, requests));
                    }
                }
            }
        };
        drop(control);
        tracing::info!(?reason, "upgrade agent stopping");
        self.inner.stop.send_replace(Some(reason));
    }

    fn bind_control(&self) -> Option<tokio::net::UnixListener> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = control::socket_path(self.inner.ctx.home.dir(), self.inner.ctx.component.name);
        if path.as_os_str().len() > 100 {
            tracing::warn!(socket = %path.display(), "home path too long for a control socket; upgrade commands cannot reach this daemon");
            return None;
        }
        let _ = std::fs::remove_file(&path);
        match tokio::net::UnixListener::bind(&path) {
            Ok(l) => {
                if let Err(e) =
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                {
                    tracing::warn!(socket = %path.display(), "could not restrict the control socket: {e}");
                }
                Some(l)
            }
            Err(e) => {
                tracing::warn!(socket = %path.display(), "could not bind the control socket: {e}");
                None
            }
        }
    }

    /// A successor's duty while on probation: become primary once the predecessor committed
    /// (the journal is gone) or died (then finish the commit: this process is what serves).
    /// Returns whether it became primary.
    fn watch_predecessor(&self) -> bool {
        let layout = &self.inner.layout;
        let me = own_pid();
        let become_primary = match Journal::load(layout) {
            Ok(None) => true,
            Ok(Some(j)) if j.new_pid != Some(me) => true,
            Ok(Some(mut j)) => {
                let gone = !self.inner.predecessor.is_some_and(install::daemon_alive);
                if gone && self.inner.ctx.readiness.is_ready() {
                    tracing::warn!(from = %j.from, to = %j.to, "the previous process exited before committing; committing the hand-over here");
                    j.step = Step::Committing;
                    let r = j.save(layout).and_then(|()| install::commit(layout, &j));
                    match r {
                        Ok(()) => {
                            self.record_success(
                                &j.kind,
                                &j.from,
                                &j.to,
                                "committed by the new process after the old one exited",
                            );
                            true
                        }
                        Err(e) => {
                            tracing::error!("committing the hand-over failed: {e}");
                            false
                        }
                    }
                } else {
                    false
                }
            }
            Err(e) => {
                tracing::warn!("reading the upgrade journal: {e}");
                false
            }
        };
        if become_primary {
            self.inner
                .primary
                .store(true, std::sync::atomic::Ordering::SeqCst);
            lock(&self.inner.status).primary = true;
            tracing::info!("this process is now in charge");
        }
        become_primary
    }

    /// Handles one request; returns a stop reason when the process should stop.
    async fn handle(&self, req: Request, primary: bool) -> Option<StopReason> {
        match req {
            Request::Control(ControlRequest::Status {}, reply) => {
                let st = UpgradeState::load(self.inner.ctx.home.dir()).ok();
                let status = serde_json::json!({"agent": self.status(), "state": st});
                let _ = reply.send(ControlReply {
                    ok: true,
                    message: format!(
                        "{} {}",
                        self.inner.ctx.component.name, self.inner.ctx.component.version
                    ),
                    status: Some(status),
                });
                None
            }
            Request::Control(_, reply) if !primary => {
                let _ = reply.send(ControlReply {
                    ok: false,
                    message:
                        "this process is a successor still on probation; try again in a moment"
                            .into(),
                    status: None,
                });
                None
            }
            Request::Control(ControlRequest::Upgrade { version }, reply) => {
                let pinned = match version
                    .as_deref()
                    .map(wireleap_proto::version::parse_strict)
                    .transpose()
                {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = reply.send(ControlReply {
                            ok: false,
                            message: format!("bad version: {e}"),
                            status: None,
                        });
                        return None;
                    }
                };
                let (r, stop) = self.upgrade(Mode::Manual, pinned.as_ref()).await;
                let _ = reply.send(r);
                stop
            }
            Request::Control(ControlRequest::Rollback {}, reply) => {
                let (r, stop) = self.rollback().await;
                let _ = reply.send(r);
                stop
            }
            Request::Notice(_) | Request::Poll if !primary => None,
            Request::Notice(v) => {
                let settings = &self.inner.ctx.settings;
                if !settings.auto || !settings.enabled() {
                    // Heartbeats repeat the notice every few minutes: say it once per version.
                    let mut seen = lock(&self.inner.noticed);
                    if seen.as_ref() != Some(&v) {
                        let why = if settings.auto {
                            "no release source is configured (upgrade.releases, upgrade.release_keys)"
                        } else {
                            "auto-upgrade is off; upgrade with the `upgrade` command"
                        };
                        tracing::info!(version = %v, "the directory announces a newer version; {why}");
                        *seen = Some(v);
                    }
                    return None;
                }
                self.upgrade(Mode::Auto, None).await.1
            }
            Request::Poll => {
                if !self.inner.ctx.settings.auto {
                    return None;
                }
                self.upgrade(Mode::Auto, None).await.1
            }
        }
    }

    async fn upgrade(
        &self,
        mode: Mode,
        pinned: Option<&Version>,
    ) -> (ControlReply, Option<StopReason>) {
        let checker = self.checker();
        self.set_busy(Some("checking for an upgrade".into()));
        let checked = checker.check(mode, pinned).await;
        let reply = |ok: bool, message: String| ControlReply {
            ok,
            message,
            status: None,
        };
        let checked = match checked {
            Ok(c) => c,
            Err(e) => {
                let quiet = matches!(
                    e.refusal(),
                    Some(
                        Refusal::UpToDate { .. }
                            | Refusal::NotInRollout { .. }
                            | Refusal::RetryLater { .. }
                            | Refusal::Skipped { .. }
                    )
                );
                if quiet {
                    tracing::info!("no upgrade: {e}");
                } else {
                    tracing::warn!("no upgrade: {e}");
                }
                lock(&self.inner.status).last_check = Some(e.to_string());
                self.set_busy(None);
                let ok = matches!(e.refusal(), Some(Refusal::UpToDate { .. }));
                return (reply(ok, e.to_string()), None);
            }
        };
        let offer = checked.offer;
        for note in &offer.notes {
            tracing::warn!("manual upgrade overrides: {note}");
        }
        let from = self.inner.ctx.component.version.clone();
        self.set_busy(Some(format!("downloading {}", offer.version)));
        let staged = match checker.stage(&offer, Progress::Log).await {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("downloading {} failed: {e}", offer.version);
                tracing::warn!("{msg}");
                self.record_failure(
                    Kind::Upgrade,
                    &from,
                    &offer.version,
                    FailureKind::Transient,
                    &msg,
                )
                .await;
                self.set_busy(None);
                return (reply(false, msg), None);
            }
        };
        let plan = Plan {
            kind: Kind::Upgrade,
            from,
            to: offer.version.clone(),
            source: Source::Staged {
                path: staged,
                target: offer.target.clone(),
            },
        };
        self.execute(plan).await
    }

    async fn rollback(&self) -> (ControlReply, Option<StopReason>) {
        let home = self.inner.ctx.home.dir();
        let reply = |ok: bool, message: String| ControlReply {
            ok,
            message,
            status: None,
        };
        let prev = match rollback_target(home, &self.inner.layout) {
            Ok(v) => v,
            Err(msg) => return (reply(false, msg), None),
        };
        let plan = Plan {
            kind: Kind::Rollback,
            from: self.inner.ctx.component.version.clone(),
            to: prev,
            source: Source::Previous,
        };
        self.execute(plan).await
    }

    async fn execute(&self, plan: Plan) -> (ControlReply, Option<StopReason>) {
        let ctx = &self.inner.ctx;
        self.set_busy(Some(format!("handing over to {}", plan.to)));
        let listeners: Vec<(String, OwnedFd)> = lock(&self.inner.listeners)
            .iter()
            .filter_map(|(n, fd)| fd.try_clone().ok().map(|fd| (n.clone(), fd)))
            .collect();
        let env = handover::Env {
            home: &ctx.home,
            layout: &self.inner.layout,
            component: &ctx.component,
            settings: &ctx.settings,
            listeners: &listeners,
            gate: &self.inner.gate,
            shutdown: &ctx.shutdown,
            probe: ctx.probe.as_ref(),
        };
        let what = match plan.kind {
            Kind::Upgrade => "upgrade",
            Kind::Rollback => "rollback",
        };
        let result = handover::hand_over(&env, &plan).await;
        self.set_busy(None);
        match result {
            Ok(done) => {
                let msg = format!(
                    "{what} from {} to {} done; the new process (pid {}) serves",
                    plan.from, plan.to, done.new_pid
                );
                tracing::info!("{msg}");
                self.record_success(
                    &plan.kind,
                    &plan.from.to_string(),
                    &plan.to.to_string(),
                    &msg,
                );
                (
                    ControlReply {
                        ok: true,
                        message: msg,
                        status: None,
                    },
                    Some(StopReason::HandedOver),
                )
            }
            Err(f) => {
                let msg = format!(
                    "{what} from {} to {} failed and was rolled back; {} keeps serving: {}",
                    plan.from, plan.to, plan.from, f.reason
                );
                tracing::error!("{msg}");
                let stop = match f.class {
                    FailureClass::BadBuild => {
                        self.record_failure(
                            plan.kind,
                            &plan.from,
                            &plan.to,
                            FailureKind::BadBuild,
                            &f.reason,
                        )
                        .await;
                        None
                    }
                    FailureClass::Transient => {
                        self.record_failure(
                            plan.kind,
                            &plan.from,
                            &plan.to,
                            FailureKind::Transient,
                            &f.reason,
                        )
                        .await;
                        None
                    }
                    FailureClass::Stopped => Some(StopReason::Shutdown),
                    FailureClass::Aborted => None,
                };
                (
                    ControlReply {
                        ok: false,
                        message: msg,
                        status: None,
                    },
                    stop,
                )
            }
        }
    }

    fn record_success(&self, kind: &Kind, from: &str, to: &str, message: &str) {
        let home = self.inner.ctx.home.dir();
        let r = UpgradeState::load(home).and_then(|mut st| {
            st.previous = Some(from.to_string());
            st.clear_failure(to);
            if *kind == Kind::Rollback {
                st.record_failure(
                    from,
                    FailureKind::RolledBack,
                    "rolled back by the operator",
                    unix_now(),
                );
            }
            st.last = Some(LastOutcome {
                kind: kind_name(*kind).into(),
                from: from.to_string(),
                to: to.to_string(),
                ok: true,
                message: message.to_string(),
                at: unix_now(),
            });
            st.save(home)
        });
        if let Err(e) = r {
            tracing::error!("could not record the upgrade: {e}");
        }
    }

    async fn record_failure(
        &self,
        kind: Kind,
        from: &Version,
        to: &Version,
        fk: FailureKind,
        reason: &str,
    ) {
        let home = self.inner.ctx.home.dir();
        let bad_upgrade = kind == Kind::Upgrade && fk == FailureKind::BadBuild;
        // The skip file first: it is what tools of the original look at.
        if bad_upgrade {
            if let Err(e) = state::write_skip_file(home, to) {
                tracing::warn!("could not write the skip file: {e}");
            }
        }
        let r = UpgradeState::load(home).and_then(|mut st| {
            if kind == Kind::Upgrade {
                st.record_failure(&to.to_string(), fk, reason, unix_now());
            }
            st.last = Some(LastOutcome {
                kind: kind_name(kind).into(),
                from: from.to_string(),
                to: to.to_string(),
                ok: false,
                message: reason.to_string(),
                at: unix_now(),
            });
            st.save(home)
        });
        if let Err(e) = r {
            tracing::error!("could not record the failed upgrade: {e}");
        }
        if bad_upgrade {
            if let Some(rep) = &self.inner.ctx.reporter {
                match rep.report(&to.to_string(), reason).await {
                    Ok(()) => {
                        tracing::info!(version = %to, "reported the failed upgrade to the directory")
                    }
                    Err(e) => {
                        tracing::warn!(version = %to, "could not report the failed upgrade: {e}")
                    }
                }
            }
        }
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Upgrade => "upgrade",
        Kind::Rollback => "rollback",
    }
}

/// The version `rollback` returns to: `<bin>.prev` must exist and the state must know its
/// version.
pub fn rollback_target(home: &std::path::Path, layout: &Layout) -> Result<Version, String> {
    if !layout.bin_prev().exists() {
        return Err(format!(
            "there is no previous version to roll back to ({} is missing)",
            layout.bin_prev().display()
        ));
    }
    let st = UpgradeState::load(home).map_err(|e| e.to_string())?;
    let prev = st.previous.ok_or_else(|| {
        format!(
            "{} does not record which version {} is",
            state::STATE_FILE,
            layout.bin_prev().display()
        )
    })?;
    wireleap_proto::version::parse_strict(&prev)
        .map_err(|e| format!("previous version {prev:?}: {e}"))
}

async fn accept_control(
    l: Option<&tokio::net::UnixListener>,
) -> std::io::Result<(tokio::net::UnixStream, tokio::net::unix::SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn serve_control(mut stream: tokio::net::UnixStream, requests: mpsc::Sender<Request>) {
    use tokio::io::AsyncWriteExt as _;
    let reply = match tokio::time::timeout(Duration::from_secs(10), control::read_line(&mut stream))
        .await
    {
        Ok(Ok(line)) => match serde_json::from_str::<ControlRequest>(&line) {
            Ok(req) => {
                let (tx, rx) = oneshot::channel();
                if requests.try_send(Request::Control(req, tx)).is_err() {
                    ControlReply {
                        ok: false,
                        message: "the upgrade agent is busy; try again later".into(),
                        status: None,
                    }
                } else {
                    rx.await.unwrap_or(ControlReply {
                        ok: false,
                        message: "the upgrade agent stopped".into(),
                        status: None,
                    })
                }
            }
            Err(e) => ControlReply {
                ok: false,
                message: format!("bad request: {e}"),
                status: None,
            },
        },
        Ok(Err(e)) => ControlReply {
            ok: false,
            message: format!("bad request: {e}"),
            status: None,
        },
        Err(_) => return,
    };
    if let Ok(mut line) = serde_json::to_vec(&reply) {
        line.push(b'\n');
        let _ = stream.write_all(&line).await;
    }
}

/// Logs and records what recovery did.
pub(crate) fn note_recovery(home: &Home, r: Recovery) {
    match r {
        Recovery::Clean => {}
        Recovery::InProgress(j) => {
            tracing::info!(from = %j.from, to = %j.to, step = ?j.step, "an upgrade is in progress in another process");
        }
        Recovery::Undone(j) => {
            tracing::warn!(from = %j.from, to = %j.to, step = ?j.step, "undid an upgrade interrupted by a crash");
            let r = UpgradeState::load(home.dir()).and_then(|mut st| {
                if j.kind == Kind::Upgrade {
                    st.record_failure(
                        &j.to,
                        FailureKind::Transient,
                        &format!("interrupted at step {:?}", j.step),
                        unix_now(),
                    );
                }
                st.save(home.dir())
            });
            if let Err(e) = r {
                tracing::error!("could not record the interrupted upgrade: {e}");
            }
        }
        Recovery::Finished(j) => {
            tracing::warn!(from = %j.from, to = %j.to, "finished an upgrade commit interrupted by a crash");
            let r = UpgradeState::load(home.dir()).and_then(|mut st| {
                st.previous = Some(j.from.clone());
                st.clear_failure(&j.to);
                st.save(home.dir())
            });
            if let Err(e) = r {
                tracing::error!("could not record the recovered upgrade: {e}");
            }
        }
    }
}
