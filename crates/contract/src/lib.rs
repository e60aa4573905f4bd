//! The Wireleap service contract (`wireleap-contract`): activates servicekeys against proofs
//! of funding, accepts sharetokens from relays, settles and pays relays out (services.md §3).
//!
//! LIFECYCLE SHELL: this crate currently holds only what the shared lifecycle needs — the
//! `config.json` type with the keys services.md §3.2 shows (simple types; the number formats
//! of the original are not public) and a `run` that binds the listen address, reports ready
//! and waits for reload or shutdown. The contract service issue replaces `run` and refines
//! the types.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use wireleap_daemon::{
    check_listen_address, listeners, Config, ConfigProblem, NoCommands, RunContext, Service,
    VersionInfo,
};

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
        let listener = listeners::bind_tcp("api", &ctx.config.address).await?;
        tracing::info!(
            address = %listener.local_addr()?,
            "listening (lifecycle shell: the contract service is not in this build yet)"
        );
        ctx.readiness.ready();
        let address = ctx.config.address.clone();
        ctx.reload_until_shutdown(|new| {
            if new.address != address {
                tracing::warn!(old = %address, new = %new.address, "a new address takes effect on restart");
            }
        })
        .await;
        drop(listener);
        Ok(())
    }
}

/// `config.json` of the contract (services.md §3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContractConfig {
    /// HTTP API listen address, `host:port`.
    pub address: String,
    /// Public URL of this contract.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Plain-text double-entry ledger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_file: Option<PathBuf>,
    /// Where settled sharetokens are archived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_dir: Option<PathBuf>,
    /// Issuers whose proofs of funding are accepted.
    pub proof_of_funding: Vec<PofIssuer>,
    /// Payout terms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payout: Option<Payout>,
    /// Servicekey price and lifetime.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servicekey: Option<ServicekeyTerms>,
    /// Settlement terms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement: Option<Settlement>,
    /// The directory this contract publishes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryRef>,
    /// Operator information shown in `/info`.
    pub metadata: Metadata,
}

impl Default for ContractConfig {
    fn default() -> Self {
        ContractConfig {
            // Our choice: the original's default port is not public.
            address: "127.0.0.1:13501".into(),
            endpoint: None,
            ledger_file: None,
            archive_dir: None,
            proof_of_funding: Vec::new(),
            payout: None,
            servicekey: None,
            settlement: None,
            directory: None,
            metadata: Metadata::default(),
        }
    }
}

/// One accepted proof-of-funding issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PofIssuer {
    /// Pof type, e.g. `stripe` or `dummy`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Issuer public key (base64url).
    pub pubkey: String,
}

/// `payout`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Payout {
    /// Payment service URL.
    pub endpoint: String,
    /// Payout type, e.g. `stripe` or `dummy`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Page explaining the payout destination format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    /// Smallest withdrawal (currency minor units).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_withdrawal: Option<u64>,
    /// Largest withdrawal (currency minor units).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_withdrawal: Option<u64>,
}

/// `servicekey`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServicekeyTerms {
    /// Price of one servicekey (currency minor units).
    pub value: u64,
    /// Currency, lowercase ISO code.
    pub currency: String,
    /// Lifetime (duration).
    pub duration: String,
}

/// `settlement`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settlement {
    /// Contract fee in percent.
    pub fee_percent: u32,
    /// How long relays may submit after a servicekey expires (duration).
    pub submission_window: String,
}

/// `directory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryRef {
    /// Directory URL.
    pub endpoint: String,
}

/// `metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metadata {
    /// Operator name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// Operator web site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_url: Option<String>,
    /// Contract name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Terms of service URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terms_of_service: Option<String>,
    /// Privacy policy URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privacy_policy: Option<String>,
}

fn check_http_url(key: &str, value: &str) -> Option<ConfigProblem> {
    (!(value.starts_with("https://") || value.starts_with("http://")))
        .then(|| ConfigProblem::new(key, format!("must be an http(s) URL, got {value:?}")))
}

impl Config for ContractConfig {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p: Vec<_> = check_listen_address("address", &self.address)
            .into_iter()
            .collect();
        if let Some(e) = &self.endpoint {
            p.extend(check_http_url("endpoint", e));
        }
        if let Some(pay) = &self.payout {
            p.extend(check_http_url("payout.endpoint", &pay.endpoint));
            if let (Some(min), Some(max)) = (pay.min_withdrawal, pay.max_withdrawal) {
                if min > max {
                    p.push(ConfigProblem::new(
                        "payout.min_withdrawal",
                        format!("{min} is above max_withdrawal {max}"),
                    ));
                }
            }
        }
        if let Some(s) = &self.settlement {
            if s.fee_percent > 100 {
                p.push(ConfigProblem::new(
                    "settlement.fee_percent",
                    format!("must be at most 100, got {}", s.fee_percent),
                ));
            }
        }
        if let Some(d) = &self.directory {
            p.extend(check_http_url("directory.endpoint", &d.endpoint));
        }
        p
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn testdata_shape_parses_and_validates() {
        let c: ContractConfig = serde_json::from_str(
            r#"{"address": "127.0.0.1:8080", "endpoint": "https://c.example",
                "proof_of_funding": [{"type": "dummy", "pubkey": "abc"}],
                "payout": {"endpoint": "http://ps:12345/withdrawals", "type": "dummy",
                           "min_withdrawal": 5, "max_withdrawal": 100},
                "servicekey": {"value": 1000, "currency": "usd", "duration": "10m"},
                "settlement": {"fee_percent": 5, "submission_window": "1h"},
                "directory": {"endpoint": "https://dir.example"},
                "metadata": {"name": "test"}}"#,
        )
        .unwrap();
        assert_eq!(c.validate(), vec![]);
    }

    #[test]
    fn every_problem_is_reported() {
        let c: ContractConfig = serde_json::from_str(
            r#"{"address": "x", "endpoint": "c.example",
                "payout": {"endpoint": "ps", "min_withdrawal": 9, "max_withdrawal": 1},
                "settlement": {"fee_percent": 101}}"#,
        )
        .unwrap();
        assert_eq!(c.validate().len(), 5);
        assert!(serde_json::from_str::<ContractConfig>(r#"{"metadata": {"x": 1}}"#).is_err());
    }
}
