//! The Wireleap client (`wireleap`): a daemon that accepts local connections (SOCKSv5, local
//! h2c) and carries them through circuits of relays paid with sharetokens, plus the commands
//! that manage it (`import`, `accesskeys`, `exec`, `info`, `circuit`, and the shared
//! `upgrade`, `rollback`, `upgrade-status`).
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
use wireleap_daemon::{init, listeners, CancellationToken, Home, RunContext, Service, VersionInfo};
use wireleap_upgrade::StopReason;

/// The binary's name (also its file name in an upgradable installation).
pub const NAME: &str = "wireleap";

/// The `wireleap` binary.
#[derive(Debug)]
pub struct Client;

/// What the upgrade machinery installs and migrates: this binary at its stamped version.
pub fn component() -> wireleap_upgrade::Component {
    wireleap_upgrade::Component {
        name: NAME,
        version: wireleap_upgrade::daemon::version(env!("CARGO_PKG_VERSION")),
        migrations: &[],
    }
}

/// Places this installation in staged rollouts. The client has no identity key, so the
/// id is a hash of its home directory: stable across restarts and upgrades.
fn rollout_id(home: &Home) -> [u8; 32] {
    use sha2::Digest as _;
    use std::os::unix::ffi::OsStrExt as _;
    sha2::Sha256::digest(home.dir().as_os_str().as_bytes()).into()
}

impl Service for Client {
    const NAME: &'static str = NAME;
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

    fn software() -> String {
        wireleap_upgrade::daemon::software(env!("CARGO_PKG_VERSION"))
    }

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
/// applies reloads until stopped: by a shutdown, or by the upgrade agent once a successor
/// took over the listeners (then open SOCKS connections get the drain time to finish).
async fn run(mut ctx: RunContext<ClientConfig>) -> anyhow::Result<()> {
    let config = ctx.config.clone();
    let agent = wireleap_upgrade::daemon::start_agent(
        &ctx.home,
        component(),
        &config.upgrade,
        rollout_id(&ctx.home),
        &ctx.readiness,
        &ctx.shutdown,
    )?;
    // Everything below stops on this, not on the lifecycle's shutdown, which stays with the
    // agent: a hand-over must end this process's serving just like a shutdown.
    let stop = agent.stop_token();
    // Cuts the SOCKS connections still open: at once on a shutdown, after the drain time on
    // a hand-over.
    let cut = CancellationToken::new();
    let api_listener = listeners::bind_tcp("api", &config.address).await?;
    agent.register_listener("api", &api_listener)?;
    let socks_listener = listeners::bind_tcp("socks", &config.address_socks).await?;
    agent.register_listener("socks", &socks_listener)?;
    let h2c_listener = match config.h2c_address() {
        Some(a) => {
            let l = listeners::bind_tcp("h2c", a).await?;
            agent.register_listener("h2c", &l)?;
            Some(l)
        }
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
        stop.clone(),
    )?;
    let socks_config = socks::SocksConfig {
        // Every hop may take the per-step timeout for TCP, TLS and HTTP/2 each.
        connect_timeout: config.timeout() * 3 * (config.circuit.hops + 1),
        target_wait: config.target_wait(),
        ..socks::SocksConfig::default()
    };
    let socks_server = socks::SocksServer::new(Arc::new(dialer.clone()), socks_config);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(socks_server.serve_gated(
        socks_listener,
        stop.clone(),
        cut.clone(),
        Some(agent.gate().subscribe()),
    ));
    let state = api::ApiState {
        controller: controller.clone(),
        dialer: dialer.clone(),
    };
    let drain = Duration::from_secs(2);
    let router = api::router(state.clone(), h2c_listener.is_none());
    {
        let stop = stop.clone();
        let gate = Some(agent.gate().subscribe());
        tasks.spawn(async move {
            if let Err(e) =
                wireleap_api::serve_gated(api_listener, router, None, stop, drain, gate).await
            {
                tracing::error!(error = %e, "API server failed");
            }
        });
    }
    if let Some(l) = h2c_listener {
        let router = api::broker_router(state);
        let stop = stop.clone();
        let gate = Some(agent.gate().subscribe());
        // The broker carries tunnels like the SOCKS port: on a hand-over its open streams
        // get the same drain time (on a shutdown they are cut after the wind-down below).
        let drain = agent.drain_timeout();
        tasks.spawn(async move {
            if let Err(e) = wireleap_api::serve_gated(l, router, None, stop, drain, gate).await {
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
    let reason = loop {
        tokio::select! {
            r = agent.stopped() => break r,
            next = ctx.reloads.next() => match next {
                Some(new) => controller.apply(&dialer, new),
                None => break agent.stopped().await,
            },
        }
    };
    let linger = match reason {
        StopReason::Shutdown => {
            cut.cancel();
            Duration::ZERO
        }
        StopReason::HandedOver | StopReason::Abandoned => agent.drain_timeout(),
    };
    tracing::info!(?reason, "wireleap client stopping");
    // Listeners close on stop; open SOCKS connections may run for `linger`, then the
    // servers get a moment to wind down before the rest is cut.
    let _ =
        tokio::time::timeout(linger, async { while tasks.join_next().await.is_some() {} }).await;
    cut.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    Ok(())
}
