//! Bringing the network up and down.
//!
//! Order: `init` every home (keys, certificates), read the public keys, write every
//! `config.json`, start contract, directory, auth, ps-dummy, then the relays, wait until the
//! directory lists all of them, fetch two access keys from ps-dummy (one imported into the
//! client, one left for the user), start the client, and prove the SOCKS port works with an
//! HTTP request through a full circuit before `devnet.json` is written.

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Serialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wireleap_e2e as harness;

/// How to lay out the network.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory holding every home, logs and `devnet.json`.
    pub dir: PathBuf,
    /// Port of the client's SOCKS listener (`None`: 13491 if free, else any free port).
    pub socks_port: Option<u16>,
    /// Print progress lines.
    pub verbose: bool,
    /// Servicekey lifetime at the contract; relays submit sharetokens once it is over.
    pub servicekey_duration: String,
    /// How long after a servicekey expires its sharetokens are accepted; the contract
    /// settles it afterwards.
    pub submission_window: String,
    /// Set when the user asks the devnet to stop (Ctrl-C, SIGTERM). Start-up looks at it
    /// between steps and inside every wait, and then stops what it already started.
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl Options {
    /// Defaults for a network in `dir`: SOCKS on 13491 if free, progress lines, 10-minute
    /// servicekeys with a 1-hour submission window.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Options {
            dir: dir.into(),
            socks_port: None,
            verbose: true,
            servicekey_duration: "10m".into(),
            submission_window: "1h".into(),
            interrupt: None,
        }
    }
}

/// What runs where: written to `DIR/devnet.json` once the SOCKS port works.
#[derive(Debug, Clone, Serialize)]
pub struct DevnetInfo {
    /// Contract base URL.
    pub contract: String,
    /// Directory base URL.
    pub directory: String,
    /// Auth server base URL.
    pub auth: String,
    /// ps-dummy base URL.
    pub ps_dummy: String,
    /// Base URL of the signed release repository the relays upgrade from.
    pub releases: Option<String>,
    /// The relays.
    pub relays: Vec<RelayInfo>,
    /// The client.
    pub client: ClientInfo,
    /// An access key file not yet imported anywhere.
    pub accesskeys: PathBuf,
}

/// One relay of the devnet.
#[derive(Debug, Clone, Serialize)]
pub struct RelayInfo {
    /// `fronting`, `entropic` or `backing`.
    pub role: String,
    /// Its `wireleap://` address.
    pub address: String,
    /// Its home directory.
    pub home: PathBuf,
    /// Its status API URL.
    pub api: String,
}

/// The client of the devnet.
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    /// Its home directory.
    pub home: PathBuf,
    /// `host:port` of its SOCKS listener.
    pub socks: String,
}

/// One daemon process of the network.
#[derive(Debug, Clone)]
pub struct Node {
    /// Name in messages and the home directory name.
    pub label: String,
    /// Binary name.
    pub bin: &'static str,
    /// Home directory.
    pub home: PathBuf,
    /// Runs as `<home>/<bin>` (a copy it may replace when it upgrades itself) instead of
    /// the build in the target directory.
    pub installed: bool,
}

impl Node {
    /// The binary this node runs.
    pub fn binary(&self) -> Result<PathBuf> {
        if self.installed {
            Ok(self.home.join(self.bin))
        } else {
            harness::binary(self.bin)
        }
    }
}

/// A running network. Dropping it stops every daemon.
#[derive(Debug)]
pub struct Devnet {
    /// Where everything is.
    pub info: DevnetInfo,
    /// The network's directory.
    pub dir: PathBuf,
    nodes: Vec<Node>,
    started: Vec<Node>,
    verbose: bool,
    interrupt: Option<Arc<AtomicBool>>,
    // After `started`: the release server outlives the daemons when dropped.
    releases: Option<crate::releases::Releases>,
}

/// The binaries a devnet runs (built before anything starts).
pub const BINARIES: [&str; 7] = [
    "wireleap-contract",
    "wireleap-dir",
    "wireleap-auth",
    "wireleap-ps-dummy",
    "wireleap-relay",
    "wireleap",
    "wireleap-release",
];

