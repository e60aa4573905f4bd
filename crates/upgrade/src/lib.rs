//! Self-upgrade of Wireleap daemons: signed release metadata and its verification, the
//! decision what to install (channels, staged rollout, never a downgrade, skip and failure
//! records), download into a quarantine directory, migrations applied to copies, and the
//! zero-downtime hand-over from a running process to its successor over inherited listening
//! sockets, with rollback and a crash-safe journal. Also the `upgrade`, `rollback` and
//! `migrate` commands any daemon binary can expose.
//!
//! Entry points for a daemon: [`startup::recover_at_start`] in `main`, an [`agent::Agent`] in
//! `Service::run`, [`commands::UpgradeCommand`] among its subcommands.
//!
//! Not here: the daemon lifecycle itself (`wireleap-daemon`), what a service does, and the
//! directory's side of channels. The release tool (`wireleap-release`) writes what
//! [`manifest`] reads.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod agent;
pub mod check;
pub mod commands;
pub mod control;
pub mod daemon;
pub mod fetch;
pub mod handover;
pub mod install;
pub mod manifest;
pub mod migrate;
pub mod policy;
pub mod report;
pub mod settings;
pub mod stamp;
pub mod startup;
pub mod state;

pub use agent::{Agent, AgentContext, StopReason};
pub use check::Component;
pub use commands::UpgradeCommand;
pub use handover::{AcceptGate, Probe};
pub use migrate::Migration;
pub use settings::{Settings, UpgradeConfig};
