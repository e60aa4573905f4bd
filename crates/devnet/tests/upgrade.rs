//! End-to-end: relays upgrading themselves in a whole devnet, real binaries on loopback.
//!
//! A new relay version (the same build stamped with the next version) is published to the
//! signed `default` channel and the directory's channel; all three relays upgrade while a
//! client load runs through the 3-hop circuit: no request fails and no relay leaves the
//! directory. Then a broken release (stamped to crash at start) is published: every relay
//! tries it, rolls back, skips it and reports it, and keeps serving the version it ran.
//! Then two releases that change the shared database schema: a breaking one is refused and
//! rolled back the same way; an expanding one is installed, and a relay rolled back from it
//! to the release before serves and restarts on the expanded database. Last, the same load measures a stop-then-start restart of one relay, the way the original
//! upgraded, for comparison (printed, not asserted: it is the baseline).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use wireleap_devnet::launch::listed_relays;
use wireleap_devnet::load::Load;
use wireleap_devnet::probe::http_get;
use wireleap_devnet::releases::{self, RELAY};
use wireleap_devnet::{Devnet, Options};
use wireleap_e2e as harness;

const WAIT: Duration = Duration::from_secs(120);

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_default()).unwrap_or(Value::Null)
}

/// Waits until `cond` holds, checking meanwhile that the directory lists all three relays
/// every time it is asked (a relay must never disappear from it during an upgrade).
fn wait_listed(net: &Devnet, what: &str, mut cond: impl FnMut() -> bool) {
    let dir = addr_of(&net.info.directory);
    let deadline = Instant::now() + WAIT;
    loop {
        let listed = listed_relays(dir).map(|r| r.len()).unwrap_or(0);
        assert_eq!(
            listed, 3,
            "a relay left the directory while waiting for {what}"
        );
        if cond() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the relay installed in `home` (`<home>/wireleap-relay --home <home> args`).
fn relay_cmd(home: &Path, args: &[&str], timeout: Duration) -> harness::Output {
    harness::run(
        Command::new(home.join(RELAY))
            .arg("--home")
            .arg(home)
            .args(args),
        timeout,
    )
    .unwrap()
}

/// How many relays reported `version` as failed in the directory's `/info`.
fn failures_reported(dir: SocketAddr, version: &str) -> Option<u64> {
    http_get(dir, "/info", Duration::from_secs(3))
        .ok()
        .and_then(|(_, b)| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["upgrade_failures"][version]["count"].as_u64())
}

#[test]
fn relays_upgrade_under_load_and_roll_back_a_broken_release() {
    let scratch = tempfile::tempdir().unwrap();
    let net = Devnet::launch(&Options {
        socks_port: Some(harness::free_port().unwrap()),
        ..Options::new(scratch.path().join("net"))
    })
    .expect("the devnet comes up");
    let socks: SocketAddr = net.info.client.socks.parse().unwrap();
    let contract = addr_of(&net.info.contract);
    let relay_build = harness::binary(RELAY).unwrap();
    let first = env!("CARGO_PKG_VERSION");
    assert_eq!(net.relay_versions(), [first, first, first]);
    let load = || Load::start(socks, "127.0.0.1", contract.port(), "/info", 2, 100_000);

    // 1. An upgrade under load.
    let l = load();
    assert!(l.settle(20, WAIT), "the load gets going");
    let next = releases::publish(&net.dir, &relay_build, false).unwrap();
    let want = next.version.to_string();
    wait_listed(&net, "every relay to run the new version", || {
        net.relay_versions().iter().all(|v| *v == want)
    });
    // Committed: files swapped, previous version kept for rollback, no journal left.
    wait_listed(&net, "every hand-over to commit", || {
        net.info.relays.iter().all(|r| {
            r.home.join(format!("{RELAY}.prev")).exists()
                && !r.home.join("upgrade-journal.json").exists()
        })
    });
    assert!(l.settle(20, WAIT), "the load goes on after the upgrade");
    let upgrade = l.stop();
    println!("relay upgrade (3 relays, one after another) under load: {upgrade}");
    assert_eq!(upgrade.failed, 0, "{upgrade}; errors: {:?}", upgrade.errors);
    let dir = addr_of(&net.info.directory);
    for r in listed_relays(dir).unwrap() {
        assert_eq!(r["versions"]["software"], want.as_str(), "{r}");
    }
    for r in &net.info.relays {
        let cfg = read_json(&r.home.join("config.json"));
        assert!(cfg["upgrade"]["releases"].is_string(), "{cfg}");
        let pid = harness::read_pid_file(&r.home.join(format!("{RELAY}.pid"))).unwrap();
        assert!(harness::pid_alive(pid));
    }

    // 2. A broken release: tried, rolled back, skipped, reported; the old version serves on.
    let l = load();
    assert!(l.settle(10, WAIT));
    let broken = releases::publish(&net.dir, &relay_build, true).unwrap();
    let bad = broken.version.to_string();
    wait_listed(&net, "three failure reports for the broken release", || {
        failures_reported(dir, &bad) == Some(3)
    });
    assert!(l.settle(20, WAIT), "the load goes on after the rollbacks");
    let rollback = l.stop();
    println!("broken release rolled back on 3 relays under load: {rollback}");
    assert_eq!(
        rollback.failed, 0,
        "{rollback}; errors: {:?}",
        rollback.errors
    );
    assert_eq!(
        net.relay_versions(),
        [want.as_str(), want.as_str(), want.as_str()]
    );
    for r in &net.info.relays {
        let state = read_json(&r.home.join("upgrade-state.json"));
        assert!(
            state["failures"][bad.as_str()].is_object(),
            "the broken version is recorded and skipped: {state}"
        );
        let pid = harness::read_pid_file(&r.home.join(format!("{RELAY}.pid")))
            .expect("the pid file names the process that serves");
        assert!(harness::pid_alive(pid));
        assert!(!r.home.join(format!("{RELAY}.next")).exists());
        let skip =
            std::fs::read_to_string(r.home.join(".skip-upgrade-version")).unwrap_or_default();
        assert!(
            skip.contains(&bad),
            "the original's skip file names {bad}: {skip:?}"
        );
    }
    // The directory keeps offering the broken version, but the relays do not retry it.
    std::thread::sleep(Duration::from_secs(12));
    let state = read_json(&net.info.relays[0].home.join("upgrade-state.json"));
    assert_eq!(
        state["failures"][bad.as_str()]["attempts"]
            .as_u64()
            .unwrap_or(1),
        1,
        "{state}"
    );

    // 3. Releases that change the database schema, which both processes of a hand-over
    // share. A breaking change is refused by the new process before it touches the
    // database: rolled back, skipped, reported, the old version serves on.
    let breaking = releases::publish_with(&net.dir, &relay_build, Some("schema-breaking"))
        .unwrap()
        .version
        .to_string();
    wait_listed(
        &net,
        "three failure reports for the breaking release",
        || failures_reported(dir, &breaking) == Some(3),
    );
    assert_eq!(
        net.relay_versions(),
        [want.as_str(), want.as_str(), want.as_str()]
    );
    let reason = read_json(&net.info.relays[0].home.join("upgrade-state.json"));
    assert!(
        reason["failures"][breaking.as_str()].is_object(),
        "recorded: {reason}"
    );
    // An expanding change is installed...
    let expand = releases::publish_with(&net.dir, &relay_build, Some("schema-expand"))
        .unwrap()
        .version
        .to_string();
    wait_listed(&net, "every relay to run the expanding release", || {
        net.relay_versions().iter().all(|v| *v == expand)
    });
    wait_listed(&net, "every expanding hand-over to commit", || {
        net.info
            .relays
            .iter()
            .all(|r| !r.home.join("upgrade-journal.json").exists())
    });
    // ...and rolling the backing relay back to the release before it (which does not know
    // the new schema version) hands over to it, and it starts again after a restart.
    let backing = &net.info.relays[2];
    let out = relay_cmd(
        &backing.home,
        &["rollback", "--yes"],
        Duration::from_secs(120),
    );
    assert_eq!(out.code(), Some(0), "rollback: {out}");
    wait_listed(
        &net,
        "the backing relay to run the previous release",
        || net.relay_versions()[2] == want,
    );
    for cmd in ["stop", "start"] {
        let out = relay_cmd(&backing.home, &[cmd], Duration::from_secs(60));
        assert_eq!(out.code(), Some(0), "{cmd} after the rollback: {out}");
    }
    wait_listed(&net, "the restarted backing relay to serve", || {
        net.relay_versions()[2] == want
    });
    let l = load();
    assert!(
        l.settle(10, WAIT),
        "the circuit works through the rolled-back relay"
    );
    let after = l.stop();
    assert_eq!(after.failed, 0, "{after}; errors: {:?}", after.errors);

    // 4. The baseline: the original's way, stop then start, on the fronting relay.
    let fronting = &net.info.relays[0];
    let l = load();
    assert!(l.settle(20, WAIT));
    for cmd in ["stop", "start"] {
        let out = relay_cmd(&fronting.home, &[cmd], Duration::from_secs(60));
        assert_eq!(out.code(), Some(0), "{cmd}: {out}");
    }
    assert!(l.settle(20, WAIT), "the load recovers after the restart");
    let restart = l.stop();
    println!("stop-then-start of one relay under the same load: {restart}");
    println!(
        "summary: hand-over upgrade of 3 relays: {} failed, longest gap {} ms; \
         stop-then-start of 1 relay: {} failed, longest gap {} ms",
        upgrade.failed,
        upgrade.longest_gap.as_millis(),
        restart.failed,
        restart.longest_gap.as_millis()
    );
}
