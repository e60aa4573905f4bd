//! The contract's `config.json` (services.md §3.2, network.md "Contract") and the `/info`
//! object built from it (protocol.md §12).
//!
//! Amounts are exact rationals (a JSON integer or a rational string such as `"1000"`, `"5/2"`,
//! `"2.5"`); durations use the Wireleap duration syntax (`"10m"`, `"1h"`, `"30d"`).

use crate::httpd::{check_database_url, check_http_url, TlsFiles};
use serde::{Deserialize, Deserializer, Serialize};
use wireleap_daemon::{check_listen_address, Config, ConfigProblem};
use wireleap_proto::contractinfo::{self, ContractInfo};
use wireleap_proto::duration::Duration;
use wireleap_proto::keys::PublicKey;
use wireleap_proto::rational::Rational;

/// `config.json` of the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContractConfig {
    /// HTTP API listen address, `host:port`.
    pub address: String,
    /// Public base URL of this contract (shown in `/info`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `sqlite://PATH` (relative to the home) or `postgres://...`.
    pub database: String,
    /// Serve HTTPS with these files; plain HTTP without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Issuers whose proofs of funding are accepted.
    pub proof_of_funding: Vec<PofIssuer>,
    /// Servicekey price and lifetime.
    pub servicekey: ServicekeyTerms,
    /// Settlement terms.
    pub settlement: Settlement,
    /// Payout terms.
    pub payout: Payout,
    /// The directory this contract publishes.
    pub directory: DirectoryRef,
    /// Operator information shown in `/info`.
    pub metadata: Metadata,
    /// How this contract upgrades itself (release repository, keys, channel, timeouts).
    pub upgrade: wireleap_upgrade::UpgradeConfig,
}

impl Default for ContractConfig {
    fn default() -> Self {
        ContractConfig {
            // Our choice: the original's default port is not public.
            address: "127.0.0.1:13501".into(),
            endpoint: None,
            database: "sqlite://contract.db".into(),
            tls: None,
            proof_of_funding: Vec::new(),
            servicekey: ServicekeyTerms::default(),
            settlement: Settlement::default(),
            payout: Payout::default(),
            directory: DirectoryRef::default(),
            metadata: Metadata::default(),
            upgrade: wireleap_upgrade::UpgradeConfig::default(),
        }
    }
}

/// One accepted proof-of-funding issuer (an auth server key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PofIssuer {
    /// Pof type, e.g. `stripe` or `dummy`; a pof is checked only against issuers of its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Issuer public key (base64url).
    pub pubkey: PublicKey,
    /// Where pofs of this kind are bought (the payment service), shown in `/info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// `servicekey`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServicekeyTerms {
    /// What one servicekey is worth to the relays (minor currency units), split at settlement.
    #[serde(deserialize_with = "de_rational")]
    pub value: Rational,
    /// Currency, lowercase ISO code.
    pub currency: String,
    /// How long a servicekey may be used after activation.
    pub duration: Duration,
}

impl Default for ServicekeyTerms {
    fn default() -> Self {
        ServicekeyTerms {
            value: Rational::from_integer(0),
            currency: "usd".into(),
            duration: Duration::from_mins(10),
        }
    }
}

/// `settlement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settlement {
    /// The contract's fee in percent of each servicekey's value (0 to 100).
    #[serde(deserialize_with = "de_rational")]
    pub fee_percent: Rational,
    /// How long after a servicekey expires its sharetokens may be submitted.
    pub submission_window: Duration,
}

impl Default for Settlement {
    fn default() -> Self {
        Settlement {
            fee_percent: Rational::from_integer(0),
            submission_window: Duration::from_hours(1),
        }
    }
}

/// `payout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Payout {
    /// The payment service's withdrawal URL (e.g. `http://ps:13503/withdrawals`); without it
    /// withdrawals are refused (501).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Payout type, e.g. `stripe` or `dummy`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Page explaining the payout destination format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    /// How often withdrawals still pending at the payment service are asked about again.
    pub check_period: Duration,
    /// Smallest withdrawal (minor units; 0 = no minimum).
    pub min_withdrawal: i64,
    /// Largest withdrawal (minor units; 0 = no maximum).
    pub max_withdrawal: i64,
}

impl Default for Payout {
    fn default() -> Self {
        Payout {
            endpoint: None,
            kind: "dummy".into(),
            info: None,
            check_period: Duration::from_mins(1),
            min_withdrawal: 0,
            max_withdrawal: 0,
        }
    }
}

/// `directory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryRef {
    /// Directory URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Directory key (signs relay lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey>,
}

/// `metadata` (every field optional).
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

