//! The real `wireleap-relay` binary under kill -9: sharetokens arrive on many concurrent
//! streams, the relay is SIGKILLed mid-stream, restarted, and every token whose stream got a
//! byte through to the target must be in its store (the relay commits a token before it
//! forwards anything). A fake contract (axum) gives the relay its contract key; the client
//! is `wireleap_net`'s tunnel client with pinned TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wireleap_e2e::{binary, free_port, run, wait_until, ProcessGuard, ScratchHome};
use wireleap_net::tls;
use wireleap_net::tunnel::{Session, SessionConfig};
use wireleap_proto::address::Address;
use wireleap_proto::contractinfo::{ContractInfo, DirectoryRef};
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::servicekey::ContractSection;
use wireleap_proto::sharetoken::Sharetoken;
use wireleap_proto::status::Status;
use wireleap_proto::wl_payload::{Protocol, WlPayload};

const T: Duration = Duration::from_secs(10);

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A contract whose `/info` names itself as directory and accepts every enrollment.
async fn fake_contract(key: &Keypair) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let info = ContractInfo {
        pubkey: Some(key.public()),
        endpoint: Some(base.clone()),
        directory: DirectoryRef {
            endpoint: Some(format!("{base}/dir")),
            public_key: Some(Keypair::from_seed([3; 32]).public()),
        },
        ..ContractInfo::default()
    }
    .to_json();
    let ok = Status::ok().text();
    let app = axum::Router::new()
        .route(
            "/info",
            axum::routing::get(move || async move { info.clone() }),
        )
        .route(
            "/dir/relays",
            axum::routing::post({
                let ok = ok.clone();
                move || async move { ok.clone() }
            })
            .delete(move || async move { ok.clone() }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, task)
}

