//! ps-stripe's durable state over `wireleap_store::Db`: checkout orders, the webhook events
//! seen, and the payout ledger.
//!
//! Exactly-once rules the schema enforces:
//! - an order's Stripe session id is UNIQUE, an event id is the PRIMARY KEY of the events
//!   table, and recording an event and marking its order paid happen in one transaction;
//! - issuing is a claim: `paid → issuing` by one conditional UPDATE (only the winner asks auth
//!   for pofs), then `issuing → issued` with the access key, conditional on the same claim; a
//!   claim left behind by a crash goes stale and may be taken again;
//! - a payout row is keyed by the withdrawal id and leaves `pending` once, by a conditional
//!   UPDATE; the transfer id is UNIQUE, so one Stripe transfer cannot pay two withdrawals.

use sqlx::any::AnyRow;
use sqlx::Any;
use sqlx::Row as _;
use wireleap_store::{Compat, Db, Migration, StoreError};

/// Schema component name.
pub const COMPONENT: &str = "ps-stripe";

const V1: &str = "
CREATE TABLE stripe_orders (
    id TEXT PRIMARY KEY,
    session_id TEXT UNIQUE,
    quantity BIGINT NOT NULL,
    duration BIGINT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    paid_at BIGINT,
    amount_total BIGINT,
    currency TEXT,
    claimed_at BIGINT,
    issued_at BIGINT,
    accesskey TEXT
);
CREATE INDEX stripe_orders_state ON stripe_orders (state, created_at);
CREATE TABLE stripe_events (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    session_id TEXT,
    received_at BIGINT NOT NULL
);
CREATE TABLE stripe_payouts (
    withdrawal_id TEXT PRIMARY KEY,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    transfer_id TEXT UNIQUE,
    attempts BIGINT NOT NULL,
    last_error TEXT,
    receipt TEXT,
    created_at BIGINT NOT NULL,
    state_changed BIGINT NOT NULL
);
";

/// ps-stripe's schema steps (the same SQL on both engines).
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "orders, events, payouts",
    // Creates every table: nothing before it can use the database.
    compat: Compat::Breaking,
    sqlite: V1,
    postgres: V1,
}];

/// Declares a state enum kept in a TEXT column: `as_str` gives the stored word, `parse` reads
/// it back, and an unknown word is a decode error with `$context` and `unknown $noun "..."`.
macro_rules! stored_state {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($context:literal, $noun:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The stored text.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            fn parse(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(StoreError::Query {
                        context: $context,
                        source: sqlx::Error::Decode(format!(concat!("unknown ", $noun, " {:?}"), s).into()),
                    }),
                }
            }
        }
    };
}

stored_state! {
    /// Where an order stands.
    pub enum OrderState("reading an order state", "order state") {
        /// Recorded; Stripe has not (knowingly) made a session yet.
        Created = "created",
        /// A checkout session exists; not paid.
        Open = "open",
        /// Paid; access key not issued yet.
        Paid = "paid",
        /// One worker is asking auth for the pofs.
        Issuing = "issuing",
        /// The access key is stored.
        Issued = "issued",
    }
}

/// A checkout order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Our id (Stripe's `client_reference_id`, metadata `order_id`).
    pub id: String,
    /// `cs_...` once known.
    pub session_id: Option<String>,
    /// Pofs bought.
    pub quantity: i64,
    /// Pof validity, seconds.
    pub duration: i64,
    /// State.
    pub state: OrderState,
    /// What Stripe says was paid (minor units), once paid.
    pub amount_total: Option<i64>,
    /// Its currency.
    pub currency: Option<String>,
    /// The access key file (JSON), once issued.
    pub accesskey: Option<String>,
}

/// What recording a paid session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidOutcome {
    /// The event id was seen before (a redelivery).
    pub redelivered: bool,
    /// The order the session belongs to; `None` when it is not one of ours.
    pub order: Option<Order>,
}

/// The result of trying to claim an order for issuing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller holds the claim made at `claimed_at` and must issue.
    Won {
        /// The claim's timestamp (part of the claim's identity).
        claimed_at: i64,
        /// The order.
        order: Order,
    },
    /// Nothing to do by this caller: the order as it stands.
    Not(Order),
}

