//! The relay's durable state in one database (`wireleap_store::Db`: SQLite in WAL mode with
//! full fsync by default, or PostgreSQL): sharetokens as they arrive and through settlement,
//! the last known `/info` of each contract, and network usage counters.
//!
//! Sharetokens are written before the relay forwards a single byte for them. Concurrent
//! arrivals are batched into one transaction by a single writer task (group commit), so the
//! cost of the fsync is shared by every stream that arrived meanwhile. The primary key is the
//! token's replay identity (contract, servicekey, signature), which makes a replay a failed
//! insert — also across two relay processes sharing the database during a hand-over.
//!
//! Not here: deciding whether a token is valid (proto `sharetoken`), talking to the contract
//! (`submit`).

use sqlx::Row as _;
use tokio::sync::{mpsc, oneshot};
use wireleap_proto::keys::PublicKey;
use wireleap_proto::sharetoken::{Sharetoken, VerifiedSharetoken};
use wireleap_store::{Compat, Db, Migration, StoreError};

/// Schema name in `wireleap_schema`.
pub const COMPONENT: &str = "relay";

/// The relay's schema, oldest first.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "sharetokens, contract info cache, usage counters",
    // Creates every table: nothing before it can use the database.
    compat: Compat::Breaking,
    sqlite: "CREATE TABLE relay_sharetokens (
        contract TEXT NOT NULL,
        servicekey TEXT NOT NULL,
        signature TEXT NOT NULL,
        token TEXT NOT NULL,
        settlement_open BIGINT NOT NULL,
        settlement_close BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        last_error TEXT,
        done_at BIGINT,
        PRIMARY KEY (contract, servicekey, signature));\n\
        CREATE INDEX relay_sharetokens_state ON relay_sharetokens (state, settlement_open);\n\
        CREATE TABLE relay_contracts (
        url TEXT PRIMARY KEY,
        info TEXT NOT NULL,
        fetched_at BIGINT NOT NULL);\n\
        CREATE TABLE relay_usage (
        window_start BIGINT NOT NULL,
        contract TEXT NOT NULL,
        bytes BIGINT NOT NULL,
        PRIMARY KEY (window_start, contract));\n\
        CREATE TABLE relay_usage_window (
        id BIGINT PRIMARY KEY,
        window_start BIGINT NOT NULL);\n",
    postgres: "CREATE TABLE relay_sharetokens (
        contract TEXT NOT NULL,
        servicekey TEXT NOT NULL,
        signature TEXT NOT NULL,
        token TEXT NOT NULL,
        settlement_open BIGINT NOT NULL,
        settlement_close BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        last_error TEXT,
        done_at BIGINT,
        PRIMARY KEY (contract, servicekey, signature));\n\
        CREATE INDEX relay_sharetokens_state ON relay_sharetokens (state, settlement_open);\n\
        CREATE TABLE relay_contracts (
        url TEXT PRIMARY KEY,
        info TEXT NOT NULL,
        fetched_at BIGINT NOT NULL);\n\
        CREATE TABLE relay_usage (
        window_start BIGINT NOT NULL,
        contract TEXT NOT NULL,
        bytes BIGINT NOT NULL,
        PRIMARY KEY (window_start, contract));\n\
        CREATE TABLE relay_usage_window (
        id BIGINT PRIMARY KEY,
        window_start BIGINT NOT NULL);\n",
}];

/// Most tokens committed in one transaction.
const MAX_BATCH: usize = 512;
/// Queue in front of the writer; a full queue makes new streams wait (back-pressure).
const QUEUE: usize = 4096;

/// Where a stored sharetoken stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    /// Waiting for its settlement window, or for a successful submission.
    Pending,
    /// The contract accepted it.
    Accepted,
    /// Its settlement window closed before the contract accepted it.
    Dropped,
}

