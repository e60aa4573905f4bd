//! What the relay's parts share while it runs: its identity, the settings the data path reads
//! per stream (swapped as a whole on reload), the table of known contracts that sharetoken
//! checks consult, and the status every part reports into.
//!
//! Nothing here is the only copy of anything that matters: sharetokens and usage counters
//! are in the database, enrollment is redone at start, so a new process (restart or upgrade
//! hand-over) rebuilds all of it.

use crate::config::{RelayConfig, Role};
use crate::dial::DialPolicy;
use crate::store::TokenStore;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wireleap_proto::keys::{Keypair, PublicKey};

/// Locks a std mutex, ignoring poisoning (a panicked holder cannot leave these maps in a
/// state worse than stale numbers).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Unix seconds now (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The per-stream settings, taken from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Dial timeout.
    pub timeout: Duration,
    /// Splice buffer per direction.
    pub bufsize: usize,
    /// Maximum lifetime of a stream.
    pub maxtime: Option<Duration>,
    /// Which addresses may be dialed.
    pub policy: DialPolicy,
}

impl Settings {
    /// The settings of a config.
    pub fn of(c: &RelayConfig) -> Self {
        Settings {
            timeout: c.timeout.to_std(),
            bufsize: c.bufsize as usize,
            maxtime: (c.maxtime.0 > 0).then(|| c.maxtime.to_std()),
            policy: DialPolicy {
                allow_loopback: c.danger_zone.allow_loopback,
                allow_private: c.danger_zone.allow_private,
            },
        }
    }
}

/// What the data path knows about one contract.
#[derive(Debug, Clone)]
pub struct ContractView {
    /// Contract URL (the config key).
    pub url: String,
    /// Whether new streams are accepted for it (configured, info known, not capped, not
    /// being removed). See `contracts` for why this is not "enrolled right now".
    pub available: bool,
    /// Cancelled to cut every open stream of this contract (hard usage cap).
    pub cut: CancellationToken,
    /// Bytes moved for this contract that the usage meter has not saved yet.
    pub meter: Arc<AtomicU64>,
}

/// An immutable view of the contract table, cheap to take per stream.
#[derive(Debug, Default)]
pub struct ContractSnapshot {
    /// Keys of every known contract (the trusted set for sharetokens).
    pub keys: Vec<PublicKey>,
    /// Per key.
    pub by_key: HashMap<PublicKey, ContractView>,
}

impl ContractSnapshot {
    /// Whether `key` is known and accepting streams.
    pub fn available(&self, key: &PublicKey) -> bool {
        self.by_key.get(key).is_some_and(|v| v.available)
    }
}

/// The table of known contracts (copy-on-write).
#[derive(Debug, Default)]
pub struct ContractTable {
    current: RwLock<Arc<ContractSnapshot>>,
}

impl ContractTable {
    /// The current view.
    pub fn snapshot(&self) -> Arc<ContractSnapshot> {
        read(&self.current).clone()
    }

    /// Applies `f` to a copy of the views and publishes the result.
    pub fn update(&self, f: impl FnOnce(&mut HashMap<PublicKey, ContractView>)) {
        let mut guard = write(&self.current);
        let mut map = guard.by_key.clone();
        f(&mut map);
        let mut keys: Vec<PublicKey> = map.keys().copied().collect();
        keys.sort();
        *guard = Arc::new(ContractSnapshot { keys, by_key: map });
    }
}

/// How the relay's process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownMode {
    /// A normal stop: disenroll from every directory, drain, exit.
    Stop,
    /// Another process (a new version) took over the listeners and enrolled itself: drain
    /// and exit without disenrolling, so the relay never disappears from the directory.
    HandOver,
}

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Binding, loading, first enrollment.
    Starting,
    /// Serving.
    Running,
    /// No longer accepting; open streams finish.
    Draining,
}

