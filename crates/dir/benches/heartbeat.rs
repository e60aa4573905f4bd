//! Heartbeat throughput of the directory with many enrolled relays, and memory per relay.
//!
//! Run: `cargo bench -p wireleap-dir --bench heartbeat` (release). Environment knobs:
//! `WL_BENCH_RELAYS` (default 10000), `WL_BENCH_SECS` (heartbeat phase, default 5),
//! `WL_BENCH_CONNS` (client connections, default 64).
//!
//! Phases, all in one process on loopback (the load generator shares the machine's cores
//! with the directory, so HTTP figures are a lower bound for a dedicated server):
//! 1. enroll N relays over HTTP (each one a durable SQLite write);
//! 2. memory: process RSS delta over the enrollments / N, and the registry alone;
//! 3. heartbeats over HTTP/1.1 keep-alive through the whole stack (version gate,
//!    idempotency cache, signature check, JSON decoding, registry, upgrade rule);
//! 4. where the time goes: the same requests through the router without sockets, ed25519
//!    verification alone, JSON decoding alone;
//! 5. baseline: the raw store update rate without HTTP, one autocommit UPDATE per heartbeat
//!    (what a directory writing every heartbeat through would get) and the batched flush
//!    the directory actually uses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt as _;
use wireleap_daemon::CancellationToken;
use wireleap_dir::registry::Registry;
use wireleap_dir::{Clock, DirServer, DirStore, DirectoryConfig};
use wireleap_proto::address::Address;
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::relayentry::{RelayEntry, Role};
use wireleap_proto::request::sign_body;
use wireleap_proto::version::Component;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// One relay's heartbeat, signed once (the body never changes between beats).
struct Beat {
    body: Bytes,
    pubkey: String,
    signature: String,
}

fn relay(i: usize) -> (Keypair, RelayEntry) {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    seed[31] = 0xd1;
    let kp = Keypair::from_seed(seed);
    let role = Role::ALL[i % 3];
    let address = Address::parse(&format!(
        "wireleap://10.{}.{}.{}:13490",
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255
    ))
    .unwrap();
    let entry = RelayEntry::new(role, address, kp.public(), semver::Version::new(0, 6, 1));
    (kp, entry)
}

fn beats(n: usize) -> Vec<Beat> {
    (0..n)
        .map(|i| {
            let (kp, entry) = relay(i);
            let body = entry.to_body();
            let headers = sign_body(&kp, Component::Relay, &body);
            Beat {
                body: Bytes::from(body),
                pubkey: headers[0].1.clone(),
                signature: headers[1].1.clone(),
            }
        })
        .collect()
}

fn request(b: &Beat, host: &str, key: u64) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(http::Method::POST)
        .uri("/relays")
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("wireleap-relay-pubkey", &b.pubkey)
        .header("wireleap-relay-signature", &b.signature)
        .header("wireleap-relay-version", "0.6.1")
        .header("wireleap-relay-contract-version", "0.1.0")
        .header("idempotency-key", format!("{key:032x}"))
        .body(Full::new(b.body.clone()))
        .unwrap()
}

