//! What a daemon binary supplies ([`Service`]) and what its running code receives
//! ([`RunContext`]).

use crate::config::Config;
use crate::home::Home;
use crate::notify::Readiness;
use std::future::Future;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Software version and the interfaces a component speaks, for `version` / `version --json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionInfo {
    /// The component's semver (usually `env!("CARGO_PKG_VERSION")`).
    pub software: &'static str,
    /// `(interface, version)` pairs, e.g. `("relay-dir", "0.2.0")` (protocol.md §16).
    pub interfaces: &'static [(&'static str, &'static str)],
}

/// One daemon binary: its name, configuration, version, and what it does when started.
pub trait Service: 'static {
    /// Binary name, e.g. `wireleap-relay`; the pid and log files are `<NAME>.pid` and
    /// `<NAME>.log`.
    const NAME: &'static str;
    /// One line for `--help`.
    const ABOUT: &'static str;
    /// What `version` prints.
    const VERSION: VersionInfo;

    /// The software version this binary runs as: [`VersionInfo::software`] unless the binary
    /// carries another one (an upgradable daemon returns its build stamp's version, so one
    /// compiled binary can be released as several versions).
    fn software() -> String {
        Self::VERSION.software.to_string()
    }

    /// The `config.json` type.
    type Config: Config;
    /// Binary-specific subcommands, flattened into the common CLI; [`NoCommands`] if none.
    type Command: clap::Subcommand;

    /// Prepares a home directory. The default generates `key.seed`/`key.pub` (refusing to
    /// replace an existing `key.seed` unless `force`) and writes the initial `config.json`
    /// if there is none.
    fn init(home: &Home, force: bool) -> anyhow::Result<()> {
        crate::init::default_init::<Self>(home, force)
    }

    /// Runs the service until `ctx.shutdown` is cancelled (then returns promptly, after
    /// draining) or a fatal error. Call `ctx.readiness.ready()` once every listener is bound.
    fn run(ctx: RunContext<Self::Config>) -> impl Future<Output = anyhow::Result<()>>;

    /// Executes a binary-specific subcommand. Only called with values of `Self::Command`.
    fn command(home: &Home, command: Self::Command) -> impl Future<Output = anyhow::Result<()>> {
        let _ = (home, command);
        async { Err(anyhow::anyhow!("{} has no extra commands", Self::NAME)) }
    }
}

/// Everything [`Service::run`] gets.
#[derive(Debug)]
pub struct RunContext<C> {
    /// The home directory (resolve relative paths from the config against it).
    pub home: Home,
    /// The validated configuration the process started with.
    pub config: C,
    /// Cancelled on SIGTERM, SIGINT or SIGQUIT: stop accepting, drain, return.
    pub shutdown: CancellationToken,
    /// New validated configurations, one per successful reload (SIGUSR1, SIGHUP).
    pub reloads: Reloads<C>,
    /// Report readiness with `readiness.ready()` once the listeners are bound.
    pub readiness: Readiness,
}

impl<C: Clone> RunContext<C> {
    /// Waits for shutdown, handing each reloaded config to `apply`. For services whose only
    /// runtime work happens in tasks they spawned.
    pub async fn reload_until_shutdown(&mut self, mut apply: impl FnMut(C)) {
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                next = self.reloads.next() => match next {
                    Some(c) => apply(c),
                    None => {
                        self.shutdown.cancelled().await;
                        return;
                    }
                },
            }
        }
    }
}

/// The stream of reloaded configurations. Only the newest one is kept, so a service that
/// is slow to look never sees a backlog.
#[derive(Debug)]
pub struct Reloads<C> {
    rx: watch::Receiver<C>,
}

impl<C: Clone> Reloads<C> {
    /// Wraps the receiving end of the lifecycle's reload channel.
    pub fn new(rx: watch::Receiver<C>) -> Self {
        Reloads { rx }
    }

    /// The next reloaded config; `None` once the lifecycle stopped sending (shutdown).
    /// Cancel-safe, so it can be used in `tokio::select!`.
    pub async fn next(&mut self) -> Option<C> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }
}

/// The `Command` of a service without extra subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCommands {}

impl clap::FromArgMatches for NoCommands {
    fn from_arg_matches(_: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Err(clap::Error::new(clap::error::ErrorKind::InvalidSubcommand))
    }
    fn update_from_arg_matches(&mut self, _: &clap::ArgMatches) -> Result<(), clap::Error> {
        match *self {}
    }
}

impl clap::Subcommand for NoCommands {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        cmd
    }
    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        cmd
    }
    fn has_subcommand(_: &str) -> bool {
        false
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reloads_keep_only_the_newest() {
        let (tx, rx) = watch::channel(1);
        let mut r = Reloads::new(rx);
        tx.send(2).unwrap();
        tx.send(3).unwrap();
        assert_eq!(r.next().await, Some(3));
        drop(tx);
        assert_eq!(r.next().await, None);
    }

    #[tokio::test]
    async fn reload_until_shutdown_applies_then_stops() {
        let (tx, rx) = watch::channel(0u32);
        let shutdown = CancellationToken::new();
        let mut ctx = RunContext {
            home: Home::new("/nonexistent", "t"),
            config: 0u32,
            shutdown: shutdown.clone(),
            reloads: Reloads::new(rx),
            readiness: Readiness::disabled(),
        };
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            ctx.reload_until_shutdown(|c| s.lock().unwrap().push(c))
                .await;
        });
        tx.send(7).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while seen.lock().unwrap().is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![7]);
    }
}
