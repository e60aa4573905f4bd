//! The lifecycle against a real process: the toy daemon `wireleap-daemon-testd` is started,
//! reloaded, crashed, stopped and handed a listener, and each command's exit status and
//! message is checked. Every test owns a scratch home; a guard kills what it started.

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wireleap_daemon::listeners::command_with_listeners;
use wireleap_daemon::notify::NotifyReceiver;
use wireleap_e2e::{
    pid_alive, pid_in_text, read_pid_file, run, wait_until, DaemonGuard, Output, ProcessGuard,
    ScratchHome,
};

type TestResult = anyhow::Result<()>;

const BIN: &str = env!("CARGO_BIN_EXE_wireleap-daemon-testd");
const NAME: &str = "wireleap-daemon-testd";
const CMD_TIMEOUT: Duration = Duration::from_secs(30);

struct Fixture {
    // Fields drop in declaration order: the guard reads the pid file, so it goes before the
    // directory does.
    guard: DaemonGuard,
    home: ScratchHome,
}

impl Fixture {
    fn new(config: &str) -> anyhow::Result<Self> {
        let home = ScratchHome::new()?;
        let guard = DaemonGuard::new(home.file(&format!("{NAME}.pid")));
        let f = Fixture { guard, home };
        let out = f.cmd(&["init"])?;
        anyhow::ensure!(out.code() == Some(0), "init failed: {out}");
        f.config(config)?;
        Ok(f)
    }

    fn cmd(&self, args: &[&str]) -> anyhow::Result<Output> {
        run(
            Command::new(BIN)
                .arg("--home")
                .arg(self.home.path())
                .args(args),
            CMD_TIMEOUT,
        )
    }

    fn config(&self, json: &str) -> TestResult {
        self.home.write("config.json", json)
    }

    fn pid_file(&self) -> PathBuf {
        self.home.file(&format!("{NAME}.pid"))
    }

    fn log(&self) -> String {
        self.home.read(&format!("{NAME}.log")).unwrap_or_default()
    }

    fn start(&mut self) -> anyhow::Result<i32> {
        let out = self.cmd(&["start"])?;
        anyhow::ensure!(
            out.code() == Some(0),
            "start failed: {out}\nlog:\n{}",
            self.log()
        );
        let pid = read_pid_file(&self.pid_file())
            .ok_or_else(|| anyhow::anyhow!("no pid file after start: {out}"))?;
        self.guard.note(pid);
        anyhow::ensure!(
            out.stdout.contains(&format!("started, pid {pid}")),
            "unexpected start output: {out}"
        );
        Ok(pid)
    }

    fn addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.home.read("testd.addr")?.trim().parse()?)
    }

    /// One connection, one line.
    fn ask(&self) -> anyhow::Result<String> {
        ask(self.addr()?)
    }
}

fn ask(addr: SocketAddr) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    s.read_to_string(&mut line)?;
    Ok(line.trim().to_string())
}