/// A target that records the 4-byte stream id each connection starts with, then echoes.
async fn target(seen: Arc<Mutex<HashSet<u32>>>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut id = [0u8; 4];
                if tcp.read_exact(&mut id).await.is_ok() {
                    seen.lock().unwrap().insert(u32::from_be_bytes(id));
                    let (mut r, mut w) = tcp.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    (addr, task)
}

fn start_relay(home: &ScratchHome) -> ProcessGuard {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.file("test-run.log"))
        .unwrap();
    let child = Command::new(binary("wireleap-relay").unwrap())
        .arg("--home")
        .arg(home.path())
        .args(["start", "--fg"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    ProcessGuard::child(child)
}

async fn ping(addr: SocketAddr, relay: PublicKey) -> bool {
    let attempt = async {
        let tcp = tls::dial_tcp(&addr.to_string(), T).await.ok()?;
        let tls = tls::dial_tls(tcp, None, Some(relay.0), T).await.ok()?;
        let session = Session::handshake(tls, SessionConfig::default())
            .await
            .ok()?;
        let resp = session
            .request_plain(
                http::Method::PUT,
                "/",
                Some(WlPayload::ping().to_header_value().as_bytes()),
            )
            .await
            .ok()?;
        Some(resp.status == 200)
    };
    tokio::time::timeout(T, attempt).await.ok().flatten() == Some(true)
}

async fn wait_ready(
    addr: SocketAddr,
    relay: PublicKey,
    guard: &mut ProcessGuard,
    home: &ScratchHome,
) {
    for _ in 0..200 {
        if ping(addr, relay).await {
            return;
        }
        if let Ok(Some(status)) = guard.try_wait() {
            panic!(
                "relay exited with {status}:\n{}",
                home.read("test-run.log").unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "relay did not answer PING:\n{}",
        home.read("test-run.log").unwrap_or_default()
    );
}

/// Opens streams one after another on `session` until `stop`, each carrying a fresh token
/// whose nonce encodes its stream id, then holding the stream open with some traffic.
async fn client_loop(
    session: Arc<Session>,
    addr: SocketAddr,
    target: SocketAddr,
    relay: PublicKey,
    contract: Arc<Keypair>,
    ids: std::ops::Range<u32>,
    stop: Arc<AtomicBool>,
) {
    let mut open = Vec::new();
    for id in ids {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let sk = Keypair::generate();
        let section = ContractSection::new_signed(&contract, now() + 600, now() + 4200);
        let token = Sharetoken::new_signed(&sk, section, relay, now(), format!("{id:032x}"));
        let payload = WlPayload::connect(
            Protocol::Tcp,
            Address::parse(&format!("target://{target}")).unwrap(),
            token,
        )
        .to_header_value();
        let Ok(mut stream) = session
            .open(&format!("https://{addr}/"), payload.as_bytes())
            .await
        else {
            break;
        };
        let mut first = id.to_be_bytes().to_vec();
        first.extend_from_slice(&[0u8; 1024]);
        if stream.write_all(&first).await.is_err() {
            break;
        }
        open.push(stream);
    }
    // Keep the streams (mid-stream) until the relay dies under them.
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(open);
}

#[test]
fn sigkill_mid_stream_loses_no_sharetoken() {
    let started = std::time::Instant::now();
    let phase = |what: &str| eprintln!("[{:6.1}s] {what}", started.elapsed().as_secs_f64());
    let home = ScratchHome::new().unwrap();
    let relay_bin = binary("wireleap-relay").unwrap();
    phase("relay binary built");
    let out = run(
        Command::new(&relay_bin)
            .arg("--home")
            .arg(home.path())
            .arg("init"),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(out.status.success(), "{out}");
    assert!(home.file("relay-cert.pem").exists() && home.file("relay-key.pem").exists());
    let pubkey: String = serde_json::from_str(&home.read("key.pub").unwrap()).unwrap();
    let relay = PublicKey::from_b64(&pubkey).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let contract = Arc::new(Keypair::generate());
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let (contract_url, _c) = rt.block_on(fake_contract(&contract));
    let (target_addr, _t) = rt.block_on(target(seen.clone()));

    let port = free_port().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = serde_json::json!({
        "address": addr.to_string(),
        "heartbeat_interval": "1s",
        "auto_submit_interval": "0s",
        "contracts": {
            contract_url.clone(): {"address": format!("wireleap://{addr}"), "role": "backing"}
        },
        "danger_zone": {"allow_loopback": true}
    });
    home.write("config.json", serde_json::to_vec_pretty(&config).unwrap())
        .unwrap();

    let mut guard = start_relay(&home);
    rt.block_on(wait_ready(addr, relay, &mut guard, &home));
    phase("relay ready");

    // 4 connections × streams opened back to back until the kill.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4u32 {
        let session = rt.block_on(async {
            let tcp = tls::dial_tcp(&addr.to_string(), T).await.unwrap();
            let tls = tls::dial_tls(tcp, None, Some(relay.0), T).await.unwrap();
            Arc::new(
                Session::handshake(tls, SessionConfig::default())
                    .await
                    .unwrap(),
            )
        });
        clients.push(rt.spawn(client_loop(
            session,
            addr,
            target_addr,
            relay,
            contract.clone(),
            c * 100_000..c * 100_000 + 900,
            stop.clone(),
        )));
    }
    // Kill while streams are still being opened.
    wait_until(
        Duration::from_secs(60),
        "300 streams through the relay",
        || seen.lock().unwrap().len() >= 300,
    )
    .unwrap();
    phase("300 streams forwarded; SIGKILL");
    guard.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
    guard.wait_timeout(Duration::from_secs(10)).unwrap();
    let forwarded: HashSet<u32> = {
        // Let bytes already in flight land.
        std::thread::sleep(Duration::from_millis(300));
        seen.lock().unwrap().clone()
    };
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = rt.block_on(c);
    }

    // Restart on the same home: the store opens (recovering the WAL) and serves again.
    let mut guard = start_relay(&home);
    rt.block_on(wait_ready(addr, relay, &mut guard, &home));
    phase("restarted relay ready");
    let out = run(
        Command::new(&relay_bin)
            .arg("--home")
            .arg(home.path())
            .arg("sharetokens"),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(out.status.success(), "{out}");
    let stored: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let stored_ids: HashSet<u32> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|t| u32::from_str_radix(t["token"]["nonce"].as_str().unwrap(), 16).unwrap())
        .collect();
    let lost: Vec<u32> = forwarded.difference(&stored_ids).copied().collect();
    eprintln!(
        "kill -9 test: {} streams had bytes at the target, {} tokens stored, {} lost",
        forwarded.len(),
        stored_ids.len(),
        lost.len()
    );
    assert!(forwarded.len() >= 300);
    assert!(lost.is_empty(), "tokens lost after kill -9: {lost:?}");
    drop(guard);
}
