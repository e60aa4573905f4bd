//! `wireleap-devnet bench`: the user-facing figures measured on a whole devnet of real
//! processes, each against its baseline in the same run, so anyone can reproduce them with
//! one command.
//!
//! - Throughput of one stream through the SOCKS port over 3 and 1 relays (real relay
//!   binaries, sharetokens checked and stored) vs a direct loopback TCP read of the same
//!   bytes: best of `rounds`.
//! - Time to first byte: from the SOCKS connect to the first echoed byte over 3 and 1 hops
//!   vs a direct connect, median of `samples`; the time each hop adds is read off.
//! - A relay upgrade under load vs a stop-then-start restart of one relay under the same
//!   load: failed requests and the longest gap in service.
//!
//! The in-process relay and client benches (`cargo bench -p wireleap-relay -p wireleap`)
//! measure the data path without process and SOCKS overhead, and memory per idle stream.

use crate::launch::Devnet;
use crate::load::{Load, LoadReport};
use anyhow::{bail, Context as _, Result};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use wireleap_e2e as harness;

/// Bench settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// MiB per throughput run.
    pub mib: u64,
    /// Throughput runs per case (the best counts).
    pub rounds: u32,
    /// Time-to-first-byte samples per case (the median counts).
    pub samples: u32,
    /// Also measure an upgrade and a stop-then-start restart under load.
    pub upgrade: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            mib: 64,
            rounds: 3,
            samples: 20,
            upgrade: true,
        }
    }
}

const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `bytes` to every connection, then closes it; the first byte read from a
/// connection that sends one is echoed instead (time to first byte).
struct Source {
    addr: SocketAddr,
}

impl Source {
    fn start(bytes: usize) -> Result<Source> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        let chunk = vec![0x5au8; 64 << 10];
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut s) = conn else { continue };
                let chunk = chunk.clone();
                std::thread::spawn(move || {
                    let _ = s.set_nodelay(true);
                    let mut mode = [0u8; 1];
                    if s.read_exact(&mut mode).is_err() {
                        return;
                    }
                    if mode[0] == b'e' {
                        let _ = s.write_all(b"e");
                        return;
                    }
                    let mut left = bytes;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        if s.write_all(&chunk[..n]).is_err() {
                            return;
                        }
                        left -= n;
                    }
                });
            }
        });
        Ok(Source { addr })
    }
}

/// How to reach the source: directly or through the SOCKS port.
#[derive(Debug, Clone, Copy)]
enum Route {
    Direct,
    Socks(SocketAddr),
}

fn connect(path: Route, to: SocketAddr) -> Result<TcpStream> {
    match path {
        Route::Direct => {
            let s = TcpStream::connect_timeout(&to, IO_TIMEOUT)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Route::Socks(socks) => {
            crate::probe::socks_connect(socks, &to.ip().to_string(), to.port(), IO_TIMEOUT)
        }
    }
}

/// Bytes per second of one download of `bytes`.
fn download(path: Route, to: SocketAddr, bytes: usize) -> Result<f64> {
    let start = Instant::now();
    let mut s = connect(path, to)?;
    s.write_all(b"d")?;
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0usize;
    loop {
        let n = s.read(&mut buf).context("reading the download")?;
        if n == 0 {
            break;
        }
        got += n;
    }
    if got != bytes {
        bail!("downloaded {got} bytes, expected {bytes}");
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64())
}

/// Median time from connect to the first echoed byte.
fn ttfb(path: Route, to: SocketAddr, samples: u32) -> Result<Duration> {
    let mut times = Vec::new();
    for _ in 0..samples {
        let start = Instant::now();
        let mut s = connect(path, to)?;
        s.write_all(b"e")?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).context("reading the echo")?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn client_cmd(net: &Devnet, args: &[&str]) -> Result<String> {
    let out = harness::run(
        Command::new(harness::binary("wireleap")?)
            .arg("--home")
            .arg(&net.info.client.home)
            .args(args),
        Duration::from_secs(30),
    )?;
    if out.code() != Some(0) {
        bail!("wireleap {}: {}", args.join(" "), out.all());
    }
    Ok(out.stdout)
}

/// Switches the running client to `hops` and waits until a new circuit has that many.
fn use_hops(net: &Devnet, hops: u32, source: SocketAddr) -> Result<()> {
    client_cmd(net, &["config", "circuit.hops", &hops.to_string()])?;
    let socks: SocketAddr = net.info.client.socks.parse()?;
    harness::wait_until(
        Duration::from_secs(30),
        &format!("a {hops}-hop circuit"),
        || {
            let _ = client_cmd(net, &["circuit", "--reset"]);
            let _ = ttfb(Route::Socks(socks), source, 1);
            client_cmd(net, &["circuit"])
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["hops"].as_array().map(Vec::len))
                == Some(hops as usize)
        },
    )
}

/// One line of the result table.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What was measured.
    pub what: String,
    /// The value, formatted.
    pub value: String,
    /// Compared with the baseline, formatted.
    pub versus: String,
}