const ROLES: [&str; 3] = ["fronting", "entropic", "backing"];

impl Devnet {
    /// Brings the whole network up; on any failure stops what it started and says which
    /// daemon failed and where its log is.
    pub fn launch(opts: &Options) -> Result<Devnet> {
        std::fs::create_dir_all(&opts.dir)
            .with_context(|| format!("creating {}", opts.dir.display()))?;
        let dir = opts
            .dir
            .canonicalize()
            .with_context(|| format!("resolving {}", opts.dir.display()))?;
        if dir.join("devnet.json").exists() {
            bail!(
                "{} already holds a devnet (devnet.json exists): stop it and remove the \
                 directory, or choose another --dir",
                dir.display()
            );
        }
        let mut net = Devnet {
            info: placeholder_info(),
            dir: dir.clone(),
            nodes: Vec::new(),
            started: Vec::new(),
            verbose: opts.verbose,
            interrupt: opts.interrupt.clone(),
            releases: None,
        };
        net.bring_up(opts)?;
        Ok(net)
    }

    /// Whether the user asked to stop.
    pub fn interrupted(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// An error once the user asked to stop, so start-up (or a bench) unwinds and
    /// [`Drop`] stops what was started.
    pub fn check_interrupt(&self) -> Result<()> {
        if self.interrupted() {
            bail!("interrupted: stopping everything the devnet started");
        }
        Ok(())
    }

    fn say(&self, msg: impl AsRef<str>) {
        if self.verbose {
            eprintln!("devnet: {}", msg.as_ref());
        }
    }

    fn node(&mut self, label: &str, bin: &'static str) -> Node {
        let node = Node {
            label: label.to_string(),
            bin,
            home: self.dir.join(label),
            installed: bin == crate::releases::RELAY,
        };
        self.nodes.push(node.clone());
        node
    }

    fn bring_up(&mut self, opts: &Options) -> Result<()> {
        self.say("building the binaries (the first run compiles for a few minutes)");
        harness::binaries(&BINARIES).context("building the daemon binaries")?;
        self.check_interrupt()?;

        let contract = self.node("contract", "wireleap-contract");
        let dir = self.node("directory", "wireleap-dir");
        let auth = self.node("auth", "wireleap-auth");
        let ps = self.node("ps-dummy", "wireleap-ps-dummy");
        let relays: Vec<Node> = ROLES
            .iter()
            .map(|r| self.node(&format!("relay-{r}"), "wireleap-relay"))
            .collect();
        let client = self.node("client", "wireleap");

        self.say("creating keys and certificates");
        let relay_build = harness::binary(crate::releases::RELAY)?;
        for n in self.nodes.clone() {
            self.check_interrupt()?;
            init(&n)?;
        }
        let relay_version = semver::Version::parse(env!("CARGO_PKG_VERSION"))?;
        self.say(format!(
            "releasing wireleap-relay {relay_version} on the signed \"default\" channel"
        ));
        self.check_interrupt()?;
        let releases = crate::releases::Releases::start(&self.dir, &relay_build, &relay_version)?;
        let upgrade = json!({
            "releases": releases.url,
            "release_keys": [releases.pubkey],
            "ready_timeout": "20s",
            "watch_window": "3s",
        });
        let release_url = releases.url.clone();
        self.releases = Some(releases);
        let contract_key = read_pubkey(&contract)?;
        let dir_key = read_pubkey(&dir)?;
        let auth_key = read_pubkey(&auth)?;

        let port = |_: ()| harness::free_port();
        let contract_addr = format!("127.0.0.1:{}", port(())?);
        let dir_addr = format!("127.0.0.1:{}", port(())?);
        let auth_addr = format!("127.0.0.1:{}", port(())?);
        let ps_addr = format!("127.0.0.1:{}", port(())?);
        let contract_url = format!("http://{contract_addr}");
        let dir_url = format!("http://{dir_addr}");
        let auth_url = format!("http://{auth_addr}");
        let ps_url = format!("http://{ps_addr}");

        write_config(
            &contract,
            json!({
                "address": contract_addr,
                "endpoint": contract_url,
                "proof_of_funding": [{"type": "dummy", "pubkey": auth_key, "endpoint": ps_url}],
                "servicekey": {"value": "1000", "currency": "usd", "duration": opts.servicekey_duration},
                "settlement": {"fee_percent": "5", "submission_window": opts.submission_window},
                "payout": {"endpoint": format!("{ps_url}/withdrawals"), "type": "dummy"},
                "directory": {"endpoint": dir_url, "public_key": dir_key},
                "metadata": {"name": "wireleap devnet", "operator": "you"},
            }),
        )?;
        write_config(
            &dir,
            json!({
                "address": dir_addr,
                "endpoint": dir_url,
                "contract": {"endpoint": contract_url, "public_key": contract_key},
                "pow_cost": 0,
                "relay_ttl": "15s",
                "upgrade_channels": {"relay": {"default": {"version": relay_version.to_string(), "rollout_percent": 100}}},
            }),
        )?;
        let ps_key = read_pubkey(&ps)?;
        write_config(
            &auth,
            json!({
                "address": auth_addr,
                "endpoint": auth_url,
                "payment_services": [{"type": "dummy", "pubkey": ps_key}],
            }),
        )?;
        write_config(
            &ps,
            json!({
                "address": ps_addr,
                "endpoint": ps_url,
                "auth": {"endpoint": auth_url, "public_key": auth_key},
                "contract": {"endpoint": contract_url, "public_key": contract_key},
            }),
        )?;
        let mut relay_infos = Vec::new();
        for (node, role) in relays.iter().zip(ROLES) {
            let addr = format!("127.0.0.1:{}", port(())?);
            let api = format!("127.0.0.1:{}", port(())?);
            let address = format!("wireleap://{addr}");
            write_config(
                node,
                json!({
                    "address": addr,
                    "auto_submit_interval": "5s",
                    "heartbeat_interval": "5s",
                    "contracts": {
                        contract_url.clone(): {"address": address, "role": role, "upgrade_channel": "default"}
                    },
                    "rest_api": {"address": format!("http://{api}")},
                    "danger_zone": {"allow_loopback": true},
                    "drain_timeout": "5s",
                    "upgrade": upgrade,
                }),
            )?;
            relay_infos.push(RelayInfo {
                role: role.to_string(),
                address,
                home: node.home.clone(),
                api: format!("http://{api}"),
            });
        }
        let socks_port = match opts.socks_port {
            Some(p) => p,
            None if std::net::TcpListener::bind("127.0.0.1:13491").is_ok() => 13491,
            None => port(())?,
        };
        let socks = format!("127.0.0.1:{socks_port}");
        write_config(
            &client,
            json!({
                "address": format!("127.0.0.1:{}", port(())?),
                "address_socks": socks,
                "circuit": {"hops": 3},
            }),
        )?;

        for n in [&contract, &dir, &auth, &ps] {
            self.start(n)?;
        }
        for r in &relays {
            self.start(r)?;
        }
        self.say("waiting for the directory to list the three relays");
        let dir_sock: SocketAddr = dir_addr.parse()?;
        harness::wait_until(Duration::from_secs(60), "three relays listed", || {
            self.interrupted()
                || listed_relays(dir_sock)
                    .map(|v| v.len() >= 3)
                    .unwrap_or(false)
        })
        .map_err(|e| self.explain(e, &relays))?;
        self.check_interrupt()?;

        self.say("getting access keys from ps-dummy");
        let ps_sock: SocketAddr = ps_addr.parse()?;
        let imported = self.dir.join("accesskeys-imported.json");
        let spare = self.dir.join("accesskeys.json");
        for file in [&imported, &spare] {
            self.check_interrupt()?;
            let key = crate::probe::post_json(
                ps_sock,
                "/accesskeys",
                r#"{"quantity":5,"duration":"30d"}"#,
                Duration::from_secs(30),
            )?;
            std::fs::write(file, key).with_context(|| format!("writing {}", file.display()))?;
        }
        import_accesskey(&client, &imported)?;
        self.start(&client)?;

        self.say("checking the SOCKS port with a request through a 3-hop circuit");
        let socks_sock: SocketAddr = socks.parse()?;
        let contract_sock: SocketAddr = contract_addr.parse()?;
        harness::wait_for(
            Duration::from_secs(60),
            "a page through the SOCKS port",
            || {
                if self.interrupted() {
                    return Some(());
                }
                crate::probe::http_via_socks(
                    socks_sock,
                    "127.0.0.1",
                    contract_sock.port(),
                    "/info",
                    Duration::from_secs(10),
                )
                .ok()
                .filter(|(code, _)| *code == 200)
                .map(|_| ())
            },
        )
        .map_err(|e| self.explain(e, std::slice::from_ref(&client)))?;
        self.check_interrupt()?;

        self.info = DevnetInfo {
            contract: contract_url,
            directory: dir_url,
            auth: auth_url,
            ps_dummy: ps_url,
            releases: Some(release_url),
            relays: relay_infos,
            client: ClientInfo {
                home: client.home.clone(),
                socks,
            },
            accesskeys: spare,
        };
        let text = serde_json::to_vec_pretty(&self.info)?;
        std::fs::write(self.dir.join("devnet.json"), text).context("writing devnet.json")?;
        Ok(())
    }

    fn start(&mut self, n: &Node) -> Result<()> {
        self.check_interrupt()?;
        self.say(format!("starting {}", n.label));
        // Counted as started before `start` runs: if it fails half-way (its daemon up but
        // not ready in time), `stop` still ends that daemon; stopping one that is not
        // running is a no-op.
        self.started.push(n.clone());
        let out = run_bin(n, &["start"], Duration::from_secs(30))?;
        if out.code() != Some(0) {
            bail!(
                "{} failed to start:\n{}\n(log: {})",
                n.label,
                out.all(),
                n.home.join(format!("{}.log", n.bin)).display()
            );
        }
        Ok(())
    }

    fn explain(&self, e: anyhow::Error, suspects: &[Node]) -> anyhow::Error {
        let mut msg = format!("{e:#}");
        for n in suspects {
            let log = n.home.join(format!("{}.log", n.bin));
            let tail = std::fs::read_to_string(&log)
                .map(|t| {
                    let lines: Vec<&str> = t.lines().collect();
                    lines[lines.len().saturating_sub(15)..].join("\n")
                })
                .unwrap_or_default();
            msg.push_str(&format!(
                "\n--- last lines of {} ---\n{tail}",
                log.display()
            ));
        }
        anyhow!(msg)
    }

    /// The daemons, in start order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Stops every daemon that was started, in reverse order, through its own `stop`; the
    /// directory can then hold a new devnet.
    pub fn stop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("devnet.json"));
        while let Some(n) = self.started.pop() {
            self.say(format!("stopping {}", n.label));
            match run_bin(&n, &["stop"], Duration::from_secs(20)) {
                Ok(out) if out.code() == Some(0) => {}
                Ok(out) => eprintln!("devnet: stopping {} failed: {}", n.label, out.all()),
                Err(e) => eprintln!("devnet: stopping {} failed: {e:#}", n.label),
            }
        }
    }

    /// Each relay's `GET /api/status` (`None` if it does not answer).
    pub fn relay_status(&self) -> Vec<Option<Value>> {
        self.info
            .relays
            .iter()
            .map(|r| {
                r.api
                    .trim_start_matches("http://")
                    .parse::<SocketAddr>()
                    .ok()
                    .and_then(|a| {
                        crate::probe::http_get(a, "/api/status", Duration::from_secs(2)).ok()
                    })
                    .filter(|(code, _)| *code == 200)
                    .and_then(|(_, body)| serde_json::from_slice::<Value>(&body).ok())
            })
            .collect()
    }

    /// Each relay's software version from its status API (`down` if it does not answer).
    pub fn relay_versions(&self) -> Vec<String> {
        self.relay_status()
            .into_iter()
            .map(|s| {
                s.and_then(|v| v["version"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "down".into())
            })
            .collect()
    }

    /// One status line: how many relays the directory lists, and per relay (from its status
    /// API) the version it runs and its tunnel streams (open / since it started).
    pub fn status_line(&self) -> String {
        let listed = match self
            .info
            .directory
            .trim_start_matches("http://")
            .parse::<SocketAddr>()
        {
            Ok(dir) => match listed_relays(dir) {
                Ok(relays) => format!("listed {}", relays.len()),
                Err(_) => "directory unreachable".to_string(),
            },
            Err(_) => "directory unknown".to_string(),
        };
        let relays: Vec<String> = self
            .info
            .relays
            .iter()
            .zip(self.relay_status())
            .map(|(r, status)| match status {
                Some(v) => format!(
                    "{} {} {}/{}",
                    r.role,
                    v["version"].as_str().unwrap_or("?"),
                    v["streams"]["open"].as_u64().unwrap_or(0),
                    v["streams"]["total"].as_u64().unwrap_or(0)
                ),
                None => format!("{} down", r.role),
            })
            .collect();
        format!(
            "relays ({listed}; version streams open/total): {}",
            relays.join(" | ")
        )
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        self.stop();
    }
}