impl TokenState {
    /// The database text.
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenState::Pending => "pending",
            TokenState::Accepted => "accepted",
            TokenState::Dropped => "dropped",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Accepted, Self::Dropped]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// Why storing or reading failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenStoreError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] StoreError),
    /// The writer task is gone (the relay is stopping).
    #[error("the sharetoken writer has stopped")]
    Closed,
    /// A token has no contract section or key (verified tokens always have one).
    #[error("sharetoken has no contract key")]
    NoContract,
    /// A stored row could not be decoded.
    #[error("stored sharetoken {id} is unreadable: {reason}")]
    Corrupt {
        /// Signature of the row.
        id: String,
        /// What was wrong.
        reason: String,
    },
}

/// A stored sharetoken with its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredToken {
    /// Contract key.
    pub contract: String,
    /// The token.
    pub token: Sharetoken,
    /// Where it stands.
    pub state: TokenState,
    /// Submission attempts so far.
    pub attempts: i64,
    /// The last submission error.
    pub last_error: Option<String>,
    /// When it arrived, unix seconds.
    pub received_at: i64,
}

/// Counts per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TokenCounts {
    /// Waiting.
    pub pending: u64,
    /// Accepted by the contract.
    pub accepted: u64,
    /// Window closed first.
    pub dropped: u64,
}

struct Row {
    contract: String,
    servicekey: String,
    signature: String,
    token: String,
    open: i64,
    close: i64,
    received_at: i64,
}

struct InsertRequest {
    row: Row,
    reply: oneshot::Sender<Result<bool, String>>,
}

/// The store handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct TokenStore {
    db: Db,
    writer: mpsc::Sender<InsertRequest>,
}

impl std::fmt::Debug for InsertRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InsertRequest")
    }
}

/// Whether an insert stored a new token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored now, durably.
    New,
    /// Already stored: a replay.
    Duplicate,
}

/// The schema migrations of this build: [`MIGRATIONS`], plus one more when the build is
/// stamped `fault=schema-expand` or `fault=schema-breaking` (a release drill, see
/// [`crate::upgrade`]): a table nothing uses, added as [`Compat::Expand`] (older releases
/// keep working on the database, so the upgrade succeeds and a rollback to the previous
/// release still starts) or as [`Compat::Breaking`] (refused during a zero-downtime
/// hand-over, so the release is rolled back without touching the database).
pub fn migrations() -> Vec<Migration> {
    let mut all = MIGRATIONS.to_vec();
    let compat = match crate::upgrade::fault().as_deref() {
        Some("schema-expand") => Compat::Expand,
        Some("schema-breaking") => Compat::Breaking,
        _ => return all,
    };
    let next = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0) + 1;
    all.push(Migration {
        version: next,
        name: "release drill: an unused table",
        compat,
        sqlite: "CREATE TABLE relay_release_drill (id BIGINT PRIMARY KEY);\n",
        postgres: "CREATE TABLE relay_release_drill (id BIGINT PRIMARY KEY);\n",
    });
    all
}

