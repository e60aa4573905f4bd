//! The `upgrade`, `rollback`, `upgrade-status` and (internal) `migrate` commands, for any
//! daemon binary to flatten into its own subcommands:
//!
//! ```text
//! #[derive(clap::Subcommand)]
//! enum Extra { #[command(flatten)] Upgrade(wireleap_upgrade::commands::UpgradeCommand), ... }
//! async fn command(home, cmd) { match cmd { Extra::Upgrade(c) =>
//!     wireleap_upgrade::commands::run(home, &COMPONENT, c, settings_from_config(home)).await } }
//! ```
//! With the daemon running, `upgrade` and `rollback` verify and download here (showing the
//! changelog and a progress bar), then ask the daemon's agent to hand over; the agent verifies
//! again before it runs anything. With no daemon running, they install directly (migrations,
//! file swap) and leave starting to the operator.

use crate::agent::rollback_target;
use crate::check::{CheckError, Checker, Component};
use crate::control::{self, ControlRequest};
use crate::fetch::Progress;
use crate::handover::{self, MigrateReport, Plan, Source};
use crate::install::{Kind, Layout};
use crate::policy::{Mode, Refusal};
use crate::settings::Settings;
use crate::state::{self, FailureKind, LastOutcome, UpgradeState};
use anyhow::{anyhow, bail, Context as _};
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::Duration;
use wireleap_daemon::control::{inspect, Found};
use wireleap_daemon::Home;

/// The upgrade-related subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum UpgradeCommand {
    /// Upgrade to the newest release of the followed channel: shows the signed changelog and
    /// asks before installing; a running daemon hands over without downtime
    Upgrade {
        /// Do not ask (for scripts)
        #[arg(long)]
        yes: bool,
        /// Install this released version instead of the channel's (never an older one)
        #[arg(long, value_name = "VERSION")]
        version: Option<String>,
        /// Only say what would be installed
        #[arg(long)]
        check: bool,
    },
    /// Return to the previous version (kept as <binary>.prev), migrating files back
    Rollback {
        /// Do not ask (for scripts)
        #[arg(long)]
        yes: bool,
    },
    /// Show the upgrade state: versions, failures and skips, the last outcome
    UpgradeStatus {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Migrate copies of config and data from FROM to this binary's version (run by the
    /// upgrade machinery on the new binary)
    #[command(hide = true)]
    Migrate {
        /// The version the files are in now
        #[arg(long)]
        from: String,
        /// The version expected of this binary (refused if it is another one)
        #[arg(long)]
        to: Option<String>,
    },
}

fn ask(question: &str) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    for _ in 0..3 {
        print!("{question} (y/N) ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(false);
        }
        match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => return Ok(true),
            "" | "n" | "no" => return Ok(false),
            _ => println!("please answer y or n"),
        }
    }
    Ok(false)
}

fn confirm(yes: bool, question: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("not asking on a non-interactive input; pass --yes to proceed");
    }
    if !ask(question)? {
        bail!("cancelled");
    }
    Ok(())
}

/// How long a command waits for a running daemon's hand-over.
fn handover_wait(s: &Settings) -> Duration {
    s.migrate_timeout + s.ready_timeout + s.watch_window + Duration::from_secs(60)
}

/// Runs an upgrade subcommand for `component` in `home`. `settings` comes from the config
/// (only `migrate` works without).
pub async fn run(
    home: &Home,
    component: &Component,
    cmd: UpgradeCommand,
    settings: anyhow::Result<Settings>,
) -> anyhow::Result<()> {
    let layout = Layout::new(home.dir(), component.name);
    match cmd {
        UpgradeCommand::Migrate { from, to } => migrate(home, component, &from, to.as_deref()),
        UpgradeCommand::UpgradeStatus { json } => status(home, component, json).await,
        UpgradeCommand::Upgrade {
            yes,
            version,
            check,
        } => {
            let settings = settings?;
            upgrade(home, &layout, component, settings, yes, version, check).await
        }
        UpgradeCommand::Rollback { yes } => {
            let settings = settings?;
            rollback(home, &layout, component, &settings, yes).await
        }
    }
}