/// Reads a rational from a JSON integer or a rational string.
fn de_rational<'de, D: Deserializer<'de>>(de: D) -> Result<Rational, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Int(i64),
        Text(String),
    }
    match Either::deserialize(de) {
        Ok(Either::Int(n)) => Ok(Rational::from_integer(n)),
        Ok(Either::Text(t)) => t.parse().map_err(serde::de::Error::custom),
        Err(_) => Err(serde::de::Error::custom(
            "expected an integer or a rational string such as \"1000\", \"5/2\" or \"2.5\"",
        )),
    }
}

impl Config for ContractConfig {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p: Vec<_> = check_listen_address("address", &self.address)
            .into_iter()
            .collect();
        let mut url = |key: &str, v: &Option<String>| {
            if let Some(e) = v.as_deref().and_then(check_http_url) {
                p.push(ConfigProblem::new(key, e));
            }
        };
        url("endpoint", &self.endpoint);
        url("payout.endpoint", &self.payout.endpoint);
        url("payout.info", &self.payout.info);
        url("directory.endpoint", &self.directory.endpoint);
        for (i, issuer) in self.proof_of_funding.iter().enumerate() {
            url(&format!("proof_of_funding[{i}].endpoint"), &issuer.endpoint);
        }
        if let Some(e) = check_database_url(&self.database) {
            p.push(ConfigProblem::new("database", e));
        }
        for (i, issuer) in self.proof_of_funding.iter().enumerate() {
            if issuer.kind.is_empty() {
                p.push(ConfigProblem::new(
                    format!("proof_of_funding[{i}].type"),
                    "must not be empty",
                ));
            }
        }
        if self.servicekey.value < Rational::from_integer(0) {
            p.push(ConfigProblem::new(
                "servicekey.value",
                format!("must not be negative, got {}", self.servicekey.value),
            ));
        }
        if self.servicekey.currency.is_empty() {
            p.push(ConfigProblem::new(
                "servicekey.currency",
                "must not be empty",
            ));
        }
        if self.servicekey.duration.as_secs() < 1 {
            p.push(ConfigProblem::new(
                "servicekey.duration",
                format!("must be at least 1s, got {}", self.servicekey.duration),
            ));
        }
        if self.settlement.submission_window.as_secs() < 1 {
            p.push(ConfigProblem::new(
                "settlement.submission_window",
                format!(
                    "must be at least 1s, got {}",
                    self.settlement.submission_window
                ),
            ));
        }
        let fee = &self.settlement.fee_percent;
        if *fee < Rational::from_integer(0) || *fee > Rational::from_integer(100) {
            p.push(ConfigProblem::new(
                "settlement.fee_percent",
                format!("must be between 0 and 100, got {fee}"),
            ));
        }
        let pay = &self.payout;
        if pay.min_withdrawal < 0 || pay.max_withdrawal < 0 {
            p.push(ConfigProblem::new(
                "payout.min_withdrawal",
                "limits must not be negative",
            ));
        }
        if pay.max_withdrawal > 0 && pay.min_withdrawal > pay.max_withdrawal {
            p.push(ConfigProblem::new(
                "payout.min_withdrawal",
                format!(
                    "{} is above max_withdrawal {}",
                    pay.min_withdrawal, pay.max_withdrawal
                ),
            ));
        }
        if pay.check_period.as_secs() < 1 {
            p.push(ConfigProblem::new(
                "payout.check_period",
                format!("must be at least 1s, got {}", pay.check_period),
            ));
        }
        p.extend(self.upgrade.problems("upgrade"));
        p
    }
}

impl ContractConfig {
    /// The `/info` object for this configuration and contract key.
    pub fn info(&self, pubkey: PublicKey) -> ContractInfo {
        let fee = &self.settlement.fee_percent;
        ContractInfo {
            pubkey: Some(pubkey),
            version: wireleap_upgrade::daemon::version(env!("CARGO_PKG_VERSION")),
            endpoint: self.endpoint.clone(),
            proof_of_funding: self
                .proof_of_funding
                .iter()
                .map(|i| contractinfo::PofIssuer {
                    endpoint: i.endpoint.clone(),
                    kind: Some(i.kind.clone()),
                    pubkey: Some(i.pubkey),
                })
                .collect(),
            servicekey: contractinfo::ServicekeyInfo {
                currency: Some(self.servicekey.currency.clone()),
                value: Some(self.servicekey.value.clone()),
                duration: self.servicekey.duration,
            },
            settlement: contractinfo::SettlementInfo {
                fee_percent: (*fee != Rational::from_integer(0)).then(|| fee.clone()),
                submission_window: self.settlement.submission_window,
            },
            payout: contractinfo::PayoutInfo {
                endpoint: self.payout.endpoint.clone(),
                kind: self.payout.kind.clone(),
                check_period: self.payout.check_period,
                min_withdrawal: self.payout.min_withdrawal,
                max_withdrawal: self.payout.max_withdrawal,
                info: self.payout.info.clone(),
            },
            directory: contractinfo::DirectoryRef {
                endpoint: self.directory.endpoint.clone(),
                public_key: self.directory.public_key,
            },
            metadata: contractinfo::Metadata {
                operator: self.metadata.operator.clone(),
                operator_url: self.metadata.operator_url.clone(),
                name: self.metadata.name.clone(),
                terms_of_service: self.metadata.terms_of_service.clone(),
                privacy_policy: self.metadata.privacy_policy.clone(),
            },
        }
    }

