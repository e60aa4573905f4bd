//! Service during an upgrade under load: the zero-downtime hand-over versus the original's
//! stop-then-start, measured the same way in the same run (a client making back-to-back
//! requests on fresh connections; failed requests and the longest gap between two successful
//! replies). Run: `cargo bench -p wireleap-upgrade --bench handover` (or, quicker to build,
//! `cargo test -p wireleap-upgrade --bench handover`). Set `HANDOVER_RUNS` to repeat.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{settle, Load, LoadReport, Node, Repo};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn handover(repo: &Repo, v1: &std::path::Path) -> anyhow::Result<(LoadReport, Duration)> {
    let mut node = Node::new(repo, v1, serde_json::json!({"watch_window": "1s"}))?;
    node.start()?;
    let load = Load::start(node.addr()?);
    settle(&load, 100)?;
    let t = Instant::now();
    let out = node.cmd(&["upgrade", "--yes"])?;
    anyhow::ensure!(out.code() == Some(0), "upgrade failed: {out}");
    node.wait_version("0.2.0", WAIT)?;
    let took = t.elapsed();
    settle(&load, 100)?;
    Ok((load.stop(), took))
}

fn stop_then_start(repo: &Repo, v1: &std::path::Path) -> anyhow::Result<(LoadReport, Duration)> {
    let mut node = Node::new(repo, v1, serde_json::json!({}))?;
    node.start()?;
    let load = Load::start(node.addr()?);
    settle(&load, 100)?;
    // The download happens before the swap in both procedures: put the release in quarantine
    // (the upgrade verifies it there and does not fetch it again), so only the swap counts.
    let quarantine = node.file("quarantine");
    std::fs::create_dir_all(&quarantine)?;
    std::fs::copy(
        repo.binary_path("0.2.0"),
        quarantine.join("upgrade-testd-0.2.0"),
    )?;
    let t = Instant::now();
    let out = node.cmd(&["stop"])?;
    anyhow::ensure!(out.code() == Some(0), "stop failed: {out}");
    let out = node.cmd(&["upgrade", "--yes"])?;
    anyhow::ensure!(out.code() == Some(0), "offline upgrade failed: {out}");
    // The address must stay the same for the client: pin the port the old process had.
    let addr = node.addr()?;
    let mut cfg = node.config()?;
    cfg["address"] = serde_json::json!(addr.to_string());
    node.write_config(cfg)?;
    node.start()?;
    node.wait_version("0.2.0", WAIT)?;
    let took = t.elapsed();
    settle(&load, 100)?;
    Ok((load.stop(), took))
}

fn main() -> anyhow::Result<()> {
    // Cargo passes `--bench`; nothing else to parse.
    let runs: usize = std::env::var("HANDOVER_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let repo = Repo::new()?;
    repo.publish_ok("0.2.0", "ok")?;
    let v1 = repo.stamped("0.1.0", "ok")?;
    let mut rows = Vec::new();
    for i in 0..runs {
        let (h, ht) = handover(&repo, &v1)?;
        println!(
            "run {i} hand-over:       {h} (upgrade took {:.2} s)",
            ht.as_secs_f64()
        );
        let (s, st) = stop_then_start(&repo, &v1)?;
        println!(
            "run {i} stop-then-start: {s} (upgrade took {:.2} s)",
            st.as_secs_f64()
        );
        rows.push((h, s));
    }
    let worst = |f: &dyn Fn(&(LoadReport, LoadReport)) -> &LoadReport| {
        let failed: usize = rows.iter().map(|r| f(r).failed).sum();
        let ok: usize = rows.iter().map(|r| f(r).ok).sum();
        let gap = rows
            .iter()
            .map(|r| f(r).longest_gap)
            .max()
            .unwrap_or_default();
        (ok, failed, gap)
    };
    let (hok, hf, hg) = worst(&|r| &r.0);
    let (sok, sf, sg) = worst(&|r| &r.1);
    println!();
    println!("scenario          runs  requests ok  failed  longest gap (worst run)");
    println!(
        "hand-over         {runs:>4}  {hok:>11}  {hf:>6}  {:>8.1} ms",
        hg.as_secs_f64() * 1000.0
    );
    println!(
        "stop-then-start   {runs:>4}  {sok:>11}  {sf:>6}  {:>8.1} ms",
        sg.as_secs_f64() * 1000.0
    );
    if hg > Duration::ZERO {
        println!(
            "longest gap ratio stop-then-start / hand-over: {:.0}x",
            sg.as_secs_f64() / hg.as_secs_f64()
        );
    }
    Ok(())
}
