//! The commands that control a daemon from outside: `start` (background), `stop`, `status`,
//! `restart`, `reload`, `log`. Each prints one line saying what happened (or what to do) and
//! returns the process exit status.
//!
//! `start` spawns `<exe> --home HOME start --fg` in a new session with stdout and stderr
//! appended to `<name>.log`, then waits: the child must report ready (sd_notify `READY=1`)
//! within the ready timeout and still be alive when the health window (2 s) ends. Otherwise
//! the attempt failed, the child is stopped if it still runs, and only the log lines written
//! by this attempt are shown.

use crate::foreground::{EXIT_CONFIG, RELOADED_MSG, RELOAD_FAILED_MSG};
use crate::home::Home;
use crate::listeners::{LISTEN_FDNAMES, LISTEN_FDS, LISTEN_PID};
use crate::notify::{NotifyReceiver, NOTIFY_SOCKET_ENV};
use crate::pidfile::{self, PidFileError};
use crate::process::{self, PidState};
use nix::sys::signal::Signal;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: failed / not running.
pub const EXIT_FAILED: u8 = 1;
/// Exit status of `status` when the pid file cannot be read.
pub const EXIT_UNKNOWN: u8 = 2;

/// How long to wait at each step of `start` and `stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The child must stay alive at least this long after spawning (the original's 2 s).
    pub health_window: Duration,
    /// The child must report ready within this time.
    pub ready: Duration,
    /// After SIGTERM, how long to wait before SIGKILL (relays drain open streams).
    pub stop: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            health_window: Duration::from_secs(2),
            ready: Duration::from_secs(10),
            stop: Duration::from_secs(10),
        }
    }
}

/// What the pid file says.
#[derive(Debug)]
pub enum Found {
    /// There is no pid file.
    NoPidFile,
    /// It names a live daemon.
    Running(i32),
    /// It names a process that no longer exists.
    Stale(i32),
    /// It names a live process that is not a daemon (pid reused after a crash).
    Reused(i32),
    /// It cannot be read or parsed.
    Unreadable(PidFileError),
}

/// Reads the pid file and classifies the process it names.
pub fn inspect(home: &Home) -> Found {
    match pidfile::read(&home.pid_file()) {
        Ok(None) => Found::NoPidFile,
        Ok(Some(pid)) => match process::state(pid) {
            PidState::Running => Found::Running(pid),
            PidState::Gone => Found::Stale(pid),
            PidState::Reused => Found::Reused(pid),
        },
        Err(e) => Found::Unreadable(e),
    }
}

fn stale_reason(found: &Found) -> &'static str {
    match found {
        Found::Reused(_) => "that pid now belongs to another program",
        _ => "that process is gone",
    }
}

/// `start` without `--fg`.
pub fn start_background(home: &Home, timeouts: &Timeouts) -> u8 {
    let name = home.name();
    let found = inspect(home);
    match found {
        Found::Running(pid) => {
            eprintln!("{name} is already running, pid {pid}");
            return EXIT_FAILED;
        }
        Found::Stale(pid) | Found::Reused(pid) => {
            if let Err(e) = pidfile::remove(&home.pid_file()) {
                eprintln!("{e}");
                return EXIT_FAILED;
            }
            println!(
                "removed a stale pid file naming pid {pid} ({})",
                stale_reason(&found)
            );
        }
        Found::Unreadable(e) => {
            eprintln!("{e}; remove it if no {name} is running");
            return EXIT_FAILED;
        }
        Found::NoPidFile => {}
    }
    match spawn_and_wait(home, timeouts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{name} could not be started: {e}");
            EXIT_FAILED
        }
    }
}

enum Outcome {
    Started,
    Exited(ExitStatus),
    NotReady,
}