/// Runs `conns` keep-alive HTTP/1.1 connections sending requests from `beats` (round robin)
/// until `stop`; returns (completed, failed, latencies in µs sampled).
async fn drive(
    addr: std::net::SocketAddr,
    beats: Arc<Vec<Beat>>,
    conns: usize,
    run_for: Option<Duration>,
    total: Option<u64>,
    key_base: u64,
) -> (u64, u64, Vec<u32>) {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let host = addr.to_string();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (beats, next, failed, stop, host) = (
            beats.clone(),
            next.clone(),
            failed.clone(),
            stop.clone(),
            host.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut lat = Vec::new();
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if total.is_some_and(|t| i >= t) {
                    break;
                }
                let b = &beats[(i % beats.len() as u64) as usize];
                let t0 = Instant::now();
                let resp = send
                    .send_request(request(b, &host, key_base + i))
                    .await
                    .unwrap();
                let status = resp.status();
                let _ = resp.into_body().collect().await.unwrap();
                if i % 16 == 0 {
                    lat.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                }
                if !status.is_success() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    if let Some(d) = run_for {
        tokio::time::sleep(d).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let done = next.load(Ordering::Relaxed).min(total.unwrap_or(u64::MAX));
    // Each task claimed one index it did not send when it saw `stop`.
    let done = if run_for.is_some() {
        done.saturating_sub(conns as u64)
    } else {
        done
    };
    (done, failed.load(Ordering::Relaxed), lat)
}

fn pct(lat: &mut [u32], p: f64) -> u32 {
    if lat.is_empty() {
        return 0;
    }
    lat.sort_unstable();
    let i = ((lat.len() - 1) as f64 * p).round() as usize;
    lat[i]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let n = env_or("WL_BENCH_RELAYS", 10_000);
    let secs = env_or("WL_BENCH_SECS", 5) as u64;
    let conns = env_or("WL_BENCH_CONNS", 64);
    println!(
        "heartbeat bench: {n} relays, {secs} s heartbeat phase, {conns} connections, {} cores",
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(0)
    );

    let t = Instant::now();
    let beats = Arc::new(beats(n));
    println!("  prepared {n} signed relay entries in {:.2?}", t.elapsed());

    let tmp = tempfile::tempdir().unwrap();
    let rss0 = rss_bytes();
    let db = wireleap_store::Db::open_sqlite(&tmp.path().join("dir.db"))
        .await
        .unwrap();
    let store = DirStore::open(db).await.unwrap();
    let config = DirectoryConfig {
        ping_check: false,
        max_relays: n + 1,
        ..DirectoryConfig::default()
    };
    let server = DirServer::open(
        config,
        Keypair::from_seed([3; 32]),
        store.clone(),
        Clock::System,
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let serving = tokio::spawn(wireleap_api::serve(
        listener,
        server.router(),
        None,
        stop.clone(),
        Duration::from_secs(1),
    ));
    let background = server.spawn_background(stop.clone());

    // 1. Enrollment (durable: one fsync'ed SQLite transaction each).
    let t = Instant::now();
    let (enrolled, failed, _) = drive(addr, beats.clone(), conns, None, Some(n as u64), 0).await;
    let el = t.elapsed();
    assert_eq!(failed, 0, "enrollments failed");
    assert_eq!(server.registry().len(), n);
    println!(
        "  enrollment over HTTP: {enrolled} in {el:.2?} = {:.0}/s (each written durably)",
        enrolled as f64 / el.as_secs_f64()
    );

    // 2. Memory.
    let rss1 = rss_bytes();
    println!(
        "  memory: process RSS +{:.1} MiB for {n} relays = {:.0} bytes/relay (registry, list cache, SQLite page cache, allocator slack)",
        (rss1.saturating_sub(rss0)) as f64 / 1048576.0,
        rss1.saturating_sub(rss0) as f64 / n as f64
    );
    {
        let before = rss_bytes();
        let reg = Registry::new();
        reg.resync((0..n).map(|i| (relay(i + 1_000_000).1, 0)));
        let after = rss_bytes();
        println!(
            "  memory: registry alone +{:.0} bytes/relay ({} relays)",
            after.saturating_sub(before) as f64 / n as f64,
            reg.len()
        );
    }
    // Build the signed lists once, as the first client would.
    let list = reqwest::get(format!("http://{addr}/relays")).await.unwrap();
    let list_len = list.bytes().await.unwrap().len();
    println!("  relay list: {list_len} bytes signed for {n} relays");

    // 3. Heartbeats over HTTP.
    let t = Instant::now();
    let (done, failed, mut lat) = drive(
        addr,
        beats.clone(),
        conns,
        Some(Duration::from_secs(secs)),
        None,
        1 << 40,
    )
    .await;
    let el = t.elapsed();
    assert_eq!(failed, 0, "heartbeats failed");
    let http_rate = done as f64 / el.as_secs_f64();
    println!(
        "  heartbeats over HTTP/1.1 loopback: {done} in {el:.2?} = {http_rate:.0}/s (latency p50 {} µs, p99 {} µs)",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    let t = Instant::now();
    let flushed = server.flush().await.unwrap();
    println!(
        "  flush of pending heartbeat times: {flushed} rows in {:.2?}",
        t.elapsed()
    );

    // 4. Where the time goes.
    let router = server.router();
    let iters = (n as u64).min(20_000);
    let t = Instant::now();
    for i in 0..iters {
        let b = &beats[(i % n as u64) as usize];
        let req = request(b, "bench", (2 << 40) + i).map(axum::body::Body::new);
        let resp = router.clone().oneshot(req).await.unwrap();
        assert!(resp.status().is_success());
        let _ = resp.into_body().collect().await.unwrap();
    }
    let el = t.elapsed();
    println!(
        "  heartbeats through the router without sockets, 1 task: {:.1} µs each = {:.0}/s per core",
        el.as_secs_f64() * 1e6 / iters as f64,
        iters as f64 / el.as_secs_f64()
    );
    // After a restart no request bytes are remembered: every relay's first heartbeat is
    // verified and decoded in full.
    let cold = DirServer::open(
        server.config().as_ref().clone(),
        Keypair::from_seed([3; 32]),
        store.clone(),
        Clock::System,
    )
    .await
    .unwrap();
    let cold_router = cold.router();
    let t = Instant::now();
    for (i, b) in beats.iter().enumerate() {
        let req = request(b, "bench", (3 << 40) + i as u64).map(axum::body::Body::new);
        let resp = cold_router.clone().oneshot(req).await.unwrap();
        assert!(resp.status().is_success());
        let _ = resp.into_body().collect().await.unwrap();
    }
    let el = t.elapsed();
    println!(
        "  first heartbeat of each relay after a restart (signature verified), router, 1 task: {:.1} µs each = {:.0}/s per core",
        el.as_secs_f64() * 1e6 / n as f64,
        n as f64 / el.as_secs_f64()
    );
    let t = Instant::now();
    for i in 0..iters {
        let b = &beats[(i % n as u64) as usize];
        let pk = PublicKey::from_b64(&b.pubkey).unwrap();
        let sig = wireleap_proto::keys::Signature::from_b64(&b.signature).unwrap();
        pk.verify(&b.body, &sig).unwrap();
    }
    let el = t.elapsed();
    println!(
        "    ed25519 verification alone: {:.1} µs (skipped for heartbeats repeating verified bytes)",
        el.as_secs_f64() * 1e6 / iters as f64
    );
    let t = Instant::now();
    for i in 0..iters {
        let b = &beats[(i % n as u64) as usize];
        let e: RelayEntry = wireleap_proto::json::from_slice(&b.body).unwrap();
        assert!(e.pubkey.is_some());
    }
    let el = t.elapsed();
    println!(
        "    relay entry JSON decoding alone: {:.1} µs (skipped likewise)",
        el.as_secs_f64() * 1e6 / iters as f64
    );

    stop.cancel();
    serving.await.unwrap().unwrap();
    background.await.unwrap();

    // 5. Baseline: the store alone, no HTTP.
    let keys: Vec<PublicKey> = (0..n).map(|i| relay(i).0.public()).collect();
    let now = 1_900_000_000i64;
    let t = Instant::now();
    let mut single = 0u64;
    while t.elapsed() < Duration::from_secs(2) {
        let k = &keys[single as usize % n];
        assert!(store.touch(k, now + single as i64).await.unwrap());
        single += 1;
    }
    let el = t.elapsed();
    let single_rate = single as f64 / el.as_secs_f64();
    println!(
        "  baseline, store without HTTP: one autocommit UPDATE per heartbeat (fsync each): {single_rate:.0}/s"
    );
    let batch: Vec<(PublicKey, i64)> = keys.iter().map(|k| (*k, now + 10)).collect();
    let t = Instant::now();
    let rounds = 3;
    for _ in 0..rounds {
        store.touch_many(&batch).await.unwrap();
    }
    let el = t.elapsed();
    let batch_rate = (n * rounds) as f64 / el.as_secs_f64();
    println!(
        "  baseline, store without HTTP: batched flush ({n} rows per transaction): {batch_rate:.0} rows/s"
    );
    println!(
        "  ratio: HTTP heartbeats / per-heartbeat store writes = {:.1}x",
        http_rate / single_rate
    );
    println!(
        "  target >= 10000 heartbeats/s over HTTP: {}",
        if http_rate >= 10_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
