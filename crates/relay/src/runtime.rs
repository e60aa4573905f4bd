//! A running relay as a value: [`RelayRuntime::start`] binds (or adopts inherited)
//! listeners and starts every part; [`RelayRuntime::shutdown`] stops them in order. This is
//! the API the lifecycle's `run` and the upgrade code use.
//!
//! Hand-over (zero-downtime upgrade): the old process passes [`RelayRuntime::listener_fds`]
//! to the new binary (`wireleap_daemon::listeners::command_with_listeners`), waits for it to
//! report ready (it enrolls on its own at start), then ends with
//! [`ShutdownMode::HandOver`]: stop accepting, drain open streams until `drain_timeout`, do
//! *not* disenroll. The mode can be chosen in-process ([`RelayHandle::set_shutdown_mode`]) or
//! by another process writing the hand-over mark ([`crate::handover::mark`]) before it sends
//! SIGTERM. All state lives in the database or is re-derived at start, so the new process
//! needs nothing from the old one but the sockets.

use crate::config::{RelayConfig, RestAddress};
use crate::contracts::ContractManager;
use crate::rest::RestServer;
use crate::state::{lock, unix_now, Phase, Settings, Shared, ShutdownMode, UpgradeNotice};
use crate::store::{TokenCounts, TokenStore};
use crate::submit::Submitter;
use crate::tunnel::RelayHandler;
use crate::usage::{cap_states, CapState, Limit, Usage};
use anyhow::Context as _;
use serde::Serialize;
use std::collections::HashMap;
use std::os::fd::{AsFd as _, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wireleap_daemon::{listeners, Home};
use wireleap_net::tunnel::{Counters, DrainReport, ServeConfig, Server};
use wireleap_proto::keys::Keypair;

/// Listener name of the TLS tunnel listener (for hand-over).
pub const LISTENER_TLS: &str = "relay";
/// Listener name of the h2c tunnel listener.
pub const LISTENER_H2C: &str = "relay-h2c";
/// Listener name of the REST API listener (TCP or unix socket).
pub const LISTENER_REST: &str = "rest-api";
/// How often usage caps are checked (services.md §1.9).
pub const CAP_CHECK: Duration = Duration::from_secs(10);

/// Status of a running relay (`GET /api/status`). Extends the original's object
/// (`controller_started`, `network_usage`, `relay_status`) with process and upgrade state.
#[derive(Debug, Clone, Serialize)]
pub struct RelayStatus {
    /// Software version.
    pub version: String,
    /// The relay's key.
    pub pubkey: String,
    /// Serving (the original's name).
    pub controller_started: bool,
    /// Starting, running or draining.
    pub phase: Phase,
    /// What a stop will do.
    pub shutdown_mode: ShutdownMode,
    /// Open and total tunnel streams and connections.
    pub streams: StreamCounts,
    /// Usage window, or `null` when metering is off.
    pub network_usage: Option<UsageStatus>,
    /// Per contract.
    pub relay_status: Vec<crate::state::ContractStatus>,
    /// Upgrade channel and the last notice.
    pub upgrade: UpgradeStatus,
    /// Stored sharetokens by state (`null` if the database could not be read).
    pub sharetokens: Option<TokenCounts>,
    /// Sharetokens refused since start.
    pub refused_sharetokens: u64,
}

/// Stream counters.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StreamCounts {
    /// Tunnel streams being served.
    pub open: usize,
    /// Since start.
    pub total: u64,
    /// Open connections.
    pub connections: usize,
    /// Since start.
    pub total_connections: u64,
}

/// The usage window (times in unix ms, as the original).
#[derive(Debug, Clone, Serialize)]
pub struct UsageStatus {
    /// Window start.
    pub timeframe_since: i64,
    /// Window end.
    pub timeframe_until: i64,
    /// The global cap in bytes, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap: Option<u64>,
    /// Bytes used in the window.
    pub usage: u64,
}

/// Upgrade-related state.
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeStatus {
    /// The channel followed.
    pub channel: Option<String>,
    /// `auto_upgrade` from the config.
    pub auto_upgrade: bool,
    /// The last notice received.
    pub notice: Option<UpgradeNotice>,
}

/// A cheap, cloneable handle on a running relay, for the REST API and the upgrade code.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    shared: Arc<Shared>,
    usage: Arc<Usage>,
    counters: Arc<Counters>,
    config: Arc<std::sync::Mutex<RelayConfig>>,
    software: String,
}