stored_state! {
    /// Where a payout stands (stored with the same words as withdrawal states).
    pub enum PayoutState("reading a payout state", "payout state") {
        /// Not known to be paid or refused.
        Pending = "pending",
        /// Transferred.
        Complete = "complete",
        /// Refused by Stripe; nothing moved.
        Failed = "failed",
    }
}

/// A payout ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payout {
    /// The contract's withdrawal id.
    pub withdrawal_id: String,
    /// Minor units.
    pub amount: i64,
    /// Lowercase ISO code.
    pub currency: String,
    /// `acct_...`.
    pub destination: String,
    /// State.
    pub state: PayoutState,
    /// `tr_...` once transferred.
    pub transfer_id: Option<String>,
    /// Stripe calls made for it.
    pub attempts: i64,
    /// The receipt sent to the contract, once final.
    pub receipt: Option<serde_json::Value>,
    /// When the state last changed.
    pub state_changed: i64,
}

/// ps-stripe's tables.
#[derive(Debug, Clone)]
pub struct StripeStore {
    db: Db,
}

const ORDER_COLUMNS: &str =
    "id, session_id, quantity, duration, state, amount_total, currency, accesskey";
const PAYOUT_COLUMNS: &str = "withdrawal_id, amount, currency, destination, state, transfer_id, \
                              attempts, receipt, state_changed";

fn q(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    StoreError::query(context)
}

/// The error of a row that must exist but does not.
fn missing(context: &'static str) -> StoreError {
    StoreError::Query {
        context,
        source: sqlx::Error::RowNotFound,
    }
}

/// Column `name` of row `r`; a failure names `context`.
fn col<'r, T>(r: &'r AnyRow, name: &str, context: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    r.try_get(name).map_err(q(context))
}

fn order_of(r: &AnyRow) -> Result<Order, StoreError> {
    const C: &str = "reading an order";
    let state: String = col(r, "state", C)?;
    Ok(Order {
        id: col(r, "id", C)?,
        session_id: col(r, "session_id", C)?,
        quantity: col(r, "quantity", C)?,
        duration: col(r, "duration", C)?,
        state: OrderState::parse(&state)?,
        amount_total: col(r, "amount_total", C)?,
        currency: col(r, "currency", C)?,
        accesskey: col(r, "accesskey", C)?,
    })
}

fn payout_of(r: &AnyRow) -> Result<Payout, StoreError> {
    const C: &str = "reading a payout";
    let state: String = col(r, "state", C)?;
    let receipt: Option<String> = col(r, "receipt", C)?;
    Ok(Payout {
        withdrawal_id: col(r, "withdrawal_id", C)?,
        amount: col(r, "amount", C)?,
        currency: col(r, "currency", C)?,
        destination: col(r, "destination", C)?,
        state: PayoutState::parse(&state)?,
        transfer_id: col(r, "transfer_id", C)?,
        attempts: col(r, "attempts", C)?,
        // A receipt is written by this code as JSON; one that no longer parses is kept as
        // text rather than failing the whole read.
        receipt: receipt.map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t))),
        state_changed: col(r, "state_changed", C)?,
    })
}

/// The order whose column `key` (`id` or `session_id`) is `value`, read through `ex`: the
/// pool, or an open transaction.
async fn select_order<'e, E>(
    ex: E,
    key: &'static str,
    value: &str,
) -> Result<Option<Order>, StoreError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM stripe_orders WHERE {key} = $1"
    ))
    .bind(value)
    .fetch_optional(ex)
    .await
    .map_err(q("reading an order"))?;
    row.as_ref().map(order_of).transpose()
}

/// Records webhook event `event_id` through `ex` (the pool, or an open transaction); true
/// when it was new.
async fn insert_event<'e, E>(
    ex: E,
    event_id: &str,
    kind: &str,
    session_id: Option<&str>,
    now: i64,
) -> Result<bool, StoreError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let inserted = sqlx::query(
        "INSERT INTO stripe_events (id, kind, session_id, received_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(event_id)
    .bind(kind)
    .bind(session_id)
    .bind(now)
    .execute(ex)
    .await
    .map_err(q("recording a webhook event"))?;
    Ok(inserted.rows_affected() == 1)
}

