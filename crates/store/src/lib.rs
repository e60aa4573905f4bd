//! Durable storage shared by the services: one database handle over SQLite (the embedded
//! default, WAL mode, nothing to install) or PostgreSQL (for several service instances sharing
//! one database), versioned schema migrations per backend, and a test harness that runs one
//! test suite against both backends.
//!
//! Queries are built at run time (no sqlx macros) so the same code serves both backends. Each
//! service keeps its own tables and store type in its own module; this crate is not an ORM:
//! SQL stays visible. Placeholders are written `$1, $2, ...` in ascending order of first use,
//! which both backends accept.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

mod db;
pub mod testing;

pub use db::{Backend, Compat, Db, Migration, StoreError, PREDECESSOR_ENV};
