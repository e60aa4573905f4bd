//! The test payment service (`wireleap-ps-dummy`): hands out access keys and performs payouts of type `dummy`, for test networks (services.md §4).
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

/// The `wireleap-ps-dummy` binary.
#[derive(Debug)]
pub struct PsDummy;

impl Service for PsDummy {
    const NAME: &'static str = "wireleap-ps-dummy";
    const ABOUT: &'static str = "Wireleap test payment service (no real money)";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        // protocol.md §16.
        interfaces: &[("contract-ps", "0.1.0"), ("ps-auth", "0.1.0")],
    };
    type Config = PsDummyConfig;
    type Command = NoCommands;

    async fn run(mut ctx: RunContext<PsDummyConfig>) -> anyhow::Result<()> {
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

/// `config.json` of `wireleap-ps-dummy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PsDummyConfig {
    /// HTTP API listen address, `host:port`.
    pub address: String,
}

impl Default for PsDummyConfig {
    fn default() -> Self {
        PsDummyConfig {
            // Our choice: the original's default port is not public.
            address: "127.0.0.1:13503".into(),
        }
    }
}

impl Config for PsDummyConfig {
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
        assert_eq!(PsDummyConfig::default().validate(), vec![]);
        assert!(serde_json::from_str::<PsDummyConfig>(r#"{"adress": "x:1"}"#).is_err());
        let c: PsDummyConfig = serde_json::from_str(r#"{"address": "nowhere"}"#).unwrap();
        assert_eq!(c.validate().len(), 1);
    }
}
