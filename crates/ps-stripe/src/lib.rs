//! The Stripe payment service (`wireleap-ps-stripe`): sells access keys through Stripe
//! Checkout and pays relay withdrawals out to Stripe connected accounts (services.md §4).
//!
//! Selling: `POST /checkout {"quantity": N}` creates a Checkout Session for N pofs and
//! answers `{id, url, accesskey_url}`; the buyer pays on Stripe's page; Stripe calls
//! `POST /webhook`, whose `Stripe-Signature` is verified over the raw body (HMAC-SHA256 of
//! `<t>.<body>` with the endpoint secret, any of several `v1` values, timestamp within the
//! tolerance either way); a paid `checkout.session.completed` (or
//! `checkout.session.async_payment_succeeded`) makes this service ask `wireleap-auth` for N
//! pofs (signed as a payment service, like ps-dummy) and store the access key file, exactly
//! once per session however often Stripe redelivers. The buyer fetches it from
//! `GET /accesskeys/{checkout session id}` (402 until paid) and imports it with
//! `wireleap import`. Paying: the contract forwards withdrawals (`payout.type: "stripe"`) to
//! `POST /withdrawals`; each is paid with one Stripe Transfer (`Idempotency-Key` and
//! `transfer_group` = withdrawal id), kept in a payout ledger, and answered
//! `complete`/`failed`/`pending` (the contract asks again about pending ones).
//! Stripe is spoken to over its documented HTTP API (no SDK).
//!
//! Not here: pof signing (auth), spending pofs (contract), refunds and disputes (handled in
//! the Stripe dashboard), onboarding connected accounts.
//!
//! # `config.json`
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `address` | `127.0.0.1:13504` | listen `host:port` |
//! | `endpoint` | — | public base URL (`accesskey_url` in checkout replies) |
//! | `tls` | — | `{"cert_file", "key_file"}` for HTTPS |
//! | `database` | `sqlite://ps-stripe.db` | orders, events, payout ledger; or `postgres://...` |
//! | `auth` | — | `{"endpoint", "public_key"}` of the auth server that signs pofs |
//! | `contract` | — | `{"endpoint", "public_key"}`: written into access keys; the only contract whose withdrawals are paid |
//! | `pof_type` | `stripe` | pof type asked of auth (auth must trust this key for it) |
//! | `pof_duration` | `30d` | validity of each pof sold |
//! | `max_quantity` | `100` | most pofs per checkout |
//! | `accesskey_dir` | — | also write `<dir>/<session id>.json` (0600) for each issued key |
//! | `stripe.api_base` | `https://api.stripe.com` | Stripe API base URL |
//! | `stripe.secret_key_file` | `stripe-secret-key` | file with the `sk_...`/`rk_...` key |
//! | `stripe.webhook_secret_file` | `stripe-webhook-secret` | file with `whsec_...` secret(s), one per line |
//! | `stripe.webhook_tolerance` | `5m0s` | largest distance of a webhook timestamp from now |
//! | `stripe.max_webhook_bytes` | `262144` | largest webhook body |
//! | `stripe.attempts` | `3` | tries per Stripe call on network errors, 409, 429, 5xx |
//! | `stripe.retry_delay` | `1s` | pause before the first retry (doubles) |
//! | `stripe.timeout` | `30s` | one Stripe call |
//! | `checkout.price` | — | `{"currency": "usd", "unit_amount": 500}` per pof |
//! | `checkout.price_id` | — | or a Stripe Price id `price_...` per pof |
//! | `checkout.product_name` | `Wireleap access (one proof of funding)` | with `price` |
//! | `checkout.success_url` | — | required when selling; `{CHECKOUT_SESSION_ID}` is filled in by Stripe |
//! | `checkout.cancel_url` | — | where a cancelling buyer goes |
//! | `payout.currency` | `usd` | currency of withdrawal amounts |
//! | `payout.max_amount` | `0` | largest payout in minor units (0 = no own limit) |
//! | `upgrade` | defaults | release source, trusted keys, channel, hand-over timings (`wireleap_upgrade::UpgradeConfig`) |
//!
//! Relative paths are relative to the home directory. Secrets never appear in the config or
//! the logs; the files are re-read on `reload`.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod signature;
pub mod store;
pub mod stripe;

