//! The directory's durable state on `wireleap_store::Db` (SQLite or PostgreSQL): enrolled
//! relays, the upgrade channel table, and reported upgrade failures.
//!
//! Enrollment and disenrollment are written before the relay gets its answer. Heartbeat
//! timestamps are not: the registry keeps them in memory and hands them here in batches
//! ([`DirStore::touch_many`], one transaction), because a heartbeat only moves a timestamp
//! and one fsync'ed transaction per heartbeat would cap the directory at the disk's sync
//! rate. Losing the last few seconds of timestamps in a crash only makes relays look a
//! little older after the restart.
//!
//! The channel table is the one place where the operator's `channel set` and a running
//! directory meet: the command writes it, the directory re-reads it periodically.

use crate::channels::{Channel, ChannelComponent, ChannelTable};
use sqlx::Row as _;
use wireleap_proto::keys::PublicKey;
use wireleap_proto::relayentry::RelayEntry;
use wireleap_proto::version;
use wireleap_store::{Compat, Db, Migration, StoreError};

/// The schema owner name in `wireleap_schema`.
pub const COMPONENT: &str = "wireleap-dir";

/// The directory's schema steps, for both backends.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "relays, upgrade channels, upgrade failures",
    // Creates every table: nothing before it can use the database.
    compat: Compat::Breaking,
    sqlite: "CREATE TABLE dir_relays (
        pubkey TEXT PRIMARY KEY NOT NULL,
        role TEXT NOT NULL,
        address TEXT NOT NULL,
        entry TEXT NOT NULL,
        enrolled_at BIGINT NOT NULL,
        last_seen BIGINT NOT NULL
    );
    CREATE INDEX dir_relays_last_seen ON dir_relays (last_seen);
    CREATE TABLE dir_channels (
        component TEXT NOT NULL,
        channel TEXT NOT NULL,
        version TEXT NOT NULL,
        rollout_bp BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (component, channel)
    );
    CREATE TABLE dir_upgrade_failures (
        pubkey TEXT NOT NULL,
        version TEXT NOT NULL,
        reason TEXT NOT NULL,
        reported_at BIGINT NOT NULL,
        PRIMARY KEY (pubkey, version)
    );
    ",
    postgres: "CREATE TABLE dir_relays (
        pubkey TEXT PRIMARY KEY NOT NULL,
        role TEXT NOT NULL,
        address TEXT NOT NULL,
        entry TEXT NOT NULL,
        enrolled_at BIGINT NOT NULL,
        last_seen BIGINT NOT NULL
    );
    CREATE INDEX dir_relays_last_seen ON dir_relays (last_seen);
    CREATE TABLE dir_channels (
        component TEXT NOT NULL,
        channel TEXT NOT NULL,
        version TEXT NOT NULL,
        rollout_bp BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (component, channel)
    );
    CREATE TABLE dir_upgrade_failures (
        pubkey TEXT NOT NULL,
        version TEXT NOT NULL,
        reason TEXT NOT NULL,
        reported_at BIGINT NOT NULL,
        PRIMARY KEY (pubkey, version)
    );
    ",
}];

/// A storage failure of the directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirStoreError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An entry to be stored has no public key, role or address.
    #[error("relay entry cannot be stored: {0}")]
    Incomplete(&'static str),
}

fn q(context: &'static str) -> impl FnOnce(sqlx::Error) -> DirStoreError {
    move |e| DirStoreError::Store(StoreError::query(context)(e))
}

/// An enrolled relay as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRelay {
    /// The entry as accepted at enrollment (enrollment key included).
    pub entry: RelayEntry,
    /// When it was (last) enrolled, unix seconds.
    pub enrolled_at: i64,
    /// Its last heartbeat as flushed, unix seconds.
    pub last_seen: i64,
}

/// A relay's report that upgrading to a version failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    /// The reporting relay.
    pub pubkey: PublicKey,
    /// The version it could not upgrade to.
    pub version: semver::Version,
    /// Its explanation.
    pub reason: String,
    /// When it reported, unix seconds.
    pub reported_at: i64,
}

