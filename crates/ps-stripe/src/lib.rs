//! The Stripe payment service (`wireleap-ps-stripe`): sells access keys through Stripe checkout and pays relays out to Stripe connected accounts (services.md §4).
//!
//! LIFECYCLE SHELL: this crate currently holds only what the shared lifecycle needs — a
//! `config.json` type with the listen address (the rest of this component's configuration is
//! not public, services.md §4, and comes with the service) and a `run` that binds the
//! address, reports ready and waits for reload or shutdown. The service issue replaces `run`.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use wireleap_daemon::{
    check_listen_address, listeners, Config, ConfigProblem, NoCommands, RunContext, Service,
    VersionInfo,
};

/// The `wireleap-ps-stripe` binary.
#[derive(Debug)]
pub struct PsStripe;

impl Service for PsStripe {
    const NAME: &'static str = "wireleap-ps-stripe";
    const ABOUT: &'static str = "Wireleap payment service for Stripe";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        // protocol.md §16.
        interfaces: &[("contract-ps", "0.1.0"), ("ps-auth", "0.1.0")],
    };
    type Config = PsStripeConfig;
    type Command = NoCommands;

    async fn run(mut ctx: RunContext<PsStripeConfig>) -> anyhow::Result<()> {
        let listener = listeners::bind_tcp("api", &ctx.config.address).await?;
        tracing::info!(
            address = %listener.local_addr()?,
            "listening (lifecycle shell: the service is not in this build yet)"
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

/// `config.json` of `wireleap-ps-stripe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PsStripeConfig {
    /// HTTP API listen address, `host:port`.
    pub address: String,
}

impl Default for PsStripeConfig {
    fn default() -> Self {
        PsStripeConfig {
            // Our choice: the original's default port is not public.
            address: "127.0.0.1:13504".into(),
        }
    }
}

impl Config for PsStripeConfig {
    fn validate(&self) -> Vec<ConfigProblem> {
        check_listen_address("address", &self.address)
            .into_iter()
            .collect()
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
        let c: PsStripeConfig = serde_json::from_str(r#"{"address": "nowhere"}"#).unwrap();
        assert_eq!(c.validate().len(), 1);
    }
}
