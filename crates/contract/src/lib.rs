//! The Wireleap service contract (`wireleap-contract`): activates servicekeys against proofs
//! of funding, accepts sharetokens from relays, settles each servicekey's value among its
//! relays and pays relays out through a payment service (services.md §3, network.md).
//!
//! Modules: [`config`] (`config.json`, `/info`), [`api`] (HTTP endpoints and background
//! jobs), [`store`] (durable state and its exactly-once rules), [`batch`] (batch signature
//! verification and group commit of submissions), [`settle`] (the value split), [`httpd`]
//! (HTTP helpers the auth and payment-service daemons reuse), [`payservice`] (what the two
//! payment services share). Not here: the wire objects (`wireleap_proto`), the API
//! client/server machinery (`wireleap_api`) and the process lifecycle (`wireleap_daemon`). Not implemented: the original's plain-text ledger file and
//! sharetoken archive directory (the database is the ledger).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod api;
pub mod batch;
pub mod config;
pub mod httpd;
pub mod payservice;
pub mod settle;
pub mod store;

pub use api::{router, ContractState};
pub use config::ContractConfig;
pub use store::ContractStore;

use anyhow::Context as _;
use std::time::Duration;
use wireleap_daemon::{listeners, Home, RunContext, Service, VersionInfo};
use wireleap_upgrade::UpgradeCommand;

/// How often closed servicekeys are looked for.
pub const SETTLE_EVERY: Duration = Duration::from_secs(5);

/// How long open requests may finish after shutdown was asked for.
pub const DRAIN: Duration = httpd::API_DRAIN;

/// The binary's name (also the upgrade component's).
pub const NAME: &str = "wireleap-contract";

/// The `wireleap-contract` binary.
#[derive(Debug)]
pub struct Contract;

/// What the upgrade machinery needs to know about this binary. No migrations yet: every
/// config and database of earlier versions is read as is.
pub fn component() -> wireleap_upgrade::Component {
    wireleap_upgrade::daemon::component(NAME, env!("CARGO_PKG_VERSION"))
}

impl Service for Contract {
    const NAME: &'static str = NAME;
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
    /// `upgrade`, `rollback`, `upgrade-status` (and the hidden `migrate`).
    type Command = UpgradeCommand;

    fn software() -> String {
        wireleap_upgrade::daemon::software(env!("CARGO_PKG_VERSION"))
    }

    /// Serves until stopped. The upgrade agent runs alongside and decides when this process
    /// stops serving: on a shutdown, or once a successor took over its listener.
    async fn run(mut ctx: RunContext<ContractConfig>) -> anyhow::Result<()> {
        let (keypair, agent) =
            wireleap_upgrade::daemon::start_with_key(&ctx, component(), &ctx.config.upgrade)?;
        // Cancelled on a shutdown and also on a hand-over, which must stop this process's
        // serving and jobs without the lifecycle's shutdown.
        let stop = agent.stop_token();
        let url = httpd::database_url(&ctx.config.database, ctx.home.dir());
        let db = wireleap_store::Db::open(&url).await?;
        let store = ContractStore::open(db).await?;
        let tls = httpd::tls_config(ctx.config.tls.as_ref(), ctx.home.dir())?;
        let state = ContractState::new(
            keypair,
            ctx.config.clone(),
            store.clone(),
            httpd::system_clock(),
        )
        .context("setting up the payment service client")?;
        let listener = listeners::bind_tcp("api", &ctx.config.address).await?;
        agent.register_listener("api", &listener)?;
        tracing::info!(
            address = %listener.local_addr()?,
            pubkey = %state.pubkey(),
            tls = tls.is_some(),
            "contract API listening"
        );
        let server = httpd::spawn_api(listener, router(state.clone()), tls, &stop, &agent);
        // During a hand-over both processes run these jobs on the shared database. That is
        // safe: settling a servicekey is a conditional update (`settled_at IS NULL`) in the
        // transaction that writes its credits, so only one process settles it, and a pending
        // withdrawal sent twice carries the same id, which the payment service treats as its
        // idempotency key.
        let jobs = tokio::spawn(api::background_jobs(
            state.clone(),
            SETTLE_EVERY,
            stop.clone(),
        ));
        ctx.readiness.ready();
        let started = ctx.config.clone();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                next = ctx.reloads.next() => match next {
                    Some(new) => {
                        for (what, changed) in [
                            ("address", new.address != started.address),
                            ("database", new.database != started.database),
                            ("tls", new.tls != started.tls),
                            ("upgrade", new.upgrade != started.upgrade),
                        ] {
                            if changed {
                                tracing::warn!("a new {what} takes effect on restart");
                            }
                        }
                        state.set_config(new);
                        tracing::info!("configuration reloaded");
                    }
                    None => {
                        stop.cancelled().await;
                        break;
                    }
                },
            }
        }
        let served = server.await;
        jobs.abort();
        store.db().close().await;
        served.context("API server task")??;
        Ok(())
    }

    async fn command(home: &Home, command: UpgradeCommand) -> anyhow::Result<()> {
        wireleap_upgrade::daemon::command_for(home, &component(), command, |c: ContractConfig| {
            c.upgrade
        })
        .await
    }
}