fn mib_s(bps: f64) -> String {
    format!("{:.1} MiB/s", bps / f64::from(1u32 << 20))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Runs every measurement on a running devnet and returns the figures.
pub fn run(net: &Devnet, opts: &BenchOptions, say: &dyn Fn(&str)) -> Result<Vec<Figure>> {
    let bytes = usize::try_from(opts.mib << 20).context("--mib too large")?;
    let source = Source::start(bytes)?;
    let socks = Route::Socks(net.info.client.socks.parse()?);
    let mut figures = Vec::new();

    say("throughput and time to first byte, direct (baseline)");
    let best = |path: Route| -> Result<f64> {
        let mut best = 0f64;
        for _ in 0..opts.rounds.max(1) {
            net.check_interrupt()?;
            best = best.max(download(path, source.addr, bytes)?);
        }
        Ok(best)
    };
    let direct = best(Route::Direct)?;
    let direct_ttfb = ttfb(Route::Direct, source.addr, opts.samples.max(1))?;
    figures.push(Figure {
        what: "throughput, direct loopback TCP".into(),
        value: mib_s(direct),
        versus: "baseline".into(),
    });
    figures.push(Figure {
        what: "time to first byte, direct".into(),
        value: ms(direct_ttfb),
        versus: "baseline".into(),
    });
    let mut per_hop = Vec::new();
    for hops in [3u32, 1] {
        net.check_interrupt()?;
        say(&format!(
            "throughput and time to first byte through {hops} hop(s)"
        ));
        use_hops(net, hops, source.addr)?;
        let t = best(socks)?;
        let f = ttfb(socks, source.addr, opts.samples.max(1))?;
        figures.push(Figure {
            what: format!("throughput, SOCKS through {hops} relay(s)"),
            value: mib_s(t),
            versus: format!("{:.0} % of direct", 100.0 * t / direct),
        });
        figures.push(Figure {
            what: format!("time to first byte, {hops} hop(s)"),
            value: ms(f),
            versus: format!("+{} vs direct", ms(f.saturating_sub(direct_ttfb))),
        });
        per_hop.push((hops, f));
    }
    if let [(3, three), (1, one)] = per_hop[..] {
        figures.push(Figure {
            what: "time to first byte added per extra hop".into(),
            value: ms(three.saturating_sub(one) / 2),
            versus: "(3 hops - 1 hop) / 2".into(),
        });
    }
    use_hops(net, 3, source.addr)?;

    if opts.upgrade {
        net.check_interrupt()?;
        say("a relay upgrade (all three relays) under load");
        let contract: SocketAddr = net.info.contract.trim_start_matches("http://").parse()?;
        let socks_addr: SocketAddr = net.info.client.socks.parse()?;
        let load = || {
            Load::start(
                socks_addr,
                "127.0.0.1",
                contract.port(),
                "/info",
                2,
                1_000_000,
            )
        };
        let relay_build = harness::binary(crate::releases::RELAY)?;
        let l = load();
        l.settle(20, Duration::from_secs(60));
        let published = crate::releases::publish(&net.dir, &relay_build, false)?;
        let want = published.version.to_string();
        let homes: Vec<&Path> = net.info.relays.iter().map(|r| r.home.as_path()).collect();
        harness::wait_until(Duration::from_secs(180), "the relays to upgrade", || {
            net.interrupted()
                || homes.iter().all(|h| {
                    h.join(format!("{}.prev", crate::releases::RELAY)).exists()
                        && !h.join("upgrade-journal.json").exists()
                }) && net.relay_versions().iter().all(|v| *v == want)
        })?;
        net.check_interrupt()?;
        l.settle(20, Duration::from_secs(60));
        let up = l.stop();
        say("stop-then-start of one relay under the same load (the original's way)");
        let l = load();
        l.settle(20, Duration::from_secs(60));
        let fronting = &net.info.relays[0].home;
        for cmd in ["stop", "start"] {
            net.check_interrupt()?;
            let out = harness::run(
                Command::new(fronting.join(crate::releases::RELAY))
                    .arg("--home")
                    .arg(fronting)
                    .arg(cmd)
                    // Out of the terminal's process group, as the launcher's commands.
                    .process_group(0),
                Duration::from_secs(60),
            )?;
            if out.code() != Some(0) {
                bail!("wireleap-relay {cmd}: {}", out.all());
            }
        }
        l.settle(20, Duration::from_secs(60));
        let restart = l.stop();
        let line = |r: &LoadReport| {
            format!(
                "{} failed of {}, longest gap {} ms",
                r.failed,
                r.ok + r.failed,
                r.longest_gap.as_millis()
            )
        };
        figures.push(Figure {
            what: "stop-then-start of 1 relay under load".into(),
            value: line(&restart),
            versus: "baseline".into(),
        });
        figures.push(Figure {
            what: format!("zero-downtime upgrade of 3 relays to {want} under load"),
            value: line(&up),
            versus: format!(
                "gap {:.2}x the restart's",
                up.longest_gap.as_secs_f64() / restart.longest_gap.as_secs_f64().max(1e-9)
            ),
        });
    }
    Ok(figures)
}

/// Prints the figures as a table.
pub fn print(figures: &[Figure]) {
    let w = figures.iter().map(|f| f.what.len()).max().unwrap_or(0);
    let v = figures.iter().map(|f| f.value.len()).max().unwrap_or(0);
    for f in figures {
        println!("{:<w$}  {:>v$}  {}", f.what, f.value, f.versus);
    }
}
