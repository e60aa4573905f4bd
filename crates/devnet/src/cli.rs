//! The `wireleap-devnet` command line.

use crate::launch::{Devnet, Options};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Runs a whole Wireleap network on loopback: contract, directory, auth with ps-dummy, three
/// relays (fronting, entropic, backing) and the client's SOCKS port. Ctrl-C stops it all.
#[derive(Debug, Parser)]
#[command(name = "wireleap-devnet", version)]
pub struct Cli {
    /// Directory for every daemon's home, logs and devnet.json (created; must not hold a
    /// running devnet).
    #[arg(long, default_value = "wireleap-devnet")]
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
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(&cli),
        Some(Cmd::Status) => status(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wireleap-devnet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let opts = Options {
        dir: cli.dir.clone(),
        socks_port: cli.socks_port,
        verbose: !cli.quiet,
    };
    let net = Devnet::launch(&opts)?;
    print_summary(&net);
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = tick.tick() => {
                    let line = tokio::task::block_in_place(|| net.status_line());
                    eprint!("\r\x1b[2K{line}");
                }
            }
        }
        eprintln!("\nstopping the devnet");
        anyhow::Ok(())
    })?;
    drop(net);
    Ok(())
}

fn print_summary(net: &Devnet) {
    let i = &net.info;
    println!("\nThe Wireleap devnet is up ({}):", net.dir.display());
    println!("  contract   {}", i.contract);
    println!("  directory  {}", i.directory);
    println!("  auth       {}", i.auth);
    println!("  ps-dummy   {}", i.ps_dummy);
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
        "Everything is described in {}/devnet.json. Ctrl-C stops the network.\n",
        net.dir.display()
    );
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
