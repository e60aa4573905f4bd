//! The contract manager: for each configured contract, learn its key and directory
//! (`GET {contract}/info`), enroll with that directory, heartbeat, hand upgrade notices on,
//! and disenroll when asked — each contract in its own task, so one unreachable contract or
//! directory never holds up the others (the original refused to start).
//!
//! Failures are retried with exponential backoff (1 s doubling to 60 s, with jitter). The
//! last `/info` of every contract is cached in the database, so a restart or an upgrade
//! hand-over serves and enrolls even while a contract's API is briefly down.
//!
//! A contract is *available* for new streams (the sharetoken check's "enrolled" stage) from
//! the moment its key is known until it is capped or removed — not only while the last
//! heartbeat succeeded: a directory outage must not cut paying clients off a relay they
//! already know. Disenrolling on shutdown is the caller's decision ([`ContractManager::stop`]),
//! so an upgrade hand-over can keep the relay listed.

use crate::config::{ContractEntry, RelayConfig};
use crate::directory::{Action, DirectoryClient, Outcome};
use crate::state::{unix_now, ContractView, Shared, UpgradeNotice};
use crate::usage::Usage;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wireleap_api::{ApiClient, Identity, RetryPolicy};
use wireleap_proto::contractinfo::ContractInfo;
use wireleap_proto::keys::PublicKey;
use wireleap_proto::relayentry::RelayEntry;
use wireleap_proto::version::{Component, Interface};

/// First retry delay.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long shutdown waits for every disenrollment together.
pub const DISENROLL_WAIT: Duration = Duration::from_secs(10);

/// Exponential backoff with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay before the next attempt (grows each call).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        // ±20 % so that many relays restarted together do not retry in lockstep.
        let jitter = rand::random::<f64>() * 0.4 + 0.8;
        base.mul_f64(jitter)
    }

    /// Back to the shortest delay after a success.
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// What a worker serves for one contract.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    url: String,
    entry: ContractEntry,
    channel: Option<String>,
    heartbeat: Duration,
    /// This contract's directory decides upgrades (it carries the relay's channel).
    forwards_upgrades: bool,
}

enum Control {
    Update(Box<Spec>),
    Cap {
        capped: bool,
        cut: bool,
    },
    Stop {
        disenroll: bool,
        done: oneshot::Sender<()>,
    },
}

struct Worker {
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
    first: Option<oneshot::Receiver<()>>,
}

/// Runs one task per configured contract.
pub struct ContractManager {
    ctx: Arc<Ctx>,
    workers: HashMap<String, Worker>,
    controls: Controls,
}

type Controls = Arc<std::sync::Mutex<HashMap<String, mpsc::Sender<Control>>>>;

/// Sends usage cap decisions to the contract workers (cloneable, outlives reloads).
#[derive(Clone)]
pub struct CapHandle {
    controls: Controls,
}

impl std::fmt::Debug for CapHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CapHandle")
    }
}

impl CapHandle {
    /// Applies a usage cap decision to a contract: `capped` stops new streams and
    /// disenrolls (or lifts that), `cut` also ends its open streams.
    pub async fn set_capped(&self, url: &str, capped: bool, cut: bool) {
        let tx = crate::state::lock(&self.controls).get(url).cloned();
        if let Some(tx) = tx {
            let _ = tx.send(Control::Cap { capped, cut }).await;
        }
    }
}

impl std::fmt::Debug for ContractManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContractManager")
            .field("contracts", &self.workers.keys().collect::<Vec<_>>())
            .finish()
    }
}

struct Ctx {
    shared: Arc<Shared>,
    usage: Arc<Usage>,
    directory: DirectoryClient,
    info: ApiClient,
    software: semver::Version,
}

impl ContractManager {
    /// A manager for the relay in `shared`, announcing software version `software`.
    pub fn new(
        shared: Arc<Shared>,
        usage: Arc<Usage>,
        software: semver::Version,
    ) -> anyhow::Result<Self> {
        let directory = DirectoryClient::new(&shared.keypair, &software)?;
        let info = ApiClient::new(
            Some(Identity {
                keypair: shared.keypair.clone(),
                component: Component::Relay,
                interfaces: vec![Interface::RelayDir, Interface::RelayContract],
            }),
            false,
        )?
        // The worker's backoff is the retry loop; the cached copy covers outages.
        .with_retry(RetryPolicy::ONCE);
        Ok(ContractManager {
            ctx: Arc::new(Ctx {
                shared,
                usage,
                directory,
                info,
                software,
            }),
            workers: HashMap::new(),
            controls: Arc::default(),
        })
    }

