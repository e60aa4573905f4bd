//! The running client: the contract it is set up for, the background tasks that keep its
//! relay list and servicekey fresh, the dialer, and the status everything reports.
//!
//! A home without a contract still runs (forwarders answer "no access key imported", status
//! says what to do); importing an access key and reloading brings the contract in. A failed
//! sync is not fatal either: the previous list stays in use and the sync is retried.

use crate::circuit;
use crate::config::ClientConfig;
use crate::dialer::{DialError, Dialer, DialerConfig, Network};
use crate::directory::{self, DirectoryState};
use crate::files;
use crate::servicekey::{self, ActiveKey, Keys};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use wireleap_api::{ApiClient, RetryPolicy};
use wireleap_daemon::{CancellationToken, Home};
use wireleap_proto::keys::PublicKey;
use wireleap_proto::relaylist::RelayList;

/// Fewest seconds between two syncs asked for by circuit failures.
const MIN_RESYNC: Duration = Duration::from_secs(5);

/// Everything that belongs to one contract.
#[derive(Debug)]
pub struct ContractCtx {
    /// The contract's base URL.
    pub url: String,
    /// The pinned contract key.
    pub key: PublicKey,
    /// Servicekeys.
    pub keys: Arc<Keys>,
    /// Relay list and sync errors.
    pub directory: Arc<DirectoryState>,
    resync: Notify,
    stop: CancellationToken,
}

/// The client daemon's shared state.
#[derive(Debug)]
pub struct Controller {
    home: Home,
    api: ApiClient,
    config: RwLock<ClientConfig>,
    contract: RwLock<Option<Arc<ContractCtx>>>,
    contract_error: RwLock<Option<String>>,
    shutdown: CancellationToken,
    /// Where the SOCKS forwarder listens (as bound).
    pub socks_addr: String,
    /// Where the h2c broker listens (as bound).
    pub h2c_addr: String,
}

/// The [`Network`] the dialer sees: whatever contract the controller has right now.
#[derive(Debug)]
struct ControllerNetwork(std::sync::Weak<Controller>);

impl Network for ControllerNetwork {
    fn servicekey(&self) -> BoxFuture<'_, Result<Arc<ActiveKey>, DialError>> {
        Box::pin(async move {
            let ctx = self
                .0
                .upgrade()
                .and_then(|c| c.contract())
                .ok_or(DialError::NoContract)?;
            ctx.keys
                .current()
                .await
                .map_err(|e| DialError::NoServicekey(e.to_string()))
        })
    }

    fn relays(&self) -> Result<Arc<RelayList>, DialError> {
        let ctx = self
            .0
            .upgrade()
            .and_then(|c| c.contract())
            .ok_or(DialError::NoContract)?;
        match ctx.directory.snapshot() {
            Some(s) => Ok(s.relays.clone()),
            None => Err(DialError::NoRelays(
                ctx.directory
                    .last_error()
                    .map(|(_, e)| e)
                    .unwrap_or_else(|| "the relay list has not been fetched yet".into()),
            )),
        }
    }

    fn circuit_failed(&self) {
        if let Some(ctx) = self.0.upgrade().and_then(|c| c.contract()) {
            ctx.resync.notify_one();
        }
    }
}

/// The API client the client uses for contract and directory: unsigned, short retries.
pub fn api_client() -> anyhow::Result<ApiClient> {
    Ok(ApiClient::new(None, false)?.with_retry(RetryPolicy {
        attempts: 2,
        delay: Duration::from_secs(1),
    }))
}

/// Builds the dialer settings from a config.
pub fn dialer_config(c: &ClientConfig) -> DialerConfig {
    DialerConfig {
        hops: c.circuit.hops as usize,
        whitelist: c.circuit.whitelist.clone(),
        timeout: c.timeout(),
    }
}

