//! Network usage metering and caps (services.md §1.9).
//!
//! The data path adds payload bytes (both directions, no TLS/HTTP/2 overhead) to a counter
//! per contract. Every `write_interval` the counts are *added* to the database row of the
//! current window, so two relay processes sharing the database during an upgrade hand-over
//! both count correctly and nothing is lost by a restart beyond the last interval. Windows
//! are fixed: `[start + k·timeframe, start + (k+1)·timeframe)`; a finished window is archived
//! as JSON (if `archive_dir`) and the counters start again from zero.
//!
//! Caps follow the original: per contract, 90 % of its limit stops new streams and
//! disenrolls, 93 % also cuts open streams; the global limit only has the 93 % step and
//! stops every contract. The next window lifts every cap. The decision is the pure function
//! [`cap_states`]; acting on it is the runtime's job.

use crate::config::NetworkUsage;
use crate::state::lock;
use serde::Serialize;
use sqlx::Row as _;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use wireleap_proto::keys::PublicKey;
use wireleap_store::{Db, StoreError};

/// Share of a contract's limit at which new streams stop and the relay disenrolls (‰).
pub const SOFT_PERMILLE: u64 = 900;
/// Share of a limit at which open streams are cut too (‰).
pub const HARD_PERMILLE: u64 = 930;

/// Where a contract stands against the caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CapState {
    /// Under every cap.
    Open,
    /// No new streams, disenrolled.
    Soft,
    /// Also cut the open streams.
    Hard,
}

/// One contract's limit for [`cap_states`].
#[derive(Debug, Clone)]
pub struct Limit {
    /// Contract URL.
    pub url: String,
    /// Bytes used this window.
    pub used: u64,
    /// Its cap, if any.
    pub limit: Option<u64>,
}

fn reached(used: u64, limit: u64, permille: u64) -> bool {
    // used / limit >= permille / 1000, without overflow.
    u128::from(used) * 1000 >= u128::from(limit) * u128::from(permille)
}

/// The cap state of every contract, given the global use and limit.
pub fn cap_states(
    limits: &[Limit],
    global_used: u64,
    global: Option<u64>,
) -> Vec<(String, CapState)> {
    let global_hard = global.is_some_and(|g| reached(global_used, g, HARD_PERMILLE));
    limits
        .iter()
        .map(|l| {
            let state = if global_hard {
                CapState::Hard
            } else {
                match l.limit {
                    Some(lim) if reached(l.used, lim, HARD_PERMILLE) => CapState::Hard,
                    Some(lim) if reached(l.used, lim, SOFT_PERMILLE) => CapState::Soft,
                    _ => CapState::Open,
                }
            };
            (l.url.clone(), state)
        })
        .collect()
}

/// A finished window, as archived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowRecord {
    /// The relay's key.
    pub relay_id: String,
    /// Bytes per contract key.
    pub metrics: Vec<ContractMetric>,
    /// Window start, unix ms.
    pub start_at: i64,
    /// Window end, unix ms.
    pub end_at: i64,
    /// When this record was written, unix ms.
    pub updated_at: i64,
}

/// One contract's usage in a [`WindowRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContractMetric {
    /// Contract key.
    pub contract: String,
    /// Bytes moved.
    pub network_usage_bytes: u64,
}

/// The meter.
#[derive(Debug)]
pub struct Usage {
    db: Db,
    timeframe: Option<i64>,
    global_limit: Option<u64>,
    archive_dir: Option<PathBuf>,
    window_start: AtomicI64,
    deltas: Mutex<HashMap<String, Arc<AtomicU64>>>,
    totals: Mutex<HashMap<String, u64>>,
}

impl Usage {
    /// The meter for `config` (metering off when it has no timeframe); loads or starts the
    /// current window. `archive_dir` relative paths must already be resolved.
    pub async fn open(
        db: Db,
        config: Option<&NetworkUsage>,
        now: i64,
    ) -> Result<Usage, StoreError> {
        let timeframe = config
            .and_then(NetworkUsage::active_timeframe)
            .map(|d| d.as_secs().max(1));
        let usage = Usage {
            db,
            timeframe,
            global_limit: config.and_then(|c| c.global_limit).map(|b| b.0),
            archive_dir: config.and_then(|c| c.archive_dir.clone()),
            window_start: AtomicI64::new(now),
            deltas: Mutex::new(HashMap::new()),
            totals: Mutex::new(HashMap::new()),
        };
        if timeframe.is_some() {
            let row = sqlx::query("SELECT window_start FROM relay_usage_window WHERE id = 1")
                .fetch_optional(usage.db.pool())
                .await
                .map_err(StoreError::query("reading the usage window"))?;
            let start = match row {
                Some(r) => r
                    .try_get::<i64, _>("window_start")
                    .map_err(StoreError::query("reading the usage window"))?,
                None => {
                    usage.save_window(now).await?;
                    now
                }
            };
            usage.window_start.store(start, Ordering::Relaxed);
            usage.roll_if_due(now, "").await?;
            usage.reload_totals().await?;
        }
        Ok(usage)
    }

