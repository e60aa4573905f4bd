//! `config.json` of `wireleap-ps-stripe`: the typed keys, their defaults, validation, and
//! reading the two Stripe secrets from their files (never from the config itself, so the
//! config can be shown and logged).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use wireleap_contract::httpd::{check_database_url, TlsFiles};
use wireleap_contract::payservice;
pub use wireleap_contract::payservice::Peer;
use wireleap_daemon::{Config, ConfigProblem};
use wireleap_proto::duration::Duration;

use crate::signature::WebhookSecret;

/// Most pofs one checkout may buy, whatever the config says (auth's own limit).
pub const MAX_QUANTITY_LIMIT: i64 = 10_000;

/// `config.json` of `wireleap-ps-stripe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PsStripeConfig {
    /// HTTP API listen address, `host:port`.
    pub address: String,
    /// Public base URL (used in replies to point at `/accesskeys/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Serve HTTPS with these files; plain HTTP without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// `sqlite://PATH` (relative to the home) or `postgres://...`.
    pub database: String,
    /// The auth server that signs the pofs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<Peer>,
    /// The contract the access keys are for (and the only one whose withdrawals are paid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract: Option<Peer>,
    /// Pof type requested from auth.
    pub pof_type: String,
    /// Validity of each sold pof.
    pub pof_duration: Duration,
    /// Most pofs one checkout may buy.
    pub max_quantity: i64,
    /// Also write each issued access key to `<accesskey_dir>/<checkout session id>.json`
    /// (mode 0600; relative to the home). Unset: only `GET /accesskeys/{id}` delivers it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accesskey_dir: Option<PathBuf>,
    /// Talking to Stripe.
    pub stripe: StripeSettings,
    /// What a checkout sells.
    pub checkout: CheckoutSettings,
    /// Paying withdrawals out.
    pub payout: PayoutSettings,
    /// Where releases come from and how upgrades run (absent: the defaults, which never
    /// install anything for lack of release keys).
    pub upgrade: wireleap_upgrade::UpgradeConfig,
}

/// `stripe` config section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StripeSettings {
    /// Stripe API base URL (a local fake in tests).
    pub api_base: String,
    /// File holding the secret API key `sk_...` or restricted key `rk_...` (relative to
    /// the home).
    pub secret_key_file: PathBuf,
    /// File holding the webhook endpoint's signing secret(s) `whsec_...`, one per line
    /// (several while rolling a secret).
    pub webhook_secret_file: PathBuf,
    /// How far a webhook's signed timestamp may be from now, either way.
    pub webhook_tolerance: Duration,
    /// Largest webhook body accepted, bytes.
    pub max_webhook_bytes: usize,
    /// Attempts per Stripe call when it fails with a network error, 409 (idempotent
    /// request in flight), 429 or 5xx.
    pub attempts: u32,
    /// Pause before the first retry; doubles after each.
    pub retry_delay: Duration,
    /// Timeout of one Stripe call.
    pub timeout: Duration,
}

/// `checkout` config section. Checkouts are offered when `price` or `price_id` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckoutSettings {
    /// Price of one pof, created inline at each checkout (`price_data`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    /// Or a Price object made in the Stripe dashboard (`price_...`), per pof.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_id: Option<String>,
    /// Product name shown on the checkout page (with `price`).
    pub product_name: String,
    /// Where Stripe sends the buyer after paying; `{CHECKOUT_SESSION_ID}` is replaced by
    /// Stripe (e.g. `https://ps.example/accesskeys/{CHECKOUT_SESSION_ID}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_url: Option<String>,
    /// Where Stripe sends a buyer who cancels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_url: Option<String>,
}

/// An amount of money.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Lowercase ISO 4217 code, e.g. `usd`.
    pub currency: String,
    /// Minor units (cents).
    pub unit_amount: i64,
}

/// `payout` config section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PayoutSettings {
    /// Currency of withdrawal amounts (the contract's servicekey currency), lowercase ISO.
    pub currency: String,
    /// Largest single payout in minor units; 0 = no limit beyond the contract's.
    pub max_amount: i64,
}

impl Default for PsStripeConfig {
    fn default() -> Self {
        PsStripeConfig {
            // Our choice: the original's default port is not public.
            address: "127.0.0.1:13504".into(),
            endpoint: None,
            tls: None,
            database: "sqlite://ps-stripe.db".into(),
            auth: None,
            contract: None,
            pof_type: "stripe".into(),
            pof_duration: Duration::from_hours(24 * 30),
            max_quantity: 100,
            accesskey_dir: None,
            stripe: StripeSettings::default(),
            checkout: CheckoutSettings::default(),
            payout: PayoutSettings::default(),
            upgrade: wireleap_upgrade::UpgradeConfig::default(),
        }
    }
}

