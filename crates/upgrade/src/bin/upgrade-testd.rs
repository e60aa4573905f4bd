//! A toy daemon with the upgrade agent wired in, for this crate's end-to-end tests and the
//! hand-over bench. It answers HTTP on one listener (`GET /` → `<version> <pid> <banner>`,
//! `GET /slow?ms=N` after N ms, `GET /notice?version=V` hands the agent an upgrade notice as
//! a relay's heartbeat would), and shows how a real daemon uses the agent.
//!
//! Its version and behaviour come from the build stamp (`wireleap-release stamp --set
//! version=0.2.0 --set mode=...`), so one compiled binary yields several releases:
//! `mode=crash-on-start` exits before ready, `mode=never-ready` never reports ready,
//! `mode=crash-after-ready` exits 300 ms after ready, `mode=fail-migration` fails its
//! migration. Its one migration (0.2.0) renames the config key `greeting` to `banner`.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde::{Deserialize, Serialize};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wireleap_daemon::{
    check_listen_address, listeners, Config, ConfigProblem, Home, RunContext, Service, VersionInfo,
};
use wireleap_upgrade::migrate::MigrationCtx;
use wireleap_upgrade::{
    Agent, AgentContext, Component, Migration, Settings, UpgradeCommand, UpgradeConfig,
};

const NAME: &str = "upgrade-testd";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TestdConfig {
    /// Listen address.
    address: String,
    /// Version of this file's format.
    #[serde(skip_serializing_if = "Option::is_none")]
    schema_version: Option<String>,
    /// Third word of replies (up to 0.1.x).
    #[serde(skip_serializing_if = "Option::is_none")]
    greeting: Option<String>,
    /// Third word of replies (0.2.0 on; migrated from `greeting`).
    #[serde(skip_serializing_if = "Option::is_none")]
    banner: Option<String>,
    /// Upgrade settings.
    upgrade: UpgradeConfig,
    /// Directory endpoints that receive failure reports.
    report_to: Vec<String>,
}

impl Config for TestdConfig {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p: Vec<_> = check_listen_address("address", &self.address)
            .into_iter()
            .collect();
        p.extend(self.upgrade.problems("upgrade"));
        p
    }

    fn initial() -> Self {
        TestdConfig {
            address: "127.0.0.1:0".into(),
            greeting: Some("hello".into()),
            ..Default::default()
        }
    }
}

fn mode() -> String {
    wireleap_upgrade::stamp::get("mode").unwrap_or_else(|| "ok".into())
}

fn version() -> semver::Version {
    let text = wireleap_upgrade::stamp::version_or(env!("CARGO_PKG_VERSION"));
    semver::Version::parse(&text).unwrap_or_else(|_| semver::Version::new(0, 0, 0))
}

fn greeting_to_banner(ctx: &MigrationCtx<'_>) -> Result<(), String> {
    if mode() == "fail-migration" {
        return Err("this build is stamped to fail its migration".into());
    }
    ctx.edit_config(|v| {
        let o = v.as_object_mut().ok_or("config is not an object")?;
        if let Some(g) = o.remove("greeting") {
            o.insert("banner".into(), g);
        }
        Ok(())
    })
}

fn banner_to_greeting(ctx: &MigrationCtx<'_>) -> Result<(), String> {
    ctx.edit_config(|v| {
        let o = v.as_object_mut().ok_or("config is not an object")?;
        if let Some(b) = o.remove("banner") {
            o.insert("greeting".into(), b);
        }
        Ok(())
    })
}

static MIGRATIONS: std::sync::LazyLock<Vec<Migration>> = std::sync::LazyLock::new(|| {
    vec![Migration {
        version: semver::Version::new(0, 2, 0),
        name: "greeting-to-banner",
        files: &[],
        apply: greeting_to_banner,
        rollback: banner_to_greeting,
    }]
});

fn component() -> Component {
    Component {
        name: NAME,
        version: version(),
        migrations: MIGRATIONS.as_slice(),
    }
}

fn settings(c: &TestdConfig) -> anyhow::Result<Settings> {
    Ok(Settings::from_config(&c.upgrade, None, None)?)
}

/// Checks that the process behind `addr` answers as `want`.
fn probe() -> wireleap_upgrade::Probe {
    Arc::new(|addr, want| {
        Box::pin(async move {
            let reply = ask(addr, "/").await.map_err(|e| e.to_string())?;
            if reply.split_whitespace().next() == Some(want.to_string().as_str()) {
                Ok(())
            } else {
                Err(format!("answered {reply:?}, expected version {want}"))
            }
        })
    })
}

async fn ask(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string())
}

