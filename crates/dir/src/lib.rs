//! The Wireleap directory (`wireleap-dir`): the registry of enrolled relays for one service
//! contract and the source of truth for the versions relays should run (services.md §2).
//!
//! What it does: checks enrollments (signature by the entry's key, interface versions, role,
//! enrollment key, optional bcrypt proof of work, a PING through the tunnel protocol),
//! keeps relays listed while they heartbeat, publishes the signed relay list and `/info`, and
//! answers heartbeats with upgrade notices per update channel, with a staged rollout and
//! failed-upgrade reports (beyond the original, upgrade.md §13 items 7–9).
//!
//! Not here: HTTP plumbing (wireleap-api), the tunnel and TLS (wireleap-net), protocol
//! objects (wireleap-proto), database handles (wireleap-store), process lifecycle
//! (wireleap-daemon). The relay-side enrollment handshake lives in the relay.
//!
//! Modules: [`config`] (config.json), [`server`] (HTTP API and state), [`registry`] (live
//! relays in memory), [`store`] (tables), [`channels`] (upgrade rule), [`challenge`]
//! (stateless PoW challenges), [`ping`] (reachability), [`command`] (`channel` CLI).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod challenge;
pub mod channels;
pub mod command;
pub mod config;
pub mod dburl;
pub mod ping;
pub mod registry;
pub mod server;
pub mod store;

pub use config::DirectoryConfig;
pub use server::{Clock, DirServer};
pub use store::DirStore;

use anyhow::Context as _;
use std::sync::Arc;
use std::time::Duration;
use wireleap_daemon::{keyfile, listeners, Home, RunContext, Service, VersionInfo};
use wireleap_store::Db;

/// The binary's name (also the upgrade component's).
pub const NAME: &str = "wireleap-dir";

/// The `wireleap-dir` binary.
#[derive(Debug)]
pub struct Directory;

/// What the upgrade machinery needs to know about this binary. No migrations yet: every
/// config and database of earlier versions is read as is.
pub fn component() -> wireleap_upgrade::Component {
    wireleap_upgrade::daemon::component(NAME, env!("CARGO_PKG_VERSION"))
}

/// Builds the HTTPS configuration of the API from the configured PEM files: the relay TLS
/// settings of wireleap-net (TLS 1.3) with ALPN for both HTTP/2 and HTTP/1.1.
pub fn api_tls(home: &Home, tls: &config::TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let cfg = wireleap_net::tls::server_config_from_files(
        &home.join(&tls.cert_file),
        &home.join(&tls.key_file),
    )?;
    let mut cfg = Arc::unwrap_or_clone(cfg);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

impl Service for Directory {
    const NAME: &'static str = NAME;
    const ABOUT: &'static str = "Wireleap directory: the registry of enrolled relays";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        // protocol.md §16.
        interfaces: &[("client-dir", "0.2.0"), ("relay-dir", "0.2.0")],
    };
    type Config = DirectoryConfig;
    type Command = command::DirCommand;

    fn software() -> String {
        wireleap_upgrade::daemon::software(env!("CARGO_PKG_VERSION"))
    }

    /// Serves until stopped. The upgrade agent runs alongside and decides when this process
    /// stops serving: on a shutdown, or once a successor took over its listener.
    async fn run(mut ctx: RunContext<DirectoryConfig>) -> anyhow::Result<()> {
        let config = ctx.config.clone();
        let identity = keyfile::load_keypair(&ctx.home)
            .context("loading the directory key (run `wireleap-dir init` first)")?;
        let agent = wireleap_upgrade::daemon::start_agent_in(
            &ctx,
            component(),
            &config.upgrade,
            identity.public().0,
        )?;
        // Cancelled on a shutdown and also on a hand-over, which must stop this process's
        // serving and background work without the lifecycle's shutdown.
        let stop = agent.stop_token();
        let url = dburl::resolve(&config.database, ctx.home.dir());
        let db = Db::open(&url).await?;
        let store = DirStore::open(db.clone()).await?;
        let server = DirServer::open(config.clone(), identity, store, Clock::System).await?;
        let tls = match &config.tls {
            Some(t) => Some(api_tls(&ctx.home, t)?),
            None => None,
        };
        let listener = listeners::bind_tcp("api", &config.address).await?;
        agent.register_listener("api", &listener)?;
        let local = listener.local_addr()?;
        // During a hand-over both processes run this job on the shared database. That is
        // safe: the purge deletes only rows whose stored last heartbeat is older than
        // relay_ttl (whichever process received the beats has flushed them), a flush never
        // moves a stored heartbeat back in time, and the in-memory expiry only affects the
        // process doing it.
        let background = server.spawn_background(stop.clone());
        let mut serving = tokio::spawn(wireleap_api::serve_gated(
            listener,
            server.router(),
            tls,
            stop.clone(),
            Duration::from_secs(10),
            Some(agent.gate().subscribe()),
        ));
        ctx.readiness.ready();
        tracing::info!(
            address = %local,
            public_key = %server.public_key(),
            relays = server.registry().len(),
            "directory serving"
        );
        // The gate closes while a successor serves; if it opens again the successor was
        // rolled back and may have changed the relays in the shared database.
        let mut gate = agent.gate().subscribe();
        let mut gate_was_open = *gate.borrow_and_update();
        let mut gate_alive = true;
        let result = loop {
            tokio::select! {
                done = &mut serving => break done,
                changed = gate.changed(), if gate_alive => {
                    if changed.is_err() {
                        gate_alive = false;
                        continue;
                    }
                    let open = *gate.borrow_and_update();
                    if open && !gate_was_open {
                        if let Err(e) = server.resync().await {
                            tracing::warn!(error = %e, "could not re-read the relays after a rollback; they load at the next start");
                        }
                    }
                    gate_was_open = open;
                }
                () = stop.cancelled() => break (&mut serving).await,
                next = ctx.reloads.next() => match next {
                    Some(c) => {
                        if let Err(e) = server.reload(c).await {
                            tracing::error!(error = %e, "reload failed; keeping the running configuration");
                        }
                    }
                    None => {
                        stop.cancelled().await;
                        break (&mut serving).await;
                    }
                },
            }
        };
        // The server may have ended on its own (an error): stop the background work too.
        stop.cancel();
        if let Err(e) = background.await {
            tracing::warn!(error = %e, "background task ended abnormally");
        }
        db.close().await;
        result
            .context("API server task failed")?
            .context("API server failed")?;
        Ok(())
    }

    async fn command(home: &Home, command: command::DirCommand) -> anyhow::Result<()> {
        command::run(home, command).await
    }
}
