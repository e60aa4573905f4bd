//! The client's own commands (`import`, `accesskeys`, `exec`, `info`, `config`, `circuit`,
//! and the shared `upgrade`, `rollback`, `upgrade-status`) and the
//! details `status` prints after the shared "running / not running" line.

use crate::accesskeys::{self, ImportReport};
use crate::config::ClientConfig;
use crate::controller::{self, StatusView};
use crate::files;
use crate::servicekey;
use anyhow::Context as _;
use std::process::ExitCode;
use std::time::Duration;
use wireleap_daemon::control::{self, Found};
use wireleap_daemon::Home;

/// The client's subcommands, next to the shared lifecycle ones.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Import an access key: a file path, `-` for standard input, or an https:// (or
    /// file://) URL; a running client picks it up at once
    Import {
        /// FILE, -, https://URL or file:///PATH
        source: String,
    },
    /// Show or import access keys (stored proofs of funding and the servicekey)
    Accesskeys {
        #[command(subcommand)]
        #[allow(missing_docs)]
        command: AccesskeysCommand,
    },
    /// Run scripts/NAME (or scripts/default/NAME) with WIRELEAP_SOCKS set; `exec list`
    /// shows the scripts
    Exec {
        /// Script name (curl, git, firefox, chromium, list, or one of yours)
        name: String,
        /// Arguments for the script
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print the running client's full status as JSON
    Info,
    /// Show config.json, one key of it (dotted, e.g. circuit.hops), or set a key; a running
    /// client reloads. `null` unsets; list keys take their elements as separate arguments
    /// (`config circuit.whitelist wireleap://a:1 wireleap://b:2`, `[]` for an empty list)
    Config {
        /// Dotted key, e.g. circuit.whitelist
        key: Option<String>,
        /// New value (JSON, or a plain string)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        values: Vec<String>,
    },
    /// Show the circuit in use, or drop it so the next connection builds a new one
    Circuit {
        /// Drop the current circuit
        #[arg(long)]
        reset: bool,
    },
    // A doc comment here would become clap help text; the flattened commands have their own.
    #[command(flatten)]
    #[allow(missing_docs)]
    Upgrade(wireleap_upgrade::UpgradeCommand),
}

/// `accesskeys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AccesskeysCommand {
    /// List the servicekey and the stored proofs of funding as JSON
    List,
    /// Same as `wireleap import`
    Import {
        /// FILE, -, https://URL or file:///PATH
        source: String,
    },
}

/// Runs a client subcommand.
pub async fn run(home: &Home, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Import { source }
        | Command::Accesskeys {
            command: AccesskeysCommand::Import { source },
        } => import(home, &source).await,
        Command::Accesskeys {
            command: AccesskeysCommand::List,
        } => {
            let list = accesskeys::list(home, servicekey::now())?;
            println!("{}", serde_json::to_string_pretty(&list)?);
            Ok(())
        }
        Command::Exec { name, args } => {
            let config = load_config(home)?;
            crate::exec::exec(home, &config.address_socks, &name, &args)
        }
        Command::Info => {
            let config = load_config(home)?;
            let body = api_call(&config, reqwest::Method::GET, "/api/status").await?;
            println!("{body}");
            Ok(())
        }
        Command::Config { key, values } => config_command(home, key.as_deref(), &values),
        Command::Circuit { reset } => {
            let config = load_config(home)?;
            let body = if reset {
                api_call(&config, reqwest::Method::POST, "/api/circuit/reset").await?
            } else {
                api_call(&config, reqwest::Method::GET, "/api/circuit").await?
            };
            println!("{body}");
            Ok(())
        }
        Command::Upgrade(cmd) => {
            wireleap_upgrade::daemon::command(
                home,
                &crate::component(),
                cmd,
                home.load_config::<ClientConfig>()
                    .map(|(c, _)| c.upgrade)
                    .map_err(anyhow::Error::from),
            )
            .await
        }
    }
}

/// `config [KEY [VALUE...]]`.
fn config_command(home: &Home, key: Option<&str>, values: &[String]) -> anyhow::Result<()> {
    let config = load_config(home)?;
    let mut tree = serde_json::to_value(&config)?;
    let Some(key) = key else {
        println!("{}", serde_json::to_string_pretty(&tree)?);
        return Ok(());
    };
    let path: Vec<&str> = key.split('.').collect();
    let slot = path
        .iter()
        .try_fold(&mut tree, |node, part| node.get_mut(*part))
        .ok_or_else(|| anyhow::anyhow!("no such config key {key:?} (see `wireleap config`)"))?;
    if values.is_empty() {
        match slot {
            serde_json::Value::String(s) => println!("{s}"),
            other => println!("{other}"),
        }
        return Ok(());
    }
    let is_list = slot.is_array() || key == "circuit.whitelist";
    *slot = parse_value(values, is_list)?;
    let new: ClientConfig = serde_json::from_value(tree)
        .map_err(|e| anyhow::anyhow!("invalid value for {key}: {e}"))?;
    let problems = wireleap_daemon::Config::validate(&new);
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::bail!("refusing the change: {}", text.join("; "));
    }
    let mut bytes = serde_json::to_vec_pretty(&new)?;
    bytes.push(b'\n');
    wireleap_daemon::write_atomic(&home.config_file(), &bytes, 0o644)?;
    println!(
        "{key} = {}",
        serde_json::to_value(&new)
            .ok()
            .and_then(|v| {
                path.iter()
                    .try_fold(v, |node, part| node.get(*part).cloned())
            })
            .unwrap_or_default()
    );
    if let Found::Running(pid) = control::inspect(home) {
        match wireleap_daemon::process::send(pid, nix::sys::signal::Signal::SIGUSR1) {
            Ok(()) => println!("told the running client (pid {pid}) to reload"),
            Err(e) => eprintln!(
                "warning: could not tell the running client to reload: {e}; run `wireleap reload`"
            ),
        }
    }
    Ok(())
}

