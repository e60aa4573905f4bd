//! Harness for end-to-end tests that start the real Wireleap binaries: find (and build) the
//! binaries, give each test a scratch home and free ports, run commands with deadlines, wait
//! for conditions, probe TCP/HTTP, and make sure every process a test started is gone when
//! the test ends, passed or failed.
//!
//! Not a place for test logic of a component; the tests live in `tests/`.
//!
//! # Locating binaries
//!
//! Cargo only tells a test where the binaries of its *own* package are
//! (`CARGO_BIN_EXE_<name>`), and artifact dependencies are unstable. So [`binary`] works from
//! the running test executable (`target/<profile>/deps/<test>-<hash>`): it runs
//! `cargo build -p <package> --bin <name>` for that profile and target directory once per test
//! process (a no-op when up to date, so a stale binary is never tested), then returns
//! `target/<profile>/<name>`. This makes a plain `cargo test -p wireleap-e2e` or
//! `cargo test --workspace` on a fresh clone work. Set `WIRELEAP_E2E_BIN_DIR` to a directory
//! of prebuilt binaries to skip building (CI that built once, or installed binaries).
//! Cross-compiled test runs (`--target`) need `WIRELEAP_E2E_BIN_DIR`.
//!
//! Each `cargo build -p <package>` resolves features for that selection, which differs from
//! the selection of a `cargo test --workspace` run, so its dependencies are built a second
//! time. With `WIRELEAP_E2E_BUILD=workspace` the harness builds with
//! `cargo build --workspace --tests --bins` instead: the same selection as
//! `cargo test --workspace`, so right after that command it only checks that everything is
//! fresh (CI sets it; for a single package's tests it would build the whole workspace).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

use anyhow::{anyhow, bail, Context as _, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Environment variable naming a directory of prebuilt binaries (no build then).
pub const BIN_DIR_ENV: &str = "WIRELEAP_E2E_BIN_DIR";

/// Environment variable choosing what the harness asks cargo to build: `workspace` for the
/// selection of `cargo test --workspace` (see the crate documentation); anything else, or
/// unset, for just the binaries asked for.
pub const BUILD_ENV: &str = "WIRELEAP_E2E_BUILD";

/// The seven daemon binaries and their packages.
pub const DAEMONS: [(&str, &str); 7] = [
    ("wireleap-relay", "wireleap-relay"),
    ("wireleap-dir", "wireleap-dir"),
    ("wireleap-contract", "wireleap-contract"),
    ("wireleap-auth", "wireleap-auth"),
    ("wireleap-ps-dummy", "wireleap-ps-dummy"),
    ("wireleap-ps-stripe", "wireleap-ps-stripe"),
    ("wireleap", "wireleap"),
];

/// Binaries that are tools, not daemons, which [`binary`] and [`binaries`] also build:
/// (binary, package).
pub const TOOLS: [(&str, &str); 1] = [("wireleap-release", "wireleap-release")];

fn package_of(name: &str) -> Result<&'static str> {
    DAEMONS
        .iter()
        .chain(TOOLS.iter())
        .find(|(bin, _)| *bin == name)
        .map(|(_, pkg)| *pkg)
        .ok_or_else(|| anyhow!("{name} is not one of the workspace's binaries; use binary_of"))
}

/// The workspace root (where `Cargo.toml` with `[workspace]` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/<profile>` of the running test executable.
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let deps = exe
        .parent()
        .ok_or_else(|| anyhow!("test executable {} has no directory", exe.display()))?;
    // Integration tests live in target/<profile>/deps; a binary run directly in target/<profile>.
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

/// Path of binary `name` from package `package`, built first (once per process) unless
/// `WIRELEAP_E2E_BIN_DIR` is set.
pub fn binary_of(package: &str, name: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let path = Path::new(&dir).join(name);
        if !path.is_file() {
            bail!("{} does not exist ({BIN_DIR_ENV} is set)", path.display());
        }
        return Ok(path);
    }
    let mut built = built();
    if let Some(p) = built.get(name) {
        return Ok(p.clone());
    }
    let profile_dir = profile_dir()?;
    if !(workspace_build() && WORKSPACE_BUILT.load(Ordering::SeqCst)) {
        build(package, name, &profile_dir)?;
    }
    let path = profile_dir.join(name);
    if !path.is_file() {
        bail!("cargo built {name} but {} does not exist", path.display());
    }
    built.insert(name.to_string(), path.clone());
    Ok(path)
}

/// Binaries built (or found) by this process, by name.
fn built() -> std::sync::MutexGuard<'static, HashMap<String, PathBuf>> {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Set once this process ran a workspace build: every binary of the workspace is fresh.
static WORKSPACE_BUILT: AtomicBool = AtomicBool::new(false);

