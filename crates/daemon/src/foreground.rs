//! `start --fg`: the running daemon's side of the lifecycle.
//!
//! Order matters and is: load and validate the config (before anything is bound; a bad
//! config exits with [`EXIT_CONFIG`]), refuse if another instance is live, install signal
//! handlers (before the pid file exists, since SIGUSR1's default action kills), write the pid
//! file, run the service. SIGTERM/SIGINT/SIGQUIT cancel the shutdown token (a second one exits
//! at once); SIGUSR1 and SIGHUP reload. On return the pid file is removed if it still names us.

use crate::home::Home;
use crate::notify::Readiness;
use crate::service::{Reloads, RunContext, Service};
use crate::{listeners, logging, pidfile, process};
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Exit status for an unusable configuration (sysexits `EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;
/// Logged after a successful reload; `reload` looks for it in the log.
pub const RELOADED_MSG: &str = "config reloaded";
/// Logged when a reload was refused; `reload` looks for it in the log.
pub const RELOAD_FAILED_MSG: &str = "config reload failed, keeping the running config";

/// Options of `start --fg`.
#[derive(Debug, Clone, Default)]
pub struct ForegroundOptions {
    /// Start while this pid (the predecessor in a hand-over) still runs and is named by the
    /// pid file; the pid file is then rewritten only once this process is ready.
    pub replacing: Option<i32>,
}

/// Runs the service in this process until it stops; returns the process exit status.
pub fn run<S: Service>(home: Home, readiness: Readiness, opts: ForegroundOptions) -> ExitCode {
    logging::init();
    listeners::log_inherited();
    let pid = own_pid();
    tracing::info!(
        name = S::NAME,
        version = %S::software(),
        pid,
        home = %home.dir().display(),
        "starting"
    );
    let (config, path) = match home.load_config::<S::Config>() {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing::info!(config = %path.display(), "config loaded");
    match pidfile::read(&home.pid_file()) {
        Ok(Some(other))
            if other != pid
                && Some(other) != opts.replacing
                && process::state(other) == process::PidState::Running =>
        {
            tracing::error!("{} is already running, pid {other}", S::NAME);
            return ExitCode::FAILURE;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!("{e}; remove it if no {} is running", S::NAME);
            return ExitCode::FAILURE;
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve::<S>(home, config, readiness, opts));
    // Tasks a service leaked must not keep a stopped daemon alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

fn own_pid() -> i32 {
    // Linux pids are at most 2^22; the conversion cannot fail on any supported system.
    i32::try_from(std::process::id()).unwrap_or(i32::MAX)
}

async fn serve<S: Service>(
    home: Home,
    config: S::Config,
    readiness: Readiness,
    opts: ForegroundOptions,
) -> ExitCode {
    let pid = own_pid();
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("could not install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid_path = home.pid_file();
    if opts.replacing.is_some() {
        let path = pid_path.clone();
        readiness.on_ready(move || {
            if let Err(e) = pidfile::write(&path, pid) {
                tracing::error!("{e}");
            }
        });
    } else if let Err(e) = pidfile::write(&pid_path, pid) {
        tracing::error!("{e}");
        return ExitCode::FAILURE;
    }
    readiness.on_ready(|| {
        for name in listeners::close_unclaimed() {
            tracing::warn!(listener = %name, "inherited listener not used by this config; closed");
        }
    });

    let shutdown = CancellationToken::new();
    let (tx, rx) = watch::channel(config.clone());
    let signal_task = tokio::spawn(signal_loop::<S>(
        signals,
        home.clone(),
        tx,
        shutdown.clone(),
        readiness.clone(),
    ));
    let ctx = RunContext {
        home,
        config,
        shutdown: shutdown.clone(),
        reloads: Reloads::new(rx),
        readiness: readiness.clone(),
    };
    let result = S::run(ctx).await;
    if !shutdown.is_cancelled() {
        tracing::warn!("the service returned without being asked to stop");
        readiness.stopping();
    }
    signal_task.abort();
    if let Err(e) = pidfile::remove_if_names(&pid_path, pid) {
        tracing::warn!("{e}");
    }
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Event {
    Stop(&'static str, i32),
    Reload(&'static str),
}

struct Signals {
    term: Signal,
    int: Signal,
    quit: Signal,
    usr1: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            usr1: signal(SignalKind::user_defined1())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Event {
        tokio::select! {
            _ = self.term.recv() => Event::Stop("SIGTERM", libc::SIGTERM),
            _ = self.int.recv() => Event::Stop("SIGINT", libc::SIGINT),
            _ = self.quit.recv() => Event::Stop("SIGQUIT", libc::SIGQUIT),
            _ = self.usr1.recv() => Event::Reload("SIGUSR1"),
            // The original had no SIGHUP handler and died on it; the usual meaning is reload.
            _ = self.hup.recv() => Event::Reload("SIGHUP"),
        }
    }
}

async fn signal_loop<S: Service>(
    mut signals: Signals,
    home: Home,
    tx: watch::Sender<S::Config>,
    shutdown: CancellationToken,
    readiness: Readiness,
) {
    loop {
        match signals.next().await {
            Event::Stop(name, number) if shutdown.is_cancelled() => {
                tracing::warn!(
                    signal = name,
                    "second stop signal, exiting without draining"
                );
                let _ = pidfile::remove_if_names(&home.pid_file(), own_pid());
                std::process::exit(128 + number);
            }
            Event::Stop(name, _) => {
                tracing::info!(signal = name, "shutting down");
                readiness.stopping();
                shutdown.cancel();
            }
            Event::Reload(name) if shutdown.is_cancelled() => {
                tracing::info!(signal = name, "ignoring reload during shutdown");
            }
            Event::Reload(name) => match home.load_config::<S::Config>() {
                Ok((config, path)) => {
                    tx.send_replace(config);
                    tracing::info!(signal = name, config = %path.display(), "{RELOADED_MSG}");
                }
                Err(e) => tracing::warn!(signal = name, "{RELOAD_FAILED_MSG}: {e}"),
            },
        }
    }
}
