//! A toy daemon on the lifecycle framework, used only by this crate's integration tests. Its
//! config knobs make it slow to become ready, never ready, crash, or ignore SIGTERM, so each
//! branch of `start` and `stop` can be exercised against a real process. Each TCP connection
//! gets one line: `<greeting> <pid>`.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde::{Deserialize, Serialize};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use wireleap_daemon::{
    check_listen_address, listeners, Config, ConfigProblem, RunContext, Service, VersionInfo,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TestConfig {
    /// Listen address.
    address: String,
    /// First word of every reply; changes on reload.
    greeting: String,
    /// Wait this long before reporting ready.
    ready_delay_ms: u64,
    /// Never report ready.
    never_ready: bool,
    /// Exit with status 3 this long after starting.
    crash_after_ms: Option<u64>,
    /// Keep running after SIGTERM (tests SIGKILL escalation).
    ignore_shutdown: bool,
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig {
            address: "127.0.0.1:0".into(),
            greeting: "hello".into(),
            ready_delay_ms: 0,
            never_ready: false,
            crash_after_ms: None,
            ignore_shutdown: false,
        }
    }
}

impl Config for TestConfig {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p: Vec<_> = check_listen_address("address", &self.address)
            .into_iter()
            .collect();
        if self.greeting.is_empty() {
            p.push(ConfigProblem::new("greeting", "must not be empty"));
        }
        p
    }
}

/// Extra commands, to show that a binary's own subcommands join the common ones.
#[derive(Debug, clap::Subcommand)]
enum Extra {
    /// Print a greeting for NAME
    Greet {
        /// Who to greet
        name: String,
    },
}

struct TestDaemon;

impl Service for TestDaemon {
    const NAME: &'static str = "wireleap-daemon-testd";
    const ABOUT: &'static str = "Test fixture daemon for wireleap-daemon";
    const VERSION: VersionInfo = VersionInfo {
        software: env!("CARGO_PKG_VERSION"),
        interfaces: &[("test-a", "0.1.0"), ("test-b", "0.2.0")],
    };
    type Config = TestConfig;
    type Command = Extra;

    async fn run(mut ctx: RunContext<TestConfig>) -> anyhow::Result<()> {
        let listener = listeners::bind_tcp("main", &ctx.config.address).await?;
        let local = listener.local_addr()?;
        // Tests read the bound address (the config may ask for port 0).
        wireleap_daemon::write_atomic(
            &ctx.home.join("testd.addr"),
            local.to_string().as_bytes(),
            0o644,
        )?;
        tracing::info!(address = %local, "listening");
        let greeting = Arc::new(Mutex::new(ctx.config.greeting.clone()));
        let g = greeting.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let line = format!(
                    "{} {}\n",
                    g.lock().map(|g| g.clone()).unwrap_or_default(),
                    std::process::id()
                );
                tokio::spawn(async move {
                    let _ = s.write_all(line.as_bytes()).await;
                });
            }
        });
        if let Some(ms) = ctx.config.crash_after_ms {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                tracing::error!("crashing as configured");
                std::process::exit(3);
            });
        }
        if !ctx.config.never_ready {
            tokio::time::sleep(Duration::from_millis(ctx.config.ready_delay_ms)).await;
            ctx.readiness.ready();
        }
        let ignore_shutdown = ctx.config.ignore_shutdown;
        ctx.reload_until_shutdown(|c| {
            if let Ok(mut g) = greeting.lock() {
                *g = c.greeting;
            }
        })
        .await;
        if ignore_shutdown {
            tracing::warn!("ignoring shutdown as configured");
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn command(_home: &wireleap_daemon::Home, command: Extra) -> anyhow::Result<()> {
        match command {
            Extra::Greet { name } => println!("hello {name}"),
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    wireleap_daemon::main::<TestDaemon>()
}
