//! The Wireleap service contract (`wireleap-contract`): activates servicekeys against proofs
//! of funding, accepts sharetokens from relays, settles each servicekey's value among its
//! relays and pays relays out through a payment service (services.md §3, network.md).
//!
//! Modules: [`config`] (`config.json`, `/info`), [`api`] (HTTP endpoints and background
//! jobs), [`store`] (durable state and its exactly-once rules), [`batch`] (batch signature
//! verification and group commit of submissions), [`settle`] (the value split), [`httpd`]
//! (HTTP helpers the auth and payment-service daemons reuse). Not here: the wire objects
//! (`wireleap_proto`), the API client/server machinery (`wireleap_api`) and the process
//! lifecycle (`wireleap_daemon`). Not implemented: the original's plain-text ledger file and
//! sharetoken archive directory (the database is the ledger).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod api;
pub mod batch;
pub mod config;
pub mod httpd;
pub mod settle;
pub mod store;

pub use api::{router, ContractState};
pub use config::ContractConfig;
pub use store::ContractStore;

use anyhow::Context as _;
use std::time::Duration;
use wireleap_daemon::{keyfile, listeners, NoCommands, RunContext, Service, VersionInfo};

/// How often closed servicekeys are looked for.
pub const SETTLE_EVERY: Duration = Duration::from_secs(5);

/// How long open requests may finish after shutdown was asked for.
pub const DRAIN: Duration = Duration::from_secs(10);

/// The `wireleap-contract` binary.
#[derive(Debug)]
pub struct Contract;

impl Service for Contract {
    const NAME: &'static str = "wireleap-contract";
    const ABOUT: &'static str =
        "Wireleap service contract: servicekeys, sharetoken settlement, relay payouts";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        // protocol.md §16.
        interfaces: &[
            ("client-contract", "0.1.0"),
            ("contract-ps", "0.1.0"),
            ("relay-contract", "0.1.0"),
        ],
    };
    type Config = ContractConfig;
    type Command = NoCommands;

    async fn run(mut ctx: RunContext<ContractConfig>) -> anyhow::Result<()> {
        let keypair = keyfile::load_keypair(&ctx.home)?;
        let url = httpd::database_url(&ctx.config.database, ctx.home.dir());
        let db = wireleap_store::Db::open(&url).await?;
        let store = ContractStore::open(db).await?;
        let tls = match &ctx.config.tls {
            Some(t) => Some(t.server_config(ctx.home.dir())?),
            None => None,
        };
        let state = ContractState::new(
            keypair,
            ctx.config.clone(),
            store.clone(),
            httpd::system_clock(),
        )
        .context("setting up the payment service client")?;
        let listener = listeners::bind_tcp("api", &ctx.config.address).await?;
        tracing::info!(
            address = %listener.local_addr()?,
            pubkey = %state.pubkey(),
            tls = tls.is_some(),
            "contract API listening"
        );
        let server = tokio::spawn(wireleap_api::serve(
            listener,
            router(state.clone()),
            tls,
            ctx.shutdown.clone(),
            DRAIN,
        ));
        let jobs = tokio::spawn(api::background_jobs(
            state.clone(),
            SETTLE_EVERY,
            ctx.shutdown.clone(),
        ));
        ctx.readiness.ready();
        let started = ctx.config.clone();
        let st = state.clone();
        ctx.reload_until_shutdown(move |new| {
            for (what, changed) in [
                ("address", new.address != started.address),
                ("database", new.database != started.database),
                ("tls", new.tls != started.tls),
            ] {
                if changed {
                    tracing::warn!("a new {what} takes effect on restart");
                }
            }
            st.set_config(new);
            tracing::info!("configuration reloaded");
        })
        .await;
        let served = server.await;
        jobs.abort();
        store.db().close().await;
        served.context("API server task")??;
        Ok(())
    }
}
