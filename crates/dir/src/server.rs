//! The directory's HTTP API and the state behind it (services.md §2, protocol.md §8–§11).
//!
//! - `GET /info`: directory `/info` with live counts, restricted roles, upgrade channels,
//!   plus the extension key `upgrade_failures` (omitted when there are none).
//! - `GET /relays[?role=R][&contract=C]`: live relays, body signed with the directory key.
//! - `POST /relays`: a heartbeat when the relay is live and sends the entry it enrolled with
//!   (answered 200 OK or 202 upgrade notice), otherwise an enrollment, checked in order:
//!   entry shape, signer = entry key, interface versions, role, enrollment key, proof of work
//!   (202 challenge first), address not taken, PING; then stored and listed (200 OK).
//! - `DELETE /relays`: disenrollment (200 OK, also when the relay was not listed).
//! - `POST /relays/upgrade-report`: a live relay reports a failed upgrade; it is shown in
//!   `/info` and that relay is not told about that version again.
//!
//! Every 2xx answer is a status object (a relay crashes on `null`, protocol.md §8.4).

use crate::challenge::{ChallengeError, ChallengeIssuer};
use crate::channels::{self, ChannelComponent, ChannelTable};
use crate::config::{rollout_basis_points, DirectoryConfig};
use crate::ping::{self, PingError};
use crate::registry::{proof_of, Proof, Registry};
use crate::store::{DirStore, DirStoreError, FailureRecord};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subtle::ConstantTimeEq as _;
use wireleap_api::server::{gate, RelayCaller, MAX_REQUEST_BYTES};
use wireleap_api::{ApiState, Signed, StatusReply};
use wireleap_daemon::CancellationToken;
use wireleap_proto::dirinfo::{DirInfo, Enrollment, RoleEnrollment, UpgradeChannels};
use wireleap_proto::keys::{Keypair, PublicKey, Signature};
use wireleap_proto::pow::{self, PowError};
use wireleap_proto::relayentry::{
    RelayEntry, RelayEntryError, Role, CHALLENGE_HEADER, RESPONSE_HEADER,
};
use wireleap_proto::relaylist::RelayList;
use wireleap_proto::request::{self, pubkey_header, signature_header};
use wireleap_proto::status::{Status, ToStatus};
use wireleap_proto::version::{
    self, Component, Interface, VersionError, RELAY_SOFTWARE_VERSION_HEADER,
};
use wireleap_proto::{dirinfo, json};

/// Longest upgrade failure reason kept (longer ones are cut).
pub const MAX_REASON_BYTES: usize = 1024;
/// How long failure reports are kept.
pub const FAILURE_RETENTION_SECS: i64 = 30 * 24 * 3600;
/// Failure reports shown per version in `/info`.
pub const FAILURES_SHOWN: usize = 10;
/// PING checks running at once; more enrollments wait.
pub const PING_CONCURRENCY: usize = 32;
/// bcrypt verifications running at once. Checking an answer costs the directory a full
/// bcrypt while a garbage answer costs the sender nothing (a weakness of the protocol's
/// PoW), so the CPU it can take is bounded.
pub const POW_CONCURRENCY: usize = 2;

/// Where "now" comes from: the system clock, or a settable one for tests.
#[derive(Debug, Clone)]
pub enum Clock {
    /// `SystemTime::now()` in unix seconds.
    System,
    /// A value the test moves.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// The current time in unix seconds.
    pub fn now(&self) -> i64 {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0),
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }
}

/// Why the directory could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] DirStoreError),
    /// A configured channel is unusable.
    #[error("upgrade channel {component}.{channel}: {reason}")]
    Channel {
        /// relay or client.
        component: ChannelComponent,
        /// Channel name.
        channel: String,
        /// What is wrong.
        reason: String,
    },
}