    /// Whether metering is on.
    pub fn enabled(&self) -> bool {
        self.timeframe.is_some()
    }

    /// The global cap, if any.
    pub fn global_limit(&self) -> Option<u64> {
        self.global_limit
    }

    /// The counter the data path adds a contract's bytes to.
    pub fn counter(&self, contract: &PublicKey) -> Arc<AtomicU64> {
        lock(&self.deltas)
            .entry(contract.to_b64())
            .or_default()
            .clone()
    }

    /// Bytes used by a contract (key, base64url) in the current window.
    pub fn used(&self, contract: &str) -> u64 {
        let saved = lock(&self.totals).get(contract).copied().unwrap_or(0);
        let pending = lock(&self.deltas)
            .get(contract)
            .map_or(0, |c| c.load(Ordering::Relaxed));
        saved.saturating_add(pending)
    }

    /// Bytes used by every contract in the current window.
    pub fn used_total(&self) -> u64 {
        let saved: u64 = lock(&self.totals).values().sum();
        let pending: u64 = lock(&self.deltas)
            .values()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        saved.saturating_add(pending)
    }

    /// `(start, end)` of the current window in unix seconds, when metering is on.
    pub fn window(&self) -> Option<(i64, i64)> {
        let tf = self.timeframe?;
        let start = self.window_start.load(Ordering::Relaxed);
        Some((start, start.saturating_add(tf)))
    }

    /// Adds the counted bytes to the database and re-reads the window's totals (which then
    /// include what another process sharing the database added).
    pub async fn flush(&self) -> Result<(), StoreError> {
        if self.timeframe.is_none() {
            return Ok(());
        }
        let start = self.window_start.load(Ordering::Relaxed);
        let pending: Vec<(String, Arc<AtomicU64>)> = lock(&self.deltas)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (contract, counter) in pending {
            let n = counter.swap(0, Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let bytes = i64::try_from(n).unwrap_or(i64::MAX);
            let r = sqlx::query(
                "INSERT INTO relay_usage (window_start, contract, bytes) VALUES ($1, $2, $3) \
                 ON CONFLICT (window_start, contract) DO UPDATE SET bytes = relay_usage.bytes + excluded.bytes",
            )
            .bind(start)
            .bind(&contract)
            .bind(bytes)
            .execute(self.db.pool())
            .await;
            if let Err(e) = r {
                // Keep the bytes for the next attempt.
                counter.fetch_add(n, Ordering::Relaxed);
                return Err(StoreError::query("saving usage counters")(e));
            }
        }
        self.reload_totals().await
    }

    async fn reload_totals(&self) -> Result<(), StoreError> {
        let start = self.window_start.load(Ordering::Relaxed);
        let rows = sqlx::query("SELECT contract, bytes FROM relay_usage WHERE window_start = $1")
            .bind(start)
            .fetch_all(self.db.pool())
            .await
            .map_err(StoreError::query("reading usage counters"))?;
        let mut totals = HashMap::new();
        for r in rows {
            let c: String = r
                .try_get("contract")
                .map_err(StoreError::query("reading usage"))?;
            let b: i64 = r
                .try_get("bytes")
                .map_err(StoreError::query("reading usage"))?;
            totals.insert(c, u64::try_from(b).unwrap_or(0));
        }
        *lock(&self.totals) = totals;
        Ok(())
    }

    async fn save_window(&self, start: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO relay_usage_window (id, window_start) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET window_start = excluded.window_start",
        )
        .bind(start)
        .execute(self.db.pool())
        .await
        .map_err(StoreError::query("saving the usage window"))?;
        Ok(())
    }

