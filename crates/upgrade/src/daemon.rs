//! The few lines a daemon needs to be upgradable, for daemons without anything special to
//! hand over (their listeners are served by `wireleap_api::serve_gated`): the stamped
//! version, starting the agent from the config's `upgrade` section, a stop token for the
//! service's tasks, and the upgrade subcommands. The relay does more (notices from
//! heartbeats, probes, reports) and wires the agent itself.
//!
//! ```text
//! fn software() -> String { wireleap_upgrade::daemon::software(env!("CARGO_PKG_VERSION")) }
//! fn component() -> Component { wireleap_upgrade::daemon::component(NAME, env!("CARGO_PKG_VERSION")) }
//! // in run():
//! let (keypair, agent) = daemon::start_with_key(&ctx, component(), &ctx.config.upgrade)?;
//! let stop = agent.stop_token();          // use instead of ctx.shutdown for every task
//! agent.register_listener("api", &listener)?;
//! serve_gated(listener, router, tls, stop.clone(), drain, Some(agent.gate().subscribe()))
//! ```

use crate::agent::{Agent, AgentContext};
use crate::check::Component;
use crate::commands::UpgradeCommand;
use crate::settings::{Settings, UpgradeConfig};
use tokio_util::sync::CancellationToken;
use wireleap_daemon::{keyfile, Config, Home, Readiness, RunContext};
use wireleap_proto::keys::Keypair;

/// The version this binary runs as: its build stamp's, else `default` (the crate version).
pub fn software(default: &str) -> String {
    crate::stamp::version_or(default)
}

/// [`software`] as a semver (0.0.0 if the stamp is not one, which `stamp` refuses anyway).
pub fn version(default: &str) -> semver::Version {
    semver::Version::parse(&software(default)).unwrap_or_else(|_| semver::Version::new(0, 0, 0))
}

/// The component of a binary without config or database migrations: `name` at the version
/// it runs as (see [`version`]; `default` is the crate version).
pub fn component(name: &'static str, default: &str) -> Component {
    Component {
        name,
        version: version(default),
        migrations: &[],
    }
}

