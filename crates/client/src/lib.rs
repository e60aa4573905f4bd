//! The Wireleap client (`wireleap`): a daemon that accepts local connections (SOCKSv5, local
//! h2c) and carries them through circuits of relays paid with sharetokens, plus the commands
//! that manage it (`import`, `accesskeys`, `exec`, `info`, `circuit`).
//!
//! Module map: [`socks`] (forwarder), [`dialer`] (nested TLS + HTTP/2 hops), [`circuit`]
//! (relay choice, whitelist), [`directory`] (contract → directory → relay list sync),
//! [`servicekey`] (activation, renewal), [`accesskeys`] (import, list), [`controller`]
//! (the running daemon's state), [`api`] (local REST API and h2c broker), [`cli`], [`exec`].
//!
//! Not here: the wire objects (`wireleap-proto`), TLS and the HTTP/2 tunnel (`wireleap-net`),
//! the HTTP API client (`wireleap-api`), the process lifecycle (`wireleap-daemon`).
//! TUN mode is not built yet: it needs a TUN device (tun-rs), a user-space TCP/IP stack
//! (ipstack) feeding each flow into [`dialer::Dialer::open`] the way the SOCKS server does,
//! bypass routes for the contract, directory and first-hop addresses, and a root helper.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod accesskeys;
pub mod api;
pub mod circuit;
pub mod cli;
pub mod config;
pub mod controller;
pub mod dialer;
pub mod directory;
pub mod exec;
pub mod files;
pub mod servicekey;
pub mod socks;
pub mod udpframe;

pub use config::ClientConfig;

use std::sync::Arc;
use std::time::Duration;
use wireleap_daemon::{init, listeners, Home, RunContext, Service, VersionInfo};

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
    type Command = cli::Command;

    /// The client has no identity key: `init` writes config.json and the bundled exec
    /// scripts, and replaces an existing config.json only with `--force` (the original
    /// overwrote it silently).
    fn init(home: &Home, force: bool) -> anyhow::Result<()> {
        init::create_home(home)?;
        if !force && home.config_file().exists() {
            anyhow::bail!(
                "{} already exists; run `init --force` to replace it with the defaults",
                home.config_file().display()
            );
        }
        init::write_initial_config::<ClientConfig>(home, true)?;
        exec::install_scripts(home)?;
        Ok(())
    }

    async fn run(ctx: RunContext<ClientConfig>) -> anyhow::Result<()> {
        run(ctx).await
    }

    async fn command(home: &Home, command: cli::Command) -> anyhow::Result<()> {
        cli::run(home, command).await
    }
}

/// The daemon: binds the API, SOCKS and (optionally) h2c listeners, starts the controller,
/// applies reloads until shutdown.
async fn run(mut ctx: RunContext<ClientConfig>) -> anyhow::Result<()> {
    let config = ctx.config.clone();
    let api_listener = listeners::bind_tcp("api", &config.address).await?;
    let socks_listener = listeners::bind_tcp("socks", &config.address_socks).await?;
    let h2c_listener = match config.h2c_address() {
        Some(a) => Some(listeners::bind_tcp("h2c", a).await?),
        None => None,
    };
    let api_addr = api_listener.local_addr()?.to_string();
    if !api_listener.local_addr()?.ip().is_loopback() {
        tracing::warn!(address = %api_addr, "the REST API has no authentication and listens on a non-loopback address; anyone who can reach it can use and reconfigure this client");
    }
    let socks_addr = socks_listener.local_addr()?.to_string();
    let h2c_addr = match &h2c_listener {
        Some(l) => l.local_addr()?.to_string(),
        None => api_addr.clone(),
    };
    let (controller, dialer) = controller::Controller::start(
        ctx.home.clone(),
        config.clone(),
        socks_addr.clone(),
        h2c_addr.clone(),
        ctx.shutdown.clone(),
    )?;
    let socks_config = socks::SocksConfig {
        // Every hop may take the per-step timeout for TCP, TLS and HTTP/2 each.
        connect_timeout: config.timeout() * 3 * (config.circuit.hops + 1),
        target_wait: config.target_wait(),
        ..socks::SocksConfig::default()
    };
    let socks_server = socks::SocksServer::new(Arc::new(dialer.clone()), socks_config);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(socks_server.serve(socks_listener, ctx.shutdown.clone()));
    let state = api::ApiState {
        controller: controller.clone(),
        dialer: dialer.clone(),
    };
    let drain = Duration::from_secs(2);
    let router = api::router(state.clone(), h2c_listener.is_none());
    let shutdown = ctx.shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = wireleap_api::serve(api_listener, router, None, shutdown, drain).await {
            tracing::error!(error = %e, "API server failed");
        }
    });
    if let Some(l) = h2c_listener {
        let router = api::broker_router(state);
        let shutdown = ctx.shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = wireleap_api::serve(l, router, None, shutdown, drain).await {
                tracing::error!(error = %e, "h2c broker failed");
            }
        });
    }
    tracing::info!(
        socks = %socks_addr,
        api = %api_addr,
        h2c = %h2c_addr,
        contract = config.contract.as_deref().unwrap_or("none (import an access key)"),
        hops = config.circuit.hops,
        "wireleap client ready"
    );
    ctx.readiness.ready();
    let c = controller.clone();
    let d = dialer.clone();
    ctx.reload_until_shutdown(move |new| c.apply(&d, new)).await;
    // Listeners close on shutdown; give the servers a moment to drain, then cut the rest.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    Ok(())
}