    /// Starts, updates and stops workers so that they match `config` (start and reload).
    /// Removed contracts are disenrolled; changed ones send their new entry at once.
    pub async fn apply(&mut self, config: &RelayConfig) {
        let owner = config.upgrade_channel().map(|(url, _)| url);
        let heartbeat = config.heartbeat_interval.to_std();
        let specs: HashMap<String, Spec> = config
            .contracts
            .iter()
            .map(|(url, entry)| {
                (
                    url.clone(),
                    Spec {
                        url: url.clone(),
                        entry: entry.clone(),
                        channel: config.channel_of(entry),
                        heartbeat,
                        forwards_upgrades: owner.as_deref() == Some(url.as_str()),
                    },
                )
            })
            .collect();
        let gone: Vec<String> = self
            .workers
            .keys()
            .filter(|u| !specs.contains_key(*u))
            .cloned()
            .collect();
        for url in gone {
            if let Some(w) = self.workers.remove(&url) {
                tracing::info!(contract = %url, "contract removed from the config; disenrolling");
                stop_worker(w, true).await;
                let shared = &self.ctx.shared;
                shared.contracts.update(|m| m.retain(|_, v| v.url != url));
                crate::state::lock(&shared.contract_status).remove(&url);
            }
        }
        for (url, spec) in specs {
            match self.workers.get(&url) {
                Some(w) => {
                    let _ = w.control.send(Control::Update(Box::new(spec))).await;
                }
                None => {
                    let (tx, rx) = mpsc::channel(8);
                    let (first_tx, first_rx) = oneshot::channel();
                    let task = tokio::spawn(run_worker(self.ctx.clone(), spec, rx, first_tx));
                    self.workers.insert(
                        url,
                        Worker {
                            control: tx,
                            task,
                            first: Some(first_rx),
                        },
                    );
                }
            }
        }
        self.publish_controls();
    }

    /// Waits until every contract made its first enrollment attempt (successful or not),
    /// at most `max`.
    pub async fn wait_first_round(&mut self, max: Duration) {
        let waits: Vec<oneshot::Receiver<()>> = self
            .workers
            .values_mut()
            .filter_map(|w| w.first.take())
            .collect();
        let all = futures_util::future::join_all(waits);
        if tokio::time::timeout(max, all).await.is_err() {
            tracing::warn!(
                ?max,
                "not every contract is enrolled yet; serving anyway, enrollment continues"
            );
        }
    }

    /// A handle for usage cap decisions.
    pub fn cap_handle(&self) -> CapHandle {
        CapHandle {
            controls: self.controls.clone(),
        }
    }

    fn publish_controls(&self) {
        *crate::state::lock(&self.controls) = self
            .workers
            .iter()
            .map(|(u, w)| (u.clone(), w.control.clone()))
            .collect();
    }

    /// Stops every worker; with `disenroll`, each enrolled contract is disenrolled first
    /// (one attempt each, all together bounded by [`DISENROLL_WAIT`]).
    pub async fn stop(&mut self, disenroll: bool) {
        let workers: Vec<Worker> = self.workers.drain().map(|(_, w)| w).collect();
        self.publish_controls();
        let all =
            futures_util::future::join_all(workers.into_iter().map(|w| stop_worker(w, disenroll)));
        if tokio::time::timeout(DISENROLL_WAIT, all).await.is_err() {
            tracing::warn!("disenrollment did not finish in {DISENROLL_WAIT:?}; exiting anyway");
        }
    }
}

async fn stop_worker(w: Worker, disenroll: bool) {
    let (done, wait) = oneshot::channel();
    if w.control
        .send(Control::Stop { disenroll, done })
        .await
        .is_ok()
    {
        let _ = wait.await;
    }
    w.task.abort();
}

fn entry_of(ctx: &Ctx, spec: &Spec) -> RelayEntry {
    let mut e = RelayEntry::new(
        spec.entry.role,
        spec.entry.address.clone(),
        ctx.shared.pubkey,
        ctx.software.clone(),
    );
    e.key = spec.entry.key.clone().filter(|k| !k.is_empty());
    e.upgrade_channel = spec.channel.clone();
    e.network_usage_limit = spec.entry.network_usage_limit.filter(|b| b.0 > 0);
    e
}

/// The contract's key and directory, as learned.
#[derive(Debug, Clone)]
struct Learned {
    key: PublicKey,
    directory: String,
}

fn learned_of(info: &ContractInfo) -> Result<Learned, String> {
    let key = info.pubkey.ok_or("contract /info has no pubkey")?;
    let directory = info
        .directory
        .endpoint
        .clone()
        .filter(|d| !d.is_empty())
        .ok_or("contract /info names no directory endpoint")?;
    Ok(Learned { key, directory })
}