impl Default for StripeSettings {
    fn default() -> Self {
        StripeSettings {
            api_base: "https://api.stripe.com".into(),
            secret_key_file: "stripe-secret-key".into(),
            webhook_secret_file: "stripe-webhook-secret".into(),
            webhook_tolerance: Duration::from_secs(crate::signature::DEFAULT_TOLERANCE_SECS),
            max_webhook_bytes: 256 << 10,
            attempts: 3,
            retry_delay: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
        }
    }
}

impl Default for CheckoutSettings {
    fn default() -> Self {
        CheckoutSettings {
            price: None,
            price_id: None,
            product_name: "Wireleap access (one proof of funding)".into(),
            success_url: None,
            cancel_url: None,
        }
    }
}

impl Default for PayoutSettings {
    fn default() -> Self {
        PayoutSettings {
            currency: "usd".into(),
            max_amount: 0,
        }
    }
}

impl PsStripeConfig {
    /// Where this daemon's API is reached: `endpoint`, else plain HTTP on `address` (with an
    /// unspecified host replaced by loopback).
    pub fn api_url(&self) -> String {
        payservice::api_url(
            self.endpoint.as_deref().map(|e| e.trim_end_matches('/')),
            &self.address,
        )
    }

    /// Whether checkouts are offered (a price is configured).
    pub fn sells(&self) -> bool {
        self.checkout.price.is_some() || self.checkout.price_id.is_some()
    }
}

/// Whether `c` is a lowercase three-letter currency code.
pub fn is_currency(c: &str) -> bool {
    c.len() == 3 && c.bytes().all(|b| b.is_ascii_lowercase())
}

impl Config for PsStripeConfig {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = payservice::check_common(
            &self.address,
            self.endpoint.as_deref(),
            self.auth.as_ref(),
            self.contract.as_ref(),
        );
        let urls = [
            ("stripe.api_base", Some(self.stripe.api_base.as_str())),
            ("checkout.success_url", self.checkout.success_url.as_deref()),
            ("checkout.cancel_url", self.checkout.cancel_url.as_deref()),
        ];
        for (key, value) in urls {
            payservice::check_url(&mut p, key, value);
        }
        if let Some(e) = check_database_url(&self.database) {
            p.push(ConfigProblem::new("database", e));
        }
        if self.pof_type.is_empty() {
            p.push(ConfigProblem::new("pof_type", "must not be empty"));
        }
        if self.pof_duration.as_secs() < 1 {
            p.push(ConfigProblem::new(
                "pof_duration",
                format!("must be at least 1s, got {}", self.pof_duration),
            ));
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
        let s = &self.stripe;
        for (key, path) in [
            ("stripe.secret_key_file", &s.secret_key_file),
            ("stripe.webhook_secret_file", &s.webhook_secret_file),
        ] {
            if path.as_os_str().is_empty() {
                p.push(ConfigProblem::new(key, "must name a file"));
            }
        }
        if s.webhook_tolerance.as_secs() < 1 {
            p.push(ConfigProblem::new(
                "stripe.webhook_tolerance",
                format!("must be at least 1s, got {}", s.webhook_tolerance),
            ));
        }
        if !(1024..=16 << 20).contains(&s.max_webhook_bytes) {
            p.push(ConfigProblem::new(
                "stripe.max_webhook_bytes",
                format!(
                    "must be between 1024 and {}, got {}",
                    16 << 20,
                    s.max_webhook_bytes
                ),
            ));
        }
        if !(1..=10).contains(&s.attempts) {
            p.push(ConfigProblem::new(
                "stripe.attempts",
                format!("must be between 1 and 10, got {}", s.attempts),
            ));
        }
        if s.retry_delay.as_nanos() < 0 {
            p.push(ConfigProblem::new(
                "stripe.retry_delay",
                format!("must not be negative, got {}", s.retry_delay),
            ));
        }
        if s.timeout.as_secs() < 1 {
            p.push(ConfigProblem::new(
                "stripe.timeout",
                format!("must be at least 1s, got {}", s.timeout),
            ));
        }
        let c = &self.checkout;
        match (&c.price, &c.price_id) {
            (Some(_), Some(_)) => p.push(ConfigProblem::new(
                "checkout.price_id",
                "set either checkout.price or checkout.price_id, not both",
            )),
            (Some(price), None) => {
                if !is_currency(&price.currency) {
                    p.push(ConfigProblem::new(
                        "checkout.price.currency",
                        format!(
                            "must be a lowercase ISO 4217 code such as \"usd\", got {:?}",
                            price.currency
                        ),
                    ));
                }
                if price.unit_amount < 1 {
                    p.push(ConfigProblem::new(
                        "checkout.price.unit_amount",
                        format!(
                            "must be at least 1 (minor units), got {}",
                            price.unit_amount
                        ),
                    ));
                }
                if c.product_name.trim().is_empty() {
                    p.push(ConfigProblem::new(
                        "checkout.product_name",
                        "must not be empty",
                    ));
                }
            }
            (None, Some(id)) => {
                if !id.starts_with("price_") || id.len() < 7 {
                    p.push(ConfigProblem::new(
                        "checkout.price_id",
                        format!("must be a Stripe Price id (price_...), got {id:?}"),
                    ));
                }
            }
            (None, None) => {}
        }
        if self.sells() && c.success_url.is_none() {
            p.push(ConfigProblem::new(
                "checkout.success_url",
                "is required when a price is set (Stripe sends the buyer there after paying)",
            ));
        }
        if !is_currency(&self.payout.currency) {
            p.push(ConfigProblem::new(
                "payout.currency",
                format!(
                    "must be a lowercase ISO 4217 code such as \"usd\", got {:?}",
                    self.payout.currency
                ),
            ));
        }
        if self.payout.max_amount < 0 {
            p.push(ConfigProblem::new(
                "payout.max_amount",
                format!("must not be negative, got {}", self.payout.max_amount),
            ));
        }
        p.extend(self.upgrade.problems("upgrade"));
        p
    }
}