async fn serve_one(
    mut s: tokio::net::TcpStream,
    reply: String,
    agent: Agent,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow request"))??;
        if n == 0 || buf.len() > 8192 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    if let Some(ms) = path
        .strip_prefix("/slow?ms=")
        .and_then(|m| m.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    if let Some(v) = path.strip_prefix("/notice?version=") {
        agent.notice(v);
    }
    let body = format!("{reply}\n");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

struct Testd;

impl Service for Testd {
    const NAME: &'static str = NAME;
    const ABOUT: &'static str = "Test fixture daemon for wireleap-upgrade";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        interfaces: &[],
    };
    type Config = TestdConfig;
    type Command = UpgradeCommand;

    async fn run(ctx: RunContext<TestdConfig>) -> anyhow::Result<()> {
        let mode = mode();
        let version = version();
        tracing::info!(%version, %mode, "upgrade-testd starting");
        if mode == "crash-on-start" {
            tracing::error!("crashing on start as stamped");
            std::process::exit(3);
        }
        let keypair = wireleap_daemon::keyfile::load_keypair(&ctx.home).ok();
        let reporter = match (&keypair, ctx.config.report_to.is_empty()) {
            (Some(kp), false) => {
                let client = wireleap_api::ApiClient::new(
                    Some(wireleap_api::Identity {
                        keypair: kp.clone(),
                        component: wireleap_proto::version::Component::Relay,
                        interfaces: vec![wireleap_proto::version::Interface::RelayDir],
                    }),
                    false,
                )?
                .with_retry(wireleap_api::RetryPolicy::ONCE);
                let r: Arc<dyn wireleap_upgrade::report::Reporter> =
                    Arc::new(wireleap_upgrade::report::DirectoryReporter::new(
                        client,
                        ctx.config.report_to.clone(),
                        kp.public(),
                    ));
                Some(r)
            }
            _ => None,
        };
        let agent = Agent::start(AgentContext {
            home: ctx.home.clone(),
            component: component(),
            settings: settings(&ctx.config)?,
            rollout_id: keypair.map(|k| k.public().0).unwrap_or([0; 32]),
            readiness: ctx.readiness.clone(),
            shutdown: ctx.shutdown.clone(),
            reporter,
            probe: Some(probe()),
            binary: None,
        })?;
        let listener = listeners::bind_tcp("main", &ctx.config.address).await?;
        agent.register_listener("main", &listener)?;
        let local = listener.local_addr()?;
        wireleap_daemon::write_atomic(
            &ctx.home.join("testd.addr"),
            local.to_string().as_bytes(),
            0o644,
        )?;
        tracing::info!(address = %local, "listening");

        let words = ctx
            .config
            .banner
            .clone()
            .or(ctx.config.greeting.clone())
            .unwrap_or_default();
        let reply = format!("{version} {} {words}", std::process::id());
        let active = Arc::new(AtomicUsize::new(0));
        let stop_accepting = tokio_util::sync::CancellationToken::new();
        let accept_loop = {
            let gate = agent.gate();
            let agent = agent.clone();
            let active = active.clone();
            let stop = stop_accepting.clone();
            tokio::spawn(async move {
                loop {
                    let conn = tokio::select! {
                        c = gate.accept(&listener) => c,
                        () = stop.cancelled() => return,
                    };
                    match conn {
                        Ok((s, _)) => {
                            let active = active.clone();
                            let reply = reply.clone();
                            let agent = agent.clone();
                            active.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(async move {
                                let _ = serve_one(s, reply, agent).await;
                                active.fetch_sub(1, Ordering::SeqCst);
                            });
                        }
                        Err(e) => {
                            tracing::warn!("accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            })
        };
        if mode == "never-ready" {
            tracing::warn!("never reporting ready, as stamped");
        } else {
            ctx.readiness.ready();
        }
        if mode == "crash-after-ready" {
            tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                tracing::error!("crashing after ready as stamped");
                std::process::exit(4);
            });
        }
        let reason = agent.stopped().await;
        stop_accepting.cancel();
        let _ = accept_loop.await;
        let deadline = tokio::time::Instant::now() + agent.drain_timeout();
        while active.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = active.load(Ordering::SeqCst);
        tracing::info!(
            ?reason,
            disenroll = reason.disenroll(),
            open_at_exit = left,
            "upgrade-testd stopping"
        );
        Ok(())
    }

    async fn command(home: &Home, command: UpgradeCommand) -> anyhow::Result<()> {
        let settings = home
            .load_config::<TestdConfig>()
            .map_err(anyhow::Error::from)
            .and_then(|(c, _)| settings(&c));
        wireleap_upgrade::commands::run(home, &component(), command, settings).await
    }
}

fn main() -> ExitCode {
    wireleap_upgrade::startup::recover_at_start(NAME);
    wireleap_daemon::main::<Testd>()
}