#[test]
fn full_cycle_init_start_reload_stop() -> TestResult {
    let mut f = Fixture::new(r#"{"greeting": "hello"}"#)?;
    let key = f.home.read("key.pub")?;

    let again = f.cmd(&["init"])?;
    assert_eq!(again.code(), Some(1), "{again}");
    assert!(again.stderr.contains("--force"), "{again}");
    assert_eq!(f.home.read("key.pub")?, key);
    let forced = f.cmd(&["init", "--force"])?;
    assert_eq!(forced.code(), Some(0), "{forced}");
    assert_ne!(f.home.read("key.pub")?, key);
    assert!(forced.stdout.contains("kept the existing"), "{forced}");

    let pid = f.start()?;
    assert!(pid_alive(pid));
    // Detached: its own session, so the starting terminal's signals do not reach it.
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid)))?;
    assert_eq!(sid.as_raw(), pid);
    assert_ne!(sid, nix::unistd::getsid(None)?);

    let status = f.cmd(&["status"])?;
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(status.stdout.contains(&format!("running, pid {pid}")));

    let twice = f.cmd(&["start"])?;
    assert_eq!(twice.code(), Some(1), "{twice}");
    assert!(twice
        .stderr
        .contains(&format!("already running, pid {pid}")));

    assert_eq!(f.ask()?, format!("hello {pid}"));

    f.config(r#"{"greeting": "bonjour"}"#)?;
    let reload = f.cmd(&["reload"])?;
    assert_eq!(reload.code(), Some(0), "{reload}");
    assert!(reload.stdout.contains("reloaded"), "{reload}");
    assert_eq!(f.ask()?, format!("bonjour {pid}"));

    // A bad config is refused with the reason; the old one stays in force.
    f.config(r#"{"greeting": "hallo", "bogus": 1}"#)?;
    let bad = f.cmd(&["reload"])?;
    assert_eq!(bad.code(), Some(1), "{bad}");
    assert!(bad.stderr.contains("`bogus`"), "{bad}");
    assert_eq!(f.ask()?, format!("bonjour {pid}"));

    // SIGHUP reloads too (the original died on it).
    f.config(r#"{"greeting": "hola"}"#)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )?;
    wait_until(Duration::from_secs(5), "the SIGHUP reload", || {
        f.ask().ok() == Some(format!("hola {pid}"))
    })?;
    assert!(pid_alive(pid));

    let log = f.cmd(&["log"])?;
    assert_eq!(log.code(), Some(0));
    assert!(log.stdout.contains("config reloaded"), "{log}");
    assert!(log.stdout.contains("SIGHUP"), "{log}");

    let stop = f.cmd(&["stop"])?;
    assert_eq!(stop.code(), Some(0), "{stop}");
    assert!(!f.pid_file().exists());
    assert!(!pid_alive(pid));
    let status = f.cmd(&["status"])?;
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(status.stdout.contains("not running"));
    let stop = f.cmd(&["stop"])?;
    assert_eq!(stop.code(), Some(0), "stop when stopped: {stop}");
    Ok(())
}

#[test]
fn restart_replaces_the_process() -> TestResult {
    let mut f = Fixture::new("{}")?;
    let first = f.start()?;
    let out = f.cmd(&["restart"])?;
    assert_eq!(out.code(), Some(0), "{out}");
    let second = read_pid_file(&f.pid_file()).ok_or_else(|| anyhow::anyhow!("no pid file"))?;
    f.guard.note(second);
    assert_ne!(first, second);
    assert!(!pid_alive(first));
    assert_eq!(f.ask()?, format!("hello {second}"));
    // restart also starts a stopped daemon
    assert_eq!(f.cmd(&["stop"])?.code(), Some(0));
    let out = f.cmd(&["restart"])?;
    assert_eq!(out.code(), Some(0), "{out}");
    f.guard.note(read_pid_file(&f.pid_file()).unwrap_or(0));
    Ok(())
}

#[test]
fn bad_config_fails_fast_naming_the_key() -> TestResult {
    let f = Fixture::new(r#"{"greeting": "x", "bogus_key": true}"#)?;
    let check = f.cmd(&["check-config"])?;
    assert_eq!(check.code(), Some(1), "{check}");
    assert!(check.stderr.contains("`bogus_key`"), "{check}");

    let started = Instant::now();
    let out = f.cmd(&["start"])?;
    assert_eq!(out.code(), Some(1), "{out}");
    // Noticed through the child's exit, not a timeout (loose bound: loaded machines are slow).
    assert!(
        out.stderr
            .contains("failed to start (exit status 78: configuration error)"),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(out.stderr.contains("`bogus_key`"), "{out}");
    assert!(out.stderr.contains("config.json"), "{out}");
    assert!(!f.pid_file().exists());

    // Invalid values: every problem is listed.
    f.config(r#"{"greeting": "", "address": "nowhere"}"#)?;
    let check = f.cmd(&["check-config"])?;
    assert_eq!(check.code(), Some(1), "{check}");
    assert!(check.stderr.contains("greeting:"), "{check}");
    assert!(check.stderr.contains("address:"), "{check}");
    f.config("{}")?;
    let check = f.cmd(&["check-config"])?;
    assert_eq!(check.code(), Some(0), "{check}");
    assert!(check.stdout.contains("OK"));
    Ok(())
}

#[test]
fn crash_after_ready_within_the_window_is_a_failure_with_only_this_attempts_log() -> TestResult {
    let f = Fixture::new(r#"{"crash_after_ms": 700}"#)?;
    std::fs::write(
        f.home.file(&format!("{NAME}.log")),
        "OLD-LINE-FROM-AN-EARLIER-RUN\n",
    )?;
    // A wide window, so a slow machine cannot push the crash past it.
    let out = f.cmd(&["start", "--health-window", "6"])?;
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("failed to start (exit status 3)"),
        "{out}"
    );
    assert!(out.stderr.contains("crashing as configured"), "{out}");
    assert!(
        out.stderr.contains("ready"),
        "it was ready before crashing: {out}"
    );
    assert!(!out.stderr.contains("OLD-LINE"), "{out}");
    assert!(!f.pid_file().exists());
    Ok(())
}

#[test]
fn crash_after_the_window_shows_as_stale_pid() -> TestResult {
    let mut f = Fixture::new(r#"{"crash_after_ms": 2600}"#)?;
    let pid = f.start()?;
    wait_until(Duration::from_secs(5), "the crash", || !pid_alive(pid))?;
    let status = f.cmd(&["status"])?;
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(status.stdout.contains("stale pid file"), "{status}");
    assert!(status.stdout.contains("might have crashed"), "{status}");
    // start cleans the stale file and starts (this time without a crash).
    f.config("{}")?;
    let out = f.cmd(&["start"])?;
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("removed a stale pid file"), "{out}");
    f.guard.note(read_pid_file(&f.pid_file()).unwrap_or(0));
    Ok(())
}

#[test]
fn slow_readiness_is_waited_for() -> TestResult {
    let mut f = Fixture::new(r#"{"ready_delay_ms": 3000}"#)?;
    let t = Instant::now();
    let pid = f.start()?;
    assert!(t.elapsed() >= Duration::from_secs(3));
    assert_eq!(f.ask()?, format!("hello {pid}"));
    Ok(())
}

#[test]
fn never_ready_times_out_and_is_stopped() -> TestResult {
    let f = Fixture::new(r#"{"never_ready": true}"#)?;
    let t = Instant::now();
    let out = f.cmd(&["start", "--ready-timeout", "1"])?;
    assert_eq!(out.code(), Some(1), "{out}");
    // The health window (2 s) is the minimum wait even with a shorter ready timeout.
    assert!(t.elapsed() >= Duration::from_secs(2));
    assert!(out.stderr.contains("did not report ready"), "{out}");
    let pid = pid_in_text(&out.stderr).ok_or_else(|| anyhow::anyhow!("no pid in {out}"))?;
    assert!(!pid_alive(pid), "the unready daemon was left running");
    assert!(!f.pid_file().exists());
    Ok(())
}

#[test]
fn stop_escalates_to_sigkill() -> TestResult {
    let mut f = Fixture::new(r#"{"ignore_shutdown": true}"#)?;
    let pid = f.start()?;
    let out = f.cmd(&["stop", "--timeout", "0.5"])?;
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("did not stop within"), "{out}");
    assert!(out.stdout.contains("killed"), "{out}");
    assert!(!pid_alive(pid));
    assert!(!f.pid_file().exists());
    Ok(())
}

#[test]
fn stale_reused_and_garbage_pid_files() -> TestResult {
    let f = Fixture::new("{}")?;
    let mut dead = Command::new("true").spawn()?;
    let dead_pid = dead.id();
    dead.wait()?;
    std::fs::write(f.pid_file(), dead_pid.to_string())?;
    let status = f.cmd(&["status"])?;
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(status.stdout.contains("stale"), "{status}");
    let stop = f.cmd(&["stop"])?;
    assert_eq!(stop.code(), Some(0), "{stop}");
    assert!(stop.stdout.contains("removed a stale pid file"), "{stop}");
    assert!(!f.pid_file().exists());

    // A live process that is not a daemon (pid reused): never signalled.
    #[cfg(target_os = "linux")]
    {
        let me = std::process::id();
        std::fs::write(f.pid_file(), me.to_string())?;
        let status = f.cmd(&["status"])?;
        assert_eq!(status.code(), Some(1), "{status}");
        assert!(status.stdout.contains("another program"), "{status}");
        let stop = f.cmd(&["stop"])?;
        assert_eq!(stop.code(), Some(0), "{stop}");
        assert!(!f.pid_file().exists());
    }

    std::fs::write(f.pid_file(), "not a pid")?;
    let status = f.cmd(&["status"])?;
    assert_eq!(status.code(), Some(2), "{status}");
    let start = f.cmd(&["start"])?;
    assert_eq!(start.code(), Some(1), "{start}");
    assert!(start.stderr.contains("does not hold a pid"), "{start}");
    Ok(())
}

#[test]
fn help_lists_common_and_extra_commands() -> TestResult {
    let f = Fixture::new("{}")?;
    let help = f.cmd(&["--help"])?;
    assert_eq!(help.code(), Some(0), "{help}");
    for c in [
        "init",
        "start",
        "stop",
        "status",
        "restart",
        "reload",
        "log",
        "version",
        "check-config",
        "greet",
    ] {
        assert!(
            help.stdout.lines().any(|l| l.trim_start().starts_with(c)),
            "{c} missing: {help}"
        );
    }
    let greet = f.cmd(&["greet", "bob"])?;
    assert_eq!(greet.stdout.trim(), "hello bob");
    let v = f.cmd(&["version", "--json"])?;
    let j: serde_json::Value = serde_json::from_str(&v.stdout)?;
    assert_eq!(j["software"], env!("CARGO_PKG_VERSION"));
    assert_eq!(j["interfaces"]["test-b"], "0.2.0");
    Ok(())
}

#[test]
fn foreground_reports_ready_via_sd_notify_and_exits_cleanly_on_sigterm() -> TestResult {
    let f = Fixture::new("{}")?;
    let notify = NotifyReceiver::new()?;
    let log = std::fs::File::create(f.home.file("fg.log"))?;
    let child = Command::new(BIN)
        .arg("--home")
        .arg(f.home.path())
        .args(["start", "--fg"])
        .env("NOTIFY_SOCKET", notify.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let mut child = ProcessGuard::child(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let msg = loop {
        match notify.recv_timeout(Duration::from_millis(100))? {
            Some(m) if m.ready => break m,
            _ if Instant::now() > deadline => anyhow::bail!("no READY"),
            _ => {}
        }
    };
    assert_eq!(msg.main_pid, Some(u32::try_from(child.id())?));
    assert_eq!(read_pid_file(&f.pid_file()), Some(child.id()));
    child.signal(nix::sys::signal::Signal::SIGTERM)?;
    let status = child.wait_timeout(Duration::from_secs(10))?;
    assert!(status.success(), "{status}");
    assert!(!f.pid_file().exists());
    Ok(())
}

/// The parent serves on a listener, starts the daemon with the listener inherited, waits for
/// READY, then stops serving. A client connecting all the while never fails, and the
/// answers move from the parent to the daemon.
#[test]
fn listener_handover_never_stops_accepting() -> TestResult {
    let f = Fixture::new("{}")?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    f.config(&format!(r#"{{"address": "{addr}", "greeting": "child"}}"#))?;
    listener.set_nonblocking(true)?;

    let stop_parent = Arc::new(AtomicBool::new(false));
    let server = {
        let l = listener.try_clone()?;
        let stop = stop_parent.clone();
        std::thread::spawn(move || {
            use std::io::Write as _;
            while !stop.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(b"parent 0\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        })
    };
    let answers: Arc<Mutex<Vec<Result<String, String>>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let answers = answers.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let a = ask(addr).map_err(|e| e.to_string());
                if let Ok(mut v) = answers.lock() {
                    v.push(a);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let count = |prefix: &str| {
        answers
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|a| a.as_ref().is_ok_and(|s| s.starts_with(prefix)))
                    .count()
            })
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(10), "answers from the parent", || {
        count("parent") >= 5
    })?;

    let notify = NotifyReceiver::new()?;
    let log = std::fs::File::create(f.home.file("handover.log"))?;
    let mut cmd = command_with_listeners(BIN, &[("main", listener.as_fd())])?;
    cmd.arg("--home")
        .arg(f.home.path())
        .args(["start", "--fg"])
        .env("NOTIFY_SOCKET", notify.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let child = ProcessGuard::child(cmd.spawn()?);
    drop(cmd);
    let child_pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(m) = notify.recv_timeout(Duration::from_millis(100))? {
            if m.ready {
                break;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "child not ready; log:\n{}",
            f.home.read("handover.log").unwrap_or_default()
        );
    }
    stop_parent.store(true, Ordering::SeqCst);
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))?;
    drop(listener);
    let from_child = format!("child {child_pid}");
    wait_until(Duration::from_secs(10), "answers from the child", || {
        count(&from_child) >= 20
    })?;
    done.store(true, Ordering::SeqCst);
    client
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?;

    let log = f.home.read("handover.log")?;
    assert!(log.contains("adopted the inherited listener"), "{log}");
    let answers = answers
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let failures: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
    assert!(failures.is_empty(), "connections failed: {failures:?}");
    for a in answers.iter().flatten() {
        assert!(
            a == "parent 0" || *a == from_child,
            "unexpected answer {a:?}"
        );
    }
    // Once the parent stopped, only the child answered.
    let last_parent = answers
        .iter()
        .rposition(|a| a.as_deref() == Ok("parent 0"))
        .unwrap_or(0);
    let first_child = answers
        .iter()
        .position(|a| a.as_deref() == Ok(from_child.as_str()))
        .unwrap_or(usize::MAX);
    assert!(first_child < answers.len());
    assert!(answers[last_parent + 1..]
        .iter()
        .all(|a| a.as_deref() == Ok(from_child.as_str())));
    drop(child);
    Ok(())
}

/// A successor started with `--replacing <old pid>` may start while the old daemon runs;
/// it takes the pid file over once ready, and the old one, stopping later, leaves it alone.
#[test]
fn successor_takes_over_the_pid_file_when_ready() -> TestResult {
    let mut f = Fixture::new("{}")?;
    let old = f.start()?;

    let refused = f.cmd(&["start", "--fg"])?;
    assert_eq!(refused.code(), Some(1), "{refused}");
    assert!(refused
        .stderr
        .contains(&format!("already running, pid {old}")));

    let notify = NotifyReceiver::new()?;
    let log = std::fs::File::create(f.home.file("successor.log"))?;
    let child = Command::new(BIN)
        .arg("--home")
        .arg(f.home.path())
        .args(["start", "--fg", "--replacing", &old.to_string()])
        .env("NOTIFY_SOCKET", notify.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let successor = ProcessGuard::child(child);
    let new = successor.id();
    f.guard.note(new);
    wait_until(
        Duration::from_secs(10),
        "READY from the successor",
        || matches!(notify.recv_timeout(Duration::from_millis(50)), Ok(Some(m)) if m.ready),
    )?;
    assert_eq!(read_pid_file(&f.pid_file()), Some(new));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    wait_until(Duration::from_secs(10), "the old daemon to exit", || {
        !pid_alive(old)
    })?;
    assert_eq!(
        read_pid_file(&f.pid_file()),
        Some(new),
        "old daemon removed it"
    );

    let stop = f.cmd(&["stop"])?;
    assert_eq!(stop.code(), Some(0), "{stop}");
    assert!(stop.stdout.contains(&format!("pid {new}")), "{stop}");
    assert!(!f.pid_file().exists());
    drop(successor);
    Ok(())
}

#[test]
fn log_follow_prints_appended_lines() -> TestResult {
    use std::io::{BufRead as _, Write as _};
    let f = Fixture::new("{}")?;
    let log_path = f.home.file(&format!("{NAME}.log"));
    std::fs::write(&log_path, "first line\n")?;
    let mut child = Command::new(BIN)
        .arg("--home")
        .arg(f.home.path())
        .args(["log", "-f"])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let _guard = ProcessGuard::child(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10))?, "first line");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)?
        .write_all(b"second line\n")?;
    assert_eq!(rx.recv_timeout(Duration::from_secs(10))?, "second line");
    Ok(())
}
