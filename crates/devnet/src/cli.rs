//! The `wireleap-devnet` command line.

use crate::launch::{Devnet, Options};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs a whole Wireleap network on loopback: contract, directory, auth with ps-dummy, three
/// relays (fronting, entropic, backing) and the client's SOCKS port. Ctrl-C stops it all.
#[derive(Debug, Parser)]
#[command(name = "wireleap-devnet", version)]
pub struct Cli {
    /// Directory for every daemon's home, logs and devnet.json (created; must not hold a
    /// running devnet).
    #[arg(long, global = true, default_value = "wireleap-devnet")]
    pub dir: PathBuf,
    /// Port of the client's SOCKS listener (default 13491 when free, else any free port).
    #[arg(long)]
    pub socks_port: Option<u16>,
    /// Print only errors and the final summary.
    #[arg(long)]
    pub quiet: bool,
    /// What to do (default: run the network until Ctrl-C).
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Print the relays the directory of a running devnet lists.
    Status,
    /// Start a devnet in --dir, measure throughput and time to first byte through 3 and 1
    /// relays against direct loopback, and a relay upgrade against a stop-then-start restart
    /// under load; print the figures and stop
    Bench {
        /// MiB per throughput run
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// Throughput runs per case (the best counts)
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Time-to-first-byte samples per case (the median counts)
        #[arg(long, default_value_t = 20)]
        samples: u32,
        /// Skip the upgrade and restart measurements
        #[arg(long)]
        no_upgrade: bool,
    },
    /// Release the next relay version (a stamped copy of the running build) on the running
    /// devnet's signed "default" channel and point the directory's channel at it: the relays
    /// upgrade themselves without dropping a connection (watch the status line)
    Publish {
        /// Publish a build that crashes at start instead: the relays try it, roll back,
        /// skip it and report it to the directory, and keep serving the old version
        #[arg(long)]
        broken: bool,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(&cli),
        Some(Cmd::Status) => status(&cli),
        Some(Cmd::Publish { broken }) => publish(&cli, broken),
        Some(Cmd::Bench {
            mib,
            rounds,
            samples,
            no_upgrade,
        }) => bench(
            &cli,
            &crate::bench::BenchOptions {
                mib,
                rounds,
                samples,
                upgrade: !no_upgrade,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wireleap-devnet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Catches SIGINT and SIGTERM from here on (they no longer end the process by themselves)
/// and raises the returned flag instead; the runtime must live as long as the flag is used.
fn catch_stop_signals(rt: &tokio::runtime::Runtime) -> anyhow::Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let flag = Arc::new(AtomicBool::new(false));
    let _guard = rt.enter();
    for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
        let mut stream = signal(kind)?;
        let flag = flag.clone();
        rt.spawn(async move {
            while stream.recv().await.is_some() {
                flag.store(true, Ordering::SeqCst);
            }
        });
    }
    Ok(flag)
}

fn signal_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let rt = signal_runtime()?;
    // Before the first daemon starts: a Ctrl-C during start-up stops what is already up.
    let stop = catch_stop_signals(&rt)?;
    let opts = Options {
        socks_port: cli.socks_port,
        verbose: !cli.quiet,
        interrupt: Some(stop.clone()),
        ..Options::new(&cli.dir)
    };
    let net = Devnet::launch(&opts)?;
    print_summary(&net);
    let mut last_status = Instant::now() - STATUS_EVERY;
    while !stop.load(Ordering::SeqCst) {
        if last_status.elapsed() >= STATUS_EVERY {
            eprint!("\r\x1b[2K{}", net.status_line());
            last_status = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("\nstopping the devnet");
    drop(net);
    Ok(())
}

/// How often the live status line is redrawn.
const STATUS_EVERY: Duration = Duration::from_secs(2);

fn print_summary(net: &Devnet) {
    let i = &net.info;
    println!("\nThe Wireleap devnet is up ({}):", net.dir.display());
    println!("  contract   {}", i.contract);
    println!("  directory  {}", i.directory);
    println!("  auth       {}", i.auth);
    println!("  ps-dummy   {}", i.ps_dummy);
    if let Some(r) = &i.releases {
        println!("  releases   {r}  (signed; channel \"default\")");
    }
    for r in &i.relays {
        println!(
            "  relay      {:<9} {}  (status {})",
            r.role, r.address, r.api
        );
    }
    println!(
        "  client     SOCKS5 on {}  (home {})",
        i.client.socks,
        i.client.home.display()
    );
    println!("\nTry it:");
    println!(
        "  curl --socks5-hostname {} {}/info",
        i.client.socks, i.contract
    );
    println!(
        "An access key not yet imported: {} (wireleap --home DIR import - < FILE)",
        i.accesskeys.display()
    );
    println!(
        "Watch the relays upgrade themselves: wireleap-devnet publish --dir {} [--broken]",
        net.dir.display()
    );
    println!(
        "Everything is described in {}/devnet.json. Ctrl-C stops the network.\n",
        net.dir.display()
    );
}

fn bench(cli: &Cli, opts: &crate::bench::BenchOptions) -> anyhow::Result<()> {
    let rt = signal_runtime()?;
    let stop = catch_stop_signals(&rt)?;
    let net = Devnet::launch(&Options {
        socks_port: cli.socks_port,
        verbose: !cli.quiet,
        interrupt: Some(stop),
        ..Options::new(&cli.dir)
    })?;
    let quiet = cli.quiet;
    let say = move |m: &str| {
        if !quiet {
            eprintln!("bench: {m}");
        }
    };
    let figures = crate::bench::run(&net, opts, &say)?;
    println!(
        "\nwireleap devnet figures ({} MiB per run, best of {}; TTFB median of {}):",
        opts.mib, opts.rounds, opts.samples
    );
    crate::bench::print(&figures);
    drop(net);
    Ok(())
}

fn publish(cli: &Cli, broken: bool) -> anyhow::Result<()> {
    if !cli.dir.join("devnet.json").exists() {
        anyhow::bail!(
            "no running devnet in {} (devnet.json is missing)",
            cli.dir.display()
        );
    }
    let relay = wireleap_e2e::binary(crate::releases::RELAY)?;
    let p = crate::releases::publish(&cli.dir, &relay, broken)?;
    if p.broken {
        println!(
            "published wireleap-relay {} (broken: it exits at start) on channel \"default\"; \
             relays will try it within a heartbeat, roll back and skip it",
            p.version
        );
    } else {
        println!(
            "published wireleap-relay {} on channel \"default\"; relays upgrade within a \
             heartbeat or two (see the devnet's status line or `wireleap-devnet status`)",
            p.version
        );
    }
    Ok(())
}

fn status(cli: &Cli) -> anyhow::Result<()> {
    let text = std::fs::read(cli.dir.join("devnet.json"))
        .map_err(|e| anyhow::anyhow!("no running devnet in {}: {e}", cli.dir.display()))?;
    let info: serde_json::Value = serde_json::from_slice(&text)?;
    let dir = info["directory"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("http://")
        .parse()?;
    for r in crate::launch::listed_relays(dir)? {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