impl StripeStore {
    /// Migrates `db` to ps-stripe's schema and wraps it.
    pub async fn open(db: Db) -> Result<Self, StoreError> {
        db.migrate(COMPONENT, MIGRATIONS).await?;
        Ok(StripeStore { db })
    }

    /// The database handle.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Records a new order (state `created`).
    pub async fn create_order(
        &self,
        id: &str,
        quantity: i64,
        duration: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stripe_orders (id, quantity, duration, state, created_at) \
             VALUES ($1, $2, $3, 'created', $4)",
        )
        .bind(id)
        .bind(quantity)
        .bind(duration)
        .bind(now)
        .execute(self.db.pool())
        .await
        .map_err(q("recording an order"))?;
        Ok(())
    }

    /// Links an order to its checkout session (`created → open`; a session already linked by
    /// a fast webhook is left alone).
    pub async fn attach_session(&self, id: &str, session_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE stripe_orders SET session_id = $1, \
             state = CASE WHEN state = 'created' THEN 'open' ELSE state END \
             WHERE id = $2 AND (session_id IS NULL OR session_id = $3)",
        )
        .bind(session_id)
        .bind(id)
        .bind(session_id)
        .execute(self.db.pool())
        .await
        .map_err(q("linking an order to its session"))?;
        Ok(())
    }

    /// The order of checkout session `session_id`.
    pub async fn order_by_session(&self, session_id: &str) -> Result<Option<Order>, StoreError> {
        select_order(self.db.pool(), "session_id", session_id).await
    }

    /// The order with id `id`.
    pub async fn order(&self, id: &str) -> Result<Option<Order>, StoreError> {
        select_order(self.db.pool(), "id", id).await
    }

    /// Records webhook event `event_id` (of type `kind`) for a paid session and marks the
    /// order paid, in one transaction. The order is found by session id, or else by our
    /// `order_id` from the session's metadata when its session was never linked (the reply of
    /// the session creation was lost).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_paid(
        &self,
        event_id: &str,
        kind: &str,
        session_id: &str,
        order_hint: Option<&str>,
        amount_total: Option<i64>,
        currency: Option<&str>,
        now: i64,
    ) -> Result<PaidOutcome, StoreError> {
        let mut tx = self
            .db
            .pool()
            .begin()
            .await
            .map_err(q("starting to record a payment"))?;
        let redelivered = !insert_event(&mut *tx, event_id, kind, Some(session_id), now).await?;
        let mut order = select_order(&mut *tx, "session_id", session_id).await?;
        if order.is_none() {
            if let Some(hint) = order_hint {
                let linked = sqlx::query(
                    "UPDATE stripe_orders SET session_id = $1 WHERE id = $2 AND session_id IS NULL",
                )
                .bind(session_id)
                .bind(hint)
                .execute(&mut *tx)
                .await
                .map_err(q("linking an order to its session"))?;
                if linked.rows_affected() == 1 {
                    order = select_order(&mut *tx, "id", hint).await?;
                }
            }
        }
        let Some(order) = order else {
            tx.commit().await.map_err(q("committing a webhook event"))?;
            return Ok(PaidOutcome {
                redelivered,
                order: None,
            });
        };
        sqlx::query(
            "UPDATE stripe_orders SET state = 'paid', paid_at = $1, amount_total = $2, \
             currency = $3 WHERE id = $4 AND state IN ('created', 'open')",
        )
        .bind(now)
        .bind(amount_total)
        .bind(currency)
        .bind(&order.id)
        .execute(&mut *tx)
        .await
        .map_err(q("marking an order paid"))?;
        let order = select_order(&mut *tx, "id", &order.id)
            .await?
            .ok_or_else(|| missing("reading an order"))?;
        tx.commit().await.map_err(q("committing a payment"))?;
        Ok(PaidOutcome {
            redelivered,
            order: Some(order),
        })
    }

    /// Records a webhook event that changes no order (for the log of what was seen);
    /// returns whether it was new.
    pub async fn record_event(
        &self,
        event_id: &str,
        kind: &str,
        session_id: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        insert_event(self.db.pool(), event_id, kind, session_id, now).await
    }

    /// Claims order `id` for issuing: wins if it is paid, or if an earlier claim is older than
    /// `stale_before` (its worker died).
    pub async fn claim(&self, id: &str, now: i64, stale_before: i64) -> Result<Claim, StoreError> {
        let won = sqlx::query(
            "UPDATE stripe_orders SET state = 'issuing', claimed_at = $1 \
             WHERE id = $2 AND (state = 'paid' OR (state = 'issuing' AND claimed_at < $3))",
        )
        .bind(now)
        .bind(id)
        .bind(stale_before)
        .execute(self.db.pool())
        .await
        .map_err(q("claiming an order"))?
        .rows_affected()
            == 1;
        let order = self
            .order(id)
            .await?
            .ok_or_else(|| missing("claiming an order"))?;
        Ok(if won {
            Claim::Won {
                claimed_at: now,
                order,
            }
        } else {
            Claim::Not(order)
        })
    }

    /// Stores the access key of a claimed order (`issuing → issued`); false when the claim
    /// was lost meanwhile (then the key must not be handed out).
    pub async fn finish_issue(
        &self,
        id: &str,
        claimed_at: i64,
        accesskey: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE stripe_orders SET state = 'issued', issued_at = $1, accesskey = $2 \
             WHERE id = $3 AND state = 'issuing' AND claimed_at = $4",
        )
        .bind(now)
        .bind(accesskey)
        .bind(id)
        .bind(claimed_at)
        .execute(self.db.pool())
        .await
        .map_err(q("storing an access key"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a claim back (issuing failed): `issuing → paid`.
    pub async fn release(&self, id: &str, claimed_at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE stripe_orders SET state = 'paid', claimed_at = NULL \
             WHERE id = $1 AND state = 'issuing' AND claimed_at = $2",
        )
        .bind(id)
        .bind(claimed_at)
        .execute(self.db.pool())
        .await
        .map_err(q("releasing an order"))?;
        Ok(())
    }

    /// Orders paid but not issued (or with a stale claim), oldest first.
    pub async fn to_issue(&self, stale_before: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM stripe_orders WHERE state = 'paid' \
             OR (state = 'issuing' AND claimed_at < $1) ORDER BY created_at, id LIMIT $2",
        )
        .bind(stale_before)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await
        .map_err(q("listing orders to issue"))?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(q("listing orders to issue")))
            .collect()
    }

    /// Counts orders in `state`.
    pub async fn count_orders(&self, state: OrderState) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM stripe_orders WHERE state = $1")
            .bind(state.as_str())
            .fetch_one(self.db.pool())
            .await
            .map_err(q("counting orders"))?;
        row.try_get("n").map_err(q("counting orders"))
    }

    /// Counts webhook events seen.
    pub async fn count_events(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM stripe_events")
            .fetch_one(self.db.pool())
            .await
            .map_err(q("counting events"))?;
        row.try_get("n").map_err(q("counting events"))
    }

    /// Records a new pending payout, or returns the existing row for that withdrawal id
    /// (`true` = newly created).
    pub async fn begin_payout(
        &self,
        withdrawal_id: &str,
        amount: i64,
        currency: &str,
        destination: &str,
        now: i64,
    ) -> Result<(Payout, bool), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO stripe_payouts (withdrawal_id, amount, currency, destination, state, \
             attempts, created_at, state_changed) VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6) \
             ON CONFLICT DO NOTHING",
        )
        .bind(withdrawal_id)
        .bind(amount)
        .bind(currency)
        .bind(destination)
        .bind(now)
        .bind(now)
        .execute(self.db.pool())
        .await
        .map_err(q("recording a payout"))?;
        let p = self
            .payout(withdrawal_id)
            .await?
            .ok_or_else(|| missing("recording a payout"))?;
        Ok((p, inserted.rows_affected() == 1))
    }

    /// The payout of `withdrawal_id`.
    pub async fn payout(&self, withdrawal_id: &str) -> Result<Option<Payout>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {PAYOUT_COLUMNS} FROM stripe_payouts WHERE withdrawal_id = $1"
        ))
        .bind(withdrawal_id)
        .fetch_optional(self.db.pool())
        .await
        .map_err(q("reading a payout"))?;
        row.as_ref().map(payout_of).transpose()
    }

    /// Notes that a Stripe call is about to be made for a pending payout.
    pub async fn note_attempt(&self, withdrawal_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE stripe_payouts SET attempts = attempts + 1 \
             WHERE withdrawal_id = $1 AND state = 'pending'",
        )
        .bind(withdrawal_id)
        .execute(self.db.pool())
        .await
        .map_err(q("counting a payout attempt"))?;
        Ok(())
    }

    /// Notes why the last attempt did not finish a pending payout.
    pub async fn note_error(&self, withdrawal_id: &str, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE stripe_payouts SET last_error = $1 WHERE withdrawal_id = $2 AND state = 'pending'",
        )
        .bind(error)
        .bind(withdrawal_id)
        .execute(self.db.pool())
        .await
        .map_err(q("noting a payout error"))?;
        Ok(())
    }

    /// Moves a pending payout to `state` (complete with its transfer id, or failed); false
    /// when it was no longer pending.
    pub async fn finish_payout(
        &self,
        withdrawal_id: &str,
        state: PayoutState,
        transfer_id: Option<&str>,
        receipt: &serde_json::Value,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE stripe_payouts SET state = $1, transfer_id = $2, receipt = $3, \
             state_changed = $4, last_error = NULL WHERE withdrawal_id = $5 AND state = 'pending'",
        )
        .bind(state.as_str())
        .bind(transfer_id)
        .bind(receipt.to_string())
        .bind(now)
        .bind(withdrawal_id)
        .execute(self.db.pool())
        .await
        .map_err(q("finishing a payout"))?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// Records a `checkout.session.completed` event for session `session`.
    async fn paid(
        s: &StripeStore,
        event: &str,
        session: &str,
        hint: Option<&str>,
        amount: Option<i64>,
        currency: Option<&str>,
        now: i64,
    ) -> PaidOutcome {
        s.record_paid(
            event,
            "checkout.session.completed",
            session,
            hint,
            amount,
            currency,
            now,
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn orders_are_paid_and_issued_once_on_every_backend() {
        for t in wireleap_store::testing::backends().await.unwrap() {
            let s = StripeStore::open(t.db.clone()).await.unwrap();
            let n = t.name;
            s.create_order("o1", 2, 60, 100).await.unwrap();
            s.attach_session("o1", "cs_1").await.unwrap();
            assert_eq!(
                s.order_by_session("cs_1").await.unwrap().unwrap().state,
                OrderState::Open,
                "{n}"
            );
            // A second session id cannot take over the order.
            s.attach_session("o1", "cs_other").await.unwrap();
            assert!(
                s.order_by_session("cs_other").await.unwrap().is_none(),
                "{n}"
            );

            let p = paid(&s, "evt_1", "cs_1", Some("o1"), Some(500), Some("usd"), 110).await;
            assert!(!p.redelivered, "{n}");
            let o = p.order.unwrap();
            assert_eq!(
                (o.state, o.amount_total),
                (OrderState::Paid, Some(500)),
                "{n}"
            );
            let again = paid(&s, "evt_1", "cs_1", Some("o1"), Some(500), Some("usd"), 111).await;
            assert!(again.redelivered, "{n}");
            assert_eq!(s.count_events().await.unwrap(), 1, "{n}");

            let Claim::Won { claimed_at, .. } = s.claim("o1", 120, 0).await.unwrap() else {
                panic!("{n}: the first claim wins");
            };
            assert!(
                matches!(s.claim("o1", 121, 0).await.unwrap(), Claim::Not(_)),
                "{n}"
            );
            assert!(
                s.finish_issue("o1", claimed_at, "{}", 130).await.unwrap(),
                "{n}"
            );
            assert!(
                !s.finish_issue("o1", claimed_at, "{}", 131).await.unwrap(),
                "{n}"
            );
            let Claim::Not(o) = s.claim("o1", 10_000, 9_999).await.unwrap() else {
                panic!("{n}: an issued order is never claimed again");
            };
            assert_eq!(
                (o.state, o.accesskey.as_deref()),
                (OrderState::Issued, Some("{}")),
                "{n}"
            );
            assert_eq!(s.count_orders(OrderState::Issued).await.unwrap(), 1, "{n}");
        }
    }

    #[tokio::test]
    async fn lost_session_reply_stale_claims_and_unknown_sessions() {
        for t in wireleap_store::testing::backends().await.unwrap() {
            let s = StripeStore::open(t.db.clone()).await.unwrap();
            let n = t.name;
            // Order without a linked session: found through the metadata hint.
            s.create_order("o2", 1, 60, 100).await.unwrap();
            let p = paid(&s, "evt_2", "cs_2", Some("o2"), None, None, 110).await;
            assert_eq!(p.order.unwrap().session_id.as_deref(), Some("cs_2"), "{n}");
            // Not ours.
            let p = paid(&s, "evt_3", "cs_x", Some("nope"), None, None, 110).await;
            assert!(p.order.is_none(), "{n}");
            // A crashed claim goes stale; a released one is claimable at once.
            let Claim::Won { claimed_at, .. } = s.claim("o2", 200, 0).await.unwrap() else {
                panic!("{n}");
            };
            assert_eq!(
                s.to_issue(150, 10).await.unwrap(),
                Vec::<String>::new(),
                "{n}"
            );
            assert_eq!(
                s.to_issue(201, 10).await.unwrap(),
                vec!["o2".to_string()],
                "{n}"
            );
            s.release("o2", claimed_at).await.unwrap();
            assert_eq!(
                s.order("o2").await.unwrap().unwrap().state,
                OrderState::Paid,
                "{n}"
            );
            let Claim::Won { claimed_at: c2, .. } = s.claim("o2", 300, 0).await.unwrap() else {
                panic!("{n}");
            };
            let Claim::Won { claimed_at: c3, .. } = s.claim("o2", 900, 301).await.unwrap() else {
                panic!("{n}: a stale claim is taken over");
            };
            assert!(
                !s.finish_issue("o2", c2, "{}", 901).await.unwrap(),
                "{n}: the old worker lost"
            );
            assert!(s.finish_issue("o2", c3, "{}", 902).await.unwrap(), "{n}");
        }
    }

    #[tokio::test]
    async fn payouts_finish_once_on_every_backend() {
        for t in wireleap_store::testing::backends().await.unwrap() {
            let s = StripeStore::open(t.db.clone()).await.unwrap();
            let n = t.name;
            let (p, new) = s
                .begin_payout("w1", 500, "usd", "acct_1", 10)
                .await
                .unwrap();
            assert!(new, "{n}");
            assert_eq!((p.state, p.attempts), (PayoutState::Pending, 0), "{n}");
            let (_, new) = s
                .begin_payout("w1", 999, "usd", "acct_2", 11)
                .await
                .unwrap();
            assert!(!new, "{n}");
            s.note_attempt("w1").await.unwrap();
            s.note_error("w1", "timeout").await.unwrap();
            let receipt = serde_json::json!({"transfer": "tr_1"});
            assert!(
                s.finish_payout("w1", PayoutState::Complete, Some("tr_1"), &receipt, 20)
                    .await
                    .unwrap(),
                "{n}"
            );
            assert!(
                !s.finish_payout("w1", PayoutState::Failed, None, &receipt, 21)
                    .await
                    .unwrap(),
                "{n}"
            );
            let p = s.payout("w1").await.unwrap().unwrap();
            assert_eq!(p.amount, 500, "{n}: the first request's fields are kept");
            assert_eq!((p.state, p.attempts), (PayoutState::Complete, 1), "{n}");
            assert_eq!(p.receipt, Some(receipt.clone()), "{n}");
            // One transfer cannot complete two withdrawals.
            s.begin_payout("w2", 500, "usd", "acct_1", 30)
                .await
                .unwrap();
            assert!(
                s.finish_payout("w2", PayoutState::Complete, Some("tr_1"), &receipt, 31)
                    .await
                    .is_err(),
                "{n}"
            );
        }
    }
}