/// A value from the command line: JSON when it parses (numbers, booleans, `null`, lists),
/// else a plain string; for list keys several arguments are the list's elements.
fn parse_value(values: &[String], is_list: bool) -> anyhow::Result<serde_json::Value> {
    let one = |v: &str| serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::from(v));
    match values {
        [single] => {
            let v = one(single);
            if is_list && !(v.is_array() || v.is_null()) {
                Ok(serde_json::Value::Array(vec![serde_json::Value::from(
                    single.as_str(),
                )]))
            } else {
                Ok(v)
            }
        }
        many if is_list => Ok(serde_json::Value::Array(
            many.iter()
                .map(|v| serde_json::Value::from(v.as_str()))
                .collect(),
        )),
        _ => anyhow::bail!("only list keys take more than one value"),
    }
}

fn load_config(home: &Home) -> anyhow::Result<ClientConfig> {
    Ok(home.load_config::<ClientConfig>()?.0)
}

async fn api_call(
    config: &ClientConfig,
    method: reqwest::Method,
    path: &str,
) -> anyhow::Result<String> {
    let url = format!("http://{}{path}", config.address);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let resp = http.request(method, &url).send().await.with_context(|| {
        format!("cannot reach the client's API at {url}: is it running? (`wireleap status`)")
    })?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        anyhow::bail!("{url}: HTTP {status}: {}", text.trim());
    }
    Ok(text)
}

async fn import(home: &Home, source: &str) -> anyhow::Result<()> {
    let source = accesskeys::parse_source(source)?;
    let bytes = accesskeys::read_source(&source).await?;
    let api = controller::api_client()?;
    let report = accesskeys::import(home, &bytes, &api, servicekey::now()).await?;
    print_report(&report);
    // A running client learns about the new pofs (and maybe its first contract) on reload.
    if let Found::Running(pid) = control::inspect(home) {
        match wireleap_daemon::process::send(pid, nix::sys::signal::Signal::SIGUSR1) {
            Ok(()) => println!("told the running client (pid {pid}) to reload"),
            Err(e) => eprintln!(
                "warning: could not tell the running client to reload: {e}; run `wireleap reload`"
            ),
        }
    }
    Ok(())
}

fn print_report(r: &ImportReport) {
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    for d in &r.duplicates {
        eprintln!(
            "warning: skipping duplicate access key (proof of funding {d} is already imported)"
        );
    }
    for d in &r.expired {
        eprintln!("warning: skipping expired proof of funding {d}");
    }
    for (d, why) in &r.invalid {
        eprintln!("warning: refusing proof of funding {d}: {why}");
    }
    println!(
        "imported {} proof(s) of funding for contract {} ({} duplicate, {} expired, {} invalid){}",
        r.imported,
        r.contract,
        r.duplicates.len(),
        r.expired.len(),
        r.invalid.len(),
        if r.contract_verified {
            ""
        } else {
            "; contract key not verified yet"
        }
    );
}

/// Runs `status` if that is the command on `args`; `None` for every other command line
/// (including invalid ones, which the shared parser then reports).
pub fn status_if_asked(args: impl IntoIterator<Item = std::ffi::OsString>) -> Option<ExitCode> {
    use clap::FromArgMatches as _;
    let matches = wireleap_daemon::cli::command::<crate::Client>()
        .try_get_matches_from(args)
        .ok()?;
    let cli = wireleap_daemon::cli::Cli::<Command>::from_arg_matches(&matches).ok()?;
    if !matches!(cli.command, wireleap_daemon::cli::Cmd::Status) {
        return None;
    }
    let dir = match cli.home {
        Some(d) => std::path::absolute(&d).unwrap_or(d),
        None => Home::default_dir().ok()?,
    };
    let home = Home::new(dir, <crate::Client as wireleap_daemon::Service>::NAME);
    if !home.dir().is_dir() {
        return None;
    }
    Some(status(&home))
}

/// `wireleap status`: the shared line, then what the running client reports (or what the
/// home directory says when it is not running). The exit status is the shared one.
pub fn status(home: &Home) -> ExitCode {
    let code = control::status(home);
    let config = home.load_config::<ClientConfig>().ok().map(|(c, _)| c);
    let running = matches!(control::inspect(home), Found::Running(_));
    let details = match (&config, running) {
        (Some(config), true) => fetch_status(config).map(|s| describe(&s)),
        _ => Ok(describe_offline(home, config.as_ref())),
    };
    match details {
        Ok(text) => print!("{text}"),
        Err(e) => println!("could not ask the running client for details: {e:#}"),
    }
    ExitCode::from(code)
}