/// The directory's tables on a shared database handle.
#[derive(Debug, Clone)]
pub struct DirStore {
    db: Db,
}

impl DirStore {
    /// Applies the directory's migrations and returns the store.
    pub async fn open(db: Db) -> Result<Self, DirStoreError> {
        db.migrate(COMPONENT, MIGRATIONS).await?;
        Ok(DirStore { db })
    }

    /// The underlying handle.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Records an enrollment (new, or replacing the relay's previous entry).
    pub async fn upsert_relay(&self, entry: &RelayEntry, now: i64) -> Result<(), DirStoreError> {
        let pubkey = entry
            .pubkey
            .ok_or(DirStoreError::Incomplete("no public key"))?;
        let role = entry.role.ok_or(DirStoreError::Incomplete("no role"))?;
        let address = entry
            .address
            .as_ref()
            .ok_or(DirStoreError::Incomplete("no address"))?;
        let body = String::from_utf8_lossy(&entry.to_body()).into_owned();
        sqlx::query(
            "INSERT INTO dir_relays (pubkey, role, address, entry, enrolled_at, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (pubkey) DO UPDATE SET role = excluded.role, \
             address = excluded.address, entry = excluded.entry, \
             enrolled_at = excluded.enrolled_at, last_seen = excluded.last_seen",
        )
        .bind(pubkey.to_b64())
        .bind(role.as_str())
        .bind(address.as_str())
        .bind(body)
        .bind(now)
        .bind(now)
        .execute(self.db.pool())
        .await
        .map_err(q("storing an enrollment"))?;
        Ok(())
    }