/// The Stripe secret API key. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl SecretKey {
    /// Wraps a key (`sk_...` or `rk_...`).
    pub fn new(key: impl Into<String>) -> Self {
        SecretKey(key.into())
    }

    /// The key, for the `Authorization` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// The secrets read from the files the config names.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// The API key.
    pub api_key: SecretKey,
    /// The accepted webhook signing secrets.
    pub webhook: Vec<WebhookSecret>,
}

/// Why the secrets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A file could not be read.
    #[error("cannot read {key} file {}: {source}", path.display())]
    Read {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file does not hold a Stripe secret key.
    #[error("{} does not hold a Stripe secret key (expected one line starting with sk_ or rk_)", .0.display())]
    NotAnApiKey(PathBuf),
    /// The webhook secret file is empty.
    #[error("{} holds no webhook signing secret (expected whsec_..., one per line)", .0.display())]
    NoWebhookSecret(PathBuf),
}

impl Secrets {
    /// Reads both files (paths relative to `home`).
    pub fn load(settings: &StripeSettings, home: &Path) -> Result<Self, SecretsError> {
        let read = |key: &'static str, rel: &Path| {
            let path = home.join(rel);
            std::fs::read_to_string(&path)
                .map(|text| (text, path.clone()))
                .map_err(|source| SecretsError::Read { key, path, source })
        };
        let (text, path) = read("stripe.secret_key_file", &settings.secret_key_file)?;
        let key = text.trim();
        let looks_right = (key.starts_with("sk_") || key.starts_with("rk_"))
            && key.len() > 3
            && key.bytes().all(|b| b.is_ascii_graphic());
        if !looks_right {
            return Err(SecretsError::NotAnApiKey(path));
        }
        let api_key = SecretKey::new(key);
        let (text, path) = read("stripe.webhook_secret_file", &settings.webhook_secret_file)?;
        let webhook: Vec<_> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(WebhookSecret::new)
            .collect();
        if webhook.is_empty() {
            return Err(SecretsError::NoWebhookSecret(path));
        }
        Ok(Secrets { api_key, webhook })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_unknown_keys_are_rejected() {
        assert_eq!(PsStripeConfig::default().validate(), vec![]);
        assert!(serde_json::from_str::<PsStripeConfig>(r#"{"adress": "x:1"}"#).is_err());
        assert!(
            serde_json::from_str::<PsStripeConfig>(r#"{"stripe": {"secret_key": "sk_x"}}"#)
                .is_err(),
            "an inline secret is an unknown key"
        );
        let c: PsStripeConfig = serde_json::from_str(r#"{"address": "nowhere"}"#).unwrap();
        assert_eq!(c.validate().len(), 1);
    }

    #[test]
    fn upgrade_section_is_optional_and_validated() {
        wireleap_upgrade::daemon::check_upgrade_section::<PsStripeConfig>(|c| &c.upgrade).unwrap();
    }

    #[test]
    fn full_shape_parses_and_bad_values_are_each_named() {
        let k = wireleap_proto::keys::Keypair::from_seed([1; 32]).public();
        let c: PsStripeConfig = serde_json::from_str(&format!(
            r#"{{"address": "0.0.0.0:5", "endpoint": "https://ps.example/",
                "auth": {{"endpoint": "http://127.0.0.1:6", "public_key": "{k}"}},
                "contract": {{"endpoint": "http://127.0.0.1:7", "public_key": "{k}"}},
                "stripe": {{"api_base": "http://127.0.0.1:8", "webhook_tolerance": "10m"}},
                "checkout": {{"price": {{"currency": "eur", "unit_amount": 500}},
                              "success_url": "https://ps.example/accesskeys/{{CHECKOUT_SESSION_ID}}"}},
                "payout": {{"currency": "eur", "max_amount": 10000}},
                "accesskey_dir": "keys"}}"#
        ))
        .unwrap();
        assert_eq!(c.validate(), vec![]);
        assert!(c.sells());
        assert_eq!(c.api_url(), "https://ps.example");
        assert_eq!(c.stripe.webhook_tolerance.as_secs(), 600);

        let bad: PsStripeConfig = serde_json::from_str(
            r#"{"database": "mysql://x", "pof_type": "", "pof_duration": "0s", "max_quantity": 0,
                "stripe": {"api_base": "api.stripe.com", "secret_key_file": "",
                           "webhook_tolerance": "0s", "max_webhook_bytes": 10, "attempts": 0,
                           "timeout": "0s"},
                "checkout": {"price": {"currency": "USD", "unit_amount": 0}, "product_name": " "},
                "payout": {"currency": "dollars", "max_amount": -1}}"#,
        )
        .unwrap();
        let keys: Vec<_> = bad.validate().into_iter().map(|p| p.key).collect();
        for want in [
            "database",
            "pof_type",
            "pof_duration",
            "max_quantity",
            "stripe.api_base",
            "stripe.secret_key_file",
            "stripe.webhook_tolerance",
            "stripe.max_webhook_bytes",
            "stripe.attempts",
            "stripe.timeout",
            "checkout.price.currency",
            "checkout.price.unit_amount",
            "checkout.product_name",
            "checkout.success_url",
            "payout.currency",
            "payout.max_amount",
        ] {
            assert!(
                keys.contains(&want.to_string()),
                "{want} missing in {keys:?}"
            );
        }
        let both: PsStripeConfig = serde_json::from_str(
            r#"{"checkout": {"price": {"currency": "usd", "unit_amount": 1}, "price_id": "price_1",
                             "success_url": "https://x"}}"#,
        )
        .unwrap();
        assert_eq!(both.validate().len(), 1);
        let id: PsStripeConfig = serde_json::from_str(
            r#"{"checkout": {"price_id": "prod_1", "success_url": "https://x"}}"#,
        )
        .unwrap();
        assert_eq!(id.validate()[0].key, "checkout.price_id");
    }

    #[test]
    fn secrets_come_from_files_and_are_not_printed() {
        let dir = tempfile::tempdir().unwrap();
        let s = StripeSettings::default();
        let err = Secrets::load(&s, dir.path()).unwrap_err();
        assert!(err.to_string().contains("stripe.secret_key_file"), "{err}");
        std::fs::write(dir.path().join("stripe-secret-key"), "pk_test_public\n").unwrap();
        assert!(matches!(
            Secrets::load(&s, dir.path()),
            Err(SecretsError::NotAnApiKey(_))
        ));
        std::fs::write(dir.path().join("stripe-secret-key"), "sk_test_abc\n").unwrap();
        std::fs::write(dir.path().join("stripe-webhook-secret"), "\n \n").unwrap();
        assert!(matches!(
            Secrets::load(&s, dir.path()),
            Err(SecretsError::NoWebhookSecret(_))
        ));
        std::fs::write(
            dir.path().join("stripe-webhook-secret"),
            "whsec_new\nwhsec_old\n",
        )
        .unwrap();
        let secrets = Secrets::load(&s, dir.path()).unwrap();
        assert_eq!(secrets.api_key.expose(), "sk_test_abc");
        assert_eq!(secrets.webhook.len(), 2);
        let shown = format!("{secrets:?}");
        assert!(
            !shown.contains("sk_test_abc") && !shown.contains("whsec_"),
            "{shown}"
        );
    }
}