use anyhow::Context as _;
use std::path::PathBuf;
use wireleap_contract::httpd;
use wireleap_daemon::{listeners, Home, RunContext, Service, VersionInfo};

pub use api::{router, CheckoutReply, CheckoutRequest, PsState};
pub use config::{PsStripeConfig, Secrets};
pub use store::StripeStore;

/// How often paid orders without an access key are retried.
const ISSUE_RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The binary's name (also its file name in an upgradable installation).
pub const NAME: &str = "wireleap-ps-stripe";

/// The `wireleap-ps-stripe` binary.
#[derive(Debug)]
pub struct PsStripe;

/// What the upgrade machinery installs and migrates: this binary at its stamped version.
pub fn component() -> wireleap_upgrade::Component {
    wireleap_upgrade::daemon::component(NAME, env!("CARGO_PKG_VERSION"))
}

/// `wireleap-ps-stripe`'s own subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PsStripeCommand {
    /// Start a checkout at the running service and print the Stripe payment URL
    Checkout(CheckoutArgs),
    /// Fetch the access key file of a paid checkout session
    Accesskey(AccesskeyArgs),
    // A doc comment here would become clap help text; the flattened commands have their own.
    #[command(flatten)]
    #[allow(missing_docs)]
    Upgrade(wireleap_upgrade::UpgradeCommand),
}

