//! The shared lifecycle, checked on every one of the seven real binaries: help, init (and
//! its refusal to replace a key), start/status/reload/stop, a second start, a config with an
//! unknown key, and a stale pid file. Each binary gets its own scratch home and port; a guard
//! kills whatever a failing test left running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use wireleap_e2e::{
    binary, free_addr, pid_alive, read_pid_file, run, tcp_connects, DaemonGuard, Output,
    ScratchHome,
};

type TestResult = anyhow::Result<()>;

const COMMON_COMMANDS: [&str; 9] = [
    "init",
    "start",
    "stop",
    "status",
    "restart",
    "reload",
    "log",
    "version",
    "check-config",
];

/// A binary under test.
struct Daemon {
    name: &'static str,
    /// Whether `init` creates an identity key (the client has none).
    has_key: bool,
    /// A minimal valid config listening on `addr`.
    config: fn(SocketAddr) -> String,
}

fn listen_only(addr: SocketAddr) -> String {
    format!(r#"{{"address": "{addr}"}}"#)
}

fn relay_config(addr: SocketAddr) -> String {
    format!(
        r#"{{"address": "{addr}",
            "contracts": {{"https://contract.invalid": {{"address": "wireleap://{addr}", "role": "backing"}}}}}}"#
    )
}

fn client_config(addr: SocketAddr) -> String {
    format!(r#"{{"address": "{addr}", "broker": {{"address": "{addr}"}}}}"#)
}

struct Bench {
    // Drops first: the guard reads the pid file before the home directory is removed.
    guard: DaemonGuard,
    home: ScratchHome,
    bin: PathBuf,
    d: Daemon,
}

impl Bench {
    fn new(d: Daemon) -> anyhow::Result<Self> {
        let bin = binary(d.name)?;
        let home = ScratchHome::new()?;
        let guard = DaemonGuard::new(home.file(&format!("{}.pid", d.name)));
        Ok(Bench {
            guard,
            home,
            bin,
            d,
        })
    }

    fn cmd(&self, args: &[&str]) -> anyhow::Result<Output> {
        run(
            Command::new(&self.bin)
                .arg("--home")
                .arg(self.home.path())
                .args(args),
            Duration::from_secs(30),
        )
    }

    fn pid_file(&self) -> PathBuf {
        self.home.file(&format!("{}.pid", self.d.name))
    }

    fn log(&self) -> String {
        self.home
            .read(&format!("{}.log", self.d.name))
            .unwrap_or_default()
    }

    fn expect(&self, out: &Output, code: i32, what: &str) -> TestResult {
        anyhow::ensure!(
            out.code() == Some(code),
            "{} {what}: expected exit {code}, got {out}\nlog:\n{}",
            self.d.name,
            self.log()
        );
        Ok(())
    }
}

fn mode(path: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata(path)?.mode() & 0o777)
}

