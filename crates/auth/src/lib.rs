//! The Wireleap auth service (`wireleap-auth`): holds the key that signs proofs of funding and
//! issues them to trusted payment services (services.md §4, network.md "Auth and ps-dummy").
//!
//! `POST /pofs` (signed by a payment service listed in `payment_services`) answers a pof
//! request with that many freshly signed pofs; every issued pof is recorded in the database.
//! `wireleap-auth issue ...` does the same offline, for operators without a payment service,
//! and writes an access key file. Not here: selling (the payment services), spending pofs
//! (the contract), payouts (not implemented: withdrawals go from the contract straight to the
//! payment service).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod api;
pub mod store;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use wireleap_contract::httpd::{self, check_database_url, check_http_url, TlsFiles};
use wireleap_daemon::{
    check_listen_address, keyfile, listeners, Config, ConfigProblem, Home, RunContext, Service,
    VersionInfo,
};
use wireleap_proto::accesskey::AccessKey;
use wireleap_proto::duration::Duration;
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::nonce;
use wireleap_proto::pof::Pof;

pub use api::{router, AuthState};
pub use store::AuthStore;

/// The binary's name (also the upgrade component's).
pub const NAME: &str = "wireleap-auth";

/// The `wireleap-auth` binary.
#[derive(Debug)]
pub struct Auth;

/// What the upgrade machinery needs to know about this binary. No migrations yet: every
/// config and database of earlier versions is read as is.
pub fn component() -> wireleap_upgrade::Component {
    wireleap_upgrade::daemon::component(NAME, env!("CARGO_PKG_VERSION"))
}

/// `wireleap-auth`'s own subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuthCommand {
    /// Sign pofs offline with this auth server's key and write an access key file (for
    /// operators without a payment service)
    Issue(IssueArgs),
    // `upgrade`, `rollback`, `upgrade-status` and the hidden `migrate`, documented by
    // wireleap-upgrade.
    #[command(flatten)]
    #[allow(missing_docs)]
    Upgrade(wireleap_upgrade::UpgradeCommand),
}

/// Flags of `issue`.
#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// Pof type (must be one the contract accepts from this key)
    #[arg(long = "type", value_name = "TYPE", default_value = "dummy")]
    pub kind: String,
    /// How many pofs
    #[arg(long, value_name = "N")]
    pub quantity: u32,
    /// How long each pof stays valid, e.g. 30d
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_duration)]
    pub duration: Duration,
    /// The contract's public URL, written into the access key
    #[arg(long, value_name = "URL")]
    pub contract_endpoint: String,
    /// The contract's public key (base64url), written into the access key
    #[arg(long, value_name = "KEY", value_parser = parse_pubkey, allow_hyphen_values = true)]
    pub contract_pubkey: PublicKey,
    /// Write the access key here (mode 0600) instead of standard output
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    Duration::parse(s).map_err(|e| e.to_string())
}

fn parse_pubkey(s: &str) -> Result<PublicKey, String> {
    PublicKey::from_b64(s).map_err(|e| format!("not a public key: {e}"))
}

/// Most pofs one request (or one `issue`) may ask for.
pub const MAX_QUANTITY_LIMIT: i64 = 10_000;