impl RelayHandle {
    /// The relay's status now.
    pub async fn status(&self) -> RelayStatus {
        let cfg = lock(&self.config).clone();
        let mut contracts: Vec<_> = lock(&self.shared.contract_status)
            .values()
            .cloned()
            .collect();
        for c in &mut contracts {
            if let Some(id) = &c.id {
                c.network_usage = self.usage.used(id);
            }
        }
        let network_usage = self.usage.window().map(|(since, until)| UsageStatus {
            timeframe_since: since.saturating_mul(1000),
            timeframe_until: until.saturating_mul(1000),
            cap: self.usage.global_limit(),
            usage: self.usage.used_total(),
        });
        let sharetokens = self.shared.store.counts().await.ok();
        let notice = lock(&self.shared.last_notice).clone();
        RelayStatus {
            version: self.software.clone(),
            pubkey: self.shared.pubkey.to_b64(),
            controller_started: self.shared.phase() == Phase::Running,
            phase: self.shared.phase(),
            shutdown_mode: self.shared.shutdown_mode(),
            streams: self.streams(),
            network_usage,
            relay_status: contracts,
            upgrade: UpgradeStatus {
                channel: cfg.upgrade_channel().map(|(_, c)| c),
                auto_upgrade: cfg.auto_upgrade,
                notice,
            },
            sharetokens,
            refused_sharetokens: self
                .shared
                .refused_tokens
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Stream and connection counters.
    pub fn streams(&self) -> StreamCounts {
        StreamCounts {
            open: self.counters.streams(),
            total: self.counters.total_streams(),
            connections: self.counters.connections(),
            total_connections: self.counters.total_connections(),
        }
    }

    /// Decides what the next shutdown does (the upgrade code sets
    /// [`ShutdownMode::HandOver`] once the new process is ready).
    pub fn set_shutdown_mode(&self, mode: ShutdownMode) {
        self.shared.set_shutdown_mode(mode);
    }

    /// What the next shutdown does.
    pub fn shutdown_mode(&self) -> ShutdownMode {
        self.shared.shutdown_mode()
    }

    /// The upgrade notices from the directory of the contract carrying the relay's upgrade
    /// channel, as they arrive (bounded queue; `None` after the first call). Until someone
    /// takes it, notices are only logged and shown in the status.
    pub fn take_upgrade_notices(&self) -> Option<tokio::sync::mpsc::Receiver<UpgradeNotice>> {
        self.shared.take_upgrade_notices()
    }

    /// The relay's public key.
    pub fn pubkey(&self) -> wireleap_proto::keys::PublicKey {
        self.shared.pubkey
    }

    /// The directory endpoints learned from the contracts (deduplicated).
    pub fn directories(&self) -> Vec<String> {
        let map = lock(&self.shared.contract_status);
        let mut dirs: Vec<String> = map.values().filter_map(|c| c.directory.clone()).collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Installs the check made before each heartbeat ([`Shared::set_heartbeat_gate`]).
    pub fn set_heartbeat_gate(&self, gate: crate::state::HeartbeatGate) {
        self.shared.set_heartbeat_gate(gate);
    }

    /// Whether every configured contract is enrolled now.
    pub fn all_enrolled(&self) -> bool {
        let map = lock(&self.shared.contract_status);
        !map.is_empty() && map.values().all(|c| c.enrolled)
    }
}

/// What [`RelayRuntime::shutdown`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// The mode used.
    pub mode: ShutdownMode,
    /// Tunnel connections drained / cut at the deadline (TLS and h2c together).
    pub drain: DrainReport,
}

struct Serving {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<DrainReport>>,
}

/// A running relay.
pub struct RelayRuntime {
    home: Home,
    handle: RelayHandle,
    config: RelayConfig,
    manager: ContractManager,
    submitter: Submitter,
    submit_task: Option<(CancellationToken, JoinHandle<()>)>,
    usage_task: (CancellationToken, JoinHandle<()>),
    serving: Serving,
    rest: Option<RestServer>,
    /// Duplicates of the listening sockets, kept for hand-over.
    held: Vec<(&'static str, std::os::fd::OwnedFd)>,
}

impl std::fmt::Debug for RelayRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayRuntime")
            .field("pubkey", &self.handle.shared.pubkey)
            .finish_non_exhaustive()
    }
}

/// The software version the relay announces: the build stamp's if the binary carries one
/// (`wireleap-release stamp`), else the crate version.
pub fn software_version() -> semver::Version {
    let text = wireleap_upgrade::stamp::version_or(env!("CARGO_PKG_VERSION"));
    semver::Version::parse(&text).unwrap_or_else(|_| semver::Version::new(0, 0, 0))
}

pub(crate) fn resolve_db_url(home: &Home, url: &str) -> String {
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.starts_with('/') => {
            format!("sqlite://{}", home.join(path).display())
        }
        _ => url.to_string(),
    }
}

