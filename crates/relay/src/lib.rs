//! The Wireleap relay (`wireleap-relay`): accepts tunnelled connections (HTTP/2 PUT streams
//! over TLS, or h2c behind a fronting web server), checks and durably stores each stream's
//! sharetoken, forwards the stream to the next relay or the final target, enrolls with each
//! contract's directory, and submits sharetokens for payment (services.md §1).
//!
//! [`Relay`] is the [`wireleap_daemon::Service`] the binary runs; [`RelayRuntime`] is the
//! running relay as a value (start, reload, hand over listeners, shut down with or without
//! disenrolling), which the upgrade code drives. Not here: the tunnel transport itself
//! (`wireleap_net`), protocol objects (`wireleap_proto`), release verification and the
//! upgrade supervisor (`wireleap_upgrade`).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod commands;
pub mod config;
pub mod contracts;
pub mod dial;
pub mod directory;
pub mod handover;
pub mod rest;
pub mod runtime;
pub mod state;
pub mod store;
pub mod submit;
pub mod tls;
pub mod tunnel;
pub mod udp;
pub mod usage;

pub use commands::RelayCommand;
pub use config::RelayConfig;
pub use runtime::{RelayHandle, RelayRuntime, RelayStatus, ShutdownReport};
pub use state::{ShutdownMode, UpgradeNotice};

use std::time::Duration;
use wireleap_daemon::{Home, RunContext, Service, VersionInfo};

/// How long start waits for the first enrollment round before reporting ready anyway.
pub const READY_WAIT: Duration = Duration::from_secs(5);

/// The relay binary.
#[derive(Debug)]
pub struct Relay;

impl Service for Relay {
    const NAME: &'static str = "wireleap-relay";
    const ABOUT: &'static str = "Wireleap relay: forwards tunnelled connections for payment";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        // protocol.md §16.
        interfaces: &[
            ("client-relay", "0.2.0"),
            ("relay-contract", "0.1.0"),
            ("relay-dir", "0.2.0"),
            ("relay-relay", "0.2.0"),
        ],
    };
    type Config = RelayConfig;
    type Command = RelayCommand;

    /// The default init (key files, config.json) plus the TLS files made from the key.
    fn init(home: &Home, force: bool) -> anyhow::Result<()> {
        wireleap_daemon::init::default_init::<Self>(home, force)?;
        let keypair = wireleap_daemon::keyfile::load_keypair(home)?;
        tls::write_files(home, &keypair)?;
        println!(
            "wrote {} and {}",
            home.join(tls::CERT_FILE).display(),
            home.join(tls::KEY_FILE).display()
        );
        Ok(())
    }

    async fn run(mut ctx: RunContext<RelayConfig>) -> anyhow::Result<()> {
        let mut rt = RelayRuntime::start(&ctx.home, ctx.config.clone()).await?;
        rt.wait_first_enrollment(READY_WAIT).await;
        ctx.readiness.ready();
        loop {
            tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                next = ctx.reloads.next() => match next {
                    Some(c) => rt.reload(c).await,
                    None => {
                        ctx.shutdown.cancelled().await;
                        break;
                    }
                },
            }
        }
        let handle = rt.handle();
        if handover::take(&ctx.home, std::process::id()) {
            handle.set_shutdown_mode(ShutdownMode::HandOver);
        }
        rt.shutdown(handle.shutdown_mode()).await;
        Ok(())
    }

    async fn command(home: &Home, command: RelayCommand) -> anyhow::Result<()> {
        commands::run(home, command).await
    }
}
