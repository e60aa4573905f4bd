//! The test payment service (`wireleap-ps-dummy`): hands out access keys for free and "pays"
//! withdrawals of type `dummy` without moving money, for test networks and private networks
//! (services.md §4, network.md "Auth and ps-dummy").
//!
//! `POST /accesskeys {"quantity": N, "duration": "30d"}` asks the auth server for N pofs
//! (signed as a payment service), checks their signatures against the configured auth key and
//! answers with an access key file for the configured contract. `POST /withdrawals`
//! (contract-signed) completes a withdrawal at once with a dummy receipt. The CLI command
//! `accesskeys` calls the running daemon's API. Not here: real payments (ps-stripe).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod api;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use wireleap_contract::httpd::{self, TlsFiles};
use wireleap_contract::payservice;
use wireleap_daemon::{listeners, Config, ConfigProblem, Home, RunContext, Service, VersionInfo};
use wireleap_proto::accesskey::AccessKey;
use wireleap_proto::duration::Duration;

pub use api::{router, AccessKeyRequest, PsState};
pub use wireleap_contract::payservice::Peer;

/// The binary's name (also its file name in an upgradable installation).
pub const NAME: &str = "wireleap-ps-dummy";

/// The `wireleap-ps-dummy` binary.
#[derive(Debug)]
pub struct PsDummy;

/// What the upgrade machinery installs and migrates: this binary at its stamped version.
pub fn component() -> wireleap_upgrade::Component {
    wireleap_upgrade::daemon::component(NAME, env!("CARGO_PKG_VERSION"))
}

/// `wireleap-ps-dummy`'s own subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PsDummyCommand {
    /// Get an access key file from the running ps-dummy (its `POST /accesskeys`)
    Accesskeys(AccesskeysArgs),
    // A doc comment here would become clap help text; the flattened commands have their own.
    #[command(flatten)]
    #[allow(missing_docs)]
    Upgrade(wireleap_upgrade::UpgradeCommand),
}