impl TokenStore {
    /// Migrates the schema and starts the writer task (needs a tokio runtime).
    pub async fn open(db: Db) -> Result<TokenStore, TokenStoreError> {
        db.migrate(COMPONENT, &migrations()).await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(db.clone(), rx));
        Ok(TokenStore { db, writer: tx })
    }

    /// The database, for the other tables of the relay.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Stores a verified token durably; returns once it is committed (or found to be a
    /// replay). Only verified tokens can be stored.
    pub async fn insert(
        &self,
        token: &VerifiedSharetoken,
        now: i64,
    ) -> Result<Inserted, TokenStoreError> {
        let contract = token.contract.as_ref().ok_or(TokenStoreError::NoContract)?;
        let contract_key = contract.public_key.ok_or(TokenStoreError::NoContract)?;
        let json =
            wireleap_proto::json::to_vec(token.get()).map_err(|e| TokenStoreError::Corrupt {
                id: token.signature.to_b64(),
                reason: e.to_string(),
            })?;
        let row = Row {
            contract: contract_key.to_b64(),
            servicekey: token.public_key.to_b64(),
            signature: token.signature.to_b64(),
            token: String::from_utf8_lossy(&json).into_owned(),
            open: contract.settlement_open,
            close: contract.settlement_close,
            received_at: now,
        };
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(InsertRequest { row, reply })
            .await
            .map_err(|_| TokenStoreError::Closed)?;
        match rx.await.map_err(|_| TokenStoreError::Closed)? {
            Ok(true) => Ok(Inserted::New),
            Ok(false) => Ok(Inserted::Duplicate),
            Err(reason) => Err(TokenStoreError::Db(StoreError::Query {
                context: "storing a sharetoken",
                source: sqlx::Error::Protocol(reason),
            })),
        }
    }

    /// Pending tokens whose settlement window is open at `now`, oldest window first.
    pub async fn settleable(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<StoredToken>, TokenStoreError> {
        let rows = sqlx::query(
            "SELECT contract, token, state, attempts, last_error, received_at \
             FROM relay_sharetokens WHERE state = $1 AND settlement_open <= $2 \
             AND settlement_close > $3 ORDER BY settlement_open LIMIT $4",
        )
        .bind(TokenState::Pending.as_str())
        .bind(now)
        .bind(now)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await
        .map_err(StoreError::query("listing settleable sharetokens"))?;
        rows.iter().map(decode_row).collect()
    }

    /// Every stored token (for the `sharetokens` command and tests), optionally one state.
    pub async fn list(
        &self,
        state: Option<TokenState>,
    ) -> Result<Vec<StoredToken>, TokenStoreError> {
        let rows = match state {
            Some(s) => {
                sqlx::query(
                    "SELECT contract, token, state, attempts, last_error, received_at \
                 FROM relay_sharetokens WHERE state = $1 ORDER BY received_at",
                )
                .bind(s.as_str())
                .fetch_all(self.db.pool())
                .await
            }
            None => {
                sqlx::query(
                    "SELECT contract, token, state, attempts, last_error, received_at \
                 FROM relay_sharetokens ORDER BY received_at",
                )
                .fetch_all(self.db.pool())
                .await
            }
        }
        .map_err(StoreError::query("listing sharetokens"))?;
        rows.iter().map(decode_row).collect()
    }

    /// How many tokens are in each state.
    pub async fn counts(&self) -> Result<TokenCounts, TokenStoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM relay_sharetokens GROUP BY state")
            .fetch_all(self.db.pool())
            .await
            .map_err(StoreError::query("counting sharetokens"))?;
        let mut c = TokenCounts::default();
        for r in rows {
            let state: String = r.try_get("state").map_err(StoreError::query("counting"))?;
            let n: i64 = r.try_get("n").map_err(StoreError::query("counting"))?;
            let n = u64::try_from(n).unwrap_or(0);
            match TokenState::parse(&state) {
                Some(TokenState::Pending) => c.pending = n,
                Some(TokenState::Accepted) => c.accepted = n,
                Some(TokenState::Dropped) => c.dropped = n,
                None => {}
            }
        }
        Ok(c)
    }

    /// Records the contract's acceptance.
    pub async fn mark_accepted(&self, t: &StoredToken, now: i64) -> Result<(), TokenStoreError> {
        self.finish(t, TokenState::Accepted, None, now).await
    }

    /// Records a failed submission (the token stays pending and is retried).
    pub async fn mark_failed(&self, t: &StoredToken, error: &str) -> Result<(), TokenStoreError> {
        sqlx::query(
            "UPDATE relay_sharetokens SET attempts = attempts + 1, last_error = $1 \
             WHERE contract = $2 AND servicekey = $3 AND signature = $4",
        )
        .bind(error)
        .bind(&t.contract)
        .bind(t.token.public_key.to_b64())
        .bind(t.token.signature.to_b64())
        .execute(self.db.pool())
        .await
        .map_err(StoreError::query("recording a failed submission"))?;
        Ok(())
    }

    /// Marks one token dropped (refused for good) with the reason.
    pub async fn mark_dropped(
        &self,
        t: &StoredToken,
        reason: &str,
        now: i64,
    ) -> Result<(), TokenStoreError> {
        self.finish(t, TokenState::Dropped, Some(reason), now).await
    }

    async fn finish(
        &self,
        t: &StoredToken,
        state: TokenState,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), TokenStoreError> {
        sqlx::query(
            "UPDATE relay_sharetokens SET state = $1, done_at = $2, \
             last_error = COALESCE($3, last_error) \
             WHERE contract = $4 AND servicekey = $5 AND signature = $6",
        )
        .bind(state.as_str())
        .bind(now)
        .bind(error)
        .bind(&t.contract)
        .bind(t.token.public_key.to_b64())
        .bind(t.token.signature.to_b64())
        .execute(self.db.pool())
        .await
        .map_err(StoreError::query("updating a sharetoken"))?;
        Ok(())
    }

    /// Marks every pending token whose window closed at `now` as dropped; returns how many
    /// per contract, for the log.
    pub async fn drop_closed(&self, now: i64) -> Result<Vec<(String, u64)>, TokenStoreError> {
        let rows = sqlx::query(
            "SELECT contract, COUNT(*) AS n FROM relay_sharetokens \
             WHERE state = $1 AND settlement_close <= $2 GROUP BY contract",
        )
        .bind(TokenState::Pending.as_str())
        .bind(now)
        .fetch_all(self.db.pool())
        .await
        .map_err(StoreError::query("finding closed sharetokens"))?;
        let mut out = Vec::new();
        for r in rows {
            let c: String = r
                .try_get("contract")
                .map_err(StoreError::query("reading"))?;
            let n: i64 = r.try_get("n").map_err(StoreError::query("reading"))?;
            out.push((c, u64::try_from(n).unwrap_or(0)));
        }
        if !out.is_empty() {
            sqlx::query(
                "UPDATE relay_sharetokens SET state = $1, done_at = $2, \
                 last_error = COALESCE(last_error, 'settlement window closed') \
                 WHERE state = $3 AND settlement_close <= $4",
            )
            .bind(TokenState::Dropped.as_str())
            .bind(now)
            .bind(TokenState::Pending.as_str())
            .bind(now)
            .execute(self.db.pool())
            .await
            .map_err(StoreError::query("dropping closed sharetokens"))?;
        }
        Ok(out)
    }

    /// Deletes finished tokens whose window closed before `before` (a replay of them is
    /// refused as expired anyway, so the rows no longer protect anything).
    pub async fn prune(&self, before: i64) -> Result<u64, TokenStoreError> {
        let r = sqlx::query(
            "DELETE FROM relay_sharetokens WHERE state <> $1 AND settlement_close < $2",
        )
        .bind(TokenState::Pending.as_str())
        .bind(before)
        .execute(self.db.pool())
        .await
        .map_err(StoreError::query("pruning sharetokens"))?;
        Ok(r.rows_affected())
    }

    /// The cached `/info` body of a contract URL, if any.
    pub async fn cached_info(&self, url: &str) -> Result<Option<String>, TokenStoreError> {
        let row = sqlx::query("SELECT info FROM relay_contracts WHERE url = $1")
            .bind(url)
            .fetch_optional(self.db.pool())
            .await
            .map_err(StoreError::query("reading cached contract info"))?;
        Ok(match row {
            Some(r) => Some(r.try_get("info").map_err(StoreError::query("reading"))?),
            None => None,
        })
    }

    /// Every cached `(url, /info body)`.
    pub async fn cached_infos(&self) -> Result<Vec<(String, String)>, TokenStoreError> {
        let rows = sqlx::query("SELECT url, info FROM relay_contracts")
            .fetch_all(self.db.pool())
            .await
            .map_err(StoreError::query("reading cached contract info"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push((
                r.try_get("url").map_err(StoreError::query("reading"))?,
                r.try_get("info").map_err(StoreError::query("reading"))?,
            ));
        }
        Ok(out)
    }

    /// Caches a contract's `/info` body.
    pub async fn cache_info(&self, url: &str, info: &str, now: i64) -> Result<(), TokenStoreError> {
        sqlx::query(
            "INSERT INTO relay_contracts (url, info, fetched_at) VALUES ($1, $2, $3) \
             ON CONFLICT (url) DO UPDATE SET info = excluded.info, fetched_at = excluded.fetched_at",
        )
        .bind(url)
        .bind(info)
        .bind(now)
        .execute(self.db.pool())
        .await
        .map_err(StoreError::query("caching contract info"))?;
        Ok(())
    }
}