impl Service for Auth {
    const NAME: &'static str = NAME;
    const ABOUT: &'static str =
        "Wireleap auth: issues proofs of funding to trusted payment services";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        // protocol.md §16.
        interfaces: &[("ps-auth", "0.1.0")],
    };
    type Config = AuthConfig;
    type Command = AuthCommand;

    fn software() -> String {
        wireleap_upgrade::daemon::software(env!("CARGO_PKG_VERSION"))
    }

    /// Serves until stopped. The upgrade agent runs alongside and decides when this process
    /// stops serving: on a shutdown, or once a successor took over its listener. Both
    /// processes share the database during a hand-over; every issued pof is its own row.
    async fn run(mut ctx: RunContext<AuthConfig>) -> anyhow::Result<()> {
        let (keypair, agent) =
            wireleap_upgrade::daemon::start_with_key(&ctx, component(), &ctx.config.upgrade)?;
        // Cancelled on a shutdown and also on a hand-over, which must stop this process's
        // serving without the lifecycle's shutdown.
        let stop = agent.stop_token();
        let url = httpd::database_url(&ctx.config.database, ctx.home.dir());
        let store = AuthStore::open(wireleap_store::Db::open(&url).await?).await?;
        let tls = httpd::tls_config(ctx.config.tls.as_ref(), ctx.home.dir())?;
        let state = AuthState::new(
            keypair,
            ctx.config.clone(),
            store.clone(),
            httpd::system_clock(),
        );
        let listener = listeners::bind_tcp("api", &ctx.config.address).await?;
        agent.register_listener("api", &listener)?;
        tracing::info!(
            address = %listener.local_addr()?,
            pubkey = %state.pubkey(),
            "auth API listening"
        );
        let server = httpd::spawn_api(listener, router(state.clone()), tls, &stop, &agent);
        ctx.readiness.ready();
        let started = ctx.config.clone();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                next = ctx.reloads.next() => match next {
                    Some(new) => {
                        if new.address != started.address
                            || new.database != started.database
                            || new.upgrade != started.upgrade
                        {
                            tracing::warn!(
                                "a new address, database or upgrade section takes effect on restart"
                            );
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
        store.db().close().await;
        served.context("API server task")??;
        Ok(())
    }

    async fn command(home: &Home, command: AuthCommand) -> anyhow::Result<()> {
        match command {
            AuthCommand::Issue(args) => issue_offline(home, args).await,
            AuthCommand::Upgrade(c) => {
                wireleap_upgrade::daemon::command_for(home, &component(), c, |c: AuthConfig| {
                    c.upgrade
                })
                .await
            }
        }
    }
}

async fn issue_offline(home: &Home, args: IssueArgs) -> anyhow::Result<()> {
    let (config, _) = home.load_config::<AuthConfig>()?;
    let keypair = keyfile::load_keypair(home)?;
    let quantity = i64::from(args.quantity);
    if !(1..=MAX_QUANTITY_LIMIT).contains(&quantity) {
        anyhow::bail!("--quantity must be between 1 and {MAX_QUANTITY_LIMIT}, got {quantity}");
    }
    if args.duration.as_secs() < 1 {
        anyhow::bail!("--duration must be at least 1s, got {}", args.duration);
    }
    if let Some(e) = check_http_url(&args.contract_endpoint) {
        anyhow::bail!("--contract-endpoint {e}");
    }
    let now = httpd::unix_now();
    let pofs = make_pofs(&keypair, &args.kind, quantity, args.duration.as_secs(), now)?;
    let url = httpd::database_url(&config.database, home.dir());
    let store = AuthStore::open(wireleap_store::Db::open(&url).await?).await?;
    store
        .record(&pofs, "offline", None, now)
        .await
        .context("recording the issued pofs")?;
    store.db().close().await;
    let key = AccessKey::new(args.contract_endpoint, args.contract_pubkey, pofs);
    let mut bytes = wireleap_proto::json::to_vec_indented(&key)?;
    bytes.push(b'\n');
    match args.out {
        Some(path) => {
            wireleap_daemon::write_atomic(&path, &bytes, 0o600)?;
            eprintln!("wrote {} pof(s) to {}", quantity, path.display());
        }
        None => {
            use std::io::Write as _;
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(())
}

/// Why pofs could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// `now + duration` does not fit.
    #[error("pof expiration {now} + {duration}s overflows")]
    Overflow {
        /// Unix seconds.
        now: i64,
        /// Requested validity.
        duration: i64,
    },
}

/// Makes `quantity` pofs of `kind`, valid for `duration` seconds from `now`, each with a
/// fresh 18-hex nonce, signed by `issuer`.
pub fn make_pofs(
    issuer: &Keypair,
    kind: &str,
    quantity: i64,
    duration: i64,
    now: i64,
) -> Result<Vec<Pof>, IssueError> {
    let expiration = now
        .checked_add(duration)
        .ok_or(IssueError::Overflow { now, duration })?;
    Ok((0..quantity)
        .map(|_| {
            Pof::new_signed(
                issuer,
                kind.to_string(),
                expiration,
                nonce::generate(nonce::POF_NONCE_LEN),
            )
        })
        .collect())
}

/// `config.json` of `wireleap-auth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HTTP API listen address, `host:port`.
    pub address: String,
    /// Public base URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `sqlite://PATH` (relative to the home) or `postgres://...`.
    pub database: String,
    /// Serve HTTPS with these files; plain HTTP without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// The payment services allowed to request pofs, each for one pof type.
    pub payment_services: Vec<PaymentService>,
    /// Most pofs per request.
    pub max_quantity: i64,
    /// Longest pof validity a request may ask for.
    pub max_duration: Duration,
    /// How this auth server upgrades itself (release repository, keys, channel, timeouts).
    pub upgrade: wireleap_upgrade::UpgradeConfig,
}

/// A trusted payment service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentService {
    /// The pof type it may request (`dummy`, `stripe`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its signing key (base64url).
    pub pubkey: PublicKey,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            // Our choice: the original's default port is not public.
            address: "127.0.0.1:13502".into(),
            endpoint: None,
            database: "sqlite://auth.db".into(),
            tls: None,
            payment_services: Vec::new(),
            max_quantity: 1000,
            max_duration: Duration::from_hours(24 * 366),
            upgrade: wireleap_upgrade::UpgradeConfig::default(),
        }
    }
}

