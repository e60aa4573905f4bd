//! The Wireleap client (`wireleap`): a daemon that accepts local connections (SOCKSv5, local
//! h2c) and carries them through circuits of relays paid with sharetokens, plus the commands
//! that manage it (`import`, `accesskeys`, `exec`, ...).
//!
//! Not here: the wire objects (`wireleap-proto`), TLS and the HTTP/2 tunnel (`wireleap-net`),
//! the HTTP API client (`wireleap-api`), the process lifecycle (`wireleap-daemon`).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod accesskeys;
pub mod circuit;
pub mod config;
pub mod dialer;
pub mod directory;
pub mod files;
pub mod servicekey;
pub mod socks;
pub mod udpframe;

pub use config::ClientConfig;

use std::sync::Arc;
use wireleap_daemon::{init, listeners, Home, NoCommands, RunContext, Service, VersionInfo};

/// The `wireleap` binary.
#[derive(Debug)]
pub struct Client;

impl Service for Client {
    const NAME: &'static str = "wireleap";
    const ABOUT: &'static str = "Wireleap client: routes local traffic through paid relay circuits";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        // protocol.md §16.
        interfaces: &[
            ("client-contract", "0.1.0"),
            ("client-dir", "0.2.0"),
            ("client-relay", "0.2.0"),
        ],
    };
    type Config = ClientConfig;
    type Command = NoCommands;

    /// The client has no identity key: `init` writes config.json only, and replaces an
    /// existing one only with `--force` (the original overwrote it silently).
    fn init(home: &Home, force: bool) -> anyhow::Result<()> {
        init::create_home(home)?;
        if !force && home.config_file().exists() {
            anyhow::bail!(
                "{} already exists; run `init --force` to replace it with the defaults",
                home.config_file().display()
            );
        }
        init::write_initial_config::<ClientConfig>(home, true)?;
        Ok(())
    }

    async fn run(mut ctx: RunContext<ClientConfig>) -> anyhow::Result<()> {
        let api = listeners::bind_tcp("api", &ctx.config.address).await?;
        let socks = listeners::bind_tcp("socks", &ctx.config.address_socks).await?;
        let server = socks::SocksServer::new(Arc::new(NoCircuit), socks::SocksConfig::default());
        let shutdown = ctx.shutdown.clone();
        let task = tokio::spawn(server.serve(socks, shutdown));
        ctx.readiness.ready();
        ctx.reload_until_shutdown(|_| {}).await;
        let _ = task.await;
        drop(api);
        Ok(())
    }
}

struct NoCircuit;

impl socks::Connector for NoCircuit {
    fn connect(
        &self,
        _protocol: wireleap_proto::wl_payload::Protocol,
        _target: socks::TargetAddr,
    ) -> futures_util::future::BoxFuture<'static, Result<socks::BoxStream, socks::ConnectError>>
    {
        Box::pin(async {
            Err(socks::ConnectError::new(
                socks::Reply::GeneralFailure,
                "no circuit",
            ))
        })
    }
}
