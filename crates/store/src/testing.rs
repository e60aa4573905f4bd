//! Runs one storage test suite against every backend available.
//!
//! SQLite always (a scratch file). PostgreSQL when `WIRELEAP_TEST_POSTGRES` holds a server URL
//! whose user may create databases: each call makes a fresh database there, so tests never
//! see each other's rows. When the variable is unset the PostgreSQL half prints that it was
//! skipped and why (`.ci/run` sets it, so CI never skips it). Set
//! `WIRELEAP_REQUIRE_POSTGRES=1` to turn the skip into a failure.

use crate::{Db, StoreError};
use rand::Rng as _;

/// A database for one test, with what keeps it alive.
pub struct TestDb {
    /// The handle under test.
    pub db: Db,
    /// Human-readable backend name for assertion messages.
    pub name: &'static str,
    _dir: Option<tempfile::TempDir>,
}

/// Variable naming the PostgreSQL server for the tests.
pub const POSTGRES_ENV: &str = "WIRELEAP_TEST_POSTGRES";

/// Fresh databases on every available backend: SQLite always, PostgreSQL when configured.
pub async fn backends() -> Result<Vec<TestDb>, StoreError> {
    let mut out = vec![sqlite().await?];
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => out.push(postgres(&url).await?),
        _ => {
            if std::env::var("WIRELEAP_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                return Err(StoreError::UnsupportedUrl(format!(
                    "WIRELEAP_REQUIRE_POSTGRES=1 but {POSTGRES_ENV} is not set"
                )));
            }
            eprintln!(
                "SKIPPED the PostgreSQL half of this test: {POSTGRES_ENV} is not set \
                 (set it to postgres://user:pass@host/db to run it)"
            );
        }
    }
    Ok(out)
}

/// A fresh SQLite database in a scratch directory.
pub async fn sqlite() -> Result<TestDb, StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Open {
        url: "sqlite scratch dir".into(),
        source: sqlx::Error::Io(e),
    })?;
    let db = Db::open_sqlite(&dir.path().join("test.db")).await?;
    Ok(TestDb {
        db,
        name: "sqlite",
        _dir: Some(dir),
    })
}

/// A fresh database on the PostgreSQL server at `admin_url`.
pub async fn postgres(admin_url: &str) -> Result<TestDb, StoreError> {
    let admin = Db::open(admin_url).await?;
    let name = format!("wl_test_{:016x}", rand::thread_rng().gen::<u64>());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(admin.pool())
        .await
        .map_err(StoreError::query("creating a test database"))?;
    admin.close().await;
    let url = replace_db_name(admin_url, &name);
    let db = Db::open(&url).await?;
    Ok(TestDb {
        db,
        name: "postgres",
        _dir: None,
    })
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_database_name() {
        assert_eq!(
            replace_db_name("postgres://u:p@h:5/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:5/x?sslmode=disable"
        );
        assert_eq!(replace_db_name("postgres://h", "x"), "postgres://h/x");
    }
}
