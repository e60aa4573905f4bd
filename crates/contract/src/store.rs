//! The contract's durable state over `wireleap_store::Db` (SQLite or PostgreSQL): activated
//! servicekeys (which also records every spent pof), accepted sharetokens, settlement credits
//! and withdrawals.
//!
//! Every "exactly once" rule is a database constraint, so it holds with several contract
//! instances sharing one PostgreSQL database and across kill -9:
//! - a pof is spent once: the pof digest is the primary key of `contract_activations`, taken
//!   by `INSERT ... ON CONFLICT DO NOTHING` (the loser of a race sees zero rows affected);
//! - a sharetoken counts once: `(servicekey, signature)` is the primary key of
//!   `contract_sharetokens`;
//! - a servicekey is settled once: settling flips `settled_at` from NULL in an `UPDATE ...
//!   WHERE settled_at IS NULL`, in the same transaction that writes the credits;
//! - a token is never accepted after its servicekey was settled (and so never missed by the
//!   split): a submission locks the servicekey's row under the same `settled_at IS NULL`
//!   condition before inserting, so the row lock orders it before or after the settlement,
//!   never across;
//! - one pending withdrawal per relay: a partial unique index.
//!
//! Every transaction starts with a write, so SQLite takes its write lock first and never has
//! to upgrade a read lock (which would fail with "database is locked" instead of waiting).
//! Amounts are exact rationals stored as text; sums are done in Rust.

use crate::settle;
use sqlx::any::AnyRow;
use sqlx::Row as _;
use wireleap_proto::keys::PublicKey;
use wireleap_proto::payout::{Withdrawal, WithdrawalRequest, WithdrawalState};
use wireleap_proto::rational::Rational;
use wireleap_proto::servicekey::ContractSection;
use wireleap_proto::sharetoken::Sharetoken;
use wireleap_store::{Compat, Db, Migration, StoreError};

/// Schema component name in `wireleap_schema`.
pub const COMPONENT: &str = "contract";

const V1_SQLITE: &str = "
CREATE TABLE contract_activations (
    pof_digest TEXT PRIMARY KEY,
    pof_type TEXT NOT NULL,
    pof_expiration BIGINT NOT NULL,
    servicekey TEXT NOT NULL UNIQUE,
    settlement_open BIGINT NOT NULL,
    settlement_close BIGINT NOT NULL,
    section_signature TEXT NOT NULL,
    value TEXT NOT NULL,
    currency TEXT NOT NULL,
    fee_percent TEXT NOT NULL,
    activated_at BIGINT NOT NULL,
    tokens BIGINT NOT NULL DEFAULT 0,
    settled_at BIGINT,
    retained TEXT
);
CREATE INDEX contract_activations_due ON contract_activations (settlement_close) WHERE settled_at IS NULL;
CREATE TABLE contract_sharetokens (
    servicekey TEXT NOT NULL,
    signature TEXT NOT NULL,
    relay TEXT NOT NULL,
    token TEXT NOT NULL,
    accepted_at BIGINT NOT NULL,
    PRIMARY KEY (servicekey, signature)
);
CREATE INDEX contract_sharetokens_relay ON contract_sharetokens (relay);
CREATE TABLE contract_credits (
    servicekey TEXT NOT NULL,
    relay TEXT NOT NULL,
    tokens BIGINT NOT NULL,
    amount TEXT NOT NULL,
    credited_at BIGINT NOT NULL,
    PRIMARY KEY (servicekey, relay)
);
CREATE INDEX contract_credits_relay ON contract_credits (relay);
CREATE TABLE contract_withdrawals (
    id TEXT PRIMARY KEY,
    relay TEXT NOT NULL,
    amount BIGINT NOT NULL,
    kind TEXT NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    state_changed BIGINT NOT NULL,
    receipt TEXT
);
CREATE UNIQUE INDEX contract_withdrawals_one_pending ON contract_withdrawals (relay) WHERE state = 'pending';
CREATE INDEX contract_withdrawals_relay ON contract_withdrawals (relay, created_at);
";

/// The contract's schema steps. The SQL happens to be the same for both engines.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "activations, sharetokens, credits, withdrawals",
    // Creates every table: nothing before it can use the database.
    compat: Compat::Breaking,
    sqlite: V1_SQLITE,
    postgres: V1_SQLITE,
}];