impl Config for AuthConfig {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p: Vec<_> = check_listen_address("address", &self.address)
            .into_iter()
            .collect();
        if let Some(e) = self.endpoint.as_deref().and_then(check_http_url) {
            p.push(ConfigProblem::new("endpoint", e));
        }
        if let Some(e) = check_database_url(&self.database) {
            p.push(ConfigProblem::new("database", e));
        }
        for (i, ps) in self.payment_services.iter().enumerate() {
            if ps.kind.is_empty() {
                p.push(ConfigProblem::new(
                    format!("payment_services[{i}].type"),
                    "must not be empty",
                ));
            }
        }
        if !(1..=MAX_QUANTITY_LIMIT).contains(&self.max_quantity) {
            p.push(ConfigProblem::new(
                "max_quantity",
                format!(
                    "must be between 1 and {MAX_QUANTITY_LIMIT}, got {}",
                    self.max_quantity
                ),
            ));
        }
        if self.max_duration.as_secs() < 1 {
            p.push(ConfigProblem::new(
                "max_duration",
                format!("must be at least 1s, got {}", self.max_duration),
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
        assert_eq!(AuthConfig::default().validate(), vec![]);
        assert!(serde_json::from_str::<AuthConfig>(r#"{"adress": "x:1"}"#).is_err());
        let c: AuthConfig = serde_json::from_str(r#"{"address": "nowhere"}"#).unwrap();
        assert_eq!(c.validate().len(), 1);
    }

    #[test]
    fn devnet_shape_parses() {
        let k = Keypair::from_seed([1; 32]).public();
        let c: AuthConfig = serde_json::from_str(&format!(
            r#"{{"address": "127.0.0.1:1", "endpoint": "http://127.0.0.1:1",
                "payment_services": [{{"type": "dummy", "pubkey": "{k}"}}]}}"#
        ))
        .unwrap();
        assert_eq!(c.validate(), vec![]);
        assert_eq!(c.payment_services[0].pubkey, k);
        let bad: AuthConfig = serde_json::from_str(
            r#"{"database": "x", "max_quantity": 0, "max_duration": "0s", "endpoint": "e",
                "upgrade": {"ready_timeout": "0s"},
                "payment_services": [{"type": "", "pubkey": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"}]}"#,
        )
        .unwrap();
        let keys: Vec<_> = bad.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
        assert!(
            keys.iter().any(|k| k == "upgrade.ready_timeout"),
            "{keys:?}"
        );
        assert!(
            serde_json::from_str::<AuthConfig>(r#"{"upgrade": {"auto_upgrade": true}}"#).is_err()
        );
    }

    #[test]
    fn issue_takes_keys_that_start_with_a_hyphen() {
        let key = "-ojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w";
        let m = wireleap_daemon::cli::command::<Auth>()
            .try_get_matches_from([
                "wireleap-auth",
                "issue",
                "--quantity",
                "2",
                "--contract-endpoint",
                "http://c",
                "--contract-pubkey",
                key,
            ])
            .unwrap();
        let (_, sub) = m.subcommand().unwrap();
        let got = sub.get_one::<PublicKey>("contract_pubkey").unwrap();
        assert_eq!(got.to_b64(), key);
    }

    #[test]
    fn pofs_are_signed_distinct_and_expire() {
        let kp = Keypair::from_seed([7; 32]);
        let pofs = make_pofs(&kp, "dummy", 5, 60, 1000).unwrap();
        assert_eq!(pofs.len(), 5);
        let digests: std::collections::HashSet<_> = pofs.iter().map(Pof::digest).collect();
        assert_eq!(digests.len(), 5);
        for p in &pofs {
            assert_eq!(p.nonce.len(), 18);
            assert!(p.verify(&[kp.public()], 1059).is_ok());
            assert!(p.verify(&[kp.public()], 1060).is_err());
        }
        assert!(make_pofs(&kp, "dummy", 1, i64::MAX, 1).is_err());
    }
}