/// A directory asked the relay to upgrade (heartbeat reply 202, protocol.md §8.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpgradeNotice {
    /// The version offered.
    #[serde(serialize_with = "ser_version")]
    pub version: semver::Version,
    /// The upgrade channel the relay follows.
    pub channel: String,
    /// The contract whose directory sent it.
    pub contract: String,
    /// The directory endpoint.
    pub directory: String,
    /// Unix seconds.
    pub received_at: i64,
}

fn ser_version<S: serde::Serializer>(v: &semver::Version, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// One contract's state for `/api/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContractStatus {
    /// Contract URL.
    pub url: String,
    /// Contract key once known (`id` in the original's status).
    pub id: Option<String>,
    /// Announced address.
    pub address: String,
    /// Role.
    pub role: Option<Role>,
    /// Upgrade channel announced with this contract.
    pub channel: Option<String>,
    /// Directory endpoint once known.
    pub directory: Option<String>,
    /// `live` (fetched now), `cached` (from the database), or `none`.
    pub info: &'static str,
    /// Enrolled (the last enroll or heartbeat succeeded and no disenroll since).
    pub enrolled: bool,
    /// Whether new streams are accepted.
    pub available: bool,
    /// A usage cap stopped this contract for the current window.
    pub network_cap_reached: bool,
    /// The cap in bytes, if any.
    pub network_cap: Option<u64>,
    /// Bytes used in the current window.
    pub network_usage: u64,
    /// Unix seconds of the last successful enroll or heartbeat.
    pub last_contact: Option<i64>,
    /// Failures since the last success.
    pub failures: u32,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// Shared by every part of a running relay.
pub struct Shared {
    /// The relay's identity.
    pub keypair: Keypair,
    /// Its public key.
    pub pubkey: PublicKey,
    settings: RwLock<Arc<Settings>>,
    /// Known contracts for the data path.
    pub contracts: ContractTable,
    /// Per contract URL, for status.
    pub contract_status: Mutex<BTreeMap<String, ContractStatus>>,
    /// The last upgrade notice.
    pub last_notice: Mutex<Option<UpgradeNotice>>,
    notices_tx: tokio::sync::mpsc::Sender<UpgradeNotice>,
    notices_rx: Mutex<Option<tokio::sync::mpsc::Receiver<UpgradeNotice>>>,
    phase: AtomicU8,
    mode: AtomicU8,
    /// Sharetokens refused (any reason) since start.
    pub refused_tokens: AtomicU64,
    /// The durable store.
    pub store: TokenStore,
    heartbeat_gate: RwLock<Option<HeartbeatGate>>,
}

/// Says whether heartbeats may be sent now (see [`Shared::set_heartbeat_gate`]).
pub type HeartbeatGate = Arc<dyn Fn() -> bool + Send + Sync>;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("pubkey", &self.pubkey)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// State for a relay with this identity and config.
    pub fn new(keypair: Keypair, config: &RelayConfig, store: TokenStore) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        Shared {
            pubkey: keypair.public(),
            keypair,
            settings: RwLock::new(Arc::new(Settings::of(config))),
            contracts: ContractTable::default(),
            contract_status: Mutex::new(BTreeMap::new()),
            last_notice: Mutex::new(None),
            notices_tx: tx,
            notices_rx: Mutex::new(Some(rx)),
            phase: AtomicU8::new(0),
            mode: AtomicU8::new(0),
            refused_tokens: AtomicU64::new(0),
            store,
            heartbeat_gate: RwLock::new(None),
        }
    }

    /// Installs the check made before each heartbeat (not before enrollment). During an
    /// upgrade two processes with one identity run at once; only the one in charge may
    /// heartbeat, or the old one would announce its old version after the new one enrolled.
    pub fn set_heartbeat_gate(&self, gate: HeartbeatGate) {
        *write(&self.heartbeat_gate) = Some(gate);
    }

    /// Whether a heartbeat may be sent now.
    pub fn may_heartbeat(&self) -> bool {
        read(&self.heartbeat_gate).as_ref().is_none_or(|g| g())
    }

    /// The current per-stream settings.
    pub fn settings(&self) -> Arc<Settings> {
        read(&self.settings).clone()
    }

    /// Replaces the per-stream settings (reload); open streams keep theirs.
    pub fn set_settings(&self, s: Settings) {
        *write(&self.settings) = Arc::new(s);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Starting,
            1 => Phase::Running,
            _ => Phase::Draining,
        }
    }

    /// Moves to `p`.
    pub fn set_phase(&self, p: Phase) {
        let v = match p {
            Phase::Starting => 0,
            Phase::Running => 1,
            Phase::Draining => 2,
        };
        self.phase.store(v, Ordering::Relaxed);
    }

    /// How the process will end when it is asked to stop.
    pub fn shutdown_mode(&self) -> ShutdownMode {
        match self.mode.load(Ordering::Relaxed) {
            0 => ShutdownMode::Stop,
            _ => ShutdownMode::HandOver,
        }
    }

    /// Decides how the process will end.
    pub fn set_shutdown_mode(&self, m: ShutdownMode) {
        let v = match m {
            ShutdownMode::Stop => 0,
            ShutdownMode::HandOver => 1,
        };
        self.mode.store(v, Ordering::Relaxed);
    }

    /// Updates one contract's status entry.
    pub fn with_status(&self, url: &str, f: impl FnOnce(&mut ContractStatus)) {
        let mut map = lock(&self.contract_status);
        let entry = map
            .entry(url.to_string())
            .or_insert_with(|| ContractStatus {
                url: url.to_string(),
                info: "none",
                ..ContractStatus::default()
            });
        f(entry);
    }

    /// Records an upgrade notice and hands it to whoever took the receiver; dropped with a
    /// log line if the previous ones are still unprocessed (as in the original).
    pub fn notify_upgrade(&self, notice: UpgradeNotice) {
        tracing::info!(
            version = %notice.version,
            channel = %notice.channel,
            contract = %notice.contract,
            "directory offers an upgrade"
        );
        *lock(&self.last_notice) = Some(notice.clone());
        if let Err(e) = self.notices_tx.try_send(notice) {
            tracing::debug!("upgrade notice not queued: {e}");
        }
    }

    /// The receiving end of the upgrade notices; `None` after the first call.
    pub fn take_upgrade_notices(&self) -> Option<tokio::sync::mpsc::Receiver<UpgradeNotice>> {
        lock(&self.notices_rx).take()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn table_updates_are_copy_on_write() {
        let t = ContractTable::default();
        let before = t.snapshot();
        let k = Keypair::from_seed([2; 32]).public();
        t.update(|m| {
            m.insert(
                k,
                ContractView {
                    url: "https://c".into(),
                    available: true,
                    cut: CancellationToken::new(),
                    meter: Arc::default(),
                },
            );
        });
        assert!(!before.available(&k));
        let after = t.snapshot();
        assert!(after.available(&k));
        assert_eq!(after.keys, vec![k]);
        t.update(|m| {
            if let Some(v) = m.get_mut(&k) {
                v.available = false;
            }
        });
        assert!(after.available(&k));
        assert!(!t.snapshot().available(&k));
    }

    #[tokio::test]
    async fn notices_are_bounded_and_recorded() {
        let db = wireleap_store::testing::sqlite().await.unwrap();
        let store = TokenStore::open(db.db.clone()).await.unwrap();
        let s = Shared::new(Keypair::from_seed([1; 32]), &RelayConfig::default(), store);
        let mut rx = s.take_upgrade_notices().unwrap();
        assert!(s.take_upgrade_notices().is_none());
        for minor in 0..20 {
            s.notify_upgrade(UpgradeNotice {
                version: semver::Version::new(0, minor, 0),
                channel: "default".into(),
                contract: "https://c".into(),
                directory: "https://d".into(),
                received_at: 1,
            });
        }
        let mut got = 0;
        while rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, 8);
        assert_eq!(
            lock(&s.last_notice).as_ref().unwrap().version,
            semver::Version::new(0, 19, 0)
        );
    }
}
