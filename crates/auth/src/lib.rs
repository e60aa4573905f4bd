//! The Wireleap auth service (`wireleap-auth`): signs proofs of funding for payment services and verifies their signed requests (services.md §4).
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

/// The `wireleap-auth` binary.
#[derive(Debug)]
pub struct Auth;

impl Service for Auth {
    const NAME: &'static str = "wireleap-auth";
    const ABOUT: &'static str =
        "Wireleap auth: issues proofs of funding and verifies payment requests";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        // protocol.md §16.
        interfaces: &[("ps-auth", "0.1.0")],
    };
    type Config = AuthConfig;
    type Command = NoCommands;

    async fn run(mut ctx: RunContext<AuthConfig>) -> anyhow::Result<()> {
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

/// `config.json` of `wireleap-auth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HTTP API listen address, `host:port`.
    pub address: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            // Our choice: the original's default port is not public.
            address: "127.0.0.1:13502".into(),
        }
    }
}

impl Config for AuthConfig {
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
        assert_eq!(AuthConfig::default().validate(), vec![]);
        assert!(serde_json::from_str::<AuthConfig>(r#"{"adress": "x:1"}"#).is_err());
        let c: AuthConfig = serde_json::from_str(r#"{"address": "nowhere"}"#).unwrap();
        assert_eq!(c.validate().len(), 1);
    }
}
