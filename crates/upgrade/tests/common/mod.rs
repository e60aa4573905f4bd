//! Shared fixtures of the end-to-end tests and the hand-over bench: a release repository with
//! a key and a running `wireleap-release serve`, test-daemon installations in scratch homes,
//! and a client load that measures failed requests and the longest gap in service.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{anyhow, bail, Context as _, Result};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wireleap_e2e::{read_pid_file, run, wait_for, DaemonGuard, Output, ProcessGuard};

pub const NAME: &str = "upgrade-testd";
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);

pub fn testd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_upgrade-testd"))
}

/// `wireleap-release`. `cargo test -p wireleap-upgrade -p wireleap-release` builds it; use that
/// build when it is newer than the sources it is made of, since asking cargo again waits for
/// the build lock other builds in the same target directory may hold for minutes.
pub fn release_tool() -> Result<PathBuf> {
    let built = wireleap_e2e::profile_dir()?.join("wireleap-release");
    let newest_source = ["crates/release/src", "crates/upgrade/src"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(wireleap_e2e::workspace_root().join(d))
                .into_iter()
                .flatten()
        })
        .filter_map(|e| e.ok()?.metadata().ok()?.modified().ok())
        .max();
    let fresh = std::fs::metadata(&built)
        .and_then(|m| m.modified())
        .is_ok_and(|t| newest_source.is_some_and(|s| t >= s));
    if fresh {
        Ok(built)
    } else {
        wireleap_e2e::binary_of("wireleap-release", "wireleap-release")
    }
}

/// A release repository served over HTTP on 127.0.0.1.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub tool: PathBuf,
    pub key: PathBuf,
    pub pubkey: String,
    pub url: String,
    server: ProcessGuard,
}