fn decode_row(r: &sqlx::any::AnyRow) -> Result<StoredToken, TokenStoreError> {
    let q = |what| StoreError::query(what);
    let contract: String = r.try_get("contract").map_err(q("reading a sharetoken"))?;
    let json: String = r.try_get("token").map_err(q("reading a sharetoken"))?;
    let state: String = r.try_get("state").map_err(q("reading a sharetoken"))?;
    let attempts: i64 = r.try_get("attempts").map_err(q("reading a sharetoken"))?;
    let last_error: Option<String> = r.try_get("last_error").map_err(q("reading a sharetoken"))?;
    let received_at: i64 = r
        .try_get("received_at")
        .map_err(q("reading a sharetoken"))?;
    let token: Sharetoken = wireleap_proto::json::from_slice(json.as_bytes()).map_err(|e| {
        TokenStoreError::Corrupt {
            id: contract.clone(),
            reason: e.to_string(),
        }
    })?;
    let state = TokenState::parse(&state).ok_or_else(|| TokenStoreError::Corrupt {
        id: token.signature.to_b64(),
        reason: format!("unknown state {state:?}"),
    })?;
    Ok(StoredToken {
        contract,
        token,
        state,
        attempts,
        last_error,
        received_at,
    })
}

/// Commits queued inserts in batches until every sender is gone.
async fn writer(db: Db, mut rx: mpsc::Receiver<InsertRequest>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        match commit(&db, &batch).await {
            Ok(results) => {
                for (req, new) in batch.drain(..).zip(results) {
                    let _ = req.reply.send(Ok(new));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, tokens = batch.len(), "could not store sharetokens");
                let msg = e.to_string();
                for req in batch.drain(..) {
                    let _ = req.reply.send(Err(msg.clone()));
                }
            }
        }
    }
}

