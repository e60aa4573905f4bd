//! The relay's side of self-upgrade (the machinery is `wireleap_upgrade`): what the relay is
//! as an upgradable component (name, version, migrations), its resolved upgrade settings,
//! the probe that checks a new process really serves each listener, and where failed
//! upgrades are reported (the directories of the contracts it serves).
//!
//! Data is not migrated on copies: during a hand-over the old and the new process serve at
//! the same time and both write sharetokens to the same database, so a copy would lose what
//! the old one stores after it was taken. The database schema therefore only grows in ways
//! the previous release tolerates (`wireleap_store::Compat::Expand`; a breaking schema
//! migration is refused during a hand-over), and migrations here only rewrite
//! `config.json`.
//!
//! The build stamp may carry `fault=crash-on-start` or `fault=fail-migration`: a release
//! drill for operators (and the end-to-end tests) to watch a broken release be rolled back
//! and skipped without building a broken binary. `fault=schema-expand` and
//! `fault=schema-breaking` add one schema migration of that kind ([`crate::store::migrations`]).
//! An unstamped binary has no fault.

use crate::config::RelayConfig;
use crate::runtime::{RelayHandle, LISTENER_H2C, LISTENER_REST, LISTENER_TLS};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wireleap_api::ApiClient;
use wireleap_net::tls;
use wireleap_net::tunnel::{Session, SessionConfig};
use wireleap_proto::keys::PublicKey;
use wireleap_proto::status::Status;
use wireleap_proto::wl_payload::WlPayload;
use wireleap_upgrade::migrate::MigrationCtx;
use wireleap_upgrade::report::{DirectoryReporter, Reporter};
use wireleap_upgrade::{Component, Migration, Probe, Settings};

/// The binary's name, as the upgrade files are named after it.
pub const NAME: &str = "wireleap-relay";

/// The fault this build was stamped with, if any (module doc).
pub fn fault() -> Option<String> {
    wireleap_upgrade::stamp::get("fault")
}

/// 0.2.0 writes each contract's channel under its current name, `upgrade_channel`, instead
/// of the relay ≤ 0.4 alias `update_channel` (both are read; one name is less confusing).
fn channel_key_apply(ctx: &MigrationCtx<'_>) -> Result<(), String> {
    if fault().as_deref() == Some("fail-migration") {
        return Err("this build is stamped to fail its migration (release drill)".into());
    }
    ctx.edit_config(|v| {
        let Some(contracts) = v.get_mut("contracts").and_then(|c| c.as_object_mut()) else {
            return Ok(());
        };
        for (url, entry) in contracts.iter_mut() {
            let Some(e) = entry.as_object_mut() else {
                return Err(format!("contracts.{url} is not an object"));
            };
            if let Some(old) = e.remove("update_channel") {
                e.entry("upgrade_channel").or_insert(old);
            }
        }
        Ok(())
    })
}

/// Every earlier release reads `upgrade_channel`, so going back needs no edit.
fn channel_key_rollback(_: &MigrationCtx<'_>) -> Result<(), String> {
    Ok(())
}

static MIGRATIONS: std::sync::LazyLock<Vec<Migration>> = std::sync::LazyLock::new(|| {
    vec![Migration {
        version: semver::Version::new(0, 2, 0),
        name: "contract-channel-key",
        files: &[],
        apply: channel_key_apply,
        rollback: channel_key_rollback,
    }]
});

/// The relay as an upgradable component.
pub fn component() -> Component {
    Component {
        name: NAME,
        version: crate::runtime::software_version(),
        migrations: MIGRATIONS.as_slice(),
    }
}

/// The upgrade settings of `cfg`: releases and keys from its `upgrade` section, the channel
/// from its contracts, `auto` from `auto_upgrade`, and the relay's own `drain_timeout`.
pub fn settings(cfg: &RelayConfig) -> anyhow::Result<Settings> {
    let channel = cfg.upgrade_channel().map(|(_, c)| c);
    let mut s = Settings::from_config(&cfg.upgrade, channel.as_deref(), Some(cfg.auto_upgrade))?;
    s.drain_timeout = cfg.drain_timeout.to_std();
    Ok(s)
}

/// Which kind of listener sits on a port, for the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// TLS + HTTP/2 tunnel listener.
    Tls,
    /// Plaintext HTTP/2 tunnel listener.
    H2c,
    /// The REST API on TCP.
    Rest,
}

impl ListenerKind {
    /// The kind of a listener name.
    pub fn of(name: &str) -> Option<ListenerKind> {
        match name {
            LISTENER_TLS => Some(ListenerKind::Tls),
            LISTENER_H2C => Some(ListenerKind::H2c),
            LISTENER_REST => Some(ListenerKind::Rest),
            _ => None,
        }
    }
}

/// Listener kinds by port, filled once the listeners are bound.
pub type ListenerMap = Arc<OnceLock<HashMap<u16, ListenerKind>>>;