/// Whether [`BUILD_ENV`] asks for workspace builds.
fn workspace_build() -> bool {
    std::env::var(BUILD_ENV).is_ok_and(|v| v == "workspace")
}

/// Builds several daemon binaries with one cargo invocation (cargo then compiles them in
/// parallel under one lock) and returns their paths in order.
pub fn binaries(names: &[&str]) -> Result<Vec<PathBuf>> {
    if std::env::var_os(BIN_DIR_ENV).is_none() {
        let pairs = names
            .iter()
            .map(|name| package_of(name).map(|pkg| (pkg, *name)))
            .collect::<Result<Vec<_>>>()?;
        let profile_dir = profile_dir()?;
        build_many(&pairs, &profile_dir)?;
        let mut built = built();
        for name in names {
            built.insert(name.to_string(), profile_dir.join(name));
        }
    }
    names.iter().map(|n| binary(n)).collect()
}

/// Path of one of the seven daemon binaries (see [`DAEMONS`]) or a tool ([`TOOLS`]), built
/// if needed.
pub fn binary(name: &str) -> Result<PathBuf> {
    binary_of(package_of(name)?, name)
}

fn build(package: &str, name: &str, profile_dir: &Path) -> Result<()> {
    build_many(&[(package, name)], profile_dir)
}

fn which_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn build_many(pairs: &[(&str, &str)], profile_dir: &Path) -> Result<()> {
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("cannot tell the profile from {}", profile_dir.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", profile_dir.display()))?;
    // Under cargo (tests, `cargo run`) CARGO names the right toolchain. A binary started by
    // hand uses the `cargo` on PATH (the rustup proxy picks the toolchain); the toolchain's
    // own cargo from build time would run rustc outside rustup's toolchain selection.
    let cargo = std::env::var_os("CARGO")
        .or_else(|| which_on_path("cargo").map(Into::into))
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet"])
        .env("CARGO_TARGET_DIR", target_dir);
    // Cargo gives a test process variables describing the test's own package. Passed on,
    // they reach build scripts that watch them (ring's watches CARGO_MANIFEST_DIR), whose
    // crates and everything above them (rustls, reqwest, every daemon) are then rebuilt
    // each time the last build came from another package's tests or from a plain
    // `cargo build`. Build as a shell would.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(is_per_package_cargo_var) {
            cmd.env_remove(&key);
        }
    }
    let workspace = workspace_build();
    if workspace {
        cmd.args(["--workspace", "--tests", "--bins"]);
    } else {
        for (package, name) in pairs {
            cmd.args(["-p", package, "--bin", name]);
        }
    }
    let what = pairs.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ");
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running cargo to build {what}"))?;
    if !out.status.success() {
        bail!(
            "cargo build of {what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if workspace {
        WORKSPACE_BUILT.store(true, Ordering::SeqCst);
    }
    Ok(())
}

/// Whether cargo sets this variable for one package's build script, binary or test (as
/// opposed to configuration such as `CARGO_HOME` or `CARGO_PROFILE_*`, which stays).
fn is_per_package_cargo_var(key: &str) -> bool {
    matches!(
        key,
        "CARGO_MANIFEST_DIR"
            | "CARGO_MANIFEST_PATH"
            | "CARGO_MANIFEST_LINKS"
            | "CARGO_CRATE_NAME"
            | "CARGO_BIN_NAME"
            | "CARGO_PRIMARY_PACKAGE"
            | "CARGO_TARGET_TMPDIR"
            | "CARGO_RUSTC_CURRENT_DIR"
            | "OUT_DIR"
    ) || key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_BIN_EXE_")
}

/// A port on 127.0.0.1 that was free a moment ago (bind :0, read, release).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

/// A temporary home directory, removed on drop.
#[derive(Debug)]
pub struct ScratchHome {
    dir: tempfile::TempDir,
}

