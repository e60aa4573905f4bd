//! The zero-downtime hand-over the upgrade code builds on, end to end: a running relay (in
//! this process) passes its listening socket to a new relay process (the real binary),
//! waits for its readiness report, and stops with `ShutdownMode::HandOver` — the stream open
//! on the old process keeps working while it drains, new connections reach the new process,
//! and the directory never sees a disenrollment until the new process itself is stopped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::Method;
use std::process::Stdio;
use std::time::Duration;
use wireleap_daemon::listeners::command_with_listeners;
use wireleap_daemon::notify::NotifyReceiver;
use wireleap_proto::status::Status;
use wireleap_proto::wl_payload::{Protocol, WlPayload};
use wireleap_relay::config::Role;
use wireleap_relay::ShutdownMode;

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn ping(relay: &TestRelay) -> Status {
    let tcp = wireleap_net::tls::dial_tcp(&relay.addr.to_string(), T)
        .await
        .unwrap();
    let tls = wireleap_net::tls::dial_tls(tcp, None, Some(relay.pubkey().0), T)
        .await
        .unwrap();
    let session = wireleap_net::tunnel::Session::handshake(tls, Default::default())
        .await
        .unwrap();
    let resp = session
        .request_plain(
            Method::PUT,
            "/",
            Some(WlPayload::ping().to_header_value().as_bytes()),
        )
        .await
        .unwrap();
    Status::parse(&resp.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_over_to_a_new_process_without_disenrolling() {
    let c = fake_contract(2).await;
    let echo = echo_server().await;
    let port = free_port();
    let mut cfg = config(port, &[(&c.base, Role::Backing)]);
    let mut old = start_relay_in(1, &mut cfg, tempfile::tempdir().unwrap()).await;
    std::fs::write(
        old.home.config_file(),
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();
    let me = old.pubkey();

    // A stream through the old process, open across the hand-over.
    let hops = [Hop {
        addr: old.addr,
        pubkey: me,
        payload: connect_payload(
            Protocol::Tcp,
            &format!("target://{}", echo.addr),
            fresh_token(&c, me),
        ),
    }];
    let mut keep = Vec::new();
    let mut io = circuit(&hops, &mut keep).await;
    assert_eq!(round_trip(&mut io, b"before").await, b"before");

    // Start the new process with the listening socket, as the upgrade code will.
    let notify = NotifyReceiver::new().unwrap();
    let log = std::fs::File::create(old.dir.path().join("new.log")).unwrap();
    let requests_before = c.requests().len();
    let child = {
        let fds = old.rt().listener_fds();
        let mut cmd = command_with_listeners(env!("CARGO_BIN_EXE_wireleap-relay"), &fds).unwrap();
        cmd.arg("--home")
            .arg(old.home.dir())
            .args(["start", "--fg", "--replacing"])
            .arg(std::process::id().to_string())
            .env("NOTIFY_SOCKET", notify.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        KillOnDrop(cmd.spawn().unwrap())
    };
    let ready = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(m)) = notify.recv_timeout(Duration::from_millis(200)) {
                if m.ready {
                    return true;
                }
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(
        ready,
        "new process not ready: {}",
        std::fs::read_to_string(old.dir.path().join("new.log")).unwrap_or_default()
    );
    // The new process enrolled on its own (same key, its own request).
    assert!(c.requests()[requests_before..]
        .iter()
        .any(|r| r.method == Method::POST && r.has_dir_version));

    // The old process hands over: no disenrollment, open streams drain.
    let handle = old.handle();
    handle.set_shutdown_mode(ShutdownMode::HandOver);
    let rt = old.rt.take().unwrap();
    let stopping = tokio::spawn(rt.shutdown(handle.shutdown_mode()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(round_trip(&mut io, b"during").await, b"during");
    // New connections land on the new process, on the same address and key.
    for _ in 0..5 {
        assert_eq!(ping(&old).await, Status::pong(&me));
    }
    let hops = [Hop {
        addr: old.addr,
        pubkey: me,
        payload: connect_payload(
            Protocol::Tcp,
            &format!("target://{}", echo.addr),
            fresh_token(&c, me),
        ),
    }];
    let mut keep2 = Vec::new();
    let mut io2 = circuit(&hops, &mut keep2).await;
    assert_eq!(round_trip(&mut io2, b"after").await, b"after");
    drop(io);
    drop(keep);
    let report = tokio::time::timeout(T, stopping).await.unwrap().unwrap();
    assert_eq!(report.mode, ShutdownMode::HandOver);
    assert!(
        c.requests().iter().all(|r| r.method != Method::DELETE),
        "the relay never left the directory"
    );

    // Stopping the new process normally disenrolls.
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    drop(io2);
    eventually(
        Duration::from_secs(20),
        "disenrollment by the new process",
        || c.requests().iter().any(|r| r.method == Method::DELETE),
    )
    .await;
    drop(child);
}