/// Starts the upgrade agent of a daemon from its config's `upgrade` section. `rollout_id`
/// places the installation in staged rollouts (its public key, or any stable 32 bytes).
pub fn start_agent(
    home: &Home,
    component: Component,
    upgrade: &UpgradeConfig,
    rollout_id: [u8; 32],
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> anyhow::Result<Agent> {
    let settings = Settings::from_config(upgrade, None, None)?;
    Ok(Agent::start(AgentContext {
        home: home.clone(),
        component,
        settings,
        rollout_id,
        readiness: readiness.clone(),
        shutdown: shutdown.clone(),
        reporter: None,
        probe: None,
        binary: None,
    })?)
}

/// [`start_agent`] with the home, readiness and shutdown of the service's run context.
pub fn start_agent_in<C>(
    ctx: &RunContext<C>,
    component: Component,
    upgrade: &UpgradeConfig,
    rollout_id: [u8; 32],
) -> anyhow::Result<Agent> {
    start_agent(
        &ctx.home,
        component,
        upgrade,
        rollout_id,
        &ctx.readiness,
        &ctx.shutdown,
    )
}

/// Loads the service's identity key from its home and starts its upgrade agent
/// ([`start_agent_in`]), placed in staged rollouts by that key.
pub fn start_with_key<C>(
    ctx: &RunContext<C>,
    component: Component,
    upgrade: &UpgradeConfig,
) -> anyhow::Result<(Keypair, Agent)> {
    let keypair = keyfile::load_keypair(&ctx.home)?;
    let agent = start_agent_in(ctx, component, upgrade, keypair.public().0)?;
    Ok((keypair, agent))
}

impl Agent {
    /// A token cancelled once the agent says the service should stop (a shutdown, a
    /// hand-over to a successor, or this successor being rolled back). Give it to every
    /// server and task instead of the lifecycle's shutdown token.
    pub fn stop_token(&self) -> CancellationToken {
        let token = CancellationToken::new();
        let agent = self.clone();
        let t = token.clone();
        tokio::spawn(async move {
            let reason = agent.stopped().await;
            tracing::info!(?reason, "stopping");
            t.cancel();
        });
        token
    }
}

/// Runs an upgrade subcommand for a daemon whose config (if it could be read) has the
/// `upgrade` section `upgrade`.
pub async fn command(
    home: &Home,
    component: &Component,
    cmd: UpgradeCommand,
    upgrade: anyhow::Result<UpgradeConfig>,
) -> anyhow::Result<()> {
    let settings = upgrade.and_then(|u| Ok(Settings::from_config(&u, None, None)?));
    crate::commands::run(home, component, cmd, settings).await
}

/// [`command`] for a daemon whose config type is `C`: its config is read from the home and
/// `upgrade` picks the `upgrade` section out of it.
pub async fn command_for<C: Config>(
    home: &Home,
    component: &Component,
    cmd: UpgradeCommand,
    upgrade: impl FnOnce(C) -> UpgradeConfig,
) -> anyhow::Result<()> {
    let section = home
        .load_config::<C>()
        .map(|(c, _)| upgrade(c))
        .map_err(anyhow::Error::from);
    command(home, component, cmd, section).await
}

/// Test support for a daemon's config type `C`, whose `upgrade` section `upgrade` picks: the
/// section is optional (absent: the defaults), takes `channel`, `auto` and `drain_timeout`,
/// refuses unknown keys, and validation names its bad values `upgrade.<key>`. The first check
/// that failed, if any.
pub fn check_upgrade_section<C: Config>(
    upgrade: impl Fn(&C) -> &UpgradeConfig,
) -> Result<(), String> {
    let parse = |json: &str| serde_json::from_str::<C>(json).map_err(|e| format!("{json}: {e}"));
    if *upgrade(&parse("{}")?) != UpgradeConfig::default() {
        return Err("an absent upgrade section is not the defaults".into());
    }
    let set = parse(r#"{"upgrade": {"channel": "beta", "auto": false, "drain_timeout": "5s"}}"#)?;
    let u = upgrade(&set);
    if u.channel.as_deref() != Some("beta") || u.auto {
        return Err(format!("channel and auto were not taken: {u:?}"));
    }
    let problems = set.validate();
    if !problems.is_empty() {
        return Err(format!("a valid upgrade section is refused: {problems:?}"));
    }
    if serde_json::from_str::<C>(r#"{"upgrade": {"chanel": "x"}}"#).is_ok() {
        return Err("an unknown key in the upgrade section is accepted".into());
    }
    let bad = parse(r#"{"upgrade": {"releases": "ftp://x", "channel": "no way"}}"#)?;
    let keys: Vec<_> = bad.validate().into_iter().map(|p| p.key).collect();
    match ["upgrade.releases", "upgrade.channel"]
        .into_iter()
        .find(|k| !keys.iter().any(|x| x == k))
    {
        Some(k) => Err(format!("{k} is not named among the problems {keys:?}")),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use wireleap_daemon::ConfigProblem;

    /// A config type that validates its `upgrade` section.
    #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Checked {
        upgrade: UpgradeConfig,
    }

    impl Config for Checked {
        fn validate(&self) -> Vec<ConfigProblem> {
            self.upgrade.problems("upgrade")
        }
    }

    /// The same type forgetting to.
    #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Unchecked {
        upgrade: UpgradeConfig,
    }

    impl Config for Unchecked {
        fn validate(&self) -> Vec<ConfigProblem> {
            vec![]
        }
    }

    #[test]
    fn upgrade_section_check_passes_a_validated_section_and_fails_an_unvalidated_one() {
        check_upgrade_section::<Checked>(|c| &c.upgrade).unwrap();
        let e = check_upgrade_section::<Unchecked>(|c| &c.upgrade).unwrap_err();
        assert!(e.contains("upgrade.releases"), "{e}");
    }
}
