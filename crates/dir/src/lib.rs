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

/// The `wireleap-dir` binary.
#[derive(Debug)]
pub struct Directory;

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
    const NAME: &'static str = "wireleap-dir";
    const ABOUT: &'static str = "Wireleap directory: the registry of enrolled relays";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        // protocol.md §16.
        interfaces: &[("client-dir", "0.2.0"), ("relay-dir", "0.2.0")],
    };
    type Config = DirectoryConfig;
    type Command = command::DirCommand;

    async fn run(mut ctx: RunContext<DirectoryConfig>) -> anyhow::Result<()> {
        let config = ctx.config.clone();
        let identity = keyfile::load_keypair(&ctx.home)
            .context("loading the directory key (run `wireleap-dir init` first)")?;
        let url = dburl::resolve(&config.database, ctx.home.dir());
        let db = Db::open(&url).await?;
        let store = DirStore::open(db.clone()).await?;
        let server = DirServer::open(config.clone(), identity, store, Clock::System).await?;
        let tls = match &config.tls {
            Some(t) => Some(api_tls(&ctx.home, t)?),
            None => None,
        };
        let listener = listeners::bind_tcp("api", &config.address).await?;
        let local = listener.local_addr()?;
        let background = server.spawn_background(ctx.shutdown.clone());
        let mut serving = tokio::spawn(wireleap_api::serve(
            listener,
            server.router(),
            tls,
            ctx.shutdown.clone(),
            Duration::from_secs(10),
        ));
        ctx.readiness.ready();
        tracing::info!(
            address = %local,
            public_key = %server.public_key(),
            relays = server.registry().len(),
            "directory serving"
        );
        let result = loop {
            tokio::select! {
                done = &mut serving => break done,
                next = ctx.reloads.next() => match next {
                    Some(c) => {
                        if let Err(e) = server.reload(c).await {
                            tracing::error!(error = %e, "reload failed; keeping the running configuration");
                        }
                    }
                    None => {
                        ctx.shutdown.cancelled().await;
                        break (&mut serving).await;
                    }
                },
            }
        };
        ctx.shutdown.cancel();
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
