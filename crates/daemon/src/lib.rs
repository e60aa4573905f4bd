//! The process lifecycle every Wireleap daemon shares: home directory, `config.json`,
//! identity key files, pid and log files, the `init/start/stop/status/restart/reload/log/
//! version/check-config` commands, readiness reporting, signals, tracing, and inheriting
//! listening sockets from a predecessor process.
//!
//! A binary implements [`Service`] (name, config type, `run`) and its `main` calls
//! [`main::<TheService>()`]. What the service does once running (relaying, directory, payments)
//! is not in this crate; neither is the upgrade procedure, which builds on [`listeners`] and
//! [`notify`].
//!
//! Behaviour follows services.md §0.5 with the original's weaknesses fixed: the background
//! child runs in its own session, reports readiness explicitly (sd_notify protocol, so
//! `start --fg` also works under systemd `Type=notify`), a failed start prints only the log
//! lines of that attempt, `stop` waits long enough for a relay to drain, SIGHUP reloads
//! instead of killing, and a pid file naming a recycled pid is recognised as stale.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod control;
pub mod durable;
pub mod foreground;
pub mod home;
pub mod init;
pub mod keyfile;
pub mod listeners;
pub mod logging;
pub mod notify;
pub mod pidfile;
pub mod process;
pub mod service;
mod sys;

pub use config::{check_listen_address, Config, ConfigError, ConfigProblem};
pub use durable::write_atomic;
pub use home::Home;
pub use notify::Readiness;
pub use service::{NoCommands, Reloads, RunContext, Service, VersionInfo};
/// The shutdown signal handed to [`Service::run`]; re-exported so services need no extra
/// dependency.
pub use tokio_util::sync::CancellationToken;

/// Runs a daemon binary: reads inherited listeners and the notify socket from the
/// environment, parses the command line and executes the command. The whole `main` of a
/// binary is `fn main() -> ExitCode { wireleap_daemon::main::<MyService>() }`.
pub fn main<S: Service>() -> std::process::ExitCode {
    // Both read and clear environment variables; done before any thread exists.
    listeners::take_inherited_from_env();
    let readiness = Readiness::from_env();
    cli::run::<S>(std::env::args_os(), readiness)
}