fn fetch_status(config: &ClientConfig) -> anyhow::Result<StatusView> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let text = rt.block_on(api_call(config, reqwest::Method::GET, "/api/status"))?;
    Ok(serde_json::from_str(&text)?)
}

fn ago(now: i64, t: i64) -> String {
    let d = now - t;
    if d < 0 {
        format!("in {}", human(-d))
    } else {
        format!("{} ago", human(d))
    }
}

fn human(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The human-readable summary of a running client.
pub fn describe(s: &StatusView) -> String {
    let now = servicekey::now();
    let mut out = String::new();
    out.push_str(&format!("state: {}\n", s.state));
    out.push_str(&format!("socks: {}\n", s.socks));
    match &s.contract {
        Some(c) => out.push_str(&format!("contract: {} (key {})\n", c.endpoint, c.pubkey)),
        None => out.push_str("contract: none\n"),
    }
    if let Some(d) = &s.directory {
        let sync = if d.last_sync == 0 {
            "from relays.json, not synced yet".to_string()
        } else {
            format!("synced {}", ago(now, d.last_sync))
        };
        out.push_str(&format!(
            "relays: {} listed ({} fronting, {} entropic, {} backing), {} usable for {} hop(s); {sync}\n",
            d.relays, d.fronting, d.entropic, d.backing, d.usable, s.hops
        ));
    }
    if let Some(w) = &s.whitelist {
        out.push_str(&format!(
            "whitelist: {}\n",
            if w.is_empty() {
                "[] (no relay allowed)".to_string()
            } else {
                w.join(" ")
            }
        ));
    }
    if let Some(k) = &s.servicekey {
        match (k.state.as_str(), k.expiration) {
            ("active", Some(e)) => {
                out.push_str(&format!("servicekey: active, expires {}\n", ago(now, e)))
            }
            (state, _) => out.push_str(&format!("servicekey: {state}\n")),
        }
    }
    out.push_str(&format!(
        "proofs of funding: {} unused, {} expired\n",
        s.pofs.usable, s.pofs.expired
    ));
    match &s.circuit {
        Some(c) => {
            let hops: Vec<String> = c
                .hops
                .iter()
                .map(|h| format!("{} {}", h.role, h.address))
                .collect();
            out.push_str(&format!(
                "circuit: {} (since {})\n",
                hops.join(" -> "),
                ago(now, c.since)
            ));
        }
        None => out.push_str("circuit: none yet (built on the first connection)\n"),
    }
    if s.problems.is_empty() {
        out.push_str("problems: none\n");
    } else {
        out.push_str("problems:\n");
        for p in &s.problems {
            out.push_str(&format!("  - {p}\n"));
        }
    }
    out
}

/// What the home directory says about a client that is not running.
fn describe_offline(home: &Home, config: Option<&ClientConfig>) -> String {
    let mut problems = Vec::new();
    match config {
        None => problems.push(format!(
            "{} is missing or invalid: run `wireleap init` or `wireleap check-config`",
            home.config_file().display()
        )),
        Some(c) if c.contract.is_none() => {
            problems.push("no access key imported: run `wireleap import FILE`".to_string())
        }
        Some(_) => {}
    }
    let now = servicekey::now();
    let usable = files::read_pofs(home)
        .map(|p| p.iter().filter(|p| !p.is_expired(now)).count())
        .unwrap_or(0);
    let key_valid = files::read_servicekey(home)
        .ok()
        .flatten()
        .is_some_and(|k| !k.is_expired(now));
    if config.is_some_and(|c| c.contract.is_some()) && usable == 0 && !key_valid {
        problems.push(
            "no valid servicekey and no unused proofs of funding: import an access key".into(),
        );
    }
    let mut out = format!("proofs of funding: {usable} unused\n");
    for p in problems {
        out.push_str(&format!("  - {p}\n"));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn config_values() {
        let s = |v: &[&str], list| {
            parse_value(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>(), list).unwrap()
        };
        assert_eq!(s(&["3"], false), serde_json::json!(3));
        assert_eq!(s(&["null"], true), serde_json::Value::Null);
        assert_eq!(s(&["[]"], true), serde_json::json!([]));
        assert_eq!(
            s(&["wireleap://a:1"], true),
            serde_json::json!(["wireleap://a:1"])
        );
        assert_eq!(
            s(&["wireleap://a:1", "wireleap://b:2"], true),
            serde_json::json!(["wireleap://a:1", "wireleap://b:2"])
        );
        assert_eq!(
            s(&["http://c.example"], false),
            serde_json::json!("http://c.example")
        );
        assert!(parse_value(&["a".into(), "b".into()], false).is_err());
    }

    #[test]
    fn human_times() {
        assert_eq!(ago(100, 90), "10s ago");
        assert_eq!(ago(100, 700), "in 10m");
        assert_eq!(human(200_000), "2d");
    }
}
