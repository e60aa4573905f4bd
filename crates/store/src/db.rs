//! The database handle: opening, backend pragmas, and schema migrations.

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row as _};
use std::path::Path;
use std::time::Duration;

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file in WAL mode with full fsync.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// A storage failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL names no supported engine.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// The database could not be opened or reached.
    #[error("cannot open database {url}: {source}")]
    Open {
        /// The URL with any password removed.
        url: String,
        /// The driver error.
        source: sqlx::Error,
    },
    /// A schema migration failed; nothing of it was applied.
    #[error("schema migration {component} v{version} ({name}) failed: {source}")]
    Migration {
        /// Which component's schema.
        component: &'static str,
        /// Migration version.
        version: i64,
        /// Migration name.
        name: &'static str,
        /// The driver error.
        source: sqlx::Error,
    },
    /// The database holds a newer schema than this binary knows: refuse rather than corrupt.
    #[error("database schema of {component} is at v{found}, newer than this build knows (v{known}); run the newer binary or roll the data back")]
    SchemaTooNew {
        /// Which component's schema.
        component: &'static str,
        /// Version found in the database.
        found: i64,
        /// Highest version this build has.
        known: i64,
    },
    /// A query failed.
    #[error("database error while {context}: {source}")]
    Query {
        /// What was being done.
        context: &'static str,
        /// The driver error.
        source: sqlx::Error,
    },
}

impl StoreError {
    /// Wraps a driver error with what was being done.
    pub fn query(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Query { context, source }
    }
}

/// One schema step of a component. Both backends' SQL must leave the same logical schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Strictly increasing per component, starting at 1.
    pub version: i64,
    /// Short name for logs.
    pub name: &'static str,
    /// Statements for SQLite, separated by `;` at line ends.
    pub sqlite: &'static str,
    /// Statements for PostgreSQL, separated by `;` at line ends.
    pub postgres: &'static str,
}

/// A pooled connection to the service's database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Opens `sqlite://PATH` (created if missing) or `postgres://...`.
    pub async fn open(url: &str) -> Result<Db, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        };
        let opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let opts = match backend {
            Backend::Sqlite => opts
                // One writer at a time is SQLite's model; a small pool still lets reads overlap.
                .max_connections(4)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // WAL + synchronous=FULL: a committed transaction survives kill -9 and
                        // power loss; busy_timeout makes concurrent writers wait, not fail.
                        for pragma in [
                            "PRAGMA journal_mode=WAL",
                            "PRAGMA synchronous=FULL",
                            "PRAGMA busy_timeout=10000",
                            "PRAGMA foreign_keys=ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                        Ok(())
                    })
                }),
            Backend::Postgres => opts.max_connections(16),
        };
        let url_for_driver = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let pool = opts
            .connect(&url_for_driver)
            .await
            .map_err(|source| StoreError::Open {
                url: redact(url),
                source,
            })?;
        Ok(Db { pool, backend })
    }

    /// Opens (creating if needed) an SQLite database file.
    pub async fn open_sqlite(path: &Path) -> Result<Db, StoreError> {
        Db::open(&format!("sqlite://{}", path.display())).await
    }

    /// The engine behind this handle.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for the service stores' queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Applies the component's pending migrations in order, each in its own transaction.
    /// Safe to run from several instances at once: PostgreSQL serialises them with an
    /// advisory lock, SQLite with its write lock.
    pub async fn migrate(
        &self,
        component: &'static str,
        migrations: &[Migration],
    ) -> Result<(), StoreError> {
        let create = "CREATE TABLE IF NOT EXISTS wireleap_schema (component TEXT NOT NULL, \
                      version BIGINT NOT NULL, name TEXT NOT NULL, applied_at BIGINT NOT NULL, \
                      PRIMARY KEY (component, version))";
        sqlx::query(create)
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("creating the schema table"))?;
        let known = migrations.iter().map(|m| m.version).max().unwrap_or(0);
        for m in migrations {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(StoreError::query("starting a migration"))?;
            if self.backend == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock(7283560201)")
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("locking for migration"))?;
            }
            let row: AnyRow = sqlx::query(
                "SELECT COALESCE(MAX(version), 0) AS v FROM wireleap_schema WHERE component = $1",
            )
            .bind(component)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::query("reading the schema version"))?;
            let current: i64 = row
                .try_get("v")
                .map_err(StoreError::query("reading the schema version"))?;
            if current > known {
                return Err(StoreError::SchemaTooNew {
                    component,
                    found: current,
                    known,
                });
            }
            if current >= m.version {
                continue;
            }
            let sql = match self.backend {
                Backend::Sqlite => m.sqlite,
                Backend::Postgres => m.postgres,
            };
            let fail = |source| StoreError::Migration {
                component,
                version: m.version,
                name: m.name,
                source,
            };
            for stmt in split_statements(sql) {
                sqlx::query(stmt).execute(&mut *tx).await.map_err(fail)?;
            }
            sqlx::query(
                "INSERT INTO wireleap_schema (component, version, name, applied_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(component)
            .bind(m.version)
            .bind(m.name)
            .bind(unix_now())
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            tracing::info!(
                component,
                version = m.version,
                name = m.name,
                "schema migrated"
            );
        }
        Ok(())
    }

    /// The schema version of `component` (0 when none).
    pub async fn schema_version(&self, component: &str) -> Result<i64, StoreError> {
        let row: AnyRow = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) AS v FROM wireleap_schema WHERE component = $1",
        )
        .bind(component)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::query("reading the schema version"))?;
        row.try_get("v")
            .map_err(StoreError::query("reading the schema version"))
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn split_statements(sql: &str) -> impl Iterator<Item = &str> {
    sql.split(";\n").map(str::trim).filter(|s| !s.is_empty())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Removes a password from a database URL before it is shown.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }

    #[test]
    fn splits_on_statement_ends() {
        let v: Vec<_> = split_statements("CREATE A;\nCREATE B;\n").collect();
        assert_eq!(v, ["CREATE A", "CREATE B"]);
    }
}