fn placeholder_info() -> DevnetInfo {
    DevnetInfo {
        contract: String::new(),
        directory: String::new(),
        auth: String::new(),
        ps_dummy: String::new(),
        releases: None,
        relays: Vec::new(),
        client: ClientInfo {
            home: PathBuf::new(),
            socks: String::new(),
        },
        accesskeys: PathBuf::new(),
    }
}

fn run_bin(n: &Node, args: &[&str], timeout: Duration) -> Result<harness::Output> {
    let bin = n.binary()?;
    let mut cmd = Command::new(bin);
    // Its own process group: a Ctrl-C at the terminal reaches the devnet only, which then
    // lets a `start` finish and stops the daemon, instead of killing `start` half-way and
    // leaving its daemon running unknown to anyone.
    cmd.arg("--home").arg(&n.home).args(args).process_group(0);
    harness::run(&mut cmd, timeout)
}

fn init(n: &Node) -> Result<()> {
    std::fs::create_dir_all(&n.home)?;
    if n.installed {
        let from = harness::binary(n.bin)?;
        let to = n.home.join(n.bin);
        std::fs::copy(&from, &to)
            .with_context(|| format!("installing {} as {}", from.display(), to.display()))?;
    }
    let out = run_bin(n, &["init"], Duration::from_secs(30))?;
    if out.code() != Some(0) {
        bail!("{} init failed: {}", n.label, out.all());
    }
    Ok(())
}

fn read_pubkey(n: &Node) -> Result<String> {
    let path = n.home.join("key.pub");
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

fn write_config(n: &Node, config: Value) -> Result<()> {
    let path = n.home.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn import_accesskey(client: &Node, file: &Path) -> Result<()> {
    let bin = harness::binary(client.bin)?;
    let key = std::fs::read(file)?;
    let mut child = Command::new(bin)
        .arg("--home")
        .arg(&client.home)
        .args(["import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running wireleap import")?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        stdin.write_all(&key)?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            let out = child.wait_with_output()?;
            if !status.success() {
                bail!(
                    "wireleap import failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("wireleap import did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The directory's relay list as JSON values.
pub fn listed_relays(dir: SocketAddr) -> Result<Vec<Value>> {
    let (code, body) = crate::probe::http_get(dir, "/relays", Duration::from_secs(5))?;
    if code != 200 {
        bail!("GET /relays answered {code}");
    }
    let v: Value = serde_json::from_slice(&body).context("relay list is not JSON")?;
    Ok(v.as_object()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default())
}