/// Flags of `accesskeys`.
#[derive(Debug, clap::Args)]
pub struct AccesskeysArgs {
    /// How many pofs the access key holds
    #[arg(long, value_name = "N", default_value = "1")]
    pub quantity: u32,
    /// How long the pofs stay valid, e.g. 30d [default: the daemon's default_duration]
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
    /// Write the access key here (mode 0600) instead of standard output
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Base URL of the ps-dummy API [default: config endpoint, else http://<address>]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

impl Service for PsDummy {
    const NAME: &'static str = NAME;
    const ABOUT: &'static str = "Wireleap test payment service (no real money)";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        // protocol.md §16.
        interfaces: &[("contract-ps", "0.1.0"), ("ps-auth", "0.1.0")],
    };
    type Config = PsDummyConfig;
    type Command = PsDummyCommand;

    fn software() -> String {
        wireleap_upgrade::daemon::software(env!("CARGO_PKG_VERSION"))
    }

    /// Serves until stopped: by a shutdown, or by the upgrade agent once a successor took
    /// over the listener.
    async fn run(mut ctx: RunContext<PsDummyConfig>) -> anyhow::Result<()> {
        let (keypair, agent) =
            wireleap_upgrade::daemon::start_with_key(&ctx, component(), &ctx.config.upgrade)?;
        // A hand-over must end this process's serving like a shutdown does, while the
        // lifecycle's own shutdown stays with the agent, so everything below waits on this.
        ctx.shutdown = agent.stop_token();
        let tls = httpd::tls_config(ctx.config.tls.as_ref(), ctx.home.dir())?;
        let state = PsState::new(keypair, ctx.config.clone(), httpd::system_clock())
            .context("setting up the auth client")?;
        let listener = listeners::bind_tcp("api", &ctx.config.address).await?;
        agent.register_listener("api", &listener)?;
        tracing::info!(
            address = %listener.local_addr()?,
            pubkey = %state.pubkey(),
            "ps-dummy API listening"
        );
        let server = httpd::spawn_api(listener, router(state.clone()), tls, &ctx.shutdown, &agent);
        ctx.readiness.ready();
        let address = ctx.config.address.clone();
        ctx.reload_until_shutdown(|new| {
            if new.address != address {
                tracing::warn!("a new address takes effect on restart");
            }
            state.set_config(new);
            tracing::info!("configuration reloaded");
        })
        .await;
        server.await.context("API server task")??;
        Ok(())
    }

    async fn command(home: &Home, command: PsDummyCommand) -> anyhow::Result<()> {
        match command {
            PsDummyCommand::Accesskeys(args) => fetch_accesskeys(home, args).await,
            PsDummyCommand::Upgrade(cmd) => {
                wireleap_upgrade::daemon::command_for(
                    home,
                    &component(),
                    cmd,
                    |c: PsDummyConfig| c.upgrade,
                )
                .await
            }
        }
    }
}

async fn fetch_accesskeys(home: &Home, args: AccesskeysArgs) -> anyhow::Result<()> {
    let base = match args.url {
        Some(u) => u,
        None => {
            let (config, _) = home.load_config::<PsDummyConfig>()?;
            config.api_url()
        }
    };
    let client = wireleap_api::ApiClient::new(None, false)?;
    let url = format!("{}/accesskeys", base.trim_end_matches('/'));
    let req = AccessKeyRequest {
        quantity: i64::from(args.quantity),
        duration: args.duration,
    };
    let key: AccessKey = client
        .post(&url, &req)
        .await
        .with_context(|| format!("asking {url} for an access key"))?;
    let mut bytes = wireleap_proto::json::to_vec_indented(&key)?;
    bytes.push(b'\n');
    match args.out {
        Some(path) => {
            wireleap_daemon::write_atomic(&path, &bytes, 0o600)?;
            eprintln!(
                "wrote an access key with {} pof(s) to {}",
                key.pofs.as_ref().map_or(0, Vec::len),
                path.display()
            );
        }
        None => {
            use std::io::Write as _;
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(())
}

/// `config.json` of `wireleap-ps-dummy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PsDummyConfig {
    /// HTTP API listen address, `host:port`.
    pub address: String,
    /// Public base URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Serve HTTPS with these files; plain HTTP without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// The auth server that signs the pofs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<Peer>,
    /// The contract the access keys are for (and the only one whose withdrawals are paid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract: Option<Peer>,
    /// Pof type requested from auth.
    pub pof_type: String,
    /// Most pofs per access key.
    pub max_quantity: i64,
    /// Pof validity when a request names none.
    pub default_duration: Duration,
    /// Where releases come from and how upgrades run (absent: the defaults, which never
    /// install anything for lack of release keys).
    pub upgrade: wireleap_upgrade::UpgradeConfig,
}

impl Default for PsDummyConfig {
    fn default() -> Self {
        PsDummyConfig {
            // Our choice: the original's default port is not public.
            address: "127.0.0.1:13503".into(),
            endpoint: None,
            tls: None,
            auth: None,
            contract: None,
            pof_type: "dummy".into(),
            max_quantity: 100,
            default_duration: Duration::from_hours(24 * 30),
            upgrade: wireleap_upgrade::UpgradeConfig::default(),
        }
    }
}

impl PsDummyConfig {
    /// Where this daemon's API is reached: `endpoint`, else plain HTTP on `address` (with an
    /// unspecified host replaced by loopback).
    pub fn api_url(&self) -> String {
        payservice::api_url(self.endpoint.as_deref(), &self.address)
    }
}

impl Config for PsDummyConfig {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = payservice::check_common(
            &self.address,
            self.endpoint.as_deref(),
            self.auth.as_ref(),
            self.contract.as_ref(),
        );
        if self.pof_type.is_empty() {
            p.push(ConfigProblem::new("pof_type", "must not be empty"));
        }
        if self.max_quantity < 1 {
            p.push(ConfigProblem::new(
                "max_quantity",
                format!("must be at least 1, got {}", self.max_quantity),
            ));
        }
        if self.default_duration.as_secs() < 1 {
            p.push(ConfigProblem::new(
                "default_duration",
                format!("must be at least 1s, got {}", self.default_duration),
            ));
        }
        p.extend(self.upgrade.problems("upgrade"));
        p
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_unknown_keys_are_rejected() {
        assert_eq!(PsDummyConfig::default().validate(), vec![]);
        assert!(serde_json::from_str::<PsDummyConfig>(r#"{"adress": "x:1"}"#).is_err());
        let c: PsDummyConfig = serde_json::from_str(r#"{"address": "nowhere"}"#).unwrap();
        assert_eq!(c.validate().len(), 1);
    }

    #[test]
    fn devnet_shape_parses() {
        let k = wireleap_proto::keys::Keypair::from_seed([1; 32]).public();
        let c: PsDummyConfig = serde_json::from_str(&format!(
            r#"{{"address": "0.0.0.0:5", "endpoint": "http://127.0.0.1:5",
                "auth": {{"endpoint": "http://127.0.0.1:6", "public_key": "{k}"}},
                "contract": {{"endpoint": "http://127.0.0.1:7", "public_key": "{k}"}}}}"#
        ))
        .unwrap();
        assert_eq!(c.validate(), vec![]);
        assert_eq!(c.api_url(), "http://127.0.0.1:5");
        let c = PsDummyConfig {
            endpoint: None,
            ..c
        };
        assert_eq!(c.api_url(), "http://127.0.0.1:5");
        let bad: PsDummyConfig = serde_json::from_str(
            r#"{"endpoint": "x", "pof_type": "", "max_quantity": 0, "default_duration": "0s"}"#,
        )
        .unwrap();
        assert_eq!(bad.validate().len(), 4);
    }

    #[test]
    fn upgrade_section_is_optional_and_validated() {
        wireleap_upgrade::daemon::check_upgrade_section::<PsDummyConfig>(|c| &c.upgrade).unwrap();
    }
}