impl ScratchHome {
    /// Creates an empty directory.
    pub fn new() -> Result<Self> {
        Ok(ScratchHome {
            dir: tempfile::Builder::new().prefix("wl-e2e-").tempdir()?,
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A file in it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file in it.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> Result<()> {
        let path = self.file(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads a file in it as text.
    pub fn read(&self, name: &str) -> Result<String> {
        let path = self.file(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }
}

/// The result of a finished command.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output as text.
    pub stdout: String,
    /// Standard error as text.
    pub stderr: String,
}

impl Output {
    /// The exit code (`None` if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Standard output and standard error together, for assertions about messages.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion with closed stdin and captured output; kills it and fails if it
/// takes longer than `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let out = child.stdout.take().map(reader);
    let err = child.stderr.take().map(reader);
    let mut guard = ProcessGuard::child(child);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = guard.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            drop(guard);
            bail!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let join = |h: Option<std::thread::JoinHandle<String>>| {
        h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: join(out),
        stderr: join(err),
    })
}

fn reader(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = r.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits until `cond` is true, checking every 20 ms; fails after `timeout` naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    wait_for(timeout, what, || cond().then_some(()))
}

/// Waits until `f` returns a value, checking every 20 ms; fails after `timeout` naming `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process with this pid exists (zombies included; EPERM counts as alive).
pub fn pid_exists(pid: i32) -> bool {
    matches!(
        kill(Pid::from_raw(pid), None),
        Ok(()) | Err(nix::errno::Errno::EPERM)
    )
}

/// Whether a process with this pid is running (exists and, on Linux, is not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    if !pid_exists(pid) {
        return false;
    }
    #[cfg(target_os = "linux")]
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        if let Some(i) = stat.rfind(')') {
            return stat[i + 1..].split_whitespace().next() != Some("Z");
        }
    }
    true
}

/// Running processes (zombies excluded) whose command line mentions `needle` in one of its
/// arguments, e.g. a scratch directory every daemon of a test got as `--home`. Linux only
/// (empty elsewhere).
pub fn processes_mentioning(needle: &Path) -> Vec<i32> {
    let Some(needle) = needle.to_str() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut found: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).is_ok_and(|p| p != me))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                cmd.split(|b| *b == 0)
                    .any(|arg| String::from_utf8_lossy(arg).contains(needle))
            })
        })
        .filter(|pid| pid_alive(*pid))
        .collect();
    found.sort_unstable();
    found
}

/// Sends SIGTERM, waits up to 5 s, then SIGKILL and waits up to 2 s more. For processes
/// that are not our children (they cannot be reaped here).
pub fn terminate_pid(pid: i32) {
    if !pid_alive(pid) {
        return;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    if wait_until(Duration::from_secs(5), "exit", || !pid_alive(pid)).is_ok() {
        return;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = wait_until(Duration::from_secs(2), "exit", || !pid_alive(pid));
}

/// Ends a process when dropped: SIGTERM, up to 5 s grace, SIGKILL; reaps it if it is our
/// child.
#[derive(Debug)]
pub struct ProcessGuard {
    child: Option<Child>,
    pid: i32,
}

impl ProcessGuard {
    /// Guards a child process.
    pub fn child(child: Child) -> Self {
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        ProcessGuard {
            child: Some(child),
            pid,
        }
    }

    /// Guards a process that is not our child (e.g. a daemon that `start` left running).
    pub fn pid(pid: i32) -> Self {
        ProcessGuard { child: None, pid }
    }

    /// The guarded pid.
    pub fn id(&self) -> i32 {
        self.pid
    }

    /// The child, if this guards one.
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Non-blocking exit check (children only; others report `None` while alive).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(c) => Ok(c.try_wait()?),
            None if pid_alive(self.pid) => Ok(None),
            None => bail!("pid {} is not our child and has exited", self.pid),
        }
    }

    /// Waits up to `timeout` for a child to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let pid = self.pid;
        wait_for(timeout, &format!("pid {pid} to exit"), || {
            self.try_wait().ok().flatten()
        })
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        kill(Pid::from_raw(self.pid), signal)
            .with_context(|| format!("sending {signal} to pid {}", self.pid))
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        match &mut self.child {
            Some(child) => {
                if let Ok(None) = child.try_wait() {
                    let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < deadline {
                        if let Ok(Some(_)) = child.try_wait() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let _ = child.kill();
                }
                let _ = child.wait();
            }
            None => terminate_pid(self.pid),
        }
    }
}

/// Ends whatever daemon a pid file names when dropped, plus every pid noted with
/// [`DaemonGuard::note`]. For daemons started in the background by `start`.
#[derive(Debug)]
pub struct DaemonGuard {
    pid_file: PathBuf,
    pids: Vec<i32>,
}

impl DaemonGuard {
    /// Guards the daemon named by `pid_file` (read at drop time).
    pub fn new(pid_file: impl Into<PathBuf>) -> Self {
        DaemonGuard {
            pid_file: pid_file.into(),
            pids: Vec::new(),
        }
    }

    /// Also end this pid at drop.
    pub fn note(&mut self, pid: i32) {
        self.pids.push(pid);
    }

    /// The pid the pid file names now, if readable.
    pub fn current_pid(&self) -> Option<i32> {
        read_pid_file(&self.pid_file)
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let mut pids = self.pids.clone();
        pids.extend(read_pid_file(&self.pid_file));
        for pid in pids {
            // Never signal the test process itself (a pid file a test forged).
            if u32::try_from(pid).ok() != Some(std::process::id()) {
                terminate_pid(pid);
            }
        }
    }
}

