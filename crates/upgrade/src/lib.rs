//! Self-upgrade of Wireleap daemons: signed release metadata and its verification, the
//! decision what to install (channels, staged rollout, never a downgrade, skip and failure
//! records), download into a quarantine directory, migrations applied to copies, and the
//! zero-downtime hand-over from a running process to its successor over inherited listening
//! sockets, with rollback and a crash-safe journal. Also the `upgrade`, `rollback` and
//! `migrate` commands any daemon binary can expose.
//!
//! Not here: the daemon lifecycle itself (`wireleap-daemon`), what a service does, and the
//! directory's side of channels. The release tool (`wireleap-release`) writes what
//! [`manifest`] reads.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod fetch;
pub mod install;
pub mod manifest;
pub mod migrate;
pub mod policy;
pub mod stamp;
pub mod state;