    /// Removes a relay; `true` if it was stored.
    pub async fn remove_relay(&self, pubkey: &PublicKey) -> Result<bool, DirStoreError> {
        let done = sqlx::query("DELETE FROM dir_relays WHERE pubkey = $1")
            .bind(pubkey.to_b64())
            .execute(self.db.pool())
            .await
            .map_err(q("removing a relay"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets one relay's heartbeat time in its own transaction (the unbatched path, used as
    /// the benchmark baseline); `true` if the relay is stored.
    pub async fn touch(&self, pubkey: &PublicKey, last_seen: i64) -> Result<bool, DirStoreError> {
        let done = sqlx::query("UPDATE dir_relays SET last_seen = $1 WHERE pubkey = $2")
            .bind(last_seen)
            .bind(pubkey.to_b64())
            .execute(self.db.pool())
            .await
            .map_err(q("recording a heartbeat"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Writes many heartbeat times in one transaction. A time older than the stored one is
    /// ignored: during an upgrade hand-over two directory processes flush into the same
    /// database, and the old one's last beats must not undo the new one's.
    pub async fn touch_many(&self, beats: &[(PublicKey, i64)]) -> Result<(), DirStoreError> {
        if beats.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .db
            .pool()
            .begin()
            .await
            .map_err(q("starting a heartbeat flush"))?;
        for (pubkey, last_seen) in beats {
            sqlx::query(
                "UPDATE dir_relays SET last_seen = $1 WHERE pubkey = $2 AND last_seen < $1",
            )
            .bind(*last_seen)
            .bind(pubkey.to_b64())
            .execute(&mut *tx)
            .await
            .map_err(q("flushing heartbeats"))?;
        }
        tx.commit()
            .await
            .map_err(q("committing a heartbeat flush"))?;
        Ok(())
    }

    /// Relays whose last flushed heartbeat is at or after `since`. Rows whose entry no
    /// longer parses are skipped with a warning, never fatal.
    pub async fn live_relays(&self, since: i64) -> Result<Vec<StoredRelay>, DirStoreError> {
        let rows = sqlx::query(
            "SELECT pubkey, entry, enrolled_at, last_seen FROM dir_relays WHERE last_seen >= $1",
        )
        .bind(since)
        .fetch_all(self.db.pool())
        .await
        .map_err(q("loading enrolled relays"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let pubkey: String = row.try_get("pubkey").map_err(q("reading a relay row"))?;
            let entry: String = row.try_get("entry").map_err(q("reading a relay row"))?;
            let enrolled_at: i64 = row
                .try_get("enrolled_at")
                .map_err(q("reading a relay row"))?;
            let last_seen: i64 = row.try_get("last_seen").map_err(q("reading a relay row"))?;
            match RelayEntry::from_body(entry.as_bytes()) {
                Ok(e) if e.pubkey.map(|k| k.to_b64()).as_deref() == Some(pubkey.as_str()) => out
                    .push(StoredRelay {
                        entry: e,
                        enrolled_at,
                        last_seen,
                    }),
                Ok(_) => tracing::warn!(relay = %pubkey, "stored entry names another key; skipped"),
                Err(e) => {
                    tracing::warn!(relay = %pubkey, error = %e, "stored entry unreadable; skipped")
                }
            }
        }
        Ok(out)
    }

    /// Number of stored relay rows (expired ones included until purged).
    pub async fn relay_rows(&self) -> Result<i64, DirStoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM dir_relays")
            .fetch_one(self.db.pool())
            .await
            .map_err(q("counting relays"))?;
        row.try_get("n").map_err(q("counting relays"))
    }

    /// Deletes relays whose last heartbeat is before `before`; returns how many.
    pub async fn purge_expired(&self, before: i64) -> Result<u64, DirStoreError> {
        let done = sqlx::query("DELETE FROM dir_relays WHERE last_seen < $1")
            .bind(before)
            .execute(self.db.pool())
            .await
            .map_err(q("purging expired relays"))?;
        Ok(done.rows_affected())
    }

    /// The whole channel table. Rows with an unreadable version or an unknown component are
    /// skipped with a warning.
    pub async fn channels(&self) -> Result<ChannelTable, DirStoreError> {
        let rows = sqlx::query(
            "SELECT component, channel, version, rollout_bp, updated_at FROM dir_channels",
        )
        .fetch_all(self.db.pool())
        .await
        .map_err(q("reading upgrade channels"))?;
        let mut table = ChannelTable::default();
        for row in rows {
            let component: String = row.try_get("component").map_err(q("reading a channel"))?;
            let name: String = row.try_get("channel").map_err(q("reading a channel"))?;
            let text: String = row.try_get("version").map_err(q("reading a channel"))?;
            let bp: i64 = row.try_get("rollout_bp").map_err(q("reading a channel"))?;
            let updated_at: i64 = row.try_get("updated_at").map_err(q("reading a channel"))?;
            let Some(component) = ChannelComponent::parse(&component) else {
                tracing::warn!(%component, channel = %name, "unknown channel component; skipped");
                continue;
            };
            let version = match version::parse_strict(&text) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(%component, channel = %name, version = %text, error = %e, "unreadable channel version; skipped");
                    continue;
                }
            };
            table.get_mut(component).insert(
                name,
                Channel {
                    version,
                    rollout_bp: bp.clamp(0, 10_000) as u32,
                    updated_at,
                },
            );
        }
        Ok(table)
    }

    /// Sets a channel (creating it); returns its previous state.
    pub async fn set_channel(
        &self,
        component: ChannelComponent,
        name: &str,
        version: &semver::Version,
        rollout_bp: u32,
        now: i64,
    ) -> Result<Option<Channel>, DirStoreError> {
        let previous = self.channels().await?.get(component).get(name).cloned();
        sqlx::query(
            "INSERT INTO dir_channels (component, channel, version, rollout_bp, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (component, channel) DO UPDATE SET version = excluded.version, \
             rollout_bp = excluded.rollout_bp, updated_at = excluded.updated_at",
        )
        .bind(component.as_str())
        .bind(name)
        .bind(version.to_string())
        .bind(i64::from(rollout_bp))
        .bind(now)
        .execute(self.db.pool())
        .await
        .map_err(q("setting an upgrade channel"))?;
        Ok(previous)
    }

    /// Creates a channel only if the table has none of that name (the config's initial
    /// state never overrides what the operator set since); `true` if created.
    pub async fn seed_channel(
        &self,
        component: ChannelComponent,
        name: &str,
        version: &semver::Version,
        rollout_bp: u32,
        now: i64,
    ) -> Result<bool, DirStoreError> {
        let done = sqlx::query(
            "INSERT INTO dir_channels (component, channel, version, rollout_bp, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (component, channel) DO NOTHING",
        )
        .bind(component.as_str())
        .bind(name)
        .bind(version.to_string())
        .bind(i64::from(rollout_bp))
        .bind(now)
        .execute(self.db.pool())
        .await
        .map_err(q("creating an upgrade channel"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Records (or updates) a relay's failed upgrade to a version.
    pub async fn record_failure(&self, rec: &FailureRecord) -> Result<(), DirStoreError> {
        sqlx::query(
            "INSERT INTO dir_upgrade_failures (pubkey, version, reason, reported_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (pubkey, version) DO UPDATE SET \
             reason = excluded.reason, reported_at = excluded.reported_at",
        )
        .bind(rec.pubkey.to_b64())
        .bind(rec.version.to_string())
        .bind(rec.reason.as_str())
        .bind(rec.reported_at)
        .execute(self.db.pool())
        .await
        .map_err(q("recording an upgrade failure"))?;
        Ok(())
    }

    /// Every recorded failure, newest first (unreadable rows skipped).
    pub async fn failures(&self) -> Result<Vec<FailureRecord>, DirStoreError> {
        let rows = sqlx::query(
            "SELECT pubkey, version, reason, reported_at FROM dir_upgrade_failures \
             ORDER BY reported_at DESC, pubkey",
        )
        .fetch_all(self.db.pool())
        .await
        .map_err(q("reading upgrade failures"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let pubkey: String = row.try_get("pubkey").map_err(q("reading a failure"))?;
            let v: String = row.try_get("version").map_err(q("reading a failure"))?;
            let reason: String = row.try_get("reason").map_err(q("reading a failure"))?;
            let reported_at: i64 = row.try_get("reported_at").map_err(q("reading a failure"))?;
            match (PublicKey::from_b64(&pubkey), version::parse_strict(&v)) {
                (Ok(pubkey), Ok(version)) => out.push(FailureRecord {
                    pubkey,
                    version,
                    reason,
                    reported_at,
                }),
                _ => {
                    tracing::warn!(relay = %pubkey, version = %v, "unreadable upgrade failure row; skipped")
                }
            }
        }
        Ok(out)
    }

    /// Deletes failure reports older than `before`; returns how many.
    pub async fn purge_failures(&self, before: i64) -> Result<u64, DirStoreError> {
        let done = sqlx::query("DELETE FROM dir_upgrade_failures WHERE reported_at < $1")
            .bind(before)
            .execute(self.db.pool())
            .await
            .map_err(q("purging upgrade failures"))?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use wireleap_proto::address::Address;
    use wireleap_proto::relayentry::Role;
    use wireleap_store::testing::backends;

    fn entry(seed: u8, role: Role, port: u16) -> RelayEntry {
        let kp = wireleap_proto::keys::Keypair::from_seed([seed; 32]);
        RelayEntry::new(
            role,
            Address::parse(&format!("wireleap://127.0.0.1:{port}")).unwrap(),
            kp.public(),
            semver::Version::new(0, 6, 1),
        )
    }

    #[tokio::test]
    async fn relays_round_trip_and_expire_on_every_backend() {
        for t in backends().await.unwrap() {
            let s = DirStore::open(t.db.clone()).await.unwrap();
            // Opening twice (a restart) must not re-run the migration.
            let s2 = DirStore::open(t.db.clone()).await.unwrap();
            let mut a = entry(1, Role::Fronting, 1000);
            a.key = Some("secret".into());
            a.upgrade_channel = Some("beta".into());
            let b = entry(2, Role::Backing, 1001);
            s.upsert_relay(&a, 100).await.unwrap();
            s2.upsert_relay(&b, 100).await.unwrap();
            let all = s.live_relays(0).await.unwrap();
            assert_eq!(all.len(), 2, "{}", t.name);
            let got_a = all.iter().find(|r| r.entry.pubkey == a.pubkey).unwrap();
            assert_eq!(got_a.entry, a, "{}", t.name);
            assert_eq!((got_a.enrolled_at, got_a.last_seen), (100, 100));

            s.touch_many(&[(a.pubkey.unwrap(), 150)]).await.unwrap();
            s2.touch_many(&[(a.pubkey.unwrap(), 140)]).await.unwrap();
            let a_seen = |rows: Vec<StoredRelay>| {
                rows.into_iter()
                    .find(|r| r.entry.pubkey == a.pubkey)
                    .map(|r| r.last_seen)
            };
            assert_eq!(
                a_seen(s.live_relays(0).await.unwrap()),
                Some(150),
                "an older flush moved the heartbeat back ({})",
                t.name
            );
            assert!(s.touch(&b.pubkey.unwrap(), 120).await.unwrap());
            assert!(!s.touch(&PublicKey([9; 32]), 120).await.unwrap());
            assert_eq!(s.live_relays(130).await.unwrap().len(), 1, "{}", t.name);
            assert_eq!(s.purge_expired(130).await.unwrap(), 1, "{}", t.name);
            assert_eq!(s.relay_rows().await.unwrap(), 1);

            // Re-enrollment replaces the row.
            let mut a2 = a.clone();
            a2.role = Some(Role::Entropic);
            s.upsert_relay(&a2, 200).await.unwrap();
            let all = s.live_relays(0).await.unwrap();
            assert_eq!(all.len(), 1);
            assert_eq!(all[0].entry.role, Some(Role::Entropic));
            assert!(s.remove_relay(&a.pubkey.unwrap()).await.unwrap());
            assert!(!s.remove_relay(&a.pubkey.unwrap()).await.unwrap());
            assert_eq!(s.relay_rows().await.unwrap(), 0, "{}", t.name);
            assert!(matches!(
                s.upsert_relay(&RelayEntry::default(), 1).await,
                Err(DirStoreError::Incomplete(_))
            ));
        }
    }

    #[tokio::test]
    async fn channels_and_failures_on_every_backend() {
        for t in backends().await.unwrap() {
            let s = DirStore::open(t.db.clone()).await.unwrap();
            let v1 = semver::Version::new(0, 1, 0);
            let v2 = semver::Version::new(0, 2, 0);
            assert!(s
                .seed_channel(ChannelComponent::Relay, "default", &v1, 10_000, 1)
                .await
                .unwrap());
            // Seeding again (restart with the same config) keeps what is there.
            assert!(!s
                .seed_channel(ChannelComponent::Relay, "default", &v2, 5, 2)
                .await
                .unwrap());
            let prev = s
                .set_channel(ChannelComponent::Relay, "default", &v2, 2500, 3)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(prev.version, v1, "{}", t.name);
            assert!(s
                .set_channel(ChannelComponent::Client, "default", &v1, 10_000, 3)
                .await
                .unwrap()
                .is_none());
            let table = s.channels().await.unwrap();
            assert_eq!(table.relay["default"].version, v2, "{}", t.name);
            assert_eq!(table.relay["default"].rollout_bp, 2500);
            assert_eq!(table.client["default"].version, v1);

            let rec = FailureRecord {
                pubkey: PublicKey([1; 32]),
                version: v2.clone(),
                reason: "migration failed: <details>".into(),
                reported_at: 10,
            };
            s.record_failure(&rec).await.unwrap();
            let again = FailureRecord {
                reason: "again".into(),
                reported_at: 20,
                ..rec.clone()
            };
            s.record_failure(&again).await.unwrap();
            let other = FailureRecord {
                pubkey: PublicKey([2; 32]),
                reported_at: 5,
                ..rec.clone()
            };
            s.record_failure(&other).await.unwrap();
            let all = s.failures().await.unwrap();
            assert_eq!(all, vec![again, other], "{}", t.name);
            assert_eq!(s.purge_failures(10).await.unwrap(), 1);
            assert_eq!(s.failures().await.unwrap().len(), 1);
        }
    }
}