/// Reads a pid file (a JSON integer).
pub fn read_pid_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Finds `pid=<n>` in text (the daemon logs its pid when starting); the last one wins.
pub fn pid_in_text(text: &str) -> Option<i32> {
    text.rmatch_indices("pid=").find_map(|(i, _)| {
        let digits: String = text[i + 4..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

/// Whether a TCP connection to `addr` succeeds within 1 s.
pub fn tcp_connects(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header lines as (lower-cased name, value).
    pub headers: Vec<(String, String)>,
    /// Body bytes (everything after the header block; the connection is closed by us asking
    /// for `Connection: close`).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header of that (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A plain-HTTP GET of `path` on `addr` with every step bounded by `timeout`. Enough for
/// probing health and info endpoints; chunked bodies are returned undecoded.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<HttpResponse> {
    http_request(addr, "GET", path, &[], &[], timeout)
}

/// A plain-HTTP POST of `body` to `path` on `addr` with the given extra headers
/// (`Content-Length` is added), every step bounded by `timeout`.
pub fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<HttpResponse> {
    let length = body.len().to_string();
    let mut all = headers.to_vec();
    all.push(("Content-Length", &length));
    http_request(addr, "POST", path, &all, body, timeout)
}

fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: wireleap-e2e\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    // One write: a request split over segments is harder on minimal test servers.
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes)?;
    let mut raw = Vec::new();
    // Bounded: probes are small; a runaway server must not exhaust memory.
    stream
        .take(16 * 1024 * 1024)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the reply from {addr}"))?;
    parse_http_response(&raw)
}

/// Parses an HTTP/1.x response (status line, headers, body).
pub fn parse_http_response(raw: &[u8]) -> Result<HttpResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {} bytes", raw.len()))?;
    let head = std::str::from_utf8(&raw[..end]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1 status line: {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| anyhow!("bad status in {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| anyhow!("bad header line {line:?}"))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(HttpResponse {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn http_get_against_a_tiny_server() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            // Read the whole request: closing with unread input would send a reset.
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "request ended early");
                req.extend_from_slice(&buf[..n]);
            }
            let req = String::from_utf8(req).unwrap();
            s.write_all(b"HTTP/1.1 418 I'm a teapot\r\nX-Thing: a:b\r\n\r\nshort and stout")
                .unwrap();
            req
        });
        let r = http_get(addr, "/info", Duration::from_secs(5)).unwrap();
        assert_eq!(r.status, 418);
        assert_eq!(r.header("x-thing"), Some("a:b"));
        assert_eq!(r.text(), "short and stout");
        assert!(server.join().unwrap().starts_with("GET /info HTTP/1.1\r\n"));
    }

    #[test]
    fn http_parser_rejects_garbage() {
        for bad in [
            &b""[..],
            b"hello\r\n\r\n",
            b"HTTP/1.1 abc x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n",
        ] {
            assert!(parse_http_response(bad).is_err());
        }
    }

    #[test]
    fn run_enforces_the_deadline_and_kills() {
        let start = Instant::now();
        let e = run(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10));
        let out = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.code(), Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn process_guard_ends_a_process_that_ignores_sigterm() {
        let mut child = Command::new("sh")
            .args([
                "-c",
                "trap '' TERM; echo trapped; while :; do sleep 0.05; done",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        // Only signal once the trap is installed.
        let mut line = [0u8; 8];
        child.stdout.take().unwrap().read_exact(&mut line).unwrap();
        assert_eq!(&line, b"trapped\n");
        let start = Instant::now();
        drop(ProcessGuard::child(child));
        assert!(!pid_exists(pid), "reaped and gone");
        assert!(start.elapsed() >= Duration::from_secs(5));
    }

    #[test]
    fn wait_until_times_out_with_the_description() {
        let e = wait_until(Duration::from_millis(50), "the moon", || false).unwrap_err();
        assert!(e.to_string().contains("the moon"));
        let mut n = 0;
        wait_until(Duration::from_secs(5), "n", || {
            n += 1;
            n > 3
        })
        .unwrap();
    }

    #[test]
    fn pid_in_log_text() {
        assert_eq!(pid_in_text("a pid=12 b\nc pid=345 d"), Some(345));
        assert_eq!(pid_in_text("no pids"), None);
    }

    #[test]
    fn profile_dir_is_above_deps() {
        let p = profile_dir().unwrap();
        assert!(p.join("deps").is_dir(), "{}", p.display());
    }
}
