//! Upgrades with real processes: releases published with `wireleap-release` into a repository
//! served by `wireleap-release serve` on 127.0.0.1, installations of the stamped test daemon
//! in scratch homes, a client load running throughout. Every process a test starts is ended
//! by a guard, also on failure.

mod common;

use common::{get, settle, Load, Node, Repo, NAME};
use std::time::Duration;
use wireleap_e2e::pid_alive;

type TestResult = anyhow::Result<()>;

const WAIT: Duration = Duration::from_secs(60);

fn sha(path: &std::path::Path) -> String {
    wireleap_upgrade::fetch::digest_file(path).unwrap().0
}

#[test]
fn upgrade_hands_over_without_downtime_and_rolls_back_the_same_way() -> TestResult {
    let repo = Repo::new()?;
    repo.publish_ok("0.2.0", "ok")?;
    let v1 = repo.stamped("0.1.0", "ok")?;
    let mut node = Node::new(&repo, &v1, serde_json::json!({}))?;
    let old_pid = node.start()?;
    let addr = node.addr()?;
    assert!(node.ask()?.starts_with(&format!("0.1.0 {old_pid} hi")));

    let load = Load::start(addr);
    settle(&load, 20)?;
    // A slow request in flight on the old process when the hand-over starts must complete.
    let slow = std::thread::spawn(move || get(addr, "/slow?ms=1500", Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(100));
    let out = node.cmd(&["upgrade", "--yes"])?;
    assert_eq!(out.code(), Some(0), "{out}\nlog:\n{}", node.log());
    assert!(
        out.stdout.contains("stamped mode ok"),
        "the signed changelog is shown: {out}"
    );
    node.wait_version("0.2.0", WAIT)?;
    settle(&load, 50)?;
    let report = load.stop();
    println!("hand-over under load: {report}");
    assert_eq!(report.failed, 0, "{report}; errors {:?}", report.errors);
    assert_eq!(report.versions, ["0.1.0", "0.2.0"]);
    assert_eq!(report.last.as_deref(), Some("0.2.0"));
    let slow_reply = slow
        .join()
        .map_err(|_| anyhow::anyhow!("slow client panicked"))??;
    assert!(
        slow_reply.starts_with(&format!("0.1.0 {old_pid}")),
        "{slow_reply}"
    );

    // The new process serves the migrated config; the old one left without disenrolling.
    let new_pid = node.pid().unwrap_or(0);
    assert_ne!(new_pid, old_pid);
    assert!(node.ask()?.starts_with(&format!("0.2.0 {new_pid} hi")));
    wireleap_e2e::wait_until(WAIT, "the old process to exit", || !pid_alive(old_pid))?;
    let log = node.log();
    assert!(log.contains("reason=HandedOver disenroll=false"), "{log}");
    // Files swapped; the previous version and config kept for rollback.
    assert_eq!(sha(&node.bin()), sha(&repo.binary_path("0.2.0")));
    assert_eq!(sha(&node.file(&format!("{NAME}.prev"))), sha(&v1));
    let cfg = node.config()?;
    assert_eq!(cfg["banner"], "hi");
    assert_eq!(cfg["schema_version"], "0.2.0");
    assert!(cfg.get("greeting").is_none());
    let prev_cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.file("config.json.prev"))?)?;
    assert_eq!(prev_cfg["greeting"], "hi");
    assert!(!node.file("upgrade-journal.json").exists());
    assert!(!node.file(&format!("{NAME}.next")).exists());
    assert_eq!(node.state()?["previous"], "0.1.0");

    // Rollback is a hand-over too, with the migration undone.
    let load = Load::start(addr);
    settle(&load, 20)?;
    let out = node.cmd(&["rollback", "--yes"])?;
    assert_eq!(out.code(), Some(0), "{out}\nlog:\n{}", node.log());
    node.wait_version("0.1.0", WAIT)?;
    settle(&load, 20)?;
    let report = load.stop();
    println!("rollback under load: {report}");
    assert_eq!(report.failed, 0, "{report}; errors {:?}", report.errors);
    assert_eq!(sha(&node.bin()), sha(&v1));
    assert_eq!(node.config()?["greeting"], "hi");
    let st = node.state()?;
    assert_eq!(st["failures"]["0.2.0"]["kind"], "rolled_back", "{st}");

    // The rolled-back version is skipped by automatic upgrades.
    let status = node.cmd(&["upgrade-status"])?;
    assert!(
        status.stdout.contains("0.2.0: rolled back by the operator"),
        "{status}"
    );

    // Rolling back the rollback goes up again: the newer binary migrates the copies.
    let out = node.cmd(&["rollback", "--yes"])?;
    assert_eq!(out.code(), Some(0), "{out}\nlog:\n{}", node.log());
    node.wait_version("0.2.0", WAIT)?;
    assert_eq!(node.config()?["banner"], "hi");
    assert!(node.ask()?.ends_with(" hi"));
    Ok(())
}

