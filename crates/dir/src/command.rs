//! The operator's `channel` subcommands: `wireleap-dir channel set|list`.
//!
//! They work on the directory's database (the one named in `config.json`), not through the
//! running daemon: a running directory re-reads the channel table every
//! `channel_refresh_interval` (default 2 s), so a change reaches it without a restart, and the
//! command also works while the directory is stopped. With PostgreSQL, every directory
//! instance sharing the database sees the change.

use crate::channels::{Channel, ChannelComponent};
use crate::config::{rollout_basis_points, valid_channel_name, DirectoryConfig, MAX_CHANNEL_NAME};
use crate::server::seed_channels;
use crate::store::DirStore;
use anyhow::Context as _;
use wireleap_daemon::Home;
use wireleap_proto::version;
use wireleap_store::Db;

/// `wireleap-dir`'s own subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DirCommand {
    /// Show or change upgrade channels (which version relays or clients on a channel run)
    #[command(subcommand)]
    Channel(ChannelCommand),
    // `upgrade`, `rollback`, `upgrade-status` and the hidden `migrate`, documented by
    // wireleap-upgrade.
    #[command(flatten)]
    #[allow(missing_docs)]
    Upgrade(wireleap_upgrade::UpgradeCommand),
}

/// `channel ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ChannelCommand {
    /// Set a channel's version and rollout (creating the channel); a running directory
    /// applies it within channel_refresh_interval. Relays are never told to downgrade.
    Set {
        /// Channel name; relays that name no channel follow "default"
        channel: String,
        /// Version to run, strict semver (e.g. 0.6.2)
        version: String,
        /// Share of the channel's relays told to upgrade, 0-100; widen it later by running
        /// the command again with a larger value
        #[arg(long, value_name = "PERCENT", default_value_t = 100.0)]
        rollout: f64,
        /// Which software the channel is for
        #[arg(long, value_enum, default_value_t = ComponentArg::Relay)]
        component: ComponentArg,
    },
    /// List every channel with its version and rollout
    List {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
}

/// `--component`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ComponentArg {
    /// Relays (heartbeat upgrade notices)
    Relay,
    /// Clients (read /info)
    Client,
}