/// Why a relay request was refused; [`ToStatus`] maps each to the reply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The entry lacks a field or has a bad address.
    #[error(transparent)]
    Entry(#[from] RelayEntryError),
    /// The body's key is not the key that signed it.
    #[error("relay entry pubkey {body} is not the signing key {signer}")]
    PubkeyMismatch {
        /// Key named in the body.
        body: String,
        /// Key that signed.
        signer: String,
    },
    /// An interface version the directory needs is missing.
    #[error("relay entry has no {0} version")]
    MissingVersion(Interface),
    /// An interface version is incompatible.
    #[error("{interface} version: {source}")]
    Version {
        /// Which interface.
        interface: Interface,
        /// The mismatch.
        source: VersionError,
    },
    /// The role is not accepted here.
    #[error("role {0} is not accepted by this directory")]
    RoleNotAllowed(Role),
    /// Restricted role without a matching enrollment key.
    #[error("enrollment key is incorrect")]
    BadEnrollmentKey,
    /// The returned challenge is not ours, expired, or for someone else.
    #[error("proof of work: {0}")]
    Challenge(#[from] ChallengeError),
    /// The proof of work does not verify.
    #[error("proof of work: {0}")]
    Pow(#[from] PowError),
    /// The relay did not answer PING as itself.
    #[error("reachability check failed: {0}")]
    Ping(#[from] PingError),
    /// Another live relay is listed with this address.
    #[error("address {address} is already listed for relay {holder}")]
    AddressTaken {
        /// The address.
        address: String,
        /// The relay holding it.
        holder: String,
    },
    /// The configured relay limit is reached.
    #[error("the directory is full ({0} relays enrolled)")]
    Full(usize),
    /// An upgrade report from a relay that is not enrolled.
    #[error("relay {0} is not enrolled")]
    NotEnrolled(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] DirStoreError),
    /// A blocking task failed.
    #[error("internal: {0}")]
    Internal(String),
}

impl ToStatus for RequestError {
    fn to_status(&self) -> Status {
        match self {
            RequestError::BadEnrollmentKey => Status::bad_enrollment_key(),
            RequestError::Entry(_)
            | RequestError::MissingVersion(_)
            | RequestError::Version { .. }
            | RequestError::Ping(_) => Status::bad_request().with_cause(self.to_string()),
            RequestError::PubkeyMismatch { .. }
            | RequestError::RoleNotAllowed(_)
            | RequestError::Challenge(_)
            | RequestError::Pow(_)
            | RequestError::Full(_)
            | RequestError::NotEnrolled(_) => Status::forbidden().with_cause(self.to_string()),
            RequestError::AddressTaken { .. } => Status::conflict().with_cause(self.to_string()),
            // Details stay in the log.
            RequestError::Store(_) | RequestError::Internal(_) => Status::internal(),
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        if matches!(self, RequestError::Store(_) | RequestError::Internal(_)) {
            tracing::error!(error = %self, "request failed");
        }
        StatusReply(self.to_status()).into_response()
    }
}

/// A relay's report that an upgrade failed (extension; relay-signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReport {
    /// The reporting relay (must be the signer).
    pub pubkey: PublicKey,
    /// The version it could not upgrade to.
    #[serde(with = "version::serde_strict")]
    pub version: semver::Version,
    /// What went wrong.
    #[serde(default)]
    pub reason: String,
}

/// `/info` extension: failed upgrades per version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureSummary {
    /// Relays that reported a failure for this version.
    pub count: usize,
    /// The most recent reports.
    pub recent: Vec<FailureView>,
}

/// One failure report as shown in `/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureView {
    /// The relay.
    pub pubkey: PublicKey,
    /// Its explanation.
    pub reason: String,
    /// When, unix seconds.
    pub reported_at: i64,
}

/// Name of the `/info` extension key.
pub const UPGRADE_FAILURES_KEY: &str = "upgrade_failures";

struct State_ {
    identity: Keypair,
    config: RwLock<Arc<DirectoryConfig>>,
    store: DirStore,
    registry: Registry,
    channels: RwLock<Arc<ChannelTable>>,
    failures: RwLock<HashMap<(PublicKey, semver::Version), FailureRecord>>,
    ping_slots: tokio::sync::Semaphore,
    pow_slots: tokio::sync::Semaphore,
    clock: Clock,
}

/// A running directory's state; clone freely (shared).
#[derive(Clone)]
pub struct DirServer {
    state: Arc<State_>,
}