fn lifecycle(d: Daemon) -> TestResult {
    let mut b = Bench::new(d)?;
    let name = b.d.name;

    let help = b.cmd(&["--help"])?;
    b.expect(&help, 0, "--help")?;
    for c in COMMON_COMMANDS {
        anyhow::ensure!(
            help.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{c} "))),
            "{name} --help does not list {c}: {help}"
        );
    }

    let init = b.cmd(&["init"])?;
    b.expect(&init, 0, "init")?;
    let config: serde_json::Value = serde_json::from_str(&b.home.read("config.json")?)?;
    anyhow::ensure!(config.is_object(), "{name} init wrote {config}");
    if b.d.has_key {
        assert_eq!(
            mode(&b.home.file("key.seed"))?,
            0o600,
            "{name} key.seed mode"
        );
        assert_eq!(mode(&b.home.file("key.pub"))?, 0o644, "{name} key.pub mode");
    }
    let identity = b.home.read(if b.d.has_key {
        "key.seed"
    } else {
        "config.json"
    })?;
    let again = b.cmd(&["init"])?;
    b.expect(&again, 1, "second init")?;
    assert!(again.stderr.contains("--force"), "{name}: {again}");
    assert_eq!(
        b.home.read(if b.d.has_key {
            "key.seed"
        } else {
            "config.json"
        })?,
        identity,
        "{name}: a refused init changed files"
    );

    let addr = free_addr()?;
    b.home.write("config.json", (b.d.config)(addr))?;
    if name == "wireleap-ps-stripe" {
        // Its Stripe secrets live in files next to the config (test-mode placeholders; no
        // request reaches Stripe in this test).
        b.home.write("stripe-secret-key", "sk_test_lifecycle\n")?;
        b.home.write("stripe-webhook-secret", "whsec_lifecycle\n")?;
    }
    let check = b.cmd(&["check-config"])?;
    b.expect(&check, 0, "check-config")?;

    let start = b.cmd(&["start"])?;
    b.expect(&start, 0, "start")?;
    let pid = read_pid_file(&b.pid_file())
        .ok_or_else(|| anyhow::anyhow!("{name}: no pid file after start"))?;
    b.guard.note(pid);
    assert!(
        start.stdout.contains(&format!("started, pid {pid}")),
        "{start}"
    );
    assert!(tcp_connects(addr), "{name} does not listen on {addr}");

    let status = b.cmd(&["status"])?;
    b.expect(&status, 0, "status")?;
    assert!(
        status.stdout.contains(&format!("running, pid {pid}")),
        "{status}"
    );

    let twice = b.cmd(&["start"])?;
    b.expect(&twice, 1, "second start")?;
    assert!(twice.stderr.contains("already running"), "{twice}");

    let reload = b.cmd(&["reload"])?;
    b.expect(&reload, 0, "reload")?;
    assert!(reload.stdout.contains("reloaded"), "{name}: {reload}");
    assert!(pid_alive(pid), "{name} died on reload");
    assert!(
        b.log().contains("config reloaded"),
        "{name} log:\n{}",
        b.log()
    );

    let version = b.cmd(&["version", "--json"])?;
    b.expect(&version, 0, "version --json")?;
    let v: serde_json::Value = serde_json::from_str(&version.stdout)?;
    assert_eq!(v["name"], name);
    assert!(v["interfaces"].as_object().is_some_and(|i| !i.is_empty()));

    let stop = b.cmd(&["stop"])?;
    b.expect(&stop, 0, "stop")?;
    assert!(!b.pid_file().exists(), "{name}: pid file left after stop");
    assert!(!pid_alive(pid), "{name}: still running after stop");
    assert!(!tcp_connects(addr), "{name}: port still open after stop");
    let status = b.cmd(&["status"])?;
    b.expect(&status, 1, "status after stop")?;
    assert!(status.stdout.contains("not running"), "{status}");

    // A config with an unknown key: start fails at once, naming the key.
    let mut bad: serde_json::Value = serde_json::from_str(&(b.d.config)(addr))?;
    bad["no_such_key"] = serde_json::Value::Bool(true);
    b.home.write("config.json", bad.to_string())?;
    let t = Instant::now();
    let fail = b.cmd(&["start"])?;
    b.expect(&fail, 1, "start with an unknown key")?;
    // Detected by the child's exit (status 78), not by waiting out a timeout; the time bound
    // is loose because a loaded machine can make process start-up slow.
    assert!(
        fail.stderr.contains("failed to start (exit status 78"),
        "{name}: {fail}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "{name}: took {:?}",
        t.elapsed()
    );
    assert!(fail.stderr.contains("no_such_key"), "{name}: {fail}");
    assert!(!b.pid_file().exists());

    // A stale pid file (its process is gone) is reported, then cleaned by start.
    b.home.write("config.json", (b.d.config)(addr))?;
    let mut gone = Command::new("true").spawn()?;
    let gone_pid = gone.id();
    gone.wait()?;
    std::fs::write(b.pid_file(), gone_pid.to_string())?;
    let status = b.cmd(&["status"])?;
    b.expect(&status, 1, "status with a stale pid file")?;
    assert!(status.stdout.contains("stale"), "{status}");
    let start = b.cmd(&["start"])?;
    b.expect(&start, 0, "start over a stale pid file")?;
    assert!(start.stdout.contains("removed a stale pid file"), "{start}");
    let pid = read_pid_file(&b.pid_file())
        .ok_or_else(|| anyhow::anyhow!("{name}: no pid file after start"))?;
    b.guard.note(pid);
    let stop = b.cmd(&["stop"])?;
    b.expect(&stop, 0, "final stop")?;
    assert!(!pid_alive(pid));
    Ok(())
}

#[test]
fn relay_lifecycle() -> TestResult {
    lifecycle(Daemon {
        name: "wireleap-relay",
        has_key: true,
        config: relay_config,
    })
}

#[test]
fn dir_lifecycle() -> TestResult {
    lifecycle(Daemon {
        name: "wireleap-dir",
        has_key: true,
        config: listen_only,
    })
}

#[test]
fn contract_lifecycle() -> TestResult {
    lifecycle(Daemon {
        name: "wireleap-contract",
        has_key: true,
        config: listen_only,
    })
}

#[test]
fn auth_lifecycle() -> TestResult {
    lifecycle(Daemon {
        name: "wireleap-auth",
        has_key: true,
        config: listen_only,
    })
}

#[test]
fn ps_dummy_lifecycle() -> TestResult {
    lifecycle(Daemon {
        name: "wireleap-ps-dummy",
        has_key: true,
        config: listen_only,
    })
}

#[test]
fn ps_stripe_lifecycle() -> TestResult {
    lifecycle(Daemon {
        name: "wireleap-ps-stripe",
        has_key: true,
        config: listen_only,
    })
}

#[test]
fn client_lifecycle() -> TestResult {
    lifecycle(Daemon {
        name: "wireleap",
        has_key: false,
        config: client_config,
    })
}