/// A mock directory that records upgrade reports.
struct MockDir {
    url: String,
    reports: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    runtime: tokio::runtime::Runtime,
}

impl MockDir {
    fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let reports: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
        let r = reports.clone();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new().route(
            "/relays/upgrade-report",
            axum::routing::post(move |body: axum::body::Bytes| {
                let r = r.clone();
                async move {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        r.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(v);
                    }
                    "{}"
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Ok(MockDir {
            url,
            reports,
            runtime,
        })
    }

    fn reports(&self) -> Vec<serde_json::Value> {
        self.reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Each broken release is attempted once by the automatic poll, rolled back while the old
/// version keeps serving, recorded as a bad build, written to the skip file, reported to the
/// directory, and not attempted again.
#[test]
fn broken_releases_are_rolled_back_skipped_and_reported() -> TestResult {
    let repo = Repo::new()?;
    let dir = MockDir::start()?;
    let v1 = repo.stamped("0.1.0", "ok")?;
    let mut node = Node::new(
        &repo,
        &v1,
        serde_json::json!({"auto": true, "check_interval": "1s", "ready_timeout": "3s"}),
    )?;
    let mut cfg = node.config()?;
    cfg["report_to"] = serde_json::json!([dir.url]);
    node.write_config(cfg)?;
    let pid = node.start()?;
    let load = Load::start(node.addr()?);
    settle(&load, 20)?;

    let cases = [
        ("0.2.0", "crash-on-start", "exited before it was ready"),
        ("0.3.0", "fail-migration", "stamped to fail its migration"),
        ("0.4.0", "never-ready", "not ready within"),
    ];
    for (version, mode, why) in cases {
        repo.publish_ok(version, mode)?;
        wireleap_e2e::wait_for(WAIT, &format!("a failure record for {version}"), || {
            let st = node.state().ok()?;
            (st["failures"][version]["kind"] == "bad_build").then_some(st)
        })
        .map(|st| {
            let reason = st["failures"][version]["reason"]
                .as_str()
                .unwrap_or("")
                .to_string();
            assert!(reason.contains(why), "{version}: {reason}");
        })?;
        let skip = std::fs::read_to_string(node.file(".skip-upgrade-version"))?;
        assert_eq!(skip, format!("\"{version}\""));
        assert!(node.ask()?.starts_with(&format!("0.1.0 {pid}")));
        assert!(!node.file(&format!("{NAME}.next")).exists());
        assert!(!node.file("config.json.next").exists());
        assert!(!node.file("upgrade-journal.json").exists());
    }
    // More polls go by: nothing is attempted again.
    let attempts = |log: &str| log.matches("hand-over: staged").count();
    let before = attempts(&node.log());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        attempts(&node.log()),
        before,
        "a skipped version was tried again"
    );
    assert!(node.log().contains("is skipped"), "{}", node.log());

    let report = load.stop();
    println!("three broken releases under load: {report}");
    assert_eq!(report.failed, 0, "{report}; errors {:?}", report.errors);
    // A build that never got ready never took a connection.
    assert_eq!(report.versions, ["0.1.0"], "{report}");
    assert_eq!(node.pid(), Some(pid), "the old process kept the pid file");

    let reports = dir.reports();
    let versions: Vec<&str> = reports
        .iter()
        .filter_map(|r| r["version"].as_str())
        .collect();
    assert_eq!(versions, ["0.2.0", "0.3.0", "0.4.0"], "{reports:?}");
    let key = std::fs::read_to_string(node.file("key.pub"))?;
    assert!(reports
        .iter()
        .all(|r| key.contains(r["pubkey"].as_str().unwrap_or("-"))));
    drop(dir.runtime);
    Ok(())
}

/// A release that crashes after reporting ready, inside the watch window: the old process
/// takes the listener back.
#[test]
fn crash_in_the_watch_window_is_rolled_back() -> TestResult {
    let repo = Repo::new()?;
    repo.publish_ok("0.2.0", "crash-after-ready")?;
    let v1 = repo.stamped("0.1.0", "ok")?;
    let mut node = Node::new(&repo, &v1, serde_json::json!({"watch_window": "3s"}))?;
    let pid = node.start()?;
    let load = Load::start(node.addr()?);
    settle(&load, 20)?;
    let out = node.cmd(&["upgrade", "--yes"])?;
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(
        out.all().contains("exited during the watch window"),
        "{out}"
    );
    settle(&load, 50)?;
    let report = load.stop();
    println!("crash in the watch window under load: {report}");
    // Only connections the crashing process had accepted and not answered can fail.
    assert!(report.failed <= 3, "{report}; errors {:?}", report.errors);
    assert!(report.longest_gap < Duration::from_secs(2), "{report}");
    assert_eq!(report.last.as_deref(), Some("0.1.0"));
    assert_eq!(node.pid(), Some(pid));
    assert!(node.ask()?.starts_with(&format!("0.1.0 {pid}")));
    assert_eq!(node.state()?["failures"]["0.2.0"]["kind"], "bad_build");
    Ok(())
}

/// Tampered binary, bad signature, downgrade offer, expired metadata, replayed metadata: each
/// refused, nothing installed, the running version keeps serving.
#[test]
fn tampering_downgrades_expiry_and_replays_are_refused() -> TestResult {
    let repo = Repo::new()?;
    let v1 = repo.stamped("0.1.0", "ok")?;
    let mut node = Node::new(&repo, &v1, serde_json::json!({}))?;
    let pid = node.start()?;
    let refused = |node: &Node, args: &[&str], why: &str| -> TestResult {
        let out = node.cmd(args)?;
        assert_ne!(out.code(), Some(0), "{out}");
        assert!(out.all().contains(why), "expected {why:?} in {out}");
        assert!(node.ask()?.starts_with(&format!("0.1.0 {pid}")));
        assert!(!node.file(&format!("{NAME}.next")).exists());
        Ok(())
    };

    // Tampered binary: the published file changes after signing.
    repo.publish_ok("0.2.0", "ok")?;
    let published = repo.binary_path("0.2.0");
    let mut bytes = std::fs::read(&published)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&published, &bytes)?;
    refused(
        &node,
        &["upgrade", "--yes"],
        "does not match the signed metadata",
    )?;
    assert!(!node.file("quarantine/upgrade-testd-0.2.0").exists());
    assert!(!node.file("quarantine/upgrade-testd-0.2.partial").exists());

    // Bad signature: metadata re-signed by a key the node does not trust.
    let other = repo.dir.path().join("other-keys");
    let out = repo.tool(&["keygen", "--out", other.to_str().unwrap_or("")])?;
    assert_eq!(out.code(), Some(0), "{out}");
    let good = std::fs::read(repo.metadata_path())?;
    let out = repo.tool(&[
        "refresh",
        "--key",
        other.join("release.seed").to_str().unwrap_or(""),
        "--repo",
        repo.path().to_str().unwrap_or(""),
        "--component",
        NAME,
    ])?;
    assert_eq!(out.code(), Some(0), "{out}");
    refused(
        &node,
        &["upgrade", "--yes", "--check"],
        "valid signature(s) from trusted keys",
    )?;
    // A flipped byte in the signed part of good metadata.
    let mut flipped = good.clone();
    flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
    std::fs::write(repo.metadata_path(), &flipped)?;
    refused(&node, &["upgrade", "--yes", "--check"], "release metadata")?;
    std::fs::write(repo.metadata_path(), &good)?;

    // Downgrade: the node runs 0.1.0; the channel is pointed at 0.0.9.
    let out = repo.publish("0.0.9", "ok", &["--allow-downgrade"])?;
    assert_eq!(out.code(), Some(0), "{out}");
    refused(
        &node,
        &["upgrade", "--yes"],
        "refusing to downgrade from 0.1.0 to 0.0.9",
    )?;
    refused(
        &node,
        &["upgrade", "--yes", "--version", "0.0.9"],
        "refusing to downgrade",
    )?;

    // Replay: the node has now seen a newer serial; the older file comes back.
    std::fs::write(repo.metadata_path(), &good)?;
    refused(
        &node,
        &["upgrade", "--yes", "--check"],
        "replayed metadata refused",
    )?;

    // Expired metadata (freeze): valid signature, expiry in the past.
    let now = wireleap_upgrade::check::unix_now();
    let out = repo.tool(&[
        "channel",
        "--key",
        repo.key.to_str().unwrap_or(""),
        "--repo",
        repo.path().to_str().unwrap_or(""),
        "--component",
        NAME,
        "--version",
        "0.2.0",
        "--expires-at",
        &(now - 10).to_string(),
    ])?;
    assert_eq!(out.code(), Some(0), "{out}");
    refused(&node, &["upgrade", "--yes", "--check"], "expired")?;

    // The node is untouched and nothing was recorded as a bad build.
    let st = node.state()?;
    assert!(
        st["failures"]
            .as_object()
            .is_none_or(|f| f.values().all(|r| r["kind"] != "bad_build")),
        "{st}"
    );
    assert!(!node.file(".skip-upgrade-version").exists());
    Ok(())
}

/// With no process running, `upgrade` installs (migrations and swap) and `rollback` undoes
/// it; `start` then runs the installed version.
#[test]
fn offline_upgrade_and_rollback() -> TestResult {
    let repo = Repo::new()?;
    repo.publish_ok("0.2.0", "ok")?;
    let v1 = repo.stamped("0.1.0", "ok")?;
    let mut node = Node::new(&repo, &v1, serde_json::json!({}))?;
    let out = node.cmd(&["upgrade", "--yes"])?;
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("installed 0.2.0"), "{out}");
    assert_eq!(node.config()?["banner"], "hi");
    node.start()?;
    assert!(node.ask()?.starts_with("0.2.0"));
    assert_eq!(node.cmd(&["stop"])?.code(), Some(0));
    let out = node.cmd(&["rollback", "--yes"])?;
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(node.config()?["greeting"], "hi");
    node.start()?;
    assert!(node.ask()?.starts_with("0.1.0"));
    // Without --yes and without a terminal, nothing happens.
    let out = node.cmd(&["upgrade"])?;
    assert_ne!(out.code(), Some(0));
    assert!(out.all().contains("--yes"), "{out}");
    Ok(())
}

fn fake_journal(node: &Node, step: &str) -> anyhow::Result<()> {
    // Pids that cannot be live daemons (pid_max is below 2^22).
    let j = serde_json::json!({
        "schema_version": 1, "kind": "upgrade", "from": "0.1.0", "to": "0.2.0",
        "old_pid": 4_194_304 + 7, "new_pid": 4_194_304 + 8, "step": step,
        "files": ["config.json"], "started_at": 1,
    });
    std::fs::write(node.file("upgrade-journal.json"), serde_json::to_vec(&j)?)?;
    Ok(())
}

/// A crash before the commit is undone at the next start; a crash during the commit is
/// finished, and the start re-executes as the new binary so it reads the new config.
#[test]
fn crash_recovery_at_start() -> TestResult {
    let repo = Repo::new()?;
    let v1 = repo.stamped("0.1.0", "ok")?;
    let v2 = repo.stamped("0.2.0", "ok")?;

    // Interrupted while the new process was on probation: undone.
    let mut node = Node::new(&repo, &v1, serde_json::json!({}))?;
    std::fs::copy(&v2, node.file(&format!("{NAME}.next")))?;
    std::fs::write(
        node.file("config.json.next"),
        "{\"address\": \"127.0.0.1:0\", \"banner\": \"next\"}",
    )?;
    fake_journal(&node, "serving")?;
    node.start()?;
    assert!(node.ask()?.starts_with("0.1.0"), "{}", node.log());
    assert!(node.ask()?.ends_with(" hi"));
    assert!(!node.file(&format!("{NAME}.next")).exists());
    assert!(!node.file("config.json.next").exists());
    assert!(!node.file("upgrade-journal.json").exists());
    assert_eq!(node.state()?["failures"]["0.2.0"]["kind"], "transient");
    assert_eq!(node.cmd(&["stop"])?.code(), Some(0));

    // Interrupted in the commit, before the files were renamed: the start runs the old
    // binary, which must finish the commit and continue as the new binary, reading the new
    // config (never the old binary on the new config).
    let mut node = Node::new(&repo, &v1, serde_json::json!({}))?;
    let mut next = node.config()?;
    next["banner"] = serde_json::json!("migrated");
    std::fs::write(node.file("config.json.next"), serde_json::to_vec(&next)?)?;
    std::fs::copy(&v2, node.file(&format!("{NAME}.next")))?;
    fake_journal(&node, "committing")?;
    let out = node.cmd(&["start"])?;
    assert_eq!(out.code(), Some(0), "{out}\n{}", node.log());
    assert!(
        out.stderr
            .contains("finished an interrupted upgrade to 0.2.0"),
        "{out}"
    );
    if let Some(p) = node.pid() {
        node.guard.note(p);
    }
    let reply = node.ask()?;
    assert!(
        reply.starts_with("0.2.0") && reply.ends_with("migrated"),
        "{reply}"
    );
    assert_eq!(sha(&node.bin()), sha(&v2));
    assert_eq!(node.state()?["previous"], "0.1.0");
    Ok(())
}

/// A directory notice only triggers a check: the signed channel decides, including its staged
/// rollout, and a notice naming an older version does nothing.
#[test]
fn notices_follow_the_signed_rollout() -> TestResult {
    let repo = Repo::new()?;
    let v1 = repo.stamped("0.1.0", "ok")?;
    let mut node = Node::new(&repo, &v1, serde_json::json!({"auto": true}))?;
    let pid = node.start()?;
    let addr = node.addr()?;
    let out = repo.publish("0.2.0", "ok", &["--rollout", "0"])?;
    assert_eq!(out.code(), Some(0), "{out}");
    get(addr, "/notice?version=0.2.0", Duration::from_secs(5))?;
    wireleap_e2e::wait_until(WAIT, "the rollout refusal", || {
        node.log().contains("is rolling out to 0/10000")
    })?;
    get(addr, "/notice?version=0.0.1", Duration::from_secs(5))?;
    assert!(node.ask()?.starts_with(&format!("0.1.0 {pid}")));
    let out = repo.tool(&[
        "channel",
        "--key",
        repo.key.to_str().unwrap_or(""),
        "--repo",
        repo.path().to_str().unwrap_or(""),
        "--component",
        NAME,
        "--version",
        "0.2.0",
        "--rollout",
        "100",
    ])?;
    assert_eq!(out.code(), Some(0), "{out}");
    get(addr, "/notice?version=0.2.0", Duration::from_secs(5))?;
    node.wait_version("0.2.0", WAIT)?;
    assert_eq!(node.state()?["metadata"][NAME]["serial"], 2);
    Ok(())
}