fn resolve_dir(home: &Home, dir: &Option<std::path::PathBuf>) -> Option<std::path::PathBuf> {
    dir.as_ref().map(|d| home.join(d))
}

/// Raises the open-file soft limit to the hard limit (each stream needs two sockets).
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("could not raise the open file limit from {soft} to {hard}: {e}");
            }
        }
        _ => {}
    }
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < 65535 {
            tracing::warn!(
                limit = soft,
                "open file limit is below 65535; each tunnel stream needs two descriptors"
            );
        }
    }
}

async fn bind(
    name: &'static str,
    addr: &str,
) -> anyhow::Result<(tokio::net::TcpListener, std::os::fd::OwnedFd)> {
    let listener = listeners::bind_tcp(name, addr)
        .await
        .with_context(|| format!("could not listen on {addr}"))?;
    let dup = listener
        .as_fd()
        .try_clone_to_owned()
        .context("could not duplicate the listening socket")?;
    Ok((listener, dup))
}

impl RelayRuntime {
    /// Loads the key and TLS files from `home`, opens the database, binds the listeners
    /// (adopting inherited ones), and starts serving, enrolling and submitting.
    pub async fn start(home: &Home, config: RelayConfig) -> anyhow::Result<RelayRuntime> {
        Self::start_gated(home, config, None).await
    }