/// A servicekey activation to record.
#[derive(Debug, Clone)]
pub struct NewActivation {
    /// The pof's identity (`type:expiration:nonce`).
    pub pof_digest: String,
    /// The pof's type.
    pub pof_type: String,
    /// The pof's expiration.
    pub pof_expiration: i64,
    /// The servicekey being activated.
    pub servicekey: PublicKey,
    /// The signed settlement window handed to the client.
    pub section: ContractSection,
    /// The servicekey's value at activation (what settlement divides).
    pub value: Rational,
    /// Currency of `value`.
    pub currency: String,
    /// The contract's fee at activation.
    pub fee_percent: Rational,
    /// Unix seconds.
    pub now: i64,
}

/// What became of an activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Recorded; the pof is spent.
    Activated,
    /// The pof was spent before (by this or any earlier request).
    PofSpent,
    /// The servicekey was activated before, with another pof (this pof stays unspent).
    ServicekeyTaken,
}

/// What became of a submitted sharetoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submission {
    /// Stored and counted for its relay.
    Accepted,
    /// The same token (servicekey and signature) was accepted before.
    Duplicate,
    /// Its servicekey was never activated here.
    UnknownServicekey,
    /// Its settlement window is not the one this contract signed for the servicekey.
    WindowMismatch,
    /// Its servicekey was settled already.
    Settled,
}

/// One servicekey's settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The servicekey.
    pub servicekey: String,
    /// Tokens counted.
    pub tokens: i64,
    /// Credits per relay (base64url key, amount).
    pub credits: Vec<(String, Rational)>,
    /// What the contract kept.
    pub retained: Rational,
}

/// A relay's token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenCounts {
    /// Every token accepted for this relay.
    pub accepted: i64,
    /// Of those, the ones whose servicekey is not settled yet.
    pub unsettled: i64,
}

/// A relay's money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    /// Credited by settlements, minus completed and pending withdrawals.
    pub available: Rational,
    /// Tied up in a pending withdrawal.
    pub pending: Rational,
    /// Ever credited.
    pub credited: Rational,
}

/// What became of a withdrawal request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WithdrawalOutcome {
    /// Recorded as pending.
    Created(Withdrawal),
    /// Another withdrawal of this relay is pending.
    AlreadyPending,
    /// More than available.
    Insufficient {
        /// What is available (before this request).
        available: Rational,
    },
}

/// The contract's tables.
#[derive(Debug, Clone)]
pub struct ContractStore {
    db: Db,
}

fn q(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    StoreError::query(context)
}

fn corrupt(context: &'static str, what: String) -> StoreError {
    StoreError::Query {
        context,
        source: sqlx::Error::Decode(what.into()),
    }
}

fn rational(context: &'static str, text: &str) -> Result<Rational, StoreError> {
    text.parse()
        .map_err(|e| corrupt(context, format!("stored amount {text:?}: {e}")))
}

impl ContractStore {
    /// Migrates `db` to the contract schema and wraps it.
    pub async fn open(db: Db) -> Result<Self, StoreError> {
        db.migrate(COMPONENT, MIGRATIONS).await?;
        Ok(ContractStore { db })
    }