impl std::fmt::Debug for DirServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirServer")
            .field("public_key", &self.state.identity.public())
            .field("relays", &self.state.registry.len())
            .finish_non_exhaustive()
    }
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn write<T>(lock: &RwLock<T>, value: T) {
    *lock.write().unwrap_or_else(|p| p.into_inner()) = value;
}

/// Copies the config's channels into the store where the store has none of that name.
pub async fn seed_channels(
    store: &DirStore,
    config: &DirectoryConfig,
    now: i64,
) -> Result<(), DirError> {
    for (component, channels) in [
        (ChannelComponent::Relay, &config.upgrade_channels.relay),
        (ChannelComponent::Client, &config.upgrade_channels.client),
    ] {
        for (name, ch) in channels {
            let bp =
                rollout_basis_points(ch.rollout_percent).map_err(|reason| DirError::Channel {
                    component,
                    channel: name.clone(),
                    reason,
                })?;
            if store
                .seed_channel(component, name, &ch.version, bp, now)
                .await?
            {
                tracing::info!(%component, channel = %name, version = %ch.version, rollout_bp = bp, "upgrade channel created from config");
            }
        }
    }
    Ok(())
}

impl DirServer {
    /// Opens the directory on `store`: migrates, creates configured channels the database
    /// does not have, and loads live relays, channels and failure reports.
    pub async fn open(
        config: DirectoryConfig,
        identity: Keypair,
        store: DirStore,
        clock: Clock,
    ) -> Result<Self, DirError> {
        let now = clock.now();
        seed_channels(&store, &config, now).await?;
        let table = store.channels().await?;
        let ttl = config.relay_ttl.as_secs();
        let relays = store.live_relays(now.saturating_sub(ttl)).await?;
        let registry = Registry::new();
        let loaded = relays.len();
        registry.resync(relays.into_iter().map(|r| (r.entry, r.last_seen)));
        let failures = store
            .failures()
            .await?
            .into_iter()
            .map(|f| ((f.pubkey, f.version.clone()), f))
            .collect();
        tracing::info!(
            relays = loaded,
            relay_channels = table.relay.len(),
            "directory state loaded"
        );
        Ok(DirServer {
            state: Arc::new(State_ {
                identity,
                config: RwLock::new(Arc::new(config)),
                store,
                registry,
                channels: RwLock::new(Arc::new(table)),
                failures: RwLock::new(failures),
                ping_slots: tokio::sync::Semaphore::new(PING_CONCURRENCY),
                pow_slots: tokio::sync::Semaphore::new(POW_CONCURRENCY),
                clock,
            }),
        })
    }