/// Fetches `/info` (caching it); on failure falls back to the cached copy.
async fn learn(ctx: &Ctx, url: &str) -> Result<(Learned, &'static str), String> {
    let info_url = format!("{url}/info");
    let live = match ctx.info.get::<ContractInfo>(&info_url).await {
        Ok(info) => learned_of(&info).map(|l| (l, info)),
        Err(e) => Err(e.to_string()),
    };
    match live {
        Ok((learned, info)) => {
            let body = String::from_utf8_lossy(&info.to_json()).into_owned();
            if let Err(e) = ctx.shared.store.cache_info(url, &body, unix_now()).await {
                tracing::warn!(contract = %url, "could not cache contract info: {e}");
            }
            Ok((learned, "live"))
        }
        Err(live_err) => {
            let cached = ctx.shared.store.cached_info(url).await.ok().flatten();
            match cached.and_then(|b| ContractInfo::from_json(b.as_bytes()).ok()) {
                Some(info) => {
                    let learned = learned_of(&info)?;
                    tracing::warn!(
                        contract = %url,
                        error = %live_err,
                        "contract unreachable; using its cached /info"
                    );
                    Ok((learned, "cached"))
                }
                None => Err(live_err),
            }
        }
    }
}

async fn run_worker(
    ctx: Arc<Ctx>,
    mut spec: Spec,
    mut control: mpsc::Receiver<Control>,
    first: oneshot::Sender<()>,
) {
    let shared = ctx.shared.clone();
    let url = spec.url.clone();
    let mut first = Some(first);
    let mut backoff = Backoff::default();
    let mut capped = false;
    let set_status = |spec: &Spec| {
        shared.with_status(&spec.url, |s| {
            s.address = spec.entry.address.to_string();
            s.role = Some(spec.entry.role);
            s.channel = spec.channel.clone();
            s.network_cap = spec.entry.network_usage_limit.map(|b| b.0);
        });
    };
    set_status(&spec);

    // Phase 1: learn the contract's key and directory.
    let mut learned = loop {
        match learn(&ctx, &url).await {
            Ok((l, source)) => {
                shared.with_status(&url, |s| {
                    s.id = Some(l.key.to_b64());
                    s.directory = Some(l.directory.clone());
                    s.info = source;
                    s.last_error = None;
                });
                break l;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::error!(
                    contract = %url,
                    error = %e,
                    retry_in = ?delay,
                    "contract unreachable and not cached; not serving it yet, retrying"
                );
                shared.with_status(&url, |s| {
                    s.failures += 1;
                    s.last_error = Some(e.clone());
                });
                if let Some(f) = first.take() {
                    let _ = f.send(());
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    c = control.recv() => match c {
                        None => return,
                        Some(Control::Stop { done, .. }) => {
                            let _ = done.send(());
                            return;
                        }
                        Some(Control::Update(s)) => {
                            spec = *s;
                            set_status(&spec);
                        }
                        Some(Control::Cap { capped: c, .. }) => capped = c,
                    },
                }
            }
        }
    };
    backoff.reset();
    let register = |key: PublicKey, available: bool, new_cut: bool| {
        let meter = ctx.usage.counter(&key);
        shared.contracts.update(|m| {
            let cut = match m.get(&key) {
                Some(v) if !new_cut => v.cut.clone(),
                _ => CancellationToken::new(),
            };
            m.insert(
                key,
                ContractView {
                    url: url.clone(),
                    available,
                    cut,
                    meter,
                },
            );
        });
        shared.with_status(&url, |s| s.available = available);
    };
    register(learned.key, !capped, false);
    tracing::info!(contract = %url, key = %learned.key, directory = %learned.directory, "contract known");

    // Phase 2: enroll, heartbeat, react to control messages.
    let mut enrolled = false;
    let mut next = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next), if !capped => {
                if enrolled && !shared.may_heartbeat() {
                    tracing::debug!(contract = %url, "another process of this relay is in charge; heartbeat skipped");
                    next = Instant::now() + spec.heartbeat.min(Duration::from_secs(1));
                    continue;
                }
                let action = if enrolled { Action::Heartbeat } else { Action::Enroll };
                let entry = entry_of(&ctx, &spec);
                match ctx.directory.send(action, &learned.directory, &entry).await {
                    Ok(outcome) => {
                        if !enrolled {
                            tracing::info!(contract = %url, role = %spec.entry.role, "enrolled");
                        }
                        enrolled = true;
                        backoff.reset();
                        shared.with_status(&url, |s| {
                            s.enrolled = true;
                            s.failures = 0;
                            s.last_error = None;
                            s.last_contact = Some(unix_now());
                        });
                        if let Outcome::Upgrade(version) = outcome {
                            match (&spec.channel, spec.forwards_upgrades) {
                                (Some(channel), true) => shared.notify_upgrade(UpgradeNotice {
                                    version,
                                    channel: channel.clone(),
                                    contract: url.clone(),
                                    directory: learned.directory.clone(),
                                    received_at: unix_now(),
                                }),
                                _ => tracing::info!(
                                    contract = %url, %version,
                                    "upgrade notice from a contract that does not carry the upgrade channel; ignored"
                                ),
                            }
                        }
                        next = Instant::now() + spec.heartbeat;
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(
                            contract = %url,
                            action = action.name(),
                            error = %e,
                            retry_in = ?delay.min(spec.heartbeat),
                            "directory request failed"
                        );
                        shared.with_status(&url, |s| {
                            s.failures += 1;
                            s.last_error = Some(e.to_string());
                        });
                        next = Instant::now() + delay.min(spec.heartbeat);
                        if !enrolled {
                            // The directory may have moved: look at the contract again.
                            if let Ok((l, source)) = learn(&ctx, &url).await {
                                if l.key == learned.key {
                                    shared.with_status(&url, |s| {
                                        s.directory = Some(l.directory.clone());
                                        s.info = source;
                                    });
                                    learned = l;
                                } else {
                                    tracing::error!(
                                        contract = %url, old = %learned.key, new = %l.key,
                                        "contract key changed; restart the relay to follow it"
                                    );
                                }
                            }
                        }
                    }
                }
                if let Some(f) = first.take() {
                    let _ = f.send(());
                }
            }
            c = control.recv() => match c {
                None => return,
                Some(Control::Stop { disenroll, done }) => {
                    if enrolled && disenroll {
                        disenroll_once(&ctx, &spec, &learned).await;
                        shared.with_status(&url, |s| s.enrolled = false);
                    }
                    let _ = done.send(());
                    return;
                }
                Some(Control::Update(new)) => {
                    if *new == spec {
                        continue;
                    }
                    if enrolled && new.entry.role != spec.entry.role {
                        tracing::info!(contract = %url, old = %spec.entry.role, new = %new.entry.role, "role changed; re-enrolling");
                        disenroll_once(&ctx, &spec, &learned).await;
                        enrolled = false;
                        shared.with_status(&url, |s| s.enrolled = false);
                    }
                    spec = *new;
                    set_status(&spec);
                    next = Instant::now();
                }
                Some(Control::Cap { capped: c, cut }) => {
                    if c && !capped {
                        tracing::warn!(contract = %url, "network usage cap reached; refusing new streams and disenrolling");
                        if enrolled {
                            disenroll_once(&ctx, &spec, &learned).await;
                            enrolled = false;
                        }
                        shared.with_status(&url, |s| {
                            s.enrolled = false;
                            s.network_cap_reached = true;
                        });
                    } else if !c && capped {
                        tracing::info!(contract = %url, "network usage cap lifted; enrolling again");
                        shared.with_status(&url, |s| s.network_cap_reached = false);
                        next = Instant::now();
                    }
                    capped = c;
                    if cut {
                        if let Some(v) = shared.contracts.snapshot().by_key.get(&learned.key) {
                            v.cut.cancel();
                        }
                    }
                    // A lifted cap gets a fresh cut token; a cut one stays cancelled until then.
                    register(learned.key, !capped, !capped);
                }
            },
        }
    }
}

async fn disenroll_once(ctx: &Ctx, spec: &Spec, learned: &Learned) {
    let entry = entry_of(ctx, spec);
    match ctx
        .directory
        .send(Action::Disenroll, &learned.directory, &entry)
        .await
    {
        Ok(_) => tracing::info!(contract = %spec.url, "disenrolled"),
        Err(e) => tracing::warn!(contract = %spec.url, error = %e, "disenrollment failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap_and_resets() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= BACKOFF_MIN.mul_f64(0.8) && first <= BACKOFF_MIN.mul_f64(1.2));
        let mut last = first;
        for _ in 0..20 {
            last = b.next_delay();
        }
        assert!(last <= BACKOFF_MAX.mul_f64(1.2) && last >= BACKOFF_MAX.mul_f64(0.8));
        b.reset();
        assert!(b.next_delay() <= BACKOFF_MIN.mul_f64(1.2));
    }
}
