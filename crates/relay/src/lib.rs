//! The Wireleap relay (`wireleap-relay`): accepts tunnelled connections (HTTP/2 PUT streams
//! over TLS, or h2c behind a fronting web server), checks and durably stores each stream's
//! sharetoken, forwards the stream to the next relay or the final target, enrolls with each
//! contract's directory, and submits sharetokens for payment (services.md §1).
//!
//! [`Relay`] is the [`wireleap_daemon::Service`] the binary runs; [`RelayRuntime`] is the
//! running relay as a value (start, reload, hand over listeners, shut down with or without
//! disenrolling), which the upgrade code drives. Not here: the tunnel transport itself
//! (`wireleap_net`), protocol objects (`wireleap_proto`), release verification and the
//! upgrade supervisor (`wireleap_upgrade`).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod commands;
pub mod config;
pub mod contracts;
pub mod dial;
pub mod directory;
pub mod handover;
pub mod rest;
pub mod runtime;
pub mod state;
pub mod store;
pub mod submit;
pub mod tls;
pub mod tunnel;
pub mod udp;
pub mod upgrade;
pub mod usage;

pub use commands::RelayCommand;
pub use config::RelayConfig;
pub use runtime::{RelayHandle, RelayRuntime, RelayStatus, ShutdownReport};
pub use state::{ShutdownMode, UpgradeNotice};

use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wireleap_daemon::{Home, RunContext, Service, VersionInfo};
use wireleap_upgrade::{Agent, AgentContext, StopReason};

/// How long start waits for the first enrollment round before reporting ready anyway.
pub const READY_WAIT: Duration = Duration::from_secs(5);

/// The relay binary.
#[derive(Debug)]
pub struct Relay;

impl Service for Relay {
    const NAME: &'static str = "wireleap-relay";
    const ABOUT: &'static str = "Wireleap relay: forwards tunnelled connections for payment";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        // protocol.md §16.
        interfaces: &[
            ("client-relay", "0.2.0"),
            ("relay-contract", "0.1.0"),
            ("relay-dir", "0.2.0"),
            ("relay-relay", "0.2.0"),
        ],
    };
    type Config = RelayConfig;
    type Command = RelayCommand;

    /// The default init (key files, config.json) plus the TLS files made from the key.
    fn init(home: &Home, force: bool) -> anyhow::Result<()> {
        wireleap_daemon::init::default_init::<Self>(home, force)?;
        let keypair = wireleap_daemon::keyfile::load_keypair(home)?;
        tls::write_files(home, &keypair)?;
        println!(
            "wrote {} and {}",
            home.join(tls::CERT_FILE).display(),
            home.join(tls::KEY_FILE).display()
        );
        Ok(())
    }

    fn software() -> String {
        runtime::software_version().to_string()
    }

    /// Serves until stopped. The upgrade agent runs alongside: it turns the directory's
    /// upgrade notices into zero-downtime hand-overs, and decides whether the stop that
    /// ends this process disenrolls (a normal stop) or not (handed over to a successor).
    async fn run(mut ctx: RunContext<RelayConfig>) -> anyhow::Result<()> {
        if upgrade::fault().as_deref() == Some("crash-on-start") {
            tracing::error!("this build is stamped to crash on start (release drill)");
            std::process::exit(3);
        }
        let keypair = wireleap_daemon::keyfile::load_keypair(&ctx.home)?;
        let handle_cell: Arc<OnceLock<RelayHandle>> = Arc::new(OnceLock::new());
        let kinds: upgrade::ListenerMap = Arc::new(OnceLock::new());
        let client = wireleap_api::ApiClient::new(
            Some(wireleap_api::Identity {
                keypair: keypair.clone(),
                component: wireleap_proto::version::Component::Relay,
                interfaces: vec![wireleap_proto::version::Interface::RelayDir],
            }),
            false,
        )?
        .with_retry(wireleap_api::RetryPolicy::ONCE);
        let agent = Agent::start(AgentContext {
            home: ctx.home.clone(),
            component: upgrade::component(),
            settings: upgrade::settings(&ctx.config)?,
            rollout_id: keypair.public().0,
            readiness: ctx.readiness.clone(),
            shutdown: ctx.shutdown.clone(),
            reporter: Some(Arc::new(upgrade::RelayReporter::new(
                client,
                handle_cell.clone(),
            ))),
            probe: Some(upgrade::probe(keypair.public(), kinds.clone())),
            binary: None,
        })?;

        let mut rt = RelayRuntime::start_gated(
            &ctx.home,
            ctx.config.clone(),
            Some(agent.gate().subscribe()),
        )
        .await?;
        for (name, fd) in rt.listener_fds() {
            agent.register_listener(name, &fd)?;
        }
        let _ = kinds.set(
            rt.listener_addrs()
                .into_iter()
                .filter_map(|(n, a)| Some((a.port(), upgrade::ListenerKind::of(n)?)))
                .collect(),
        );
        let handle = rt.handle();
        let _ = handle_cell.set(handle.clone());
        {
            let agent = agent.clone();
            handle.set_heartbeat_gate(Arc::new(move || agent.is_primary()));
        }
        if let Some(mut notices) = handle.take_upgrade_notices() {
            let agent = agent.clone();
            tokio::spawn(async move {
                while let Some(n) = notices.recv().await {
                    agent.notice(&n.version.to_string());
                }
            });
        }

        rt.wait_first_enrollment(READY_WAIT).await;
        if agent.is_successor() && !handle.all_enrolled() {
            // Returning without a stop keeps the old process's enrollment: it still serves.
            anyhow::bail!(
                "this process replaces a running relay, so it must enroll with every contract's directory before it takes over; it could not (see the errors above)"
            );
        }
        ctx.readiness.ready();
        let reason = loop {
            tokio::select! {
                r = agent.stopped() => break r,
                next = ctx.reloads.next() => match next {
                    Some(c) => rt.reload(c).await,
                    None => break agent.stopped().await,
                },
            }
        };
        let mode = match reason {
            StopReason::HandedOver | StopReason::Abandoned => ShutdownMode::HandOver,
            StopReason::Shutdown if handover::take(&ctx.home, std::process::id()) => {
                ShutdownMode::HandOver
            }
            StopReason::Shutdown => handle.shutdown_mode(),
        };
        tracing::info!(?reason, ?mode, "relay stopping");
        rt.shutdown(mode).await;
        Ok(())
    }

    async fn command(home: &Home, command: RelayCommand) -> anyhow::Result<()> {
        commands::run(home, command).await
    }
}