    /// The HTTP routes, behind the version gate and idempotency cache.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/info", get(info))
            .route("/relays", get(list).post(enroll).delete(disenroll))
            .route("/relays/upgrade-report", post(upgrade_report))
            .fallback(|| async { StatusReply(Status::not_found()) })
            .with_state(self.clone())
            .layer(axum::middleware::from_fn_with_state(
                ApiState::new(&[Interface::ClientDir, Interface::RelayDir]),
                gate,
            ))
    }

    /// The directory's public key.
    pub fn public_key(&self) -> PublicKey {
        self.state.identity.public()
    }

    /// The store.
    pub fn store(&self) -> &DirStore {
        &self.state.store
    }

    /// The live relays.
    pub fn registry(&self) -> &Registry {
        &self.state.registry
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<DirectoryConfig> {
        read(&self.state.config)
    }

    /// The channel table in force.
    pub fn channels(&self) -> Arc<ChannelTable> {
        read(&self.state.channels)
    }

    fn now(&self) -> i64 {
        self.state.clock.now()
    }

    fn ttl(&self) -> i64 {
        self.config().relay_ttl.as_secs()
    }

    /// Applies a reloaded config. Settings that need a restart (listen address, endpoint,
    /// database, TLS, timer intervals, the upgrade agent's settings) keep their old values, with a warning; new channels
    /// in the config are created.
    pub async fn reload(&self, new: DirectoryConfig) -> Result<(), DirError> {
        let old = self.config();
        let mut next = new;
        macro_rules! keep {
            ($($field:ident),*) => {$(
                if next.$field != old.$field {
                    tracing::warn!(key = stringify!($field), "changing this setting takes effect on restart");
                    next.$field = old.$field.clone();
                }
            )*};
        }
        keep!(
            address,
            endpoint,
            database,
            tls,
            heartbeat_flush_interval,
            channel_refresh_interval,
            upgrade
        );
        seed_channels(&self.state.store, &next, self.now()).await?;
        write(&self.state.config, Arc::new(next));
        self.refresh_channels().await?;
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Writes heartbeat times kept in memory to the database; returns how many.
    pub async fn flush(&self) -> Result<usize, DirStoreError> {
        let beats = self.state.registry.take_dirty();
        if let Err(e) = self.state.store.touch_many(&beats).await {
            self.state.registry.requeue(&beats);
            return Err(e);
        }
        Ok(beats.len())
    }

    /// Drops expired relays from memory and the database, and old failure reports.
    pub async fn purge(&self) -> Result<(), DirStoreError> {
        let now = self.now();
        let ttl = self.ttl();
        let gone = self.state.registry.expire(now, ttl);
        if !gone.is_empty() {
            tracing::info!(
                count = gone.len(),
                "relays expired (no heartbeat within relay_ttl)"
            );
        }
        self.flush().await?;
        self.state
            .store
            .purge_expired(now.saturating_sub(ttl))
            .await?;
        let cutoff = now.saturating_sub(FAILURE_RETENTION_SECS);
        if self.state.store.purge_failures(cutoff).await? > 0 {
            self.state
                .failures
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, f| f.reported_at >= cutoff);
        }
        Ok(())
    }

    /// Re-reads the live relays from the database into memory, after a successor that
    /// served from the same database was rolled back and this process is in charge again:
    /// relays that enrolled or disenrolled through the successor are known at once instead
    /// of after a restart.
    pub async fn resync(&self) -> Result<(), DirStoreError> {
        self.flush().await?;
        let now = self.now();
        let relays = self
            .state
            .store
            .live_relays(now.saturating_sub(self.ttl()))
            .await?;
        let (added, dropped) = self
            .state
            .registry
            .resync(relays.into_iter().map(|r| (r.entry, r.last_seen)));
        tracing::info!(
            added,
            dropped,
            relays = self.state.registry.len(),
            "relay registry re-read from the database"
        );
        Ok(())
    }

    /// Re-reads the channel table (picks up `wireleap-dir channel set`).
    pub async fn refresh_channels(&self) -> Result<(), DirStoreError> {
        let table = self.state.store.channels().await?;
        let old = self.channels();
        if *old != table {
            for (name, ch) in &table.relay {
                if old.relay.get(name) != Some(ch) {
                    tracing::info!(channel = %name, version = %ch.version, rollout_bp = ch.rollout_bp, "relay upgrade channel changed");
                }
            }
            write(&self.state.channels, Arc::new(table));
        }
        Ok(())
    }

    /// Runs the periodic work (heartbeat flush, expiry purge, channel refresh) until
    /// `shutdown`, then flushes once more.
    pub fn spawn_background(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let cfg = this.config();
            let every = |d: wireleap_proto::duration::Duration| {
                let mut i = tokio::time::interval(d.to_std().max(Duration::from_millis(10)));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            };
            let mut flush = every(cfg.heartbeat_flush_interval);
            let purge_every = cfg
                .relay_ttl
                .to_std()
                .min(Duration::from_secs(60))
                .max(Duration::from_secs(1));
            let mut purge = tokio::time::interval(purge_every);
            purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut channels = every(cfg.channel_refresh_interval);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = flush.tick() => {
                        if let Err(e) = this.flush().await {
                            tracing::warn!(error = %e, "heartbeat flush failed; will retry");
                        }
                    }
                    _ = purge.tick() => {
                        if let Err(e) = this.purge().await {
                            tracing::warn!(error = %e, "purging expired relays failed; will retry");
                        }
                    }
                    _ = channels.tick() => {
                        if let Err(e) = this.refresh_channels().await {
                            tracing::warn!(error = %e, "reading upgrade channels failed; keeping the last ones");
                        }
                    }
                }
            }
            match this.flush().await {
                Ok(n) => tracing::debug!(heartbeats = n, "final heartbeat flush"),
                Err(e) => tracing::warn!(error = %e, "final heartbeat flush failed"),
            }
        })
    }

    /// The `/info` object with its extension, as sent.
    pub fn info_body(&self) -> Vec<u8> {
        let cfg = self.config();
        let now = self.now();
        let counts = self.state.registry.counts(now, cfg.relay_ttl.as_secs());
        let mut enrollment = Enrollment::default();
        for (i, role) in Role::ALL.into_iter().enumerate() {
            *enrollment.get_mut(role) = RoleEnrollment {
                count: counts[i],
                // A role closed to enrollment is reported as restricted too: nobody can
                // enroll in it without something they do not have.
                restricted: !cfg.roles.contains(&role)
                    || cfg
                        .enrollment_keys
                        .get(&role)
                        .is_some_and(|k| !k.is_empty()),
            };
        }
        let table = self.channels();
        let info = DirInfo {
            public_key: Some(self.public_key()),
            version: wireleap_upgrade::daemon::software(env!("CARGO_PKG_VERSION")),
            endpoint: Some(cfg.endpoint.clone()),
            info: cfg.info.clone(),
            enrollment,
            // Relays ≤ 0.4 read the flat map.
            update_channels: table.versions(ChannelComponent::Relay),
            upgrade_channels: UpgradeChannels {
                relay: table.versions(ChannelComponent::Relay),
                client: table.versions(ChannelComponent::Client),
            },
        };
        let mut body = info.to_json();
        let summary = self.failure_summary();
        if !summary.is_empty() {
            if let (Some(b'}'), Ok(ext)) = (body.last(), json::to_vec(&summary)) {
                body.pop();
                body.extend_from_slice(format!(",\"{UPGRADE_FAILURES_KEY}\":").as_bytes());
                body.extend_from_slice(&ext);
                body.push(b'}');
            }
        }
        body
    }

    /// Failure reports grouped by version, newest first.
    pub fn failure_summary(&self) -> BTreeMap<String, FailureSummary> {
        let failures = self
            .state
            .failures
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut by_version: BTreeMap<String, Vec<&FailureRecord>> = BTreeMap::new();
        for f in failures.values() {
            by_version.entry(f.version.to_string()).or_default().push(f);
        }
        by_version
            .into_iter()
            .map(|(v, mut recs)| {
                recs.sort_by(|a, b| {
                    b.reported_at
                        .cmp(&a.reported_at)
                        .then(a.pubkey.cmp(&b.pubkey))
                });
                let summary = FailureSummary {
                    count: recs.len(),
                    recent: recs
                        .iter()
                        .take(FAILURES_SHOWN)
                        .map(|f| FailureView {
                            pubkey: f.pubkey,
                            reason: f.reason.clone(),
                            reported_at: f.reported_at,
                        })
                        .collect(),
                };
                (v, summary)
            })
            .collect()
    }

    fn failed(&self, relay: &PublicKey, version: &semver::Version) -> bool {
        self.state
            .failures
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&(*relay, version.clone()))
    }

    /// The reply to a heartbeat of `entry` (already known live): the upgrade notice when
    /// due, else OK.
    fn heartbeat_reply(
        &self,
        pubkey: &PublicKey,
        entry: &RelayEntry,
        software: Option<&semver::Version>,
    ) -> Status {
        let table = self.channels();
        let channel = entry.channel().unwrap_or(dirinfo::DEFAULT_CHANNEL);
        match channels::upgrade_target(&table, channel, pubkey, software, |t| {
            self.failed(pubkey, t)
        }) {
            Some(target) => {
                tracing::debug!(relay = %pubkey, %channel, running = ?software.map(ToString::to_string), %target, "upgrade notice sent");
                Status::upgrade(&target)
            }
            None => Status::ok(),
        }
    }

    /// Runs every enrollment check that needs no proof of work or network: versions, role,
    /// enrollment key, capacity.
    fn check_enrollment(
        &self,
        entry: &RelayEntry,
        cfg: &DirectoryConfig,
    ) -> Result<(), RequestError> {
        for (interface, v) in [
            (Interface::ClientRelay, &entry.versions.client_relay),
            (Interface::RelayRelay, &entry.versions.relay_relay),
        ] {
            let v = v.as_ref().ok_or(RequestError::MissingVersion(interface))?;
            interface
                .check(&v.to_string())
                .map_err(|source| RequestError::Version { interface, source })?;
        }
        // The relay-dir header is checked by the gate; a body value must agree too.
        if let Some(v) = &entry.versions.relay_dir {
            Interface::RelayDir
                .check(&v.to_string())
                .map_err(|source| RequestError::Version {
                    interface: Interface::RelayDir,
                    source,
                })?;
        }
        let role = entry.role.ok_or(RelayEntryError::MissingRole)?;
        if !cfg.roles.contains(&role) {
            return Err(RequestError::RoleNotAllowed(role));
        }
        if let Some(keys) = cfg.enrollment_keys.get(&role).filter(|k| !k.is_empty()) {
            let given = entry.key.as_deref().unwrap_or_default().as_bytes();
            // Compare against every key, without stopping early, in constant time each.
            let ok = keys
                .iter()
                .fold(0u8, |acc, k| acc | k.as_bytes().ct_eq(given).unwrap_u8());
            if ok != 1 {
                return Err(RequestError::BadEnrollmentKey);
            }
        }
        if self.state.registry.len() >= cfg.max_relays {
            return Err(RequestError::Full(cfg.max_relays));
        }
        Ok(())
    }
}

