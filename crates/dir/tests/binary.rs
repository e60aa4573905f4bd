//! The real `wireleap-dir` binary: init, start in the foreground, `channel set` while it runs
//! (the running directory serves the new version without a restart), `channel list`, stop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wireleap_proto::dirinfo::DirInfo;

const BIN: &str = env!("CARGO_BIN_EXE_wireleap-dir");

/// Kills the daemon if the test ends early.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(home: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn info(url: &str) -> Option<DirInfo> {
    let resp = reqwest::get(format!("{url}/info")).await.ok()?;
    let body = resp.bytes().await.ok()?;
    DirInfo::from_json(&body).ok()
}

async fn wait_for(url: &str, what: &str, mut pred: impl FnMut(&DirInfo) -> bool) -> DirInfo {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(i) = info(url).await {
            if pred(&i) {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn channel_set_reaches_the_running_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let (ok, out) = cli(home, &["init"]);
    assert!(ok, "{out}");
    assert!(home.join("key.pub").exists());

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let config = serde_json::json!({
        "address": format!("127.0.0.1:{port}"),
        "endpoint": url,
        "relay_ttl": "30s",
        "channel_refresh_interval": "1s",
        "upgrade_channels": {"relay": {"default": {"version": "0.1.0", "rollout_percent": 100}}},
    });
    std::fs::write(home.join("config.json"), config.to_string()).unwrap();
    let (ok, out) = cli(home, &["check-config"]);
    assert!(ok, "{out}");

    let child = Command::new(BIN)
        .arg("--home")
        .arg(home)
        .args(["start", "--fg"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);

    let first = wait_for(&url, "the directory to serve /info", |_| true).await;
    assert_eq!(first.upgrade_channels.relay["default"].to_string(), "0.1.0");
    let key = std::fs::read_to_string(home.join("key.pub")).unwrap();
    assert_eq!(
        format!("\"{}\"", first.public_key.unwrap().to_b64()),
        key.trim()
    );

    let (ok, out) = cli(
        home,
        &["channel", "set", "default", "0.2.0", "--rollout", "50"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("0.1.0 (100%) -> 0.2.0 (50%)"), "{out}");
    wait_for(&url, "the new channel version in /info", |i| {
        i.upgrade_channels.relay["default"].to_string() == "0.2.0"
    })
    .await;

    let (ok, out) = cli(
        home,
        &[
            "channel",
            "set",
            "default",
            "0.3.0",
            "--component",
            "client",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(home, &["channel", "list"]);
    assert!(ok, "{out}");
    assert!(out.contains("relay\tdefault\t0.2.0\t50%"), "{out}");
    assert!(out.contains("client\tdefault\t0.3.0\t100%"), "{out}");
    wait_for(&url, "the client channel in /info", |i| {
        i.upgrade_channels
            .client
            .get("default")
            .is_some_and(|v| v.to_string() == "0.3.0")
    })
    .await;

    let (ok, out) = cli(home, &["channel", "set", "default", "not-a-version"]);
    assert!(!ok, "{out}");

    let (ok, out) = cli(home, &["stop"]);
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if daemon.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "directory did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(home.join("wireleap-dir.db").exists());
}