impl Repo {
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let tool = release_tool()?;
        let out = run(
            Command::new(&tool)
                .args(["keygen", "--out"])
                .arg(dir.path().join("keys")),
            CMD_TIMEOUT,
        )?;
        if out.code() != Some(0) {
            bail!("keygen failed: {out}");
        }
        let pubkey = out.stdout.trim().to_string();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo)?;
        let mut child = Command::new(&tool)
            .args(["serve", "--address", "127.0.0.1:0", "--repo"])
            .arg(&repo)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("serve.log"))?)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let server = ProcessGuard::child(child);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        let url = line
            .trim()
            .rsplit(" on ")
            .next()
            .filter(|u| u.starts_with("http://"))
            .ok_or_else(|| anyhow!("serve printed {line:?}"))?
            .to_string();
        Ok(Repo {
            key: dir.path().join("keys/release.seed"),
            dir,
            tool,
            pubkey,
            url,
            server,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn tool(&self, args: &[&str]) -> Result<Output> {
        run(Command::new(&self.tool).args(args), CMD_TIMEOUT)
    }

    /// A copy of the test daemon stamped with `version` and `mode`.
    pub fn stamped(&self, version: &str, mode: &str) -> Result<PathBuf> {
        let out_path = self.dir.path().join(format!("testd-{version}-{mode}"));
        let out = run(
            Command::new(&self.tool)
                .arg("stamp")
                .arg("--binary")
                .arg(testd())
                .arg("--out")
                .arg(&out_path)
                .args([
                    "--set",
                    &format!("version={version}"),
                    "--set",
                    &format!("mode={mode}"),
                ]),
            CMD_TIMEOUT,
        )?;
        if out.code() != Some(0) {
            bail!("stamp failed: {out}");
        }
        Ok(out_path)
    }

    /// Publishes the test daemon as `version` (stamped with `mode`) on the default channel.
    pub fn publish(&self, version: &str, mode: &str, extra: &[&str]) -> Result<Output> {
        let bin = self.stamped(version, mode)?;
        let notes = self.dir.path().join(format!("notes-{version}.md"));
        std::fs::write(&notes, format!("# {version}\n\nstamped mode {mode}\n"))?;
        let out = run(
            Command::new(&self.tool)
                .arg("build")
                .arg("--key")
                .arg(&self.key)
                .arg("--repo")
                .arg(self.path())
                .args(["--component", NAME, "--version", version, "--binary"])
                .arg(&bin)
                .arg("--changelog")
                .arg(&notes)
                .args(extra),
            CMD_TIMEOUT,
        )?;
        Ok(out)
    }

    pub fn publish_ok(&self, version: &str, mode: &str) -> Result<()> {
        let out = self.publish(version, mode, &[])?;
        if out.code() != Some(0) {
            bail!("publishing {version} failed: {out}");
        }
        Ok(())
    }

    pub fn metadata_path(&self) -> PathBuf {
        self.path().join(NAME).join("metadata.json")
    }

    pub fn binary_path(&self, version: &str) -> PathBuf {
        self.path()
            .join(NAME)
            .join(version)
            .join(wireleap_upgrade::manifest::this_platform())
            .join(NAME)
    }
}

/// An installation of the test daemon.
pub struct Node {
    // Dropped first: it stops whatever the pid file names.
    pub guard: DaemonGuard,
    pub home: tempfile::TempDir,
    pub extra_pids: Vec<i32>,
}

impl Node {
    /// Installs `binary` as `<home>/upgrade-testd` with a config following `repo`.
    pub fn new(repo: &Repo, binary: &Path, upgrade: serde_json::Value) -> Result<Self> {
        let home = tempfile::Builder::new().prefix("ut").tempdir_in("/tmp")?;
        let guard = DaemonGuard::new(home.path().join(format!("{NAME}.pid")));
        let node = Node {
            guard,
            home,
            extra_pids: Vec::new(),
        };
        std::fs::copy(binary, node.bin())?;
        let out = node.cmd(&["init"])?;
        if out.code() != Some(0) {
            bail!("init failed: {out}");
        }
        let mut up = serde_json::json!({
            "releases": repo.url,
            "release_keys": [repo.pubkey],
            "auto": false,
            "ready_timeout": "5s",
            "watch_window": "1s",
            "drain_timeout": "5s",
        });
        if let (Some(o), Some(extra)) = (up.as_object_mut(), upgrade.as_object()) {
            for (k, v) in extra {
                o.insert(k.clone(), v.clone());
            }
        }
        node.write_config(serde_json::json!({
            "address": "127.0.0.1:0",
            "schema_version": "0.1.0",
            "greeting": "hi",
            "upgrade": up,
        }))?;
        Ok(node)
    }

    pub fn write_config(&self, v: serde_json::Value) -> Result<()> {
        std::fs::write(self.file("config.json"), serde_json::to_vec_pretty(&v)?)?;
        Ok(())
    }

    pub fn config(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&std::fs::read(
            self.file("config.json"),
        )?)?)
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.home.path().join(rel)
    }

    pub fn bin(&self) -> PathBuf {
        self.file(NAME)
    }

    pub fn cmd(&self, args: &[&str]) -> Result<Output> {
        run(
            Command::new(self.bin())
                .arg("--home")
                .arg(self.home.path())
                .args(args),
            CMD_TIMEOUT,
        )
    }

    pub fn start(&mut self) -> Result<i32> {
        let out = self.cmd(&["start"])?;
        if out.code() != Some(0) {
            bail!("start failed: {out}\nlog:\n{}", self.log());
        }
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("no pid file after start"))?;
        self.guard.note(pid);
        Ok(pid)
    }

    pub fn pid(&self) -> Option<i32> {
        read_pid_file(&self.file(&format!("{NAME}.pid")))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.file(&format!("{NAME}.log"))).unwrap_or_default()
    }

    pub fn addr(&self) -> Result<SocketAddr> {
        Ok(std::fs::read_to_string(self.file("testd.addr"))?
            .trim()
            .parse()?)
    }

    /// `GET /` → `<version> <pid> <banner>`.
    pub fn ask(&self) -> Result<String> {
        get(self.addr()?, "/", Duration::from_secs(5))
    }

    pub fn version(&self) -> Result<String> {
        Ok(self
            .ask()?
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string())
    }

    pub fn state(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&std::fs::read(
            self.file("upgrade-state.json"),
        )?)?)
    }

    /// Waits until the pid file names a process answering as `version`.
    pub fn wait_version(&mut self, version: &str, timeout: Duration) -> Result<()> {
        wait_for(timeout, &format!("{NAME} answering as {version}"), || {
            (self.version().ok().as_deref() == Some(version)).then_some(())
        })
        .with_context(|| self.log())?;
        if let Some(p) = self.pid() {
            self.guard.note(p);
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for pid in &self.extra_pids {
            wireleap_e2e::terminate_pid(*pid);
        }
    }
}