fn software_version(entry: &RelayEntry, headers: &HeaderMap) -> Option<semver::Version> {
    entry.versions.software.clone().or_else(|| {
        headers
            .get(RELAY_SOFTWARE_VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| version::parse_strict(v).ok())
    })
}

fn signer_is_entry_key(signer: &PublicKey, entry: &RelayEntry) -> Result<PublicKey, RequestError> {
    let body = entry.pubkey.ok_or(RelayEntryError::MissingPubkey)?;
    if body != *signer {
        return Err(RequestError::PubkeyMismatch {
            body: body.to_b64(),
            signer: signer.to_b64(),
        });
    }
    Ok(body)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

async fn info(State(s): State<DirServer>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        s.info_body(),
    )
        .into_response()
}

async fn list(
    State(s): State<DirServer>,
    query: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return StatusReply(Status::bad_request().with_cause("unreadable query string"))
            .into_response();
    };
    let role = match query.get("role").map(String::as_str) {
        None | Some("") => None,
        Some(r) => match r.parse::<Role>() {
            Ok(role) => Some(role),
            Err(e) => {
                return StatusReply(Status::bad_request().with_cause(e.to_string())).into_response()
            }
        },
    };
    let cfg = s.config();
    let foreign_contract = query.get("contract").is_some_and(|c| {
        !cfg.contract
            .as_ref()
            .is_some_and(|ours| *c == ours.public_key.to_b64() || *c == ours.endpoint)
    });
    let identity = &s.state.identity;
    let signed = if foreign_contract {
        // One directory serves one contract: it lists nobody for another.
        let (body, headers) = RelayList::default().sign(identity);
        Arc::new(crate::registry::SignedList {
            body: body.into(),
            headers,
            count: 0,
        })
    } else {
        s.state
            .registry
            .list(role, s.now(), cfg.relay_ttl.as_secs(), |l| l.sign(identity))
    };
    let mut resp = (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        signed.body.clone(),
    )
        .into_response();
    for (name, value) in &signed.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            resp.headers_mut().insert(*name, v);
        }
    }
    resp
}