    /// The issuer keys accepted for pofs of type `kind`.
    pub fn issuers_of(&self, kind: &str) -> Vec<PublicKey> {
        self.proof_of_funding
            .iter()
            .filter(|i| i.kind == kind)
            .map(|i| i.pubkey)
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use wireleap_proto::keys::Keypair;

    fn key() -> String {
        Keypair::from_seed([3; 32]).public().to_b64()
    }

    #[test]
    fn devnet_shape_parses_and_validates() {
        let text = format!(
            r#"{{"address": "127.0.0.1:8080", "endpoint": "http://127.0.0.1:8080",
                "proof_of_funding": [{{"type": "dummy", "pubkey": "{k}", "endpoint": "http://ps:1"}}],
                "payout": {{"endpoint": "http://ps:12345/withdrawals", "type": "dummy",
                           "min_withdrawal": 5, "max_withdrawal": 100}},
                "servicekey": {{"value": "1000", "currency": "usd", "duration": "10m"}},
                "settlement": {{"fee_percent": 5, "submission_window": "1h"}},
                "directory": {{"endpoint": "https://dir.example", "public_key": "{k}"}},
                "metadata": {{"name": "test"}}}}"#,
            k = key()
        );
        let c: ContractConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(c.validate(), vec![]);
        assert_eq!(c.servicekey.value, Rational::from_integer(1000));
        assert_eq!(c.settlement.fee_percent, Rational::from_integer(5));
        assert_eq!(c.servicekey.duration, Duration::from_mins(10));
        let info = c.info(Keypair::from_seed([1; 32]).public());
        let json = String::from_utf8(wireleap_proto::json::to_vec(&info).unwrap()).unwrap();
        assert!(json.contains(r#""value":"1000""#), "{json}");
        assert!(json.contains(r#""fee_percent":"5""#), "{json}");
        assert!(json.contains(r#""submission_window":"1h0m0s""#), "{json}");
        assert_eq!(c.issuers_of("dummy").len(), 1);
        assert!(c.issuers_of("stripe").is_empty());
    }

    #[test]
    fn minimal_config_is_valid_and_round_trips() {
        let c: ContractConfig = serde_json::from_str(r#"{"address": "127.0.0.1:1"}"#).unwrap();
        assert_eq!(c.validate(), vec![]);
        let text = serde_json::to_string(&c).unwrap();
        let back: ContractConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn every_problem_is_reported() {
        let c: ContractConfig = serde_json::from_str(
            r#"{"address": "x", "endpoint": "c.example", "database": "mysql://x",
                "payout": {"endpoint": "ps", "min_withdrawal": 9, "max_withdrawal": 1},
                "servicekey": {"value": "-1", "duration": "0s", "currency": ""},
                "settlement": {"fee_percent": "101", "submission_window": "0s"},
                "upgrade": {"releases": "https://r.example", "ready_timeout": "0s"}}"#,
        )
        .unwrap();
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "address",
                "endpoint",
                "payout.endpoint",
                "database",
                "servicekey.value",
                "servicekey.currency",
                "servicekey.duration",
                "settlement.submission_window",
                "settlement.fee_percent",
                "payout.min_withdrawal",
                "upgrade.release_keys",
                "upgrade.ready_timeout"
            ]
        );
    }

    #[test]
    fn bad_values_are_parse_errors() {
        for bad in [
            r#"{"metadata": {"x": 1}}"#,
            r#"{"ledger_file": "x"}"#,
            r#"{"upgrade": {"auto_upgrade": true}}"#,
            r#"{"servicekey": {"value": 1.5}}"#,
            r#"{"servicekey": {"value": "ten"}}"#,
            r#"{"servicekey": {"duration": "10"}}"#,
            r#"{"proof_of_funding": [{"type": "dummy", "pubkey": "abc"}]}"#,
        ] {
            assert!(
                serde_json::from_str::<ContractConfig>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