/// One HTTP GET on a fresh connection; the body, trimmed.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    if !text.starts_with("HTTP/1.1 200") {
        bail!("unexpected reply {text:?}");
    }
    Ok(text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string())
}

/// Completion time and outcome of each request.
type Samples = Arc<Mutex<Vec<(Instant, Result<String, String>)>>>;

/// A client making requests back to back (a fresh connection each) until stopped, bounded in
/// count and time.
pub struct Load {
    stop: Arc<AtomicBool>,
    samples: Samples,
    thread: Option<std::thread::JoinHandle<()>>,
    started: Instant,
}

/// What a load run saw.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The last version that answered.
    pub last: Option<String>,
    pub ok: usize,
    pub failed: usize,
    /// Longest time between two successful replies.
    pub longest_gap: Duration,
    pub duration: Duration,
    /// Versions that answered, in order of first appearance.
    pub versions: Vec<String>,
    /// How often consecutive replies came from different versions.
    pub switches: usize,
    pub errors: Vec<String>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests ok, {} failed, longest gap {:.1} ms over {:.1} s, versions {:?} ({} switches)",
            self.ok,
            self.failed,
            self.longest_gap.as_secs_f64() * 1000.0,
            self.duration.as_secs_f64(),
            self.versions,
            self.switches
        )
    }
}

pub const LOAD_MAX_REQUESTS: usize = 200_000;
pub const LOAD_MAX_TIME: Duration = Duration::from_secs(180);

impl Load {
    pub fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples: Samples = Arc::default();
        let started = Instant::now();
        let thread = {
            let stop = stop.clone();
            let samples = samples.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst)
                    && n < LOAD_MAX_REQUESTS
                    && started.elapsed() < LOAD_MAX_TIME
                {
                    let r = get(addr, "/", Duration::from_secs(5)).map_err(|e| e.to_string());
                    let failed = r.is_err();
                    samples.lock().unwrap().push((Instant::now(), r));
                    n += 1;
                    // A refused connection returns at once; do not spin.
                    std::thread::sleep(Duration::from_millis(if failed { 5 } else { 1 }));
                }
            })
        };
        Load {
            stop,
            samples,
            thread: Some(thread),
            started,
        }
    }

    pub fn count_ok(&self) -> usize {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| r.is_ok())
            .count()
    }

    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let samples = self.samples.lock().unwrap().clone();
        let mut report = LoadReport {
            ok: 0,
            failed: 0,
            longest_gap: Duration::ZERO,
            duration: self.started.elapsed(),
            versions: Vec::new(),
            switches: 0,
            last: None,
            errors: Vec::new(),
        };
        let mut last_version = String::new();
        let mut last_ok = self.started;
        for (at, r) in &samples {
            match r {
                Ok(body) => {
                    report.ok += 1;
                    report.longest_gap = report.longest_gap.max(at.duration_since(last_ok));
                    last_ok = *at;
                    let v = body.split_whitespace().next().unwrap_or("").to_string();
                    if !report.versions.contains(&v) {
                        report.versions.push(v.clone());
                    }
                    if !last_version.is_empty() && last_version != v {
                        report.switches += 1;
                    }
                    last_version = v;
                    report.last = Some(last_version.clone());
                }
                Err(e) => {
                    report.failed += 1;
                    if report.errors.len() < 5 {
                        report.errors.push(e.clone());
                    }
                }
            }
        }
        report
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until the load has seen `n` more successful replies.
pub fn settle(load: &Load, n: usize) -> Result<()> {
    let base = load.count_ok();
    wait_for(Duration::from_secs(30), "successful requests", || {
        (load.count_ok() >= base + n).then_some(())
    })
}