fn challenge_reply(challenge: &str) -> Response {
    let mut resp = StatusReply(Status::challenge()).into_response();
    if let Ok(v) = HeaderValue::from_str(challenge) {
        resp.headers_mut().insert(CHALLENGE_HEADER, v);
    }
    resp
}

/// Reads the body of a relay request (bounded like the API crate's extractors).
fn read_limit(body: Result<Bytes, BytesRejection>) -> Result<Bytes, StatusReply> {
    let body = body.map_err(|e| StatusReply(Status::bad_request().with_cause(e.body_text())))?;
    if body.len() > MAX_REQUEST_BYTES {
        return Err(StatusReply(
            Status::new(413, "request entity too large").with_cause(format!(
                "request body larger than {MAX_REQUEST_BYTES} bytes"
            )),
        ));
    }
    Ok(body)
}

/// The proof of a request's signature header and body, if the headers are well-formed.
fn request_proof(headers: &HeaderMap, body: &[u8]) -> Option<(PublicKey, Proof)> {
    let pk = PublicKey::from_b64(header(headers, pubkey_header(Component::Relay))?).ok()?;
    let sig = Signature::from_b64(header(headers, signature_header(Component::Relay))?).ok()?;
    Some((pk, proof_of(&sig.0, body)))
}

/// `POST /relays`. Not the API crate's `Signed` extractor: a heartbeat that repeats the
/// exact bytes of a request already verified for a live relay skips signature verification
/// and decoding (see [`Registry::heartbeat_seen`]); ed25519 verification is most of the
/// cost of a heartbeat otherwise.
async fn enroll(
    State(s): State<DirServer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let body = read_limit(body).map_err(IntoResponse::into_response)?;
    let cfg = s.config();
    let ttl = cfg.relay_ttl.as_secs();
    let now = s.now();
    let proof = request_proof(&headers, &body);
    if let Some((pk, p)) = &proof {
        if let Some(entry) = s.state.registry.heartbeat_seen(pk, p, now, ttl) {
            let software = software_version(&entry, &headers);
            return Ok(
                StatusReply(s.heartbeat_reply(pk, &entry, software.as_ref())).into_response(),
            );
        }
    }
    let signer = request::verify_body(Component::Relay, &headers, &body)
        .map_err(|e| StatusReply(e.to_status()).into_response())?;
    let entry: RelayEntry = json::from_slice(&body).map_err(|e| {
        StatusReply(Status::bad_request().with_cause(format!("invalid JSON body: {e}")))
            .into_response()
    })?;
    let proof = proof.map(|(_, p)| p);
    enroll_verified(s, headers, signer, entry, proof, cfg, now)
        .await
        .map_err(IntoResponse::into_response)
}

