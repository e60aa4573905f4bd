//! The command line every daemon shares, with the binary's own subcommands flattened in.

use crate::control::{self, Timeouts};
use crate::foreground::{self, ForegroundOptions};
use crate::home::Home;
use crate::notify::Readiness;
use crate::service::Service;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The parsed command line.
#[derive(Debug, Parser)]
pub struct Cli<E: Subcommand> {
    /// Directory holding config.json, the keys, the pid and log files [default: the
    /// directory of the executable]
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Read config.json.next instead of config.json when it exists (used by the upgrade
    /// supervisor to test-start a new version before the files are swapped)
    #[arg(long, global = true, env = "WIRELEAP_CONFIG_NEXT", hide = true)]
    pub config_next: bool,

    /// What to do
    #[command(subcommand)]
    pub command: Cmd<E>,
}

/// The common commands, plus the binary's own (`E`).
#[derive(Debug, Subcommand)]
pub enum Cmd<E: Subcommand> {
    /// Create the identity key (key.seed, key.pub) and a starting config.json
    Init {
        /// Replace an existing identity key (the old identity is lost)
        #[arg(long)]
        force: bool,
    },
    /// Start the daemon in the background and wait until it reports ready
    Start(StartArgs),
    /// Stop the running daemon (SIGTERM, then SIGKILL after the timeout)
    Stop {
        /// Seconds to wait for a graceful stop before SIGKILL
        #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
        timeout: Duration,
    },
    /// Tell whether the daemon is running (exit 0 running, 1 not running, 2 unknown)
    Status,
    /// Stop the daemon if it is running, then start it
    Restart(RestartArgs),
    /// Make the running daemon re-read config.json (SIGUSR1); a bad config is refused and
    /// the running one kept
    Reload,
    /// Print the daemon's log file
    Log {
        /// Keep printing lines as they are appended
        #[arg(short, long)]
        follow: bool,
    },
    /// Print the software version and the interface versions spoken
    Version {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Check config.json and print every problem found
    CheckConfig,
    #[command(flatten)]
    #[allow(missing_docs)]
    Extra(E),
}

/// Flags of `start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Run in the foreground (as under a service manager): no detaching, log to stderr
    #[arg(long)]
    pub fg: bool,
    /// Seconds the daemon has to report ready
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub ready_timeout: Duration,
    /// Seconds after spawning during which the daemon must stay alive, even once ready
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = parse_seconds)]
    pub health_window: Duration,
    /// Take over from this running pid (listener hand-over during an upgrade): start even
    /// though the pid file names it, and rewrite the pid file once ready
    #[arg(long, value_name = "PID", hide = true, requires = "fg")]
    pub replacing: Option<i32>,
}

/// Flags of `restart`.
#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Seconds to wait for a graceful stop before SIGKILL
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub timeout: Duration,
    /// Seconds the daemon has to report ready
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub ready_timeout: Duration,
    /// Seconds after spawning during which the daemon must stay alive, even once ready
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = parse_seconds)]
    pub health_window: Duration,
}

/// Parses a number of seconds (fractions allowed, at most a day).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&v) {
        return Err(format!("{s} is not between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// The clap command of service `S` (name, about, version, every subcommand).
pub fn command<S: Service>() -> clap::Command {
    Cli::<S::Command>::command()
        .name(S::NAME)
        .bin_name(S::NAME)
        .about(S::ABOUT)
        .version(S::software())
}

/// Parses `args` and runs the command for service `S`.
pub fn run<S: Service>(args: impl IntoIterator<Item = OsString>, readiness: Readiness) -> ExitCode {
    let matches = command::<S>().get_matches_from(args);
    let cli = match Cli::<S::Command>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let dir = match cli.home {
        Some(d) => std::path::absolute(&d).unwrap_or(d),
        None => match Home::default_dir() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let home = Home::new(dir, S::NAME).with_next_config(cli.config_next);
    if !matches!(cli.command, Cmd::Init { .. }) && !home.dir().is_dir() {
        eprintln!(
            "home directory {} does not exist (run `{} init` or pass --home)",
            home.dir().display(),
            S::NAME
        );
        return ExitCode::FAILURE;
    }
    let code = match cli.command {
        Cmd::Init { force } => match S::init(&home, force) {
            Ok(()) => control::EXIT_OK,
            Err(e) => {
                eprintln!("{e:#}");
                control::EXIT_FAILED
            }
        },
        Cmd::Start(a) if a.fg => {
            return foreground::run::<S>(
                home,
                readiness,
                ForegroundOptions {
                    replacing: a.replacing,
                },
            )
        }
        Cmd::Start(a) => control::start_background(
            &home,
            &Timeouts {
                ready: a.ready_timeout,
                health_window: a.health_window,
                ..Timeouts::default()
            },
        ),
        Cmd::Stop { timeout } => control::stop(&home, timeout),
        Cmd::Status => control::status(&home),
        Cmd::Restart(a) => control::restart(
            &home,
            &Timeouts {
                ready: a.ready_timeout,
                health_window: a.health_window,
                stop: a.timeout,
            },
        ),
        Cmd::Reload => control::reload(&home),
        Cmd::Log { follow } => control::log(&home, follow),
        Cmd::Version { json } => {
            println!("{}", version_text::<S>(json));
            control::EXIT_OK
        }
        Cmd::CheckConfig => check_config::<S>(&home),
        Cmd::Extra(e) => run_extra::<S>(&home, e),
    };
    ExitCode::from(code)
}

/// What `version` prints.
pub fn version_text<S: Service>(json: bool) -> String {
    let v = S::VERSION;
    if json {
        let interfaces: serde_json::Map<String, serde_json::Value> = v
            .interfaces
            .iter()
            .map(|(k, ver)| ((*k).to_string(), serde_json::Value::from(*ver)))
            .collect();
        serde_json::json!({
            "name": S::NAME,
            "software": S::software(),
            "interfaces": interfaces,
        })
        .to_string()
    } else {
        let mut s = format!("{} {}", S::NAME, S::software());
        for (k, ver) in v.interfaces {
            s.push_str(&format!("\ninterface {k} {ver}"));
        }
        s
    }
}

fn check_config<S: Service>(home: &Home) -> u8 {
    match home.load_config::<S::Config>() {
        Ok((_, path)) => {
            println!("{}: OK", path.display());
            control::EXIT_OK
        }
        Err(crate::ConfigError::Invalid { path, problems }) => {
            eprintln!("{} is invalid:", path.display());
            for p in problems {
                eprintln!("  {p}");
            }
            control::EXIT_FAILED
        }
        Err(e) => {
            eprintln!("{e}");
            control::EXIT_FAILED
        }
    }
}

fn run_extra<S: Service>(home: &Home, command: S::Command) -> u8 {
    crate::logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("could not start the async runtime: {e}");
            return control::EXIT_FAILED;
        }
    };
    match runtime.block_on(S::command(home, command)) {
        Ok(()) => control::EXIT_OK,
        Err(e) => {
            eprintln!("{e:#}");
            control::EXIT_FAILED
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        for bad in ["-1", "x", "NaN", "inf", "86401"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_seconds_never_panics(s in ".{0,20}") {
            let _ = parse_seconds(&s);
        }
    }
}
