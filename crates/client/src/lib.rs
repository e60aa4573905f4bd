//! The Wireleap client (`wireleap`): the controller daemon that builds circuits through
//! relays and the broker that local forwarders (SOCKS, TUN) send connections to (client.md).
//!
//! LIFECYCLE SHELL: this crate currently holds only what the shared lifecycle needs — the
//! `config.json` type with the keys of client.md §2, an `init` that writes it (the client has
//! no identity key), and a `run` that binds the API and broker addresses, reports ready and
//! waits for reload or shutdown. The client issue replaces `run` and adds the client's own
//! commands (`import`, `accesskeys`, `socks`, …) through `Service::Command`.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use wireleap_daemon::{
    check_listen_address, init, listeners, Config, ConfigProblem, Home, NoCommands, RunContext,
    Service, VersionInfo,
};

/// The `wireleap` binary.
#[derive(Debug)]
pub struct Client;

impl Service for Client {
    const NAME: &'static str = "wireleap";
    const ABOUT: &'static str = "Wireleap client: routes local traffic through paid relay circuits";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        // protocol.md §16.
        interfaces: &[
            ("client-contract", "0.1.0"),
            ("client-dir", "0.2.0"),
            ("client-relay", "0.2.0"),
        ],
    };
    type Config = ClientConfig;
    type Command = NoCommands;

    /// The client has no identity key: `init` writes config.json only, and replaces an
    /// existing one only with `--force` (the original overwrote it silently).
    fn init(home: &Home, force: bool) -> anyhow::Result<()> {
        init::create_home(home)?;
        if !force && home.config_file().exists() {
            anyhow::bail!(
                "{} already exists; run `init --force` to replace it with the defaults",
                home.config_file().display()
            );
        }
        init::write_initial_config::<ClientConfig>(home, true)?;
        Ok(())
    }

    async fn run(mut ctx: RunContext<ClientConfig>) -> anyhow::Result<()> {
        let api = listeners::bind_tcp("api", &ctx.config.address).await?;
        tracing::info!(
            address = %api.local_addr()?,
            "API listening (lifecycle shell: the client service is not in this build yet)"
        );
        // One listener serves both when the addresses are equal (client.md §2).
        let broker = if ctx.config.broker.address == ctx.config.address {
            None
        } else {
            let b = listeners::bind_tcp("broker", &ctx.config.broker.address).await?;
            tracing::info!(address = %b.local_addr()?, "broker listening");
            Some(b)
        };
        ctx.readiness.ready();
        let running = ctx.config.clone();
        ctx.reload_until_shutdown(|new| {
            if new.address != running.address || new.broker.address != running.broker.address {
                tracing::warn!("new listen addresses take effect on restart");
            }
        })
        .await;
        drop((api, broker));
        Ok(())
    }
}

/// `config.json` of the client (client.md §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Controller REST API listen address, `host:port`.
    pub address: String,
    /// Broker settings.
    pub broker: Broker,
    /// Local forwarders.
    pub forwarders: Forwarders,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            address: "127.0.0.1:13490".into(),
            broker: Broker::default(),
            forwarders: Forwarders::default(),
        }
    }
}

/// `broker`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Broker {
    /// h2c listen address for forwarders.
    pub address: String,
    /// Access key use.
    pub accesskey: AccessKeyUse,
    /// Circuit shape.
    pub circuit: Circuit,
}

impl Default for Broker {
    fn default() -> Self {
        Broker {
            address: "127.0.0.1:13490".into(),
            accesskey: AccessKeyUse::default(),
            circuit: Circuit::default(),
        }
    }
}

/// `broker.accesskey`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessKeyUse {
    /// Activate servicekeys from stored pofs automatically.
    pub use_on_demand: bool,
}

impl Default for AccessKeyUse {
    fn default() -> Self {
        AccessKeyUse {
            use_on_demand: true,
        }
    }
}

/// `broker.circuit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Circuit {
    /// Connect and response-header timeout (duration).
    pub timeout: String,
    /// Number of relays in a circuit.
    pub hops: u32,
    /// Relay addresses to restrict circuits to (empty = any).
    pub whitelist: Vec<String>,
}

impl Default for Circuit {
    fn default() -> Self {
        Circuit {
            timeout: "5s".into(),
            hops: 1,
            whitelist: Vec::new(),
        }
    }
}

/// `forwarders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Forwarders {
    /// SOCKSv5 forwarder.
    pub socks: ForwarderAddress,
    /// TUN forwarder.
    pub tun: ForwarderAddress,
}

impl Default for Forwarders {
    fn default() -> Self {
        Forwarders {
            socks: ForwarderAddress {
                address: "127.0.0.1:13491".into(),
            },
            tun: ForwarderAddress {
                address: "10.13.49.0:13492".into(),
            },
        }
    }
}

/// A forwarder's address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwarderAddress {
    /// `host:port`.
    pub address: String,
}

impl Config for ClientConfig {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        p.extend(check_listen_address("address", &self.address));
        p.extend(check_listen_address("broker.address", &self.broker.address));
        p.extend(check_listen_address(
            "forwarders.socks.address",
            &self.forwarders.socks.address,
        ));
        p.extend(check_listen_address(
            "forwarders.tun.address",
            &self.forwarders.tun.address,
        ));
        if self.broker.circuit.hops == 0 {
            p.push(ConfigProblem::new(
                "broker.circuit.hops",
                "must be at least 1, got 0",
            ));
        }
        if let Some((host, _)) = self.forwarders.tun.address.rsplit_once(':') {
            if host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
            {
                p.push(ConfigProblem::new(
                    "forwarders.tun.address",
                    format!(
                        "must not be a loopback address, got {:?}",
                        self.forwarders.tun.address
                    ),
                ));
            }
        }
        p
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_partial_configs_keep_defaults() {
        assert_eq!(ClientConfig::default().validate(), vec![]);
        let c: ClientConfig =
            serde_json::from_str(r#"{"broker": {"circuit": {"hops": 3}}}"#).unwrap();
        assert_eq!(c.broker.circuit.hops, 3);
        assert_eq!(c.broker.circuit.timeout, "5s");
        assert!(c.broker.accesskey.use_on_demand);
    }

    #[test]
    fn problems_are_reported() {
        let c: ClientConfig = serde_json::from_str(
            r#"{"broker": {"circuit": {"hops": 0}}, "forwarders": {"tun": {"address": "127.0.0.1:1"}}}"#,
        )
        .unwrap();
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["broker.circuit.hops", "forwarders.tun.address"]);
        assert!(serde_json::from_str::<ClientConfig>(r#"{"broker": {"hop": 1}}"#).is_err());
    }
}