impl Controller {
    /// Starts the controller: loads the contract (if configured) and its background tasks.
    /// Returns the controller and its dialer.
    pub fn start(
        home: Home,
        config: ClientConfig,
        socks_addr: String,
        h2c_addr: String,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(Arc<Controller>, Arc<Dialer>)> {
        let api = api_client()?;
        let dialer_cfg = dialer_config(&config);
        let controller = Arc::new(Controller {
            home,
            api,
            config: RwLock::new(config.clone()),
            contract: RwLock::new(None),
            contract_error: RwLock::new(None),
            shutdown,
            socks_addr,
            h2c_addr,
        });
        let dialer = Dialer::new(
            Arc::new(ControllerNetwork(Arc::downgrade(&controller))),
            dialer_cfg,
        );
        controller.set_contract(config.contract.as_deref(), config.accesskey.use_on_demand);
        Ok((controller, dialer))
    }

    /// The current config.
    pub fn config(&self) -> ClientConfig {
        self.config.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// The home directory.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The current contract, if any.
    pub fn contract(&self) -> Option<Arc<ContractCtx>> {
        self.contract.read().ok().and_then(|c| c.clone())
    }

    /// Applies a reloaded config: circuit settings at once (the circuit is rebuilt), a new
    /// contract by swapping everything that belongs to it, and a fresh sync in any case.
    pub fn apply(&self, dialer: &Dialer, config: ClientConfig) {
        let old = self.config();
        if let Ok(mut c) = self.config.write() {
            *c = config.clone();
        }
        if old.address != config.address
            || old.address_socks != config.address_socks
            || old.h2c_address() != config.h2c_address()
        {
            tracing::warn!("new listen addresses take effect on restart");
        }
        dialer.set_config(dialer_config(&config));
        dialer.reset(None, "reload");
        let same_contract = self.contract().map(|c| c.url.clone()) == config.contract;
        if same_contract {
            if let Some(ctx) = self.contract() {
                ctx.keys.set_on_demand(config.accesskey.use_on_demand);
                ctx.resync.notify_one();
            }
        } else {
            self.set_contract(config.contract.as_deref(), config.accesskey.use_on_demand);
        }
    }

    fn set_contract(&self, url: Option<&str>, on_demand: bool) {
        if let Some(old) = self.contract() {
            old.stop.cancel();
        }
        let (ctx, err) = match url {
            None => (None, None),
            Some(url) => match self.load_contract(url, on_demand) {
                Ok(ctx) => (Some(ctx), None),
                Err(e) => {
                    tracing::error!(error = %e, "contract not usable");
                    (None, Some(e.to_string()))
                }
            },
        };
        if let Some(ctx) = &ctx {
            tokio::spawn(sync_loop(
                self.api.clone(),
                self.home.clone(),
                ctx.clone(),
                self.refresh(),
            ));
            tokio::spawn(ctx.keys.clone().renew_loop(ctx.stop.clone()));
            tracing::info!(contract = %ctx.url, "contract loaded");
        }
        if let Ok(mut c) = self.contract.write() {
            *c = ctx;
        }
        if let Ok(mut e) = self.contract_error.write() {
            *e = err;
        }
    }

    fn refresh(&self) -> Duration {
        self.config().refresh()
    }

    fn load_contract(&self, url: &str, on_demand: bool) -> anyhow::Result<Arc<ContractCtx>> {
        let info = files::read_contract(&self.home)?.ok_or_else(|| {
            anyhow::anyhow!(
                "config.json names contract {url} but contract.json is missing: import the access key again"
            )
        })?;
        let key = info.pubkey.ok_or_else(|| {
            anyhow::anyhow!("contract.json has no pubkey: import the access key again")
        })?;
        if let Some(endpoint) = &info.endpoint {
            if endpoint.trim_end_matches('/') != url.trim_end_matches('/') {
                anyhow::bail!(
                    "config.json names contract {url} but contract.json is for {endpoint}: import the access key again"
                );
            }
        }
        let keys = Keys::new(
            self.home.clone(),
            self.api.clone(),
            url.to_string(),
            key,
            on_demand,
        )?;
        let directory = Arc::new(DirectoryState::default());
        // Start from the last verified list so a restart works before the first sync.
        if let Ok(Some(relays)) = files::read_relays(&self.home) {
            directory.set(directory::Snapshot {
                contract_url: url.to_string(),
                contract: info,
                directory: Default::default(),
                relays: Arc::new(relays),
                rejected: Vec::new(),
                fetched: SystemTime::UNIX_EPOCH,
            });
        }
        Ok(Arc::new(ContractCtx {
            url: url.to_string(),
            key,
            keys: Arc::new(keys),
            directory,
            resync: Notify::new(),
            stop: self.shutdown.child_token(),
        }))
    }

    /// What the status API and `wireleap status` show.
    pub fn status(&self, dialer: &Dialer) -> StatusView {
        let config = self.config();
        let now = servicekey::now();
        let mut problems = Vec::new();
        let ctx = self.contract();
        if let Some(e) = self.contract_error.read().ok().and_then(|e| e.clone()) {
            problems.push(e);
        } else if ctx.is_none() {
            problems.push(
                "no access key imported: run `wireleap import FILE` (or `-` for standard input)"
                    .into(),
            );
        }
        let mut view = StatusView {
            home: self.home.dir().display().to_string(),
            pid: std::process::id(),
            state: String::new(),
            version: wireleap_upgrade::daemon::software(env!("CARGO_PKG_VERSION")),
            socks: self.socks_addr.clone(),
            h2c: self.h2c_addr.clone(),
            contract: None,
            directory: None,
            servicekey: None,
            pofs: PofCounts::default(),
            circuit: dialer.circuit().map(|c| CircuitView {
                id: c.id,
                since: unix(c.since),
                hops: c
                    .hops
                    .iter()
                    .map(|h| HopView {
                        role: h.role.to_string(),
                        address: h.address.to_string(),
                        pubkey: h.pubkey.to_b64(),
                    })
                    .collect(),
            }),
            hops: config.circuit.hops,
            whitelist: config.circuit.whitelist.clone(),
            last_error: dialer.last_error().map(|(_, e)| e),
            problems: Vec::new(),
        };
        if let Ok(pofs) = files::read_pofs(&self.home) {
            view.pofs.usable = pofs.iter().filter(|p| !p.is_expired(now)).count();
            view.pofs.expired = pofs.len() - view.pofs.usable;
        }
        if let Some(ctx) = &ctx {
            view.contract = Some(ContractView {
                endpoint: ctx.url.clone(),
                pubkey: ctx.key.to_b64(),
            });
            let snap = ctx.directory.snapshot();
            let sync_error = ctx.directory.last_error().map(|(_, e)| e);
            if let Some(e) = &sync_error {
                problems.push(format!("relay list sync failed: {e}"));
            }
            if let Some(s) = &snap {
                let count = |role| {
                    s.relays
                        .relays
                        .values()
                        .filter(|e| e.role == Some(role))
                        .count()
                };
                let usable = circuit::selectable(
                    &s.relays,
                    config.circuit.hops as usize,
                    config.circuit.whitelist.as_deref(),
                )
                .into_iter()
                .filter(|(_, ok)| *ok)
                .count();
                view.directory = Some(DirectoryView {
                    endpoint: s.contract.directory.endpoint.clone(),
                    last_sync: unix(s.fetched),
                    relays: s.relays.relays.len(),
                    fronting: count(wireleap_proto::relayentry::Role::Fronting),
                    entropic: count(wireleap_proto::relayentry::Role::Entropic),
                    backing: count(wireleap_proto::relayentry::Role::Backing),
                    usable,
                    error: sync_error,
                });
                // Would a circuit be possible right now? (No randomness matters here.)
                match circuit::choose(
                    &s.relays,
                    config.circuit.hops as usize,
                    config.circuit.whitelist.as_deref(),
                    &mut rand::rngs::OsRng,
                ) {
                    Ok(choice) => {
                        for m in choice.missing_whitelisted {
                            problems.push(format!(
                                "whitelisted relay {m} is not in the directory's list (skipped)"
                            ));
                        }
                    }
                    Err(e) => problems.push(format!("no circuit possible: {e}")),
                }
            } else if sync_error.is_none() {
                problems.push("relay list not fetched yet".into());
            }
            let key = ctx.keys.peek();
            let key_error = ctx.keys.last_error();
            view.servicekey = Some(ServicekeyView {
                state: match &key {
                    Some(k) if !k.key.is_expired(now) => "active",
                    Some(_) => "expired",
                    None => "none",
                }
                .to_string(),
                expiration: key.as_ref().map(|k| k.key.contract.settlement_open),
                error: key_error.clone(),
            });
            let key_valid = key.is_some_and(|k| !k.key.is_expired(now));
            if let Some(e) = key_error {
                problems.push(format!("servicekey: {e}"));
            } else if !key_valid && view.pofs.usable == 0 {
                problems.push(
                    "no valid servicekey and no unused proofs of funding: import an access key"
                        .into(),
                );
            }
        }
        if let Some(e) = &view.last_error {
            problems.push(format!("last connection failed: {e}"));
        }
        view.state = if problems.is_empty() {
            "active"
        } else {
            "degraded"
        }
        .to_string();
        view.problems = problems;
        view
    }
}

/// Keeps the relay list of one contract fresh: at start, every `refresh`, and soon after a
/// circuit failure. Failures keep the previous list and retry sooner.
async fn sync_loop(api: ApiClient, home: Home, ctx: Arc<ContractCtx>, refresh: Duration) {
    let mut failures = 0u32;
    loop {
        match directory::sync(&api, &ctx.url, &ctx.key).await {
            Ok(snap) => {
                failures = 0;
                tracing::info!(
                    contract = %ctx.url,
                    relays = snap.relays.relays.len(),
                    "relay list updated"
                );
                if let Err(e) = files::write_contract(&home, &snap.contract)
                    .and_then(|()| files::write_relays(&home, &snap.relays))
                {
                    tracing::warn!(error = %e, "cannot save the relay list");
                }
                if let Some(v) = snap.directory.client_version() {
                    if *v > wireleap_upgrade::daemon::version(env!("CARGO_PKG_VERSION")) {
                        tracing::warn!(latest = %v, "the directory advertises a newer client version; `wireleap upgrade` installs the newest release");
                    }
                }
                ctx.directory.set(snap);
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(contract = %ctx.url, error = %e, "relay list sync failed; keeping the previous list");
                ctx.directory.set_error(&e);
            }
        }
        let wait = if failures == 0 {
            refresh
        } else {
            // 2, 4, 8 ... s, never longer than the regular interval.
            Duration::from_secs(1u64 << failures.min(6)).min(refresh)
        };
        tokio::select! {
            () = ctx.stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = ctx.resync.notified() => {
                tokio::select! {
                    () = ctx.stop.cancelled() => return,
                    () = tokio::time::sleep(MIN_RESYNC) => {}
                }
            }
        }
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

/// `GET /api/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    /// Home directory.
    pub home: String,
    /// Daemon pid.
    pub pid: u32,
    /// `active` (nothing wrong) or `degraded` (see `problems`).
    pub state: String,
    /// Software version.
    pub version: String,
    /// SOCKS listen address.
    pub socks: String,
    /// h2c broker address.
    pub h2c: String,
    /// The contract.
    pub contract: Option<ContractView>,
    /// The directory and its relays.
    pub directory: Option<DirectoryView>,
    /// The servicekey.
    pub servicekey: Option<ServicekeyView>,
    /// Stored pofs.
    pub pofs: PofCounts,
    /// The circuit in use (none until the first connection after start or reload).
    pub circuit: Option<CircuitView>,
    /// `circuit.hops`.
    pub hops: u32,
    /// `circuit.whitelist`.
    pub whitelist: Option<Vec<String>>,
    /// The last failure to open a stream, if the last attempt failed.
    pub last_error: Option<String>,
    /// Everything that is wrong, each with what to do.
    pub problems: Vec<String>,
}

/// Contract part of the status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContractView {
    /// Base URL.
    pub endpoint: String,
    /// Pinned key.
    pub pubkey: String,
}

/// Directory part of the status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectoryView {
    /// Directory URL.
    pub endpoint: Option<String>,
    /// Unix seconds of the last successful sync (0: loaded from relays.json).
    pub last_sync: i64,
    /// Relays listed.
    pub relays: usize,
    /// Fronting relays.
    pub fronting: usize,
    /// Entropic relays.
    pub entropic: usize,
    /// Backing relays.
    pub backing: usize,
    /// Relays usable with the current hops and whitelist.
    pub usable: usize,
    /// The last sync error.
    pub error: Option<String>,
}

/// Servicekey part of the status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServicekeyView {
    /// `active`, `expired` or `none`.
    pub state: String,
    /// Its settlement_open.
    pub expiration: Option<i64>,
    /// The last activation failure.
    pub error: Option<String>,
}

/// Stored pofs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PofCounts {
    /// Not expired.
    pub usable: usize,
    /// Expired (dropped at the next activation).
    pub expired: usize,
}

/// The circuit in use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CircuitView {
    /// Its id.
    pub id: u64,
    /// Unix seconds when it was chosen.
    pub since: i64,
    /// Its relays, first hop first.
    pub hops: Vec<HopView>,
}

/// One relay of the circuit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HopView {
    /// Role.
    pub role: String,
    /// Address.
    pub address: String,
    /// Key.
    pub pubkey: String,
}