async fn enroll_verified(
    s: DirServer,
    headers: HeaderMap,
    signer: PublicKey,
    entry: RelayEntry,
    proof: Option<Proof>,
    cfg: Arc<DirectoryConfig>,
    now: i64,
) -> Result<Response, RequestError> {
    let ttl = cfg.relay_ttl.as_secs();
    entry.validate()?;
    let pubkey = signer_is_entry_key(&signer, &entry)?;
    let software = software_version(&entry, &headers);

    if s.state.registry.heartbeat(&pubkey, &entry, proof, now, ttl) {
        return Ok(
            StatusReply(s.heartbeat_reply(&pubkey, &entry, software.as_ref())).into_response(),
        );
    }

    s.check_enrollment(&entry, &cfg)?;

    if cfg.pow_cost > 0 {
        let issuer =
            ChallengeIssuer::from_identity(&s.state.identity, cfg.pow_challenge_ttl.as_secs());
        match (
            header(&headers, CHALLENGE_HEADER),
            header(&headers, RESPONSE_HEADER),
        ) {
            (Some(challenge), Some(response)) => {
                issuer.check(challenge, &pubkey, cfg.pow_cost, now)?;
                let (c, r) = (challenge.to_string(), response.to_string());
                let _slot = s
                    .state
                    .pow_slots
                    .acquire()
                    .await
                    .map_err(|e| RequestError::Internal(e.to_string()))?;
                // bcrypt is CPU work: off the async workers. The cost was checked above, so
                // the work is bounded by our own setting.
                tokio::task::spawn_blocking(move || pow::verify_with_cost(&c, &r))
                    .await
                    .map_err(|e| RequestError::Internal(e.to_string()))??;
            }
            _ => {
                let challenge = issuer.issue(cfg.pow_cost, &pubkey, now);
                tracing::debug!(relay = %pubkey, "proof of work demanded");
                return Ok(challenge_reply(&challenge));
            }
        }
    }

    let holder = s.state.registry.address_holder(&entry, &pubkey, now, ttl);
    if cfg.ping_check {
        let address = entry
            .address
            .as_ref()
            .ok_or(RelayEntryError::MissingAddress)?;
        let _slot = s
            .state
            .ping_slots
            .acquire()
            .await
            .map_err(|e| RequestError::Internal(e.to_string()))?;
        ping::ping_relay(address, &pubkey, cfg.ping_timeout.to_std()).await?;
    } else if let Some(holder) = holder {
        // Without PING nothing proves the new relay owns the address: keep the first one.
        return Err(RequestError::AddressTaken {
            address: entry
                .address
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            holder: holder.to_b64(),
        });
    }

    // Time passed during PING; enrollment counts from when it completes.
    let now = s.now();
    s.state.store.upsert_relay(&entry, now).await?;
    if let Some(holder) = holder {
        // The PING just proved the address answers with the new relay's key.
        tracing::info!(relay = %pubkey, replaced = %holder, "address taken over");
        s.state.store.remove_relay(&holder).await?;
        s.state.registry.remove(&holder);
    }
    tracing::info!(
        relay = %pubkey,
        role = ?entry.role.map(Role::as_str),
        address = ?entry.address.as_ref().map(ToString::to_string),
        software = ?software.as_ref().map(ToString::to_string),
        "relay enrolled"
    );
    s.state.registry.insert(entry, proof, now);
    Ok(StatusReply(Status::ok()).into_response())
}

