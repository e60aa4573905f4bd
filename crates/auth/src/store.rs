//! Auth's record of every pof it issued (who asked, when, for what price), over
//! `wireleap_store::Db`. A pof's digest is the primary key, so a nonce collision cannot
//! silently issue the same pof twice: the whole request fails and nothing is recorded.

use sqlx::Row as _;
use wireleap_proto::payout::Accounting;
use wireleap_proto::pof::Pof;
use wireleap_store::{Compat, Db, Migration, StoreError};

/// Schema component name.
pub const COMPONENT: &str = "auth";

const V1: &str = "
CREATE TABLE auth_pofs (
    digest TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    expiration BIGINT NOT NULL,
    nonce TEXT NOT NULL,
    issued_to TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    price BIGINT,
    currency TEXT
);
CREATE INDEX auth_pofs_issued_to ON auth_pofs (issued_to, issued_at);
";

/// Auth's schema steps (the same SQL on both engines).
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "issued pofs",
    // Creates every table: nothing before it can use the database.
    compat: Compat::Breaking,
    sqlite: V1,
    postgres: V1,
}];

/// Auth's tables.
#[derive(Debug, Clone)]
pub struct AuthStore {
    db: Db,
}

impl AuthStore {
    /// Migrates `db` to auth's schema and wraps it.
    pub async fn open(db: Db) -> Result<Self, StoreError> {
        db.migrate(COMPONENT, MIGRATIONS).await?;
        Ok(AuthStore { db })
    }

    /// The database handle.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Records issued pofs in one transaction (all or none). `issued_to` names the payment
    /// service key, or `offline`.
    pub async fn record(
        &self,
        pofs: &[Pof],
        issued_to: &str,
        accounting: Option<&Accounting>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .db
            .pool()
            .begin()
            .await
            .map_err(StoreError::query("starting to record pofs"))?;
        for p in pofs {
            sqlx::query(
                "INSERT INTO auth_pofs (digest, kind, expiration, nonce, issued_to, issued_at, \
                 price, currency) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(p.digest())
            .bind(&p.kind)
            .bind(p.expiration)
            .bind(&p.nonce)
            .bind(issued_to)
            .bind(now)
            .bind(accounting.map(|a| a.price))
            .bind(accounting.map(|a| a.currency.clone()))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query("recording a pof"))?;
        }
        tx.commit()
            .await
            .map_err(StoreError::query("committing issued pofs"))
    }

    /// How many pofs were issued to `issued_to`.
    pub async fn issued_count(&self, issued_to: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM auth_pofs WHERE issued_to = $1")
            .bind(issued_to)
            .fetch_one(self.db.pool())
            .await
            .map_err(StoreError::query("counting issued pofs"))?;
        row.try_get(0)
            .map_err(StoreError::query("counting issued pofs"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use wireleap_proto::keys::Keypair;

    #[tokio::test]
    async fn records_all_or_nothing_on_every_backend() {
        for t in wireleap_store::testing::backends().await.unwrap() {
            let store = AuthStore::open(t.db.clone()).await.unwrap();
            let kp = Keypair::from_seed([1; 32]);
            let a = Pof::new_signed(&kp, "dummy".into(), 100, "a".into());
            let b = Pof::new_signed(&kp, "dummy".into(), 100, "b".into());
            let acc = Accounting {
                price: 5,
                currency: "usd".into(),
            };
            store
                .record(std::slice::from_ref(&a), "ps", Some(&acc), 1)
                .await
                .unwrap();
            assert_eq!(store.issued_count("ps").await.unwrap(), 1, "{}", t.name);
            // `a` again collides: `b` must not be recorded either.
            assert!(store.record(&[b.clone(), a], "ps", None, 2).await.is_err());
            assert_eq!(store.issued_count("ps").await.unwrap(), 1, "{}", t.name);
            store.record(&[b], "offline", None, 2).await.unwrap();
            assert_eq!(
                store.issued_count("offline").await.unwrap(),
                1,
                "{}",
                t.name
            );
        }
    }
}