    /// [`RelayRuntime::start`] with the tunnel listeners accepting only while `gate` reads
    /// `true` (the upgrade agent's gate: a successor accepts only once ready, a predecessor
    /// stops accepting once its successor is).
    pub async fn start_gated(
        home: &Home,
        config: RelayConfig,
        gate: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> anyhow::Result<RelayRuntime> {
        let keypair = wireleap_daemon::keyfile::load_keypair(home)?;
        let tls = crate::tls::load_or_create(home, &keypair)?;
        Self::start_full(home, config, keypair, tls, gate).await
    }

    /// [`RelayRuntime::start`] with the identity and TLS config given (tests, benches).
    pub async fn start_with(
        home: &Home,
        config: RelayConfig,
        keypair: Keypair,
        tls: Arc<rustls::ServerConfig>,
    ) -> anyhow::Result<RelayRuntime> {
        Self::start_full(home, config, keypair, tls, None).await
    }

    async fn start_full(
        home: &Home,
        config: RelayConfig,
        keypair: Keypair,
        tls: Arc<rustls::ServerConfig>,
        gate: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> anyhow::Result<RelayRuntime> {
        raise_nofile();
        let db_url = resolve_db_url(home, &config.database);
        let db = wireleap_store::Db::open(&db_url).await?;
        let store = TokenStore::open(db.clone()).await?;
        let now = unix_now();
        let mut usage_cfg = config.network_usage.clone();
        if let Some(u) = usage_cfg.as_mut() {
            u.archive_dir = resolve_dir(home, &u.archive_dir);
        }
        let usage = Arc::new(Usage::open(db, usage_cfg.as_ref(), now).await?);
        let shared = Arc::new(Shared::new(keypair, &config, store));

        let server = Server::new(
            Arc::new(RelayHandler::new(shared.clone())),
            ServeConfig {
                drain_timeout: config.drain_timeout.to_std(),
                accept_gate: gate.clone(),
                ..ServeConfig::default()
            },
        );
        let software = software_version();
        let handle = RelayHandle {
            shared: shared.clone(),
            usage: usage.clone(),
            counters: server.counters(),
            config: Arc::new(std::sync::Mutex::new(config.clone())),
            software: software.to_string(),
        };

        // Bind everything before starting any task, so a bad address fails the start cleanly.
        let mut held = Vec::new();
        let (tls_listener, dup) = bind(LISTENER_TLS, &config.address).await?;
        held.push((LISTENER_TLS, dup));
        let h2c = match &config.h2c_address {
            Some(a) => {
                let (l, dup) = bind(LISTENER_H2C, a).await?;
                held.push((LISTENER_H2C, dup));
                Some(l)
            }
            None => None,
        };
        let rest = match config.rest_api.as_ref().and_then(|r| r.listen()) {
            Some(addr) => {
                let r = RestServer::start(&addr, handle.clone(), gate).await?;
                if let Some(fd) = r.dup_fd()? {
                    held.push((LISTENER_REST, fd));
                }
                Some(r)
            }
            None => None,
        };
        tracing::info!(
            address = %tls_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            pubkey = %shared.pubkey,
            "relay listening"
        );

        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        {
            let server = server.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                server
                    .serve(tls_listener, Some(tls), stop.cancelled_owned())
                    .await
            }));
        }
        if let Some(l) = h2c {
            let server = server.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                server.serve(l, None, stop.cancelled_owned()).await
            }));
        }

        let mut manager = ContractManager::new(shared.clone(), usage.clone(), software)?;
        manager.apply(&config).await;

        let submitter = Submitter::new(&shared, resolve_dir(home, &config.archive_dir))?;
        let mut rt = RelayRuntime {
            home: home.clone(),
            handle,
            config: config.clone(),
            manager,
            submitter,
            submit_task: None,
            usage_task: (CancellationToken::new(), tokio::spawn(async {})),
            serving: Serving { stop, tasks },
            rest,
            held,
        };
        rt.restart_submitter();
        rt.usage_task = rt.spawn_usage_task();
        shared.set_phase(Phase::Running);
        Ok(rt)
    }

    /// The handle for status, shutdown mode and upgrade notices.
    pub fn handle(&self) -> RelayHandle {
        self.handle.clone()
    }

    /// The home directory.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The listening sockets by name (`relay`, `relay-h2c`, `rest-api`), to pass to the new
    /// process with `wireleap_daemon::listeners::command_with_listeners`. They stay open here
    /// until this runtime is dropped.
    pub fn listener_fds(&self) -> Vec<(&'static str, BorrowedFd<'_>)> {
        self.held.iter().map(|(n, fd)| (*n, fd.as_fd())).collect()
    }

    /// The bound address of every TCP listener, by name.
    pub fn listener_addrs(&self) -> Vec<(&'static str, std::net::SocketAddr)> {
        self.held
            .iter()
            .filter_map(|(n, fd)| {
                let dup = fd.try_clone().ok()?;
                Some((*n, std::net::TcpListener::from(dup).local_addr().ok()?))
            })
            .collect()
    }

    /// The bound address of the TLS listener.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.held
            .iter()
            .find(|(n, _)| *n == LISTENER_TLS)
            .and_then(|(_, fd)| {
                let dup = fd.try_clone().ok()?;
                std::net::TcpListener::from(dup).local_addr().ok()
            })
    }

    /// Waits until every contract made its first enrollment attempt, at most `max`.
    pub async fn wait_first_enrollment(&mut self, max: Duration) {
        self.manager.wait_first_round(max).await;
    }

    /// Applies a reloaded config without dropping connections: contracts are added, updated
    /// (an immediate heartbeat sends the new entry) or removed (disenrolled); per-stream
    /// settings apply to new streams. Listener addresses, the database and metering need a
    /// restart (logged).
    pub async fn reload(&mut self, new: RelayConfig) {
        let old = &self.config;
        for (what, changed) in [
            ("address", old.address != new.address),
            ("h2c_address", old.h2c_address != new.h2c_address),
            ("rest_api", old.rest_api != new.rest_api),
            ("database", old.database != new.database),
            ("network_usage", old.network_usage != new.network_usage),
            ("drain_timeout", old.drain_timeout != new.drain_timeout),
            ("upgrade", old.upgrade != new.upgrade),
            ("auto_upgrade", old.auto_upgrade != new.auto_upgrade),
        ] {
            if changed {
                tracing::warn!(key = what, "this setting takes effect on restart");
            }
        }
        self.handle.shared.set_settings(Settings::of(&new));
        self.manager.apply(&new).await;
        let resubmit = old.auto_submit_interval != new.auto_submit_interval
            || old.archive_dir != new.archive_dir;
        *lock(&self.handle.config) = new.clone();
        self.config = new;
        if resubmit {
            self.submitter = match Submitter::new(
                &self.handle.shared,
                resolve_dir(&self.home, &self.config.archive_dir),
            ) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("could not rebuild the submitter: {e}");
                    return;
                }
            };
        }
        self.restart_submitter();
    }

    fn restart_submitter(&mut self) {
        if let Some((stop, task)) = self.submit_task.take() {
            stop.cancel();
            task.abort();
        }
        let interval = self.config.auto_submit_interval;
        if interval.0 <= 0 {
            tracing::info!("auto_submit_interval is 0s: sharetokens are stored but not submitted");
            return;
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(self.submitter.clone().run(interval.to_std(), stop.clone()));
        self.submit_task = Some((stop, task));
    }

    fn spawn_usage_task(&self) -> (CancellationToken, JoinHandle<()>) {
        let stop = CancellationToken::new();
        let usage = self.handle.usage.clone();
        let shared = self.handle.shared.clone();
        let config = self.handle.config.clone();
        let write_every = self
            .config
            .network_usage
            .as_ref()
            .map(|n| n.write_every().to_std())
            .unwrap_or(Duration::from_secs(60));
        let cap_tx = self.cap_sender();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CAP_CHECK.min(write_every));
            let mut last_write = tokio::time::Instant::now();
            let mut states: HashMap<String, CapState> = HashMap::new();
            loop {
                tokio::select! {
                    () = s.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if !usage.enabled() {
                    return;
                }
                let now = unix_now();
                if last_write.elapsed() >= write_every {
                    last_write = tokio::time::Instant::now();
                    if let Err(e) = usage.flush().await {
                        tracing::warn!("could not save usage counters: {e}");
                    }
                }
                match usage.roll_if_due(now, &shared.pubkey.to_b64()).await {
                    // The caps of the old window are lifted by the comparison below.
                    Ok(_) => {}
                    Err(e) => tracing::warn!("could not roll the usage window: {e}"),
                }
                let cfg = lock(&config).clone();
                let limits: Vec<Limit> = cfg
                    .contracts
                    .iter()
                    .map(|(url, e)| {
                        let id = lock(&shared.contract_status)
                            .get(url)
                            .and_then(|s| s.id.clone());
                        Limit {
                            url: url.clone(),
                            used: id.map_or(0, |k| usage.used(&k)),
                            limit: e.network_usage_limit.map(|b| b.0).filter(|b| *b > 0),
                        }
                    })
                    .collect();
                for (url, state) in cap_states(&limits, usage.used_total(), usage.global_limit()) {
                    let before = states.get(&url).copied().unwrap_or(CapState::Open);
                    if before != state {
                        states.insert(url.clone(), state);
                        let _ = cap_tx.send((url, state)).await;
                    }
                }
            }
        });
        (stop, task)
    }

    /// Cap decisions go through a channel because the manager is owned by the runtime.
    fn cap_sender(&self) -> tokio::sync::mpsc::Sender<(String, CapState)> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, CapState)>(64);
        let workers = self.manager.cap_handle();
        tokio::spawn(async move {
            while let Some((url, state)) = rx.recv().await {
                let (capped, cut) = match state {
                    CapState::Open => (false, false),
                    CapState::Soft => (true, false),
                    CapState::Hard => (true, true),
                };
                workers.set_capped(&url, capped, cut).await;
            }
        });
        tx
    }

    /// Stops the relay: stop accepting; with [`ShutdownMode::Stop`] disenroll everywhere
    /// (while open streams drain); drain until `drain_timeout`; save usage counters; stop
    /// submitting; remove the REST socket if it is still ours.
    pub async fn shutdown(mut self, mode: ShutdownMode) -> ShutdownReport {
        let shared = self.handle.shared.clone();
        shared.set_phase(Phase::Draining);
        tracing::info!(
            ?mode,
            open_streams = self.handle.counters.streams(),
            "stopping: no new connections, draining open streams"
        );
        self.serving.stop.cancel();
        // A successor holds its own copies; ours would only queue connections nobody takes.
        self.held.clear();
        let tasks = std::mem::take(&mut self.serving.tasks);
        let drain = async {
            let mut total = DrainReport {
                drained: 0,
                aborted: 0,
            };
            for t in tasks {
                if let Ok(r) = t.await {
                    total.drained += r.drained;
                    total.aborted += r.aborted;
                }
            }
            total
        };
        let manager = &mut self.manager;
        let (drain, ()) = tokio::join!(drain, manager.stop(mode == ShutdownMode::Stop));
        if drain.aborted > 0 {
            tracing::warn!(
                cut = drain.aborted,
                "connections still open at the drain deadline were cut"
            );
        }
        self.usage_task.0.cancel();
        let _ = (&mut self.usage_task.1).await;
        if let Err(e) = self.handle.usage.flush().await {
            tracing::warn!("could not save usage counters: {e}");
        }
        if let Some((stop, task)) = self.submit_task.take() {
            stop.cancel();
            let _ = task.await;
        }
        if let Some(rest) = self.rest.take() {
            rest.stop().await;
        }
        tracing::info!(drained = drain.drained, "relay stopped");
        ShutdownReport { mode, drain }
    }
}

impl RestAddress {
    /// For logs.
    pub fn describe(&self) -> String {
        match self {
            RestAddress::Tcp(a) => format!("http://{a}"),
            RestAddress::Unix { path, .. } => format!("file://{}", path.display()),
        }
    }
}