async fn disenroll(
    State(s): State<DirServer>,
    signed: Signed<RelayEntry, RelayCaller>,
) -> Result<Response, RequestError> {
    let pubkey = signer_is_entry_key(&signed.signer, &signed.body)?;
    let stored = s.state.store.remove_relay(&pubkey).await?;
    let listed = s.state.registry.remove(&pubkey);
    if stored || listed {
        tracing::info!(relay = %pubkey, "relay disenrolled");
    }
    Ok(StatusReply(Status::ok()).into_response())
}

fn truncate_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut cut = MAX_REASON_BYTES;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}

async fn upgrade_report(
    State(s): State<DirServer>,
    signed: Signed<UpgradeReport, RelayCaller>,
) -> Result<Response, RequestError> {
    let report = signed.body;
    if report.pubkey != signed.signer {
        return Err(RequestError::PubkeyMismatch {
            body: report.pubkey.to_b64(),
            signer: signed.signer.to_b64(),
        });
    }
    let now = s.now();
    // Only relays the directory lists may write into /info.
    if !s.state.registry.is_live(&report.pubkey, now, s.ttl()) {
        return Err(RequestError::NotEnrolled(report.pubkey.to_b64()));
    }
    let rec = FailureRecord {
        pubkey: report.pubkey,
        version: report.version,
        reason: truncate_reason(report.reason),
        reported_at: now,
    };
    s.state.store.record_failure(&rec).await?;
    tracing::warn!(relay = %rec.pubkey, version = %rec.version, reason = %rec.reason, "relay reports a failed upgrade");
    s.state
        .failures
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert((rec.pubkey, rec.version.clone()), rec);
    Ok(StatusReply(Status::ok()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_on_char_boundaries() {
        let long = "é".repeat(MAX_REASON_BYTES);
        let cut = truncate_reason(long);
        assert!(cut.len() <= MAX_REASON_BYTES);
        assert!(cut.len() >= MAX_REASON_BYTES - 1);
        assert_eq!(truncate_reason("short".into()), "short");
    }

    #[test]
    fn refusals_map_to_statuses() {
        assert_eq!(
            RequestError::BadEnrollmentKey.to_status(),
            Status::bad_enrollment_key()
        );
        assert_eq!(
            RequestError::RoleNotAllowed(Role::Backing).to_status().code,
            403
        );
        assert_eq!(
            RequestError::AddressTaken {
                address: "a".into(),
                holder: "b".into()
            }
            .to_status()
            .code,
            409
        );
        assert_eq!(
            RequestError::MissingVersion(Interface::ClientRelay)
                .to_status()
                .code,
            400
        );
        assert_eq!(
            RequestError::Internal("x".into()).to_status(),
            Status::internal()
        );
    }
}
