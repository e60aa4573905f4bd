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
    /// The database holds a newer schema than this binary knows, and one of the newer
    /// migrations changed it in a way older builds cannot use: refuse rather than corrupt.
    #[error("database schema of {component} is at v{found}, newer than this build knows (v{known}), and builds before v{floor} cannot use it; run the newer binary or roll the data back")]
    SchemaTooNew {
        /// Which component's schema.
        component: &'static str,
        /// Version found in the database.
        found: i64,
        /// Highest version this build has.
        known: i64,
        /// The lowest schema version a build must know to use this database.
        floor: i64,
    },
    /// A breaking migration was due while the process being upgraded still runs on the same
    /// database (a zero-downtime hand-over): applying it would pull the schema from under
    /// that process, and from under it again if the upgrade were rolled back.
    #[error("schema migration {component} v{version} ({name}) is breaking and cannot run while the previous process still uses the database (zero-downtime upgrade); stop the service, then start the new version")]
    BreakingDuringHandover {
        /// Which component's schema.
        component: &'static str,
        /// Migration version.
        version: i64,
        /// Migration name.
        name: &'static str,
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

/// Whether builds that predate a migration can keep using the database after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    /// Only adds (tables, indexes, nullable or defaulted columns): older builds keep reading
    /// and writing. Upgrades rely on it: during a zero-downtime hand-over the old process
    /// runs on the database the new one migrated, and after a rollback the old build must
    /// be able to start on it again.
    Expand,
    /// Renames, drops or reinterprets: builds before this version must not use the
    /// database once it is applied. Cannot run during a hand-over (the old process still
    /// runs): such a release is installed by stopping the service first.
    Breaking,
}

/// The environment variable the upgrade hand-over sets on the new process, naming the old
/// one that still runs on the same database (`wireleap_upgrade::handover::PREDECESSOR_ENV`).
pub const PREDECESSOR_ENV: &str = "WIRELEAP_UPGRADE_PREDECESSOR";

/// One schema step of a component. Both backends' SQL must leave the same logical schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Strictly increasing per component, starting at 1.
    pub version: i64,
    /// Short name for logs.
    pub name: &'static str,
    /// Whether older builds can still use the database after it.
    pub compat: Compat,
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
    ///
    /// A database already migrated past what this build knows is used as it is when every
    /// newer migration was [`Compat::Expand`] (the schema's floor, the lowest version a
    /// build must know, is recorded per component), and refused otherwise. While
    /// [`PREDECESSOR_ENV`] is set (the new process of a hand-over), a pending
    /// [`Compat::Breaking`] migration is refused before anything is written.
    pub async fn migrate(
        &self,
        component: &'static str,
        migrations: &[Migration],
    ) -> Result<(), StoreError> {
        // As the upgrade agent reads it: a pid that is not ours (a re-exec keeps the pid).
        let handover = std::env::var(PREDECESSOR_ENV)
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|pid| pid != std::process::id());
        self.migrate_with(component, migrations, handover).await
    }

    /// [`Db::migrate`], told whether a previous process still runs on the database.
    pub async fn migrate_with(
        &self,
        component: &'static str,
        migrations: &[Migration],
        predecessor_running: bool,
    ) -> Result<(), StoreError> {
        // Under the migration lock: on PostgreSQL two concurrent `CREATE TABLE IF NOT EXISTS`
        // of one table can fail on the catalogue's unique index.
        let mut tx = self.begin_migration().await?;
        for create in [
            "CREATE TABLE IF NOT EXISTS wireleap_schema (component TEXT NOT NULL, \
             version BIGINT NOT NULL, name TEXT NOT NULL, applied_at BIGINT NOT NULL, \
             PRIMARY KEY (component, version))",
            // The lowest schema version a build must know to use the database: the newest
            // breaking migration applied. No row (a database from before this table):
            // only builds knowing its current version.
            "CREATE TABLE IF NOT EXISTS wireleap_schema_floor (component TEXT PRIMARY KEY, \
             version BIGINT NOT NULL)",
        ] {
            sqlx::query(create)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query("creating the schema tables"))?;
        }
        // A hand-over's new process refuses a pending breaking migration before it applies
        // anything, expanding ones before it included.
        let current = current_version(&mut tx, component).await?;
        if predecessor_running && current > 0 {
            if let Some(m) = migrations
                .iter()
                .find(|m| m.version > current && m.compat == Compat::Breaking)
            {
                return Err(StoreError::BreakingDuringHandover {
                    component,
                    version: m.version,
                    name: m.name,
                });
            }
        }
        tx.commit()
            .await
            .map_err(StoreError::query("creating the schema tables"))?;
        let known = migrations.iter().map(|m| m.version).max().unwrap_or(0);
        for m in migrations {
            let mut tx = self.begin_migration().await?;
            let current = current_version(&mut tx, component).await?;
            let floor = scalar(
                &mut tx,
                "SELECT version AS v FROM wireleap_schema_floor WHERE component = $1",
                component,
            )
            .await?;
            if current > known {
                let floor = floor.unwrap_or(current);
                if floor > known {
                    return Err(StoreError::SchemaTooNew {
                        component,
                        found: current,
                        known,
                        floor,
                    });
                }
                tracing::info!(
                    component,
                    schema = current,
                    known,
                    "database schema is newer than this build but only added to what it knows; using it"
                );
                return Ok(());
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
            let new_floor = match m.compat {
                Compat::Breaking => m.version,
                // Unknown floor (older database): the version it was at.
                Compat::Expand => floor.unwrap_or(current),
            };
            sqlx::query(
                "INSERT INTO wireleap_schema_floor (component, version) VALUES ($1, $2) \
                 ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            )
            .bind(component)
            .bind(new_floor)
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

    /// A transaction holding the migration lock, which serialises migrations across
    /// instances: on PostgreSQL a transaction-scoped advisory lock; SQLite's own write lock
    /// does it there.
    async fn begin_migration(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
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
        Ok(tx)
    }

    /// The schema version of `component` (0 when none).
    pub async fn schema_version(&self, component: &str) -> Result<i64, StoreError> {
        let row: AnyRow = sqlx::query(SCHEMA_VERSION_SQL)
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

/// The schema version of `component` as the transaction sees it (0 when none).
async fn current_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    component: &str,
) -> Result<i64, StoreError> {
    Ok(scalar(tx, SCHEMA_VERSION_SQL, component)
        .await?
        .unwrap_or(0))
}

/// A component's schema version (0 when none), as column `v`.
const SCHEMA_VERSION_SQL: &str =
    "SELECT COALESCE(MAX(version), 0) AS v FROM wireleap_schema WHERE component = $1";

/// The `v` column of a one-row query bound to `component`; `None` when there is no row.
async fn scalar(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sql: &'static str,
    component: &str,
) -> Result<Option<i64>, StoreError> {
    let row: Option<AnyRow> = sqlx::query(sql)
        .bind(component)
        .fetch_optional(&mut **tx)
        .await
        .map_err(StoreError::query("reading the schema version"))?;
    row.map(|r| r.try_get("v"))
        .transpose()
        .map_err(StoreError::query("reading the schema version"))
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