async fn commit(db: &Db, batch: &[InsertRequest]) -> Result<Vec<bool>, sqlx::Error> {
    let mut tx = db.pool().begin().await?;
    let mut out = Vec::with_capacity(batch.len());
    for req in batch {
        let r = &req.row;
        let done = sqlx::query(
            "INSERT INTO relay_sharetokens (contract, servicekey, signature, token, \
             settlement_open, settlement_close, received_at, state, attempts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0) \
             ON CONFLICT (contract, servicekey, signature) DO NOTHING",
        )
        .bind(&r.contract)
        .bind(&r.servicekey)
        .bind(&r.signature)
        .bind(&r.token)
        .bind(r.open)
        .bind(r.close)
        .bind(r.received_at)
        .bind(TokenState::Pending.as_str())
        .execute(&mut *tx)
        .await?;
        out.push(done.rows_affected() == 1);
    }
    tx.commit().await?;
    Ok(out)
}

/// The contract key of a stored row as a public key (rows are written from verified tokens).
pub fn contract_key(t: &StoredToken) -> Option<PublicKey> {
    PublicKey::from_b64(&t.contract).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use wireleap_proto::keys::Keypair;
    use wireleap_proto::servicekey::ContractSection;
    use wireleap_proto::sharetoken::VerifyContext;

    fn token(contract: &Keypair, relay: &Keypair, open: i64, n: u8) -> VerifiedSharetoken {
        let sk = Keypair::from_seed([n; 32]);
        let section = ContractSection::new_signed(contract, open, open + 100);
        let t = Sharetoken::new_signed(&sk, section, relay.public(), 1, format!("{n:032x}"));
        let trusted = [contract.public()];
        t.verify(&VerifyContext::new(relay.public(), &trusted, open - 10))
            .unwrap()
    }

    #[tokio::test]
    async fn insert_detects_replays_and_tracks_states_on_every_backend() {
        let contract = Keypair::from_seed([2; 32]);
        let relay = Keypair::from_seed([1; 32]);
        for t in wireleap_store::testing::backends().await.unwrap() {
            let store = TokenStore::open(t.db.clone()).await.unwrap();
            let a = token(&contract, &relay, 1000, 5);
            let b = token(&contract, &relay, 2000, 6);
            // Concurrent inserts of the same token: exactly one is new.
            let (x, y) = tokio::join!(store.insert(&a, 900), store.insert(&a, 900));
            let mut got = [x.unwrap(), y.unwrap()];
            got.sort_by_key(|i| *i == Inserted::Duplicate);
            assert_eq!(got, [Inserted::New, Inserted::Duplicate], "{}", t.name);
            assert_eq!(store.insert(&b, 900).await.unwrap(), Inserted::New);

            assert!(store.settleable(999, 10).await.unwrap().is_empty());
            let due = store.settleable(1000, 10).await.unwrap();
            assert_eq!(due.len(), 1, "{}", t.name);
            assert_eq!(due[0].token, *a.get());
            store.mark_failed(&due[0], "contract down").await.unwrap();
            let due = store.settleable(1050, 10).await.unwrap();
            assert_eq!(due[0].attempts, 1);
            assert_eq!(due[0].last_error.as_deref(), Some("contract down"));
            store.mark_accepted(&due[0], 1050).await.unwrap();
            assert!(store.settleable(1050, 10).await.unwrap().is_empty());

            // b's window [2000, 2100) closes unsubmitted.
            let dropped = store.drop_closed(2100).await.unwrap();
            assert_eq!(dropped, vec![(contract.public().to_b64(), 1)]);
            let c = store.counts().await.unwrap();
            assert_eq!(
                c,
                TokenCounts {
                    pending: 0,
                    accepted: 1,
                    dropped: 1
                }
            );
            assert_eq!(store.prune(2101).await.unwrap(), 2);
            assert!(store.list(None).await.unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn contract_info_cache_round_trips() {
        let t = wireleap_store::testing::sqlite().await.unwrap();
        let store = TokenStore::open(t.db.clone()).await.unwrap();
        assert_eq!(store.cached_info("https://c").await.unwrap(), None);
        store.cache_info("https://c", "{\"a\":1}", 5).await.unwrap();
        store.cache_info("https://c", "{\"a\":2}", 6).await.unwrap();
        assert_eq!(
            store.cached_info("https://c").await.unwrap().as_deref(),
            Some("{\"a\":2}")
        );
    }

    #[tokio::test]
    async fn stored_tokens_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let contract = Keypair::from_seed([2; 32]);
        let relay = Keypair::from_seed([1; 32]);
        let tokens: Vec<_> = (10..40)
            .map(|n| token(&contract, &relay, 1000, n))
            .collect();
        {
            let store = TokenStore::open(Db::open_sqlite(&path).await.unwrap())
                .await
                .unwrap();
            let mut tasks = Vec::new();
            for t in tokens.clone() {
                let s = store.clone();
                tasks.push(tokio::spawn(async move { s.insert(&t, 1).await.unwrap() }));
            }
            for t in tasks {
                assert_eq!(t.await.unwrap(), Inserted::New);
            }
        }
        let store = TokenStore::open(Db::open_sqlite(&path).await.unwrap())
            .await
            .unwrap();
        let listed = store.list(Some(TokenState::Pending)).await.unwrap();
        assert_eq!(listed.len(), tokens.len());
        for t in &tokens {
            assert!(listed.iter().any(|s| s.token == *t.get()));
            assert_eq!(store.insert(t, 2).await.unwrap(), Inserted::Duplicate);
        }
    }
}