fn spawn_and_wait(home: &Home, timeouts: &Timeouts) -> anyhow::Result<u8> {
    use anyhow::Context as _;
    let name = home.name();
    let exe = std::env::current_exe().context("could not locate the executable")?;
    let log_path = home.log_file();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(&log_path)
        .with_context(|| format!("could not open {}", log_path.display()))?;
    let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let notify = NotifyReceiver::new()?;

    let mut cmd = Command::new(exe);
    cmd.arg("--home").arg(home.dir());
    if home.prefers_next_config() {
        cmd.arg("--config-next");
    }
    cmd.arg("start")
        .arg("--fg")
        .current_dir(home.dir())
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .context("could not duplicate the log handle")?,
        )
        .stderr(log)
        .env(NOTIFY_SOCKET_ENV, notify.path())
        .env_remove(LISTEN_PID)
        .env_remove(LISTEN_FDS)
        .env_remove(LISTEN_FDNAMES);
    crate::sys::new_session(&mut cmd);
    let mut child = cmd.spawn().context("could not spawn the daemon process")?;
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);

    let outcome = match wait_for_start(&mut child, &notify, timeouts) {
        Ok(o) => o,
        Err(e) => {
            terminate(&mut child, timeouts.stop);
            return Err(e);
        }
    };
    let code = match outcome {
        Outcome::Started => {
            println!("{name} started, pid {pid}");
            return Ok(EXIT_OK);
        }
        Outcome::Exited(status) => {
            eprintln!("{name} failed to start ({})", describe(status));
            EXIT_FAILED
        }
        Outcome::NotReady => {
            eprintln!(
                "{name} failed to start: it did not report ready within {}s; stopped it",
                timeouts.ready.as_secs_f32()
            );
            terminate(&mut child, timeouts.stop);
            EXIT_FAILED
        }
    };
    let _ = pidfile::remove_if_names(&home.pid_file(), pid);
    print_log_since(&log_path, offset);
    Ok(code)
}

fn wait_for_start(
    child: &mut Child,
    notify: &NotifyReceiver,
    t: &Timeouts,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let window_end = started + t.health_window;
    let ready_deadline = started + t.ready.max(t.health_window);
    let mut ready = false;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Outcome::Exited(status));
        }
        let now = Instant::now();
        let until = if ready { window_end } else { ready_deadline };
        if now >= until {
            return Ok(if ready {
                Outcome::Started
            } else {
                Outcome::NotReady
            });
        }
        // Short steps: a crash must be noticed even while no datagram arrives.
        let step = (until - now).min(Duration::from_millis(50));
        if ready {
            std::thread::sleep(step);
        } else if let Some(msg) = notify.recv_timeout(step)? {
            ready = msg.ready && msg.main_pid.is_none_or(|p| p == child.id());
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) if c == i32::from(EXIT_CONFIG) => {
            format!("exit status {c}: configuration error")
        }
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// SIGTERM, wait up to `timeout`, SIGKILL; reaps the child.
fn terminate(child: &mut Child, timeout: Duration) {
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let _ = process::send(pid, Signal::SIGTERM);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// At most this many lines of a failed start's log are shown.
const MAX_LOG_LINES: usize = 100;

fn print_log_since(path: &Path, offset: u64) {
    let mut text = String::new();
    let read = std::fs::File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(())
    });
    if let Err(e) = read {
        eprintln!("(could not read {}: {e})", path.display());
        return;
    }
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        eprintln!("(it wrote nothing to {})", path.display());
        return;
    }
    eprintln!("log of this attempt ({}):", path.display());
    let skip = lines.len().saturating_sub(MAX_LOG_LINES);
    if skip > 0 {
        eprintln!("  ... {skip} earlier lines omitted");
    }
    for line in &lines[skip..] {
        eprintln!("  {line}");
    }
}

/// `stop`: SIGTERM, wait up to `timeout` (polling every 100 ms), then SIGKILL.
pub fn stop(home: &Home, timeout: Duration) -> u8 {
    let name = home.name();
    let found = inspect(home);
    let pid = match found {
        Found::NoPidFile => {
            println!("{name} is not running");
            return EXIT_OK;
        }
        Found::Stale(pid) | Found::Reused(pid) => {
            if let Err(e) = pidfile::remove(&home.pid_file()) {
                eprintln!("{e}");
                return EXIT_FAILED;
            }
            println!(
                "{name} is not running (removed a stale pid file naming pid {pid}: {})",
                stale_reason(&found)
            );
            return EXIT_OK;
        }
        Found::Unreadable(e) => {
            eprintln!("{e}; remove it if no {name} is running");
            return EXIT_FAILED;
        }
        Found::Running(pid) => pid,
    };
    if let Err(e) = process::send(pid, Signal::SIGTERM) {
        eprintln!("{e}");
        return EXIT_FAILED;
    }
    let how = if wait_gone(pid, timeout) {
        "stopped"
    } else {
        eprintln!(
            "{name} (pid {pid}) did not stop within {}s; sending SIGKILL",
            timeout.as_secs_f32()
        );
        if let Err(e) = process::send(pid, Signal::SIGKILL) {
            eprintln!("{e}");
        }
        if !wait_gone(pid, Duration::from_secs(2)) {
            eprintln!("{name} (pid {pid}) is still running after SIGKILL");
            return EXIT_FAILED;
        }
        "killed"
    };
    if let Err(e) = pidfile::remove_if_names(&home.pid_file(), pid) {
        eprintln!("{e}");
    }
    println!("{name} {how} (pid {pid})");
    EXIT_OK
}

fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if process::state(pid) != PidState::Running {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `status`: 0 running, 1 not running, 2 cannot tell.
pub fn status(home: &Home) -> u8 {
    let name = home.name();
    let found = inspect(home);
    match found {
        Found::Running(pid) => {
            println!("{name} is running, pid {pid}");
            EXIT_OK
        }
        Found::NoPidFile => {
            println!("{name} is not running");
            EXIT_FAILED
        }
        Found::Stale(pid) | Found::Reused(pid) => {
            println!(
                "{name} is not running (stale pid file names pid {pid}: {}; it might have \
                 crashed, see {})",
                stale_reason(&found),
                home.log_file().display()
            );
            EXIT_FAILED
        }
        Found::Unreadable(e) => {
            println!("could not tell whether {name} is running: {e}");
            EXIT_UNKNOWN
        }
    }
}

/// `restart`: `stop` if running, then `start`.
pub fn restart(home: &Home, timeouts: &Timeouts) -> u8 {
    if let Found::Running(_) = inspect(home) {
        let code = stop(home, timeouts.stop);
        if code != EXIT_OK {
            return code;
        }
    }
    start_background(home, timeouts)
}

/// How long `reload` watches the log for the daemon's verdict.
const RELOAD_CONFIRM: Duration = Duration::from_secs(5);

/// `reload`: SIGUSR1, then report the daemon's verdict from the log when it shows up.
pub fn reload(home: &Home) -> u8 {
    let name = home.name();
    let pid = match inspect(home) {
        Found::Running(pid) => pid,
        Found::Unreadable(e) => {
            eprintln!("{e}");
            return EXIT_FAILED;
        }
        _ => {
            eprintln!("{name} is not running");
            return EXIT_FAILED;
        }
    };
    let log_path = home.log_file();
    let offset = std::fs::metadata(&log_path).map(|m| m.len()).ok();
    if let Err(e) = process::send(pid, Signal::SIGUSR1) {
        eprintln!("{e}");
        return EXIT_FAILED;
    }
    let Some(offset) = offset else {
        println!("sent SIGUSR1 to {name} (pid {pid})");
        return EXIT_OK;
    };
    let deadline = Instant::now() + RELOAD_CONFIRM;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let new = read_from(&log_path, offset).unwrap_or_default();
        for line in new.lines() {
            if let Some(i) = line.find(RELOAD_FAILED_MSG) {
                let why = &line[i + RELOAD_FAILED_MSG.len()..];
                // Drop the structured fields tracing appends after the message.
                let why = why.rfind(" signal=").map_or(why, |j| &why[..j]);
                eprintln!(
                    "{name} refused the new config and keeps running with the old one: {}",
                    why.trim_start_matches([':', ' '])
                );
                return EXIT_FAILED;
            }
            if line.contains(RELOADED_MSG) {
                println!("{name} reloaded its config (pid {pid})");
                return EXIT_OK;
            }
        }
    }
    println!(
        "sent SIGUSR1 to {name} (pid {pid}); no confirmation in {} within {}s",
        log_path.display(),
        RELOAD_CONFIRM.as_secs()
    );
    EXIT_OK
}

fn read_from(path: &Path, offset: u64) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `log`: prints the log file; with `follow`, keeps printing what is appended (until killed).
pub fn log(home: &Home, follow: bool) -> u8 {
    let path = home.log_file();
    let mut out = std::io::stdout().lock();
    let mut pos: u64 = 0;
    loop {
        match std::fs::File::open(&path) {
            Ok(mut f) => {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                if len < pos {
                    // Truncated or replaced: start over.
                    pos = 0;
                }
                let copied = f
                    .seek(SeekFrom::Start(pos))
                    .and_then(|_| std::io::copy(&mut f, &mut out))
                    .and_then(|n| out.flush().map(|()| n));
                match copied {
                    Ok(n) => pos += n,
                    // The reader went away (`| head`): nothing left to do.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return EXIT_OK,
                    Err(e) => {
                        eprintln!("could not read {}: {e}", path.display());
                        return EXIT_FAILED;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && follow => {}
            Err(e) => {
                eprintln!("could not read {}: {e}", path.display());
                return EXIT_FAILED;
            }
        }
        if !follow {
            return EXIT_OK;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