    /// Starts the next window if the current one is over at `now`: saves pending counts to
    /// the old window, archives it, resets. Returns the finished window's record.
    pub async fn roll_if_due(
        &self,
        now: i64,
        relay_id: &str,
    ) -> Result<Option<WindowRecord>, StoreError> {
        let Some(tf) = self.timeframe else {
            return Ok(None);
        };
        let start = self.window_start.load(Ordering::Relaxed);
        if now < start.saturating_add(tf) {
            return Ok(None);
        }
        self.flush().await?;
        let record = WindowRecord {
            relay_id: relay_id.to_string(),
            metrics: {
                let mut m: Vec<ContractMetric> = lock(&self.totals)
                    .iter()
                    .map(|(c, b)| ContractMetric {
                        contract: c.clone(),
                        network_usage_bytes: *b,
                    })
                    .collect();
                m.sort_by(|a, b| a.contract.cmp(&b.contract));
                m
            },
            start_at: start.saturating_mul(1000),
            end_at: start.saturating_add(tf).saturating_mul(1000),
            updated_at: now.saturating_mul(1000),
        };
        let periods = (now - start) / tf;
        let next = start.saturating_add(periods.saturating_mul(tf));
        self.save_window(next).await?;
        self.window_start.store(next, Ordering::Relaxed);
        self.reload_totals().await?;
        if let Some(dir) = &self.archive_dir {
            let path = dir.join(format!("{}-{}.json", record.start_at, record.end_at));
            let body = serde_json::to_vec_pretty(&record).unwrap_or_default();
            let written = std::fs::create_dir_all(dir)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    wireleap_daemon::write_atomic(&path, &body, 0o644).map_err(|e| e.to_string())
                });
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), "could not archive the usage window: {e}");
            }
        }
        tracing::info!(
            start = record.start_at / 1000,
            end = record.end_at / 1000,
            "usage window finished; counters reset"
        );
        Ok(Some(record))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use wireleap_proto::duration::Duration;
    use wireleap_proto::keys::Keypair;

    #[test]
    fn cap_thresholds() {
        let l = |url: &str, used, limit| Limit {
            url: url.into(),
            used,
            limit,
        };
        let limits = [
            l("a", 899, Some(1000)),
            l("b", 900, Some(1000)),
            l("c", 930, Some(1000)),
            l("d", u64::MAX, None),
        ];
        let got = cap_states(&limits, 0, None);
        let states: Vec<CapState> = got.iter().map(|(_, s)| *s).collect();
        assert_eq!(
            states,
            [
                CapState::Open,
                CapState::Soft,
                CapState::Hard,
                CapState::Open
            ]
        );
        // The global cap has only the hard step.
        let got = cap_states(&limits, 929, Some(1000));
        assert_eq!(got[0].1, CapState::Open);
        let got = cap_states(&limits, 930, Some(1000));
        assert!(got.iter().all(|(_, s)| *s == CapState::Hard));
        assert!(reached(u64::MAX, u64::MAX, HARD_PERMILLE));
    }

    #[tokio::test]
    async fn counts_add_up_across_processes_and_windows_roll() {
        let t = wireleap_store::testing::sqlite().await.unwrap();
        crate::store::TokenStore::open(t.db.clone()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = NetworkUsage {
            timeframe: Some(Duration::from_secs(100)),
            global_limit: None,
            write_interval: None,
            archive_dir: Some(dir.path().join("archive")),
        };
        let key = Keypair::from_seed([2; 32]).public();
        let a = Usage::open(t.db.clone(), Some(&cfg), 1000).await.unwrap();
        // A second process over the same database (hand-over).
        let b = Usage::open(t.db.clone(), Some(&cfg), 1010).await.unwrap();
        assert_eq!(a.window(), Some((1000, 1100)));
        assert_eq!(b.window(), Some((1000, 1100)));
        a.counter(&key).fetch_add(300, Ordering::Relaxed);
        b.counter(&key).fetch_add(200, Ordering::Relaxed);
        assert_eq!(a.used(&key.to_b64()), 300);
        a.flush().await.unwrap();
        b.flush().await.unwrap();
        assert_eq!(b.used(&key.to_b64()), 500);
        a.flush().await.unwrap();
        assert_eq!(a.used_total(), 500);

        a.counter(&key).fetch_add(7, Ordering::Relaxed);
        assert!(a.roll_if_due(1099, "r").await.unwrap().is_none());
        let rec = a.roll_if_due(1250, "r").await.unwrap().unwrap();
        assert_eq!(rec.metrics[0].network_usage_bytes, 507);
        assert_eq!((rec.start_at, rec.end_at), (1_000_000, 1_100_000));
        assert_eq!(a.window(), Some((1200, 1300)));
        assert_eq!(a.used_total(), 0);
        let archived = std::fs::read_dir(dir.path().join("archive"))
            .unwrap()
            .count();
        assert_eq!(archived, 1);
        // A restart inside the new window keeps it.
        let c = Usage::open(t.db.clone(), Some(&cfg), 1201).await.unwrap();
        assert_eq!(c.window(), Some((1200, 1300)));

        let off = Usage::open(t.db.clone(), None, 5).await.unwrap();
        assert!(!off.enabled());
        off.counter(&key).fetch_add(1, Ordering::Relaxed);
        off.flush().await.unwrap();
        assert_eq!(off.window(), None);
    }
}