    /// The database handle.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Records an activation, spending its pof, unless the pof or the servicekey was used.
    pub async fn activate(&self, a: &NewActivation) -> Result<Activation, StoreError> {
        let sig = a.section.signature.map(|s| s.to_b64()).unwrap_or_default();
        let done = sqlx::query(
            "INSERT INTO contract_activations (pof_digest, pof_type, pof_expiration, servicekey, \
             settlement_open, settlement_close, section_signature, value, currency, fee_percent, \
             activated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&a.pof_digest)
        .bind(&a.pof_type)
        .bind(a.pof_expiration)
        .bind(a.servicekey.to_b64())
        .bind(a.section.settlement_open)
        .bind(a.section.settlement_close)
        .bind(sig)
        .bind(a.value.to_string())
        .bind(&a.currency)
        .bind(a.fee_percent.to_string())
        .bind(a.now)
        .execute(self.db.pool())
        .await
        .map_err(q("recording an activation"))?;
        if done.rows_affected() == 1 {
            return Ok(Activation::Activated);
        }
        let spent = sqlx::query("SELECT 1 AS x FROM contract_activations WHERE pof_digest = $1")
            .bind(&a.pof_digest)
            .fetch_optional(self.db.pool())
            .await
            .map_err(q("checking a pof"))?;
        Ok(if spent.is_some() {
            Activation::PofSpent
        } else {
            Activation::ServicekeyTaken
        })
    }

    /// Stores a token that passed the signature and window checks (`batch::check_batch`),
    /// counting it exactly once for its relay. `json` is the token as received, kept for audit.
    pub async fn submit(
        &self,
        token: &Sharetoken,
        json: &str,
        now: i64,
    ) -> Result<Submission, StoreError> {
        let mut out = self.submit_batch(&[(token, json)], now).await?;
        out.pop()
            .ok_or_else(|| corrupt("storing a sharetoken", "no outcome".into()))
    }

    /// [`ContractStore::submit`] for many tokens in one transaction (one commit, one fsync),
    /// with one outcome per token in the order given.
    ///
    /// Tokens are handled per servicekey, servicekeys in a fixed order, and a servicekey's
    /// row is locked before any of its tokens is inserted. So two instances committing
    /// overlapping batches on PostgreSQL queue behind each other instead of deadlocking
    /// (inserting first and locking the row second lets each hold what the other waits
    /// for), and a settlement either waits for the batch or is seen by it.
    pub async fn submit_batch(
        &self,
        tokens: &[(&Sharetoken, &str)],
        now: i64,
    ) -> Result<Vec<Submission>, StoreError> {
        let mut order: Vec<usize> = (0..tokens.len()).collect();
        order.sort_by_key(|i| {
            let t = tokens[*i].0;
            (t.public_key.0, t.signature.0)
        });
        let mut out = vec![Submission::WindowMismatch; tokens.len()];
        let mut tx = self
            .db
            .pool()
            .begin()
            .await
            .map_err(q("starting a submission"))?;
        let mut start = 0;
        while start < order.len() {
            let sk = tokens[order[start]].0.public_key;
            let end = order[start..]
                .iter()
                .position(|i| tokens[*i].0.public_key != sk)
                .map_or(order.len(), |n| start + n);
            submit_group(&mut tx, tokens, &order[start..end], &mut out, now).await?;
            start = end;
        }
        tx.commit().await.map_err(q("committing submissions"))?;
        Ok(out)
    }

    /// Settles every servicekey whose submission window closed by `now` (at most `limit`);
    /// returns what this call settled. Safe to run concurrently from several instances:
    /// each servicekey is settled by exactly one of them.
    pub async fn settle_due(&self, now: i64, limit: i64) -> Result<Vec<Settled>, StoreError> {
        let due: Vec<String> = sqlx::query(
            "SELECT servicekey FROM contract_activations WHERE settled_at IS NULL \
             AND settlement_close <= $1 ORDER BY settlement_close LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await
        .map_err(q("finding servicekeys to settle"))?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()
        .map_err(q("finding servicekeys to settle"))?;
        let mut out = Vec::new();
        for sk in due {
            if let Some(s) = self.settle(&sk, now).await? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Settles one servicekey if its window closed by `now` and nobody settled it yet.
    pub async fn settle(&self, servicekey: &str, now: i64) -> Result<Option<Settled>, StoreError> {
        let mut tx = self
            .db
            .pool()
            .begin()
            .await
            .map_err(q("starting a settlement"))?;
        let claimed = sqlx::query(
            "UPDATE contract_activations SET settled_at = $1 WHERE servicekey = $2 \
             AND settled_at IS NULL AND settlement_close <= $3",
        )
        .bind(now)
        .bind(servicekey)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(q("claiming a settlement"))?;
        if claimed.rows_affected() == 0 {
            tx.rollback().await.map_err(q("ending a settlement"))?;
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT value, fee_percent, tokens FROM contract_activations WHERE servicekey = $1",
        )
        .bind(servicekey)
        .fetch_one(&mut *tx)
        .await
        .map_err(q("reading a servicekey for settlement"))?;
        let value: String = row.try_get(0).map_err(q("reading a servicekey"))?;
        let fee: String = row.try_get(1).map_err(q("reading a servicekey"))?;
        let counter: i64 = row.try_get(2).map_err(q("reading a servicekey"))?;
        let value = rational("reading a servicekey value", &value)?;
        let fee = rational("reading a servicekey fee", &fee)?;
        let counts: Vec<(String, i64)> = sqlx::query(
            "SELECT relay, COUNT(*) AS n FROM contract_sharetokens WHERE servicekey = $1 \
             GROUP BY relay ORDER BY relay",
        )
        .bind(servicekey)
        .fetch_all(&mut *tx)
        .await
        .map_err(q("counting tokens for settlement"))?
        .iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(q("counting tokens for settlement"))?;
        let tokens: i64 = counts.iter().map(|(_, n)| n).sum();
        if tokens != counter {
            // Both are written in the same transactions; a difference means someone edited
            // the tables by hand. The stored tokens are what was accepted, so they win.
            tracing::error!(
                servicekey,
                counted = counter,
                stored = tokens,
                "servicekey token counter disagrees with stored sharetokens"
            );
        }
        let split = settle::split(&value, &fee, &counts);
        for (relay, amount) in &split.shares {
            let n = counts
                .iter()
                .find(|(r, _)| r == relay)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            sqlx::query(
                "INSERT INTO contract_credits (servicekey, relay, tokens, amount, credited_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(servicekey)
            .bind(relay)
            .bind(n)
            .bind(amount.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(q("crediting a relay"))?;
        }
        sqlx::query("UPDATE contract_activations SET retained = $1 WHERE servicekey = $2")
            .bind(split.retained.to_string())
            .bind(servicekey)
            .execute(&mut *tx)
            .await
            .map_err(q("recording the contract's part"))?;
        tx.commit().await.map_err(q("committing a settlement"))?;
        Ok(Some(Settled {
            servicekey: servicekey.to_string(),
            tokens,
            credits: split.shares,
            retained: split.retained,
        }))
    }

    /// How many tokens were accepted for `relay`, and how many await settlement.
    pub async fn token_counts(&self, relay: &PublicKey) -> Result<TokenCounts, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, \
             COALESCE(SUM(CASE WHEN a.settled_at IS NULL THEN 1 ELSE 0 END), 0) AS u \
             FROM contract_sharetokens t JOIN contract_activations a \
             ON a.servicekey = t.servicekey WHERE t.relay = $1",
        )
        .bind(relay.to_b64())
        .fetch_one(self.db.pool())
        .await
        .map_err(q("counting a relay's tokens"))?;
        Ok(TokenCounts {
            accepted: row.try_get(0).map_err(q("counting a relay's tokens"))?,
            unsettled: get_int(&row, 1).map_err(q("counting a relay's tokens"))?,
        })
    }

    /// Every sharetoken accepted for `relay` as (servicekey, signature), base64url.
    pub async fn token_ids(&self, relay: &PublicKey) -> Result<Vec<(String, String)>, StoreError> {
        sqlx::query(
            "SELECT servicekey, signature FROM contract_sharetokens WHERE relay = $1 \
             ORDER BY accepted_at, servicekey, signature",
        )
        .bind(relay.to_b64())
        .fetch_all(self.db.pool())
        .await
        .map_err(q("listing a relay's tokens"))?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(q("listing a relay's tokens"))
    }

    /// The relay's credited, pending and available amounts, read in one statement (one
    /// snapshot on both engines).
    pub async fn money(&self, relay: &PublicKey) -> Result<Money, StoreError> {
        let rows = sqlx::query(
            "SELECT 'credit' AS kind, amount FROM contract_credits WHERE relay = $1 \
             UNION ALL SELECT state AS kind, CAST(amount AS TEXT) AS amount \
             FROM contract_withdrawals WHERE relay = $2",
        )
        .bind(relay.to_b64())
        .bind(relay.to_b64())
        .fetch_all(self.db.pool())
        .await
        .map_err(q("reading a balance"))?;
        money_of(&rows)
    }

    /// Records a withdrawal as pending if `relay` has no pending one and enough money.
    pub async fn request_withdrawal(
        &self,
        relay: &PublicKey,
        id: &str,
        req: &WithdrawalRequest,
        now: i64,
    ) -> Result<WithdrawalOutcome, StoreError> {
        let relay_b64 = relay.to_b64();
        let mut tx = self
            .db
            .pool()
            .begin()
            .await
            .map_err(q("starting a withdrawal"))?;
        let inserted = sqlx::query(
            "INSERT INTO contract_withdrawals (id, relay, amount, kind, destination, state, \
             created_at, state_changed) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7) \
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(&relay_b64)
        .bind(req.amount)
        .bind(&req.kind)
        .bind(&req.destination)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(q("recording a withdrawal"))?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await.map_err(q("ending a withdrawal"))?;
            return Ok(WithdrawalOutcome::AlreadyPending);
        }
        let rows = sqlx::query(
            "SELECT 'credit' AS kind, amount FROM contract_credits WHERE relay = $1 \
             UNION ALL SELECT state AS kind, CAST(amount AS TEXT) AS amount \
             FROM contract_withdrawals WHERE relay = $2",
        )
        .bind(&relay_b64)
        .bind(&relay_b64)
        .fetch_all(&mut *tx)
        .await
        .map_err(q("reading a balance"))?;
        let money = money_of(&rows)?;
        if money.available < Rational::from_integer(0) {
            tx.rollback().await.map_err(q("ending a withdrawal"))?;
            let before = settle::sum([&money.available, &Rational::from_integer(req.amount)]);
            return Ok(WithdrawalOutcome::Insufficient { available: before });
        }
        tx.commit().await.map_err(q("committing a withdrawal"))?;
        Ok(WithdrawalOutcome::Created(Withdrawal {
            id: id.to_string(),
            state: WithdrawalState::Pending.as_str().to_string(),
            state_changed: now,
            amount: req.amount,
            kind: req.kind.clone(),
            destination: req.destination.clone(),
            receipt: None,
        }))
    }

    /// Moves a pending withdrawal to `state` (complete or failed) with the payment service's
    /// receipt; returns whether it was pending.
    pub async fn finish_withdrawal(
        &self,
        id: &str,
        state: WithdrawalState,
        receipt: Option<&serde_json::Value>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE contract_withdrawals SET state = $1, receipt = $2, state_changed = $3 \
             WHERE id = $4 AND state = 'pending'",
        )
        .bind(state.as_str())
        .bind(receipt.map(|r| r.to_string()))
        .bind(now)
        .bind(id)
        .execute(self.db.pool())
        .await
        .map_err(q("updating a withdrawal"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The relay's most recent withdrawal.
    pub async fn last_withdrawal(
        &self,
        relay: &PublicKey,
    ) -> Result<Option<Withdrawal>, StoreError> {
        let row = sqlx::query(
            "SELECT id, state, state_changed, amount, kind, destination, receipt \
             FROM contract_withdrawals WHERE relay = $1 ORDER BY created_at DESC, id LIMIT 1",
        )
        .bind(relay.to_b64())
        .fetch_optional(self.db.pool())
        .await
        .map_err(q("reading a withdrawal"))?;
        row.as_ref().map(withdrawal_of).transpose()
    }

    /// Every pending withdrawal (for re-asking the payment service).
    pub async fn pending_withdrawals(&self) -> Result<Vec<Withdrawal>, StoreError> {
        sqlx::query(
            "SELECT id, state, state_changed, amount, kind, destination, receipt \
             FROM contract_withdrawals WHERE state = 'pending' ORDER BY created_at",
        )
        .fetch_all(self.db.pool())
        .await
        .map_err(q("listing pending withdrawals"))?
        .iter()
        .map(withdrawal_of)
        .collect()
    }
}

/// The window a token claims: (open, close, contract signature).
fn claimed_window(token: &Sharetoken) -> Option<(i64, i64, String)> {
    token.contract.as_ref().map(|c| {
        (
            c.settlement_open,
            c.settlement_close,
            c.signature.map(|s| s.to_b64()).unwrap_or_default(),
        )
    })
}

/// Stores the tokens `group` (indexes into `tokens`, all of one servicekey, sorted) and
/// writes their outcomes into `out`.
async fn submit_group(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tokens: &[(&Sharetoken, &str)],
    group: &[usize],
    out: &mut [Submission],
    now: i64,
) -> Result<(), StoreError> {
    let Some(first) = group.first() else {
        return Ok(());
    };
    let servicekey = tokens[*first].0.public_key.to_b64();
    // Takes the servicekey's row lock (a no-op write) before touching any of its tokens.
    let locked = sqlx::query(
        "UPDATE contract_activations SET tokens = tokens WHERE servicekey = $1 \
         AND settled_at IS NULL",
    )
    .bind(&servicekey)
    .execute(&mut **tx)
    .await
    .map_err(q("locking a servicekey"))?;
    let row = sqlx::query(
        "SELECT settlement_open, settlement_close, section_signature \
         FROM contract_activations WHERE servicekey = $1",
    )
    .bind(&servicekey)
    .fetch_optional(&mut **tx)
    .await
    .map_err(q("looking up a servicekey"))?;
    let window = match &row {
        Some(r) => {
            let w: Result<(i64, i64, String), sqlx::Error> =
                (|| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))();
            Some(w.map_err(q("reading a servicekey"))?)
        }
        None => None,
    };
    let open = locked.rows_affected() == 1;
    let mut accepted: i64 = 0;
    for &i in group {
        let (token, json) = tokens[i];
        let signature = token.signature.to_b64();
        out[i] = match &window {
            None => Submission::UnknownServicekey,
            Some(w) if claimed_window(token).as_ref() != Some(w) => Submission::WindowMismatch,
            Some(_) if !open => {
                let seen = sqlx::query(
                    "SELECT 1 AS x FROM contract_sharetokens WHERE servicekey = $1 \
                     AND signature = $2",
                )
                .bind(&servicekey)
                .bind(&signature)
                .fetch_optional(&mut **tx)
                .await
                .map_err(q("looking up a sharetoken"))?;
                if seen.is_some() {
                    Submission::Duplicate
                } else {
                    Submission::Settled
                }
            }
            Some(_) => {
                let inserted = sqlx::query(
                    "INSERT INTO contract_sharetokens (servicekey, signature, relay, token, \
                     accepted_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(&servicekey)
                .bind(&signature)
                .bind(token.relay_pubkey.to_b64())
                .bind(json)
                .bind(now)
                .execute(&mut **tx)
                .await
                .map_err(q("storing a sharetoken"))?;
                if inserted.rows_affected() == 1 {
                    accepted += 1;
                    Submission::Accepted
                } else {
                    Submission::Duplicate
                }
            }
        };
    }
    if accepted > 0 {
        sqlx::query("UPDATE contract_activations SET tokens = tokens + $1 WHERE servicekey = $2")
            .bind(accepted)
            .bind(&servicekey)
            .execute(&mut **tx)
            .await
            .map_err(q("counting sharetokens"))?;
    }
    Ok(())
}

fn get_int(row: &AnyRow, i: usize) -> Result<i64, sqlx::Error> {
    // PostgreSQL sums integers as NUMERIC, which the Any driver cannot read; the query casts
    // where it matters, and this accepts both integer widths the engines return.
    row.try_get::<i64, _>(i)
        .or_else(|_| row.try_get::<i32, _>(i).map(i64::from))
}

fn money_of(rows: &[AnyRow]) -> Result<Money, StoreError> {
    let zero = Rational::from_integer(0);
    let (mut credited, mut pending, mut withdrawn) = (zero.clone(), zero.clone(), zero);
    for r in rows {
        let kind: String = r.try_get(0).map_err(q("reading a balance"))?;
        let amount: String = r.try_get(1).map_err(q("reading a balance"))?;
        let amount = rational("reading a balance", &amount)?;
        match kind.as_str() {
            "credit" => credited = settle::sum([&credited, &amount]),
            "pending" => pending = settle::sum([&pending, &amount]),
            "complete" => withdrawn = settle::sum([&withdrawn, &amount]),
            _ => {}
        }
    }
    let out = Rational(&credited.0 - &pending.0 - &withdrawn.0);
    Ok(Money {
        available: out,
        pending,
        credited,
    })
}

fn withdrawal_of(r: &AnyRow) -> Result<Withdrawal, StoreError> {
    let ctx = "reading a withdrawal";
    let receipt: Option<String> = r.try_get(6).map_err(q(ctx))?;
    Ok(Withdrawal {
        id: r.try_get(0).map_err(q(ctx))?,
        state: r.try_get(1).map_err(q(ctx))?,
        state_changed: r.try_get(2).map_err(q(ctx))?,
        amount: r.try_get(3).map_err(q(ctx))?,
        kind: r.try_get(4).map_err(q(ctx))?,
        destination: r.try_get(5).map_err(q(ctx))?,
        receipt: receipt
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| corrupt(ctx, format!("stored receipt: {e}")))?,
    })
}
