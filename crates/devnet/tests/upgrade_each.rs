//! Manual `upgrade` and `rollback` of every component, with the real binaries: each is
//! installed as a copy in a scratch home, a copy of the same build stamped 0.2.0 is released
//! into a signed repository served on 127.0.0.1, and `upgrade --yes` (which shows the signed
//! changelog) then `rollback --yes` are run twice: with the daemon stopped (files swapped in
//! place) and, for the daemons that serve on their own, with it running (a hand-over to a
//! new process over the inherited listener, then back).
//!
//! The relay's running hand-over needs a directory to enroll with; it is covered by the
//! devnet test (tests/upgrade.rs), so here the relay is upgraded while stopped only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use wireleap_devnet::releases::{stamp, Releases};
use wireleap_e2e::{self as harness, DaemonGuard};

const CMD: Duration = Duration::from_secs(120);

struct Installed {
    // Dropped first: stops whatever the pid file names.
    _guard: DaemonGuard,
    home: tempfile::TempDir,
    name: &'static str,
}

impl Installed {
    fn bin(&self) -> PathBuf {
        self.home.path().join(self.name)
    }

    fn cmd(&self, args: &[&str]) -> harness::Output {
        harness::run(
            Command::new(self.bin())
                .arg("--home")
                .arg(self.home.path())
                .args(args),
            CMD,
        )
        .unwrap()
    }

    fn ok(&self, args: &[&str]) -> harness::Output {
        let out = self.cmd(args);
        assert_eq!(
            out.code(),
            Some(0),
            "{} {args:?}: {out}\nlog:\n{}",
            self.name,
            self.log()
        );
        out
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join(format!("{}.log", self.name)))
            .unwrap_or_default()
    }

    /// The version the installed binary file reports.
    fn file_version(&self) -> String {
        let out = self.ok(&["version", "--json"]);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        v["software"].as_str().unwrap_or_default().to_string()
    }

    fn pid(&self) -> Option<i32> {
        harness::read_pid_file(&self.home.path().join(format!("{}.pid", self.name)))
    }
}

fn install(name: &'static str, config: Value, releases: &Releases) -> Installed {
    let home = tempfile::Builder::new()
        .prefix("ue")
        .tempdir_in("/tmp")
        .unwrap();
    let guard = DaemonGuard::new(home.path().join(format!("{name}.pid")));
    let node = Installed {
        _guard: guard,
        home,
        name,
    };
    std::fs::copy(harness::binary(name).unwrap(), node.bin()).unwrap();
    node.ok(&["init"]);
    let mut config = config;
    config["upgrade"] = json!({
        "releases": releases.url,
        "release_keys": [releases.pubkey],
        "ready_timeout": "20s",
        "watch_window": "2s",
    });
    std::fs::write(
        node.home.path().join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
    for (file, text) in [
        ("stripe-secret-key", "sk_test_upgrade\n"),
        ("stripe-webhook-secret", "whsec_upgrade\n"),
    ] {
        if name == "wireleap-ps-stripe" {
            std::fs::write(node.home.path().join(file), text).unwrap();
        }
    }
    node
}

fn upgrade_and_roll_back(name: &'static str, config: fn(SocketAddr) -> Value, running: bool) {
    let scratch = tempfile::tempdir().unwrap();
    let releases = Releases::serve(scratch.path()).unwrap();
    let current = env!("CARGO_PKG_VERSION");
    let next = semver::Version::new(0, 2, 0);
    let stamped = scratch.path().join(format!("{name}-{next}"));
    stamp(
        &harness::binary(name).unwrap(),
        &stamped,
        &[format!("version={next}")],
    )
    .unwrap();
    let notes = format!("upgrade test release of {name}");
    releases
        .paths
        .release_component(name, &stamped, &next, &notes, "test")
        .unwrap();

    let addr = harness::free_addr().unwrap();
    let node = install(name, config(addr), &releases);
    assert_eq!(node.file_version(), current);
    let mut pid = None;
    if running {
        node.ok(&["start"]);
        pid = node.pid();
        assert!(pid.is_some());
    }

    let up = node.ok(&["upgrade", "--yes"]);
    assert!(up.stdout.contains(&notes), "the changelog is shown: {up}");
    assert_eq!(node.file_version(), next.to_string(), "{}", node.log());
    assert!(node.home.path().join(format!("{name}.prev")).exists());
    if let Some(old) = pid {
        // A new process serves on the same address; the old one is gone.
        let new = harness::wait_for(Duration::from_secs(60), "the new process", || {
            node.pid().filter(|p| *p != old && harness::pid_alive(*p))
        })
        .unwrap();
        harness::wait_until(Duration::from_secs(60), "the old process to exit", || {
            !harness::pid_alive(old)
        })
        .unwrap();
        assert!(
            harness::tcp_connects(addr),
            "{name} listens after the upgrade"
        );
        let st = node.ok(&["status"]);
        assert!(st.stdout.contains(&format!("running, pid {new}")), "{st}");
        pid = Some(new);
    }

    let down = node.ok(&["rollback", "--yes"]);
    assert_eq!(node.file_version(), current, "{down}\n{}", node.log());
    if let Some(old) = pid {
        harness::wait_for(Duration::from_secs(60), "the rolled-back process", || {
            node.pid().filter(|p| *p != old && harness::pid_alive(*p))
        })
        .unwrap();
        assert!(
            harness::tcp_connects(addr),
            "{name} listens after the rollback"
        );
        node.ok(&["stop"]);
    }
    let status = node.ok(&["upgrade-status"]);
    assert!(status.stdout.contains("0.2.0"), "{status}");
}

fn listen_only(addr: SocketAddr) -> Value {
    json!({ "address": addr.to_string() })
}

fn relay(addr: SocketAddr) -> Value {
    json!({
        "address": addr.to_string(),
        "contracts": {"https://contract.invalid": {"address": format!("wireleap://{addr}"), "role": "backing"}},
    })
}

fn client(addr: SocketAddr) -> Value {
    json!({ "address": addr.to_string(), "broker": {"address": addr.to_string()} })
}

#[test]
fn relay_upgrades_and_rolls_back_while_stopped() {
    upgrade_and_roll_back("wireleap-relay", relay, false);
}

#[test]
fn directory_upgrades_and_rolls_back() {
    upgrade_and_roll_back("wireleap-dir", listen_only, false);
    upgrade_and_roll_back("wireleap-dir", listen_only, true);
}

#[test]
fn contract_upgrades_and_rolls_back() {
    upgrade_and_roll_back("wireleap-contract", listen_only, false);
    upgrade_and_roll_back("wireleap-contract", listen_only, true);
}

#[test]
fn auth_upgrades_and_rolls_back() {
    upgrade_and_roll_back("wireleap-auth", listen_only, false);
    upgrade_and_roll_back("wireleap-auth", listen_only, true);
}

#[test]
fn ps_dummy_upgrades_and_rolls_back() {
    upgrade_and_roll_back("wireleap-ps-dummy", listen_only, false);
    upgrade_and_roll_back("wireleap-ps-dummy", listen_only, true);
}

#[test]
fn ps_stripe_upgrades_and_rolls_back() {
    upgrade_and_roll_back("wireleap-ps-stripe", listen_only, false);
    upgrade_and_roll_back("wireleap-ps-stripe", listen_only, true);
}

#[test]
fn client_upgrades_and_rolls_back() {
    upgrade_and_roll_back("wireleap", client, false);
    upgrade_and_roll_back("wireleap", client, true);
}