fn migrate(home: &Home, component: &Component, from: &str, to: Option<&str>) -> anyhow::Result<()> {
    let from =
        wireleap_proto::version::parse_strict(from).with_context(|| format!("--from {from:?}"))?;
    if let Some(to) = to {
        let to =
            wireleap_proto::version::parse_strict(to).with_context(|| format!("--to {to:?}"))?;
        if to != component.version {
            bail!(
                "this binary is version {}, but it was published as {to}; refusing a mislabeled release",
                component.version
            );
        }
    }
    let files = crate::migrate::migrate_copies(
        home.dir(),
        component.migrations,
        &from,
        &component.version,
    )?;
    println!("{}", serde_json::to_string(&MigrateReport { files })?);
    Ok(())
}

fn running_pid(home: &Home) -> Option<i32> {
    match inspect(home) {
        Found::Running(pid) => Some(pid),
        _ => None,
    }
}

async fn upgrade(
    home: &Home,
    layout: &Layout,
    component: &Component,
    settings: Settings,
    yes: bool,
    version: Option<String>,
    check_only: bool,
) -> anyhow::Result<()> {
    if !settings.enabled() {
        return Err(CheckError::NotConfigured.into());
    }
    let pinned = version
        .as_deref()
        .map(wireleap_proto::version::parse_strict)
        .transpose()
        .context("--version")?;
    let rollout_id = [0u8; 32];
    let checker = Checker::new(home.dir(), component.clone(), settings.clone(), rollout_id);
    let checked = match checker.check(Mode::Manual, pinned.as_ref()).await {
        Ok(c) => c,
        Err(e) if matches!(e.refusal(), Some(Refusal::UpToDate { .. })) => {
            println!("{e}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let offer = checked.offer;
    println!(
        "{} {} → {} (channel {}, metadata serial {})",
        component.name, component.version, offer.version, settings.channel, offer.serial
    );
    match checker.changelog(&offer).await {
        Ok(text) => println!("\n{}\n", text.trim_end()),
        Err(e) => println!("(could not get the changelog: {e})"),
    }
    for note in &offer.notes {
        println!("note: {note}");
    }
    if check_only {
        return Ok(());
    }
    confirm(yes, &format!("Upgrade to {}?", offer.version))?;
    let progress = if std::io::stderr().is_terminal() {
        Progress::Bar
    } else {
        Progress::Quiet
    };
    let staged = checker.stage(&offer, progress).await?;
    println!("downloaded and verified {}", staged.display());
    if let Some(pid) = running_pid(home) {
        println!(
            "handing over from the running {} (pid {pid}) ...",
            component.name
        );
        let path = control::socket_path(home.dir(), component.name);
        let reply = control::call(
            &path,
            &ControlRequest::Upgrade {
                version: Some(offer.version.to_string()),
            },
            handover_wait(&settings),
        )
        .await
        .map_err(|e| {
            anyhow!(
                "{e}; is the running {} too old for hand-over? stop it, upgrade, start it",
                component.name
            )
        })?;
        if !reply.ok {
            bail!("{}", reply.message);
        }
        println!("{}", reply.message);
        println!(
            "to return to {}: {} rollback",
            component.version, component.name
        );
        return Ok(());
    }
    let plan = Plan {
        kind: Kind::Upgrade,
        from: component.version.clone(),
        to: offer.version.clone(),
        source: Source::Staged {
            path: staged,
            target: offer.target.clone(),
        },
    };
    let r = handover::install_offline(home, layout, component, &settings, &plan).await;
    record_offline(home, &plan, r.as_ref().err().map(|f| f.reason.as_str()));
    r.map_err(|f| anyhow!("upgrade to {} failed: {}", plan.to, f.reason))?;
    println!(
        "installed {} (not running; start it with `{} start`; to return: `{} rollback`)",
        plan.to, component.name, component.name
    );
    Ok(())
}

async fn rollback(
    home: &Home,
    layout: &Layout,
    component: &Component,
    settings: &Settings,
    yes: bool,
) -> anyhow::Result<()> {
    let prev = rollback_target(home.dir(), layout).map_err(|e| anyhow!(e))?;
    println!(
        "{} {} → {} (rollback to {})",
        component.name,
        component.version,
        prev,
        layout.bin_prev().display()
    );
    confirm(yes, &format!("Roll back to {prev}?"))?;
    if let Some(pid) = running_pid(home) {
        println!(
            "handing over from the running {} (pid {pid}) ...",
            component.name
        );
        let path = control::socket_path(home.dir(), component.name);
        let reply =
            control::call(&path, &ControlRequest::Rollback {}, handover_wait(settings)).await?;
        if !reply.ok {
            bail!("{}", reply.message);
        }
        println!("{}", reply.message);
        return Ok(());
    }
    let plan = Plan {
        kind: Kind::Rollback,
        from: component.version.clone(),
        to: prev,
        source: Source::Previous,
    };
    let r = handover::install_offline(home, layout, component, settings, &plan).await;
    record_offline(home, &plan, r.as_ref().err().map(|f| f.reason.as_str()));
    r.map_err(|f| anyhow!("rollback to {} failed: {}", plan.to, f.reason))?;
    println!(
        "rolled back to {} (not running; start it with `{} start`)",
        plan.to, component.name
    );
    Ok(())
}

fn record_offline(home: &Home, plan: &Plan, error: Option<&str>) {
    let now = crate::check::unix_now();
    let r = UpgradeState::load(home.dir()).and_then(|mut st| {
        let (from, to) = (plan.from.to_string(), plan.to.to_string());
        match error {
            None => {
                st.previous = Some(from.clone());
                st.clear_failure(&to);
                if plan.kind == Kind::Rollback {
                    st.record_failure(
                        &from,
                        FailureKind::RolledBack,
                        "rolled back by the operator",
                        now,
                    );
                }
            }
            Some(e) if plan.kind == Kind::Upgrade => {
                st.record_failure(&to, FailureKind::BadBuild, e, now)
            }
            Some(_) => {}
        }
        st.last = Some(LastOutcome {
            kind: match plan.kind {
                Kind::Upgrade => "upgrade",
                Kind::Rollback => "rollback",
            }
            .into(),
            from,
            to,
            ok: error.is_none(),
            message: error.unwrap_or("installed while stopped").to_string(),
            at: now,
        });
        st.save(home.dir())
    });
    if let Err(e) = r {
        eprintln!("could not record the outcome: {e}");
    }
}

async fn status(home: &Home, component: &Component, json: bool) -> anyhow::Result<()> {
    let st = UpgradeState::load(home.dir())?;
    let skip = state::read_skip_file(home.dir());
    let agent = match running_pid(home) {
        Some(_) => control::call(
            &control::socket_path(home.dir(), component.name),
            &ControlRequest::Status {},
            Duration::from_secs(5),
        )
        .await
        .ok()
        .and_then(|r| r.status),
        None => None,
    };
    if json {
        let v = serde_json::json!({
            "name": component.name,
            "version": component.version.to_string(),
            "state": st,
            "skip_file": skip.map(|v| v.to_string()),
            "agent": agent,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{} {} (this binary)", component.name, component.version);
    if let Some(p) = &st.previous {
        println!("previous version (for rollback): {p}");
    }
    for (c, m) in &st.metadata {
        println!("release metadata for {c}: serial {}", m.serial);
    }
    for (v, f) in &st.failures {
        println!(
            "{v}: {} — {} (attempts {})",
            f.kind.describe(),
            f.reason,
            f.attempts
        );
    }
    if let Some(v) = skip {
        println!("skip file names {v}");
    }
    if let Some(l) = &st.last {
        println!(
            "last {}: {} → {}: {} ({})",
            l.kind,
            l.from,
            l.to,
            if l.ok { "ok" } else { "failed" },
            l.message
        );
    }
    if let Some(a) = agent {
        println!("running agent: {a}");
    }
    Ok(())
}