impl From<ComponentArg> for ChannelComponent {
    fn from(c: ComponentArg) -> Self {
        match c {
            ComponentArg::Relay => ChannelComponent::Relay,
            ComponentArg::Client => ChannelComponent::Client,
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn percent(bp: u32) -> String {
    let p = f64::from(bp) / 100.0;
    format!("{p}%")
}

fn describe(c: &Channel) -> String {
    format!("{} ({})", c.version, percent(c.rollout_bp))
}

/// Opens the store named by the home's config (migrating and seeding configured channels,
/// as the daemon would).
pub async fn open_store(home: &Home) -> anyhow::Result<(DirStore, DirectoryConfig)> {
    let (config, path) = home
        .load_config::<DirectoryConfig>()
        .context("loading the directory configuration")?;
    let url = crate::dburl::resolve(&config.database, home.dir());
    let db = Db::open(&url)
        .await
        .with_context(|| format!("opening the database named in {}", path.display()))?;
    let store = DirStore::open(db).await?;
    seed_channels(&store, &config, now()).await?;
    Ok((store, config))
}

/// Runs a `channel` subcommand against `store`, returning what to print.
pub async fn run_channel(
    store: &DirStore,
    cmd: ChannelCommand,
    now: i64,
) -> anyhow::Result<String> {
    match cmd {
        ChannelCommand::Set {
            channel,
            version: text,
            rollout,
            component,
        } => {
            let component = ChannelComponent::from(component);
            if !valid_channel_name(&channel) {
                anyhow::bail!(
                    "channel name {channel:?} must be 1-{MAX_CHANNEL_NAME} characters of A-Z a-z 0-9 . _ -"
                );
            }
            let v = version::parse_strict(&text)
                .map_err(|e| anyhow::anyhow!("version {text:?}: {e} (write e.g. 0.6.2)"))?;
            let bp = rollout_basis_points(rollout).map_err(anyhow::Error::msg)?;
            let previous = store.set_channel(component, &channel, &v, bp, now).await?;
            let now_desc = describe(&Channel {
                version: v.clone(),
                rollout_bp: bp,
                updated_at: now,
            });
            let mut out = match &previous {
                Some(p) => format!(
                    "{component} channel {channel:?}: {} -> {now_desc}",
                    describe(p)
                ),
                None => format!("{component} channel {channel:?} created: {now_desc}"),
            };
            if previous.as_ref().is_some_and(|p| v < p.version) {
                out.push_str(
                    "\nnote: this lowers the channel's version; relays already running a newer \
                     version are never told to downgrade",
                );
            }
            out.push_str("\na running directory applies this within its channel_refresh_interval");
            Ok(out)
        }
        ChannelCommand::List { json } => {
            let table = store.channels().await?;
            if json {
                let mut root = serde_json::Map::new();
                for component in ChannelComponent::ALL {
                    let mut m = serde_json::Map::new();
                    for (name, c) in table.get(component) {
                        m.insert(
                            name.clone(),
                            serde_json::json!({
                                "version": c.version.to_string(),
                                "rollout_percent": f64::from(c.rollout_bp) / 100.0,
                                "updated_at": c.updated_at,
                            }),
                        );
                    }
                    root.insert(component.as_str().into(), m.into());
                }
                return Ok(serde_json::to_string_pretty(&root)?);
            }
            let mut lines = Vec::new();
            for component in ChannelComponent::ALL {
                for (name, c) in table.get(component) {
                    lines.push(format!(
                        "{component}\t{name}\t{}\t{}",
                        c.version,
                        percent(c.rollout_bp)
                    ));
                }
            }
            if lines.is_empty() {
                return Ok(
                    "no upgrade channels (set one with `channel set <channel> <version>`)".into(),
                );
            }
            lines.insert(0, "component\tchannel\tversion\trollout".into());
            Ok(lines.join("\n"))
        }
    }
}

/// Entry point of [`DirCommand`].
pub async fn run(home: &Home, cmd: DirCommand) -> anyhow::Result<()> {
    match cmd {
        DirCommand::Channel(c) => {
            let (store, _) = open_store(home).await?;
            let out = run_channel(&store, c, now()).await;
            store.db().close().await;
            println!("{}", out?);
            Ok(())
        }
        DirCommand::Upgrade(c) => {
            wireleap_upgrade::daemon::command_for(
                home,
                &crate::component(),
                c,
                |c: DirectoryConfig| c.upgrade,
            )
            .await
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use wireleap_store::testing::backends;

    #[tokio::test]
    async fn set_and_list_on_every_backend() {
        for t in backends().await.unwrap() {
            let store = DirStore::open(t.db.clone()).await.unwrap();
            let set = |channel: &str, version: &str, rollout: f64| ChannelCommand::Set {
                channel: channel.into(),
                version: version.into(),
                rollout,
                component: ComponentArg::Relay,
            };
            let out = run_channel(&store, set("default", "0.2.0", 10.0), 1)
                .await
                .unwrap();
            assert!(out.contains("created: 0.2.0 (10%)"), "{out}");
            let out = run_channel(&store, set("default", "0.1.0", 100.0), 2)
                .await
                .unwrap();
            assert!(out.contains("0.2.0 (10%) -> 0.1.0 (100%)"), "{out}");
            assert!(out.contains("never told to downgrade"), "{out}");
            assert!(run_channel(&store, set("bad name", "0.1.0", 1.0), 3)
                .await
                .is_err());
            assert!(run_channel(&store, set("d", "v0.1.0", 1.0), 3)
                .await
                .is_err());
            assert!(run_channel(&store, set("d", "0.1.0", 100.5), 3)
                .await
                .is_err());
            let client = ChannelCommand::Set {
                channel: "default".into(),
                version: "0.6.3".into(),
                rollout: 100.0,
                component: ComponentArg::Client,
            };
            run_channel(&store, client, 4).await.unwrap();
            let listed = run_channel(&store, ChannelCommand::List { json: false }, 5)
                .await
                .unwrap();
            assert!(listed.contains("relay\tdefault\t0.1.0\t100%"), "{listed}");
            assert!(listed.contains("client\tdefault\t0.6.3\t100%"), "{listed}");
            let j = run_channel(&store, ChannelCommand::List { json: true }, 5)
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&j).unwrap();
            assert_eq!(v["relay"]["default"]["version"], "0.1.0", "{}", t.name);
            assert_eq!(v["client"]["default"]["rollout_percent"], 100.0);
        }
    }
}