/// The probe run on every listener once only the new process accepts: on a tunnel listener
/// a PING must be answered with a PONG from this relay's key (over TLS pinned to that key, or
/// h2c); on the REST API the status must name the version being installed.
pub fn probe(pubkey: PublicKey, kinds: ListenerMap) -> Probe {
    Arc::new(move |addr: SocketAddr, want: semver::Version| {
        let kinds = kinds.clone();
        Box::pin(async move {
            let kind = kinds
                .get()
                .and_then(|m| m.get(&addr.port()).copied())
                .ok_or_else(|| format!("no listener of this relay is known at {addr}"))?;
            match kind {
                ListenerKind::Tls | ListenerKind::H2c => {
                    ping(addr, pubkey, kind == ListenerKind::Tls).await
                }
                ListenerKind::Rest => rest_version(addr, &want).await,
            }
        }) as Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
    })
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

fn session_config(addr: SocketAddr) -> SessionConfig {
    SessionConfig {
        authority: addr.to_string(),
        handshake_timeout: PROBE_TIMEOUT,
        open_timeout: PROBE_TIMEOUT,
        response_timeout: PROBE_TIMEOUT,
        keepalive: None,
        plain_body_limit: 4096,
        ..SessionConfig::default()
    }
}

async fn ping(addr: SocketAddr, pubkey: PublicKey, with_tls: bool) -> Result<(), String> {
    let tcp = tls::dial_tcp(&addr.to_string(), PROBE_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let session = if with_tls {
        let stream = tls::dial_tls(tcp, None, Some(pubkey.0), PROBE_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        Session::handshake(stream, session_config(addr)).await
    } else {
        Session::handshake(tcp, session_config(addr)).await
    }
    .map_err(|e| e.to_string())?;
    let payload = WlPayload::ping().to_header_value();
    let reply = session
        .request_plain(http::Method::PUT, "/", Some(payload.as_bytes()))
        .await
        .map_err(|e| e.to_string())?;
    let pong = Status::parse(&reply.body).is_ok_and(|s| s.is_pong_from(&pubkey));
    match pong {
        true if reply.status == http::StatusCode::OK => Ok(()),
        _ => Err(format!(
            "PING answered {} {:?}, expected a PONG from {pubkey}",
            reply.status,
            String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)])
        )),
    }
}

async fn rest_version(addr: SocketAddr, want: &semver::Version) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = client
        .get(format!("http://{addr}/api/status"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    match v.get("version").and_then(|v| v.as_str()) {
        Some(got) if got == want.to_string() => Ok(()),
        got => Err(format!("status names version {got:?}, expected {want}")),
    }
}

/// Reports failed upgrades to the directories of the contracts the relay serves (learned at
/// run time, so the list is read when a report is made).
pub struct RelayReporter {
    client: ApiClient,
    handle: Arc<OnceLock<RelayHandle>>,
}

impl RelayReporter {
    /// `client` must carry the relay's identity (it signs the report).
    pub fn new(client: ApiClient, handle: Arc<OnceLock<RelayHandle>>) -> Self {
        RelayReporter { client, handle }
    }
}

impl Reporter for RelayReporter {
    fn report<'a>(
        &'a self,
        version: &'a str,
        reason: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let Some(handle) = self.handle.get() else {
                return Err("the relay has not started yet; nothing to report to".into());
            };
            let dirs = handle.directories();
            if dirs.is_empty() {
                return Err("no directory known yet".into());
            }
            DirectoryReporter::new(self.client.clone(), dirs, handle.pubkey())
                .report(version, reason)
                .await
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The store refuses breaking schema migrations in the new process of a hand-over by
    /// the variable the hand-over sets on it; the two crates must agree on its name.
    #[test]
    fn the_store_knows_the_hand_over_variable() {
        assert_eq!(
            wireleap_store::PREDECESSOR_ENV,
            wireleap_upgrade::handover::PREDECESSOR_ENV
        );
    }

    #[test]
    fn channel_key_migration_renames_the_alias_only() {
        let dir = tempfile::tempdir().unwrap();
        let next = dir.path().join("config.json.next");
        std::fs::write(
            &next,
            r#"{"address":"127.0.0.1:1","contracts":{"https://a":{"role":"backing","address":"wireleap://x:1","update_channel":"beta"},"https://b":{"role":"fronting","address":"wireleap://y:1","upgrade_channel":"stable","update_channel":"old"}}}"#,
        )
        .unwrap();
        let ctx = MigrationCtx::new(dir.path());
        channel_key_apply(&ctx).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&next).unwrap()).unwrap();
        assert_eq!(v["contracts"]["https://a"]["upgrade_channel"], "beta");
        assert!(v["contracts"]["https://a"].get("update_channel").is_none());
        assert_eq!(v["contracts"]["https://b"]["upgrade_channel"], "stable");
        assert!(v["contracts"]["https://b"].get("update_channel").is_none());
        // The result is still a valid relay config.
        let cfg: RelayConfig = serde_json::from_value(v).unwrap();
        assert_eq!(
            cfg.contracts["https://a"].configured_channel(),
            Some("beta")
        );
    }

    #[test]
    fn migration_refuses_a_non_object_contract() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json.next"),
            r#"{"contracts":{"https://a":3}}"#,
        )
        .unwrap();
        let ctx = MigrationCtx::new(dir.path());
        let e = channel_key_apply(&ctx).unwrap_err();
        assert!(e.contains("contracts.https://a"), "{e}");
    }

    #[test]
    fn settings_follow_the_relay_keys() {
        let mut cfg = RelayConfig {
            auto_upgrade: false,
            ..RelayConfig::default()
        };
        cfg.drain_timeout = wireleap_proto::duration::Duration::from_secs(3);
        let s = settings(&cfg).unwrap();
        assert!(!s.auto);
        assert!(!s.enabled());
        assert_eq!(s.drain_timeout, Duration::from_secs(3));
    }
}