/// Flags of `checkout`.
#[derive(Debug, clap::Args)]
pub struct CheckoutArgs {
    /// How many pofs to buy
    #[arg(long, value_name = "N", default_value = "1")]
    pub quantity: u32,
    /// Base URL of the ps-stripe API [default: config endpoint, else http://<address>]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

/// Flags of `accesskey`.
#[derive(Debug, clap::Args)]
pub struct AccesskeyArgs {
    /// The checkout session id (cs_...)
    #[arg(value_name = "SESSION")]
    pub session: String,
    /// Write the access key here (mode 0600) instead of standard output
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Base URL of the ps-stripe API [default: config endpoint, else http://<address>]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

impl Service for PsStripe {
    const NAME: &'static str = NAME;
    const ABOUT: &'static str = "Wireleap payment service for Stripe: sells access keys through Stripe Checkout (verified webhooks) and pays relay withdrawals with Stripe Transfers";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        // protocol.md §16.
        interfaces: &[("contract-ps", "0.1.0"), ("ps-auth", "0.1.0")],
    };
    type Config = PsStripeConfig;
    type Command = PsStripeCommand;

    fn software() -> String {
        wireleap_upgrade::daemon::software(env!("CARGO_PKG_VERSION"))
    }

    /// Serves until stopped: by a shutdown, or by the upgrade agent once a successor took
    /// over the listener.
    async fn run(mut ctx: RunContext<PsStripeConfig>) -> anyhow::Result<()> {
        let (keypair, agent) =
            wireleap_upgrade::daemon::start_with_key(&ctx, component(), &ctx.config.upgrade)?;
        // A hand-over must end this process's serving (and the retry task) like a shutdown
        // does, while the lifecycle's own shutdown stays with the agent, so everything below
        // waits on this.
        ctx.shutdown = agent.stop_token();
        let secrets = Secrets::load(&ctx.config.stripe, ctx.home.dir())
            .context("reading the Stripe secrets")?;
        let url = httpd::database_url(&ctx.config.database, ctx.home.dir());
        let store = StripeStore::open(wireleap_store::Db::open(&url).await?).await?;
        let tls = httpd::tls_config(ctx.config.tls.as_ref(), ctx.home.dir())?;
        let state = PsState::new(
            keypair,
            ctx.config.clone(),
            secrets,
            store.clone(),
            httpd::system_clock(),
            ctx.home.dir().to_path_buf(),
        )?;
        let listener = listeners::bind_tcp("api", &ctx.config.address).await?;
        agent.register_listener("api", &listener)?;
        let c = &ctx.config;
        if c.auth.is_none() || c.contract.is_none() || !c.sells() {
            tracing::warn!("checkouts are refused until auth, contract and checkout.price (or price_id) are configured");
        }
        tracing::info!(
            address = %listener.local_addr()?,
            pubkey = %state.pubkey(),
            stripe = %c.stripe.api_base,
            pof_type = %c.pof_type,
            "ps-stripe API listening"
        );
        let server = httpd::spawn_api(listener, router(state.clone()), tls, &ctx.shutdown, &agent);
        let retry = {
            let state = state.clone();
            let shutdown = ctx.shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(ISSUE_RETRY_EVERY) => {}
                    }
                    let n = state.issue_pending().await;
                    if n > 0 {
                        tracing::info!(issued = n, "issued access keys of paid orders left behind");
                    }
                }
            })
        };
        ctx.readiness.ready();
        let started = ctx.config.clone();
        let home = ctx.home.dir().to_path_buf();
        ctx.reload_until_shutdown(|new| {
            if new.address != started.address
                || new.database != started.database
                || new.tls != started.tls
                || new.stripe.timeout != started.stripe.timeout
            {
                tracing::warn!(
                    "a new address, database, tls or stripe.timeout takes effect on restart"
                );
            }
            let secrets = match Secrets::load(&new.stripe, &home) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "keeping the previous Stripe secrets");
                    None
                }
            };
            state.reload(new, secrets);
            tracing::info!("configuration reloaded");
        })
        .await;
        let served = server.await;
        let _ = retry.await;
        store.db().close().await;
        served.context("API server task")??;
        Ok(())
    }

    async fn command(home: &Home, command: PsStripeCommand) -> anyhow::Result<()> {
        let base = |url: Option<String>| -> anyhow::Result<String> {
            Ok(match url {
                Some(u) => u.trim_end_matches('/').to_string(),
                None => home.load_config::<PsStripeConfig>()?.0.api_url(),
            })
        };
        let client = || wireleap_api::ApiClient::new(None, false);
        match command {
            PsStripeCommand::Checkout(args) => {
                let url = format!("{}/checkout", base(args.url)?);
                let reply: CheckoutReply = client()?
                    .post(
                        &url,
                        &CheckoutRequest {
                            quantity: i64::from(args.quantity),
                        },
                    )
                    .await
                    .with_context(|| format!("asking {url} for a checkout"))?;
                println!("{}", reply.url);
                eprintln!(
                    "pay there, then fetch the access key: {} accesskey {} (or {})",
                    Self::NAME,
                    reply.id,
                    reply.accesskey_url
                );
                Ok(())
            }
            PsStripeCommand::Accesskey(args) => {
                let url = format!("{}/accesskeys/{}", base(args.url)?, args.session);
                let raw = client()?
                    .call(http::Method::GET, &url, &(), &[])
                    .await
                    .with_context(|| format!("fetching {url}"))?;
                let key = wireleap_proto::accesskey::AccessKey::import(&raw.body)
                    .with_context(|| format!("{url} did not answer with an access key"))?;
                match args.out {
                    Some(path) => {
                        wireleap_daemon::write_atomic(&path, &raw.body, 0o600)?;
                        eprintln!(
                            "wrote an access key with {} pof(s) to {}",
                            key.pofs.len(),
                            path.display()
                        );
                    }
                    None => {
                        use std::io::Write as _;
                        std::io::stdout().write_all(&raw.body)?;
                    }
                }
                Ok(())
            }
            PsStripeCommand::Upgrade(cmd) => {
                wireleap_upgrade::daemon::command_for(
                    home,
                    &component(),
                    cmd,
                    |c: PsStripeConfig| c.upgrade,
                )
                .await
            }
        }
    }
}
