//! The relay's own subcommands: `balance`, `withdraw` (the contract's payout API, signed
//! with the relay key; services.md §1.2) and `sharetokens` (what the local store holds).
//!
//! They run without the daemon: config, key and database are read from the home directory.

use crate::config::RelayConfig;
use crate::store::{TokenState, TokenStore};
use anyhow::{bail, Context as _};
use http::Method;
use serde_json::Value;
use wireleap_api::{ApiClient, Identity};
use wireleap_daemon::Home;
use wireleap_proto::payout::{WithdrawalRequest, RELAY_WITHDRAWAL_TYPE};
use wireleap_proto::version::{Component, Interface};

/// Subcommands of `wireleap-relay`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RelayCommand {
    /// Print the balance, settling tokens and last withdrawal at each contract (or one)
    Balance {
        /// Only this contract (URL as in config.json)
        #[arg(long, value_name = "URL")]
        contract: Option<String>,
    },
    /// Ask a contract to pay out part of the balance
    Withdraw {
        /// Contract URL as in config.json
        #[arg(long, value_name = "URL")]
        contract: String,
        /// Payout destination, in the format the contract's payout info page gives
        #[arg(long, value_name = "DEST", allow_hyphen_values = true)]
        destination: String,
        /// Amount in the smallest currency unit (e.g. cents)
        #[arg(long, value_name = "N")]
        amount: i64,
    },
    /// List the sharetokens in the local store as JSON
    Sharetokens {
        /// Only tokens in this state
        #[arg(long, value_enum)]
        state: Option<StateArg>,
    },
    #[command(flatten)]
    #[allow(missing_docs)]
    Upgrade(wireleap_upgrade::UpgradeCommand),
}

/// `--state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateArg {
    /// Waiting for submission.
    Pending,
    /// Accepted by the contract.
    Accepted,
    /// Window closed first.
    Dropped,
}

fn client(home: &Home) -> anyhow::Result<ApiClient> {
    let keypair = wireleap_daemon::keyfile::load_keypair(home)?;
    Ok(ApiClient::new(
        Some(Identity {
            keypair,
            component: Component::Relay,
            interfaces: vec![Interface::RelayContract],
        }),
        false,
    )?)
}

fn config(home: &Home) -> anyhow::Result<RelayConfig> {
    Ok(home.load_config::<RelayConfig>()?.0)
}

/// Runs one subcommand.
pub async fn run(home: &Home, cmd: RelayCommand) -> anyhow::Result<()> {
    match cmd {
        RelayCommand::Upgrade(c) => {
            let settings = config(home).and_then(|c| crate::upgrade::settings(&c));
            wireleap_upgrade::commands::run(home, &crate::upgrade::component(), c, settings)
                .await?;
        }
        RelayCommand::Balance { contract } => {
            let cfg = config(home)?;
            let urls: Vec<String> = match contract {
                Some(c) if cfg.contracts.contains_key(&c) => vec![c],
                Some(c) => bail!("{c} is not a contract in config.json"),
                None => cfg.contracts.keys().cloned().collect(),
            };
            let api = client(home)?;
            let mut out = Vec::new();
            for url in urls {
                // A 404 (e.g. no withdrawal requested yet) is shown as null, not an error.
                let get = |path: &'static str| {
                    let api = api.clone();
                    let u = format!("{url}{path}");
                    async move {
                        match api.get::<Value>(&u).await {
                            Ok(v) => Ok(v),
                            Err(wireleap_api::ApiError::Status { status, .. })
                                if status.code == 404 =>
                            {
                                Ok(Value::Null)
                            }
                            Err(e) => Err(e).with_context(|| format!("could not read {u}")),
                        }
                    }
                };
                out.push(serde_json::json!({
                    "contract": url,
                    "balance": get("/payout/balance").await?,
                    "tokens": get("/payout/tokens").await?,
                    "withdrawal": get("/payout/withdrawals").await?,
                }));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        RelayCommand::Withdraw {
            contract,
            destination,
            amount,
        } => {
            let cfg = config(home)?;
            if !cfg.contracts.contains_key(&contract) {
                bail!("{contract} is not a contract in config.json");
            }
            let req = WithdrawalRequest {
                amount,
                kind: RELAY_WITHDRAWAL_TYPE.into(),
                destination,
            };
            req.validate().context("invalid withdrawal")?;
            let url = format!("{contract}/payout/withdrawals");
            let raw = client(home)?
                .call(Method::POST, &url, &req, &[])
                .await
                .with_context(|| format!("withdrawal at {contract} failed"))?;
            let reply: Value = serde_json::from_slice(&raw.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw.body).into_owned()));
            println!("{}", serde_json::to_string_pretty(&reply)?);
        }
        RelayCommand::Sharetokens { state } => {
            let cfg = config(home)?;
            let url = crate::runtime::resolve_db_url(home, &cfg.database);
            let store = TokenStore::open(wireleap_store::Db::open(&url).await?).await?;
            let state = state.map(|s| match s {
                StateArg::Pending => TokenState::Pending,
                StateArg::Accepted => TokenState::Accepted,
                StateArg::Dropped => TokenState::Dropped,
            });
            let list = store.list(state).await?;
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
    }
    Ok(())
}
