//! Relay benchmarks, each with its baseline measured in the same run:
//!
//! 1. Throughput of one stream (upload and download) through 1 and 3 real relays
//!    (`RelayRuntime` in this process: sharetoken verification, durable store, policy, dial,
//!    splice) vs a direct loopback TCP copy. Targets: 1 hop ≥ 50 % of direct, 3 hops ≥ 25 %.
//! 2. Time to first byte: connect + first echoed byte, direct vs 1 and 3 hops (cold: new
//!    TLS + HTTP/2 per hop; warm: a new stream on an open first-hop session), so the time
//!    added per hop can be read off.
//! 3. Memory: 10,000 concurrent idle streams through one relay run as the real binary in its
//!    own process; RSS growth per stream (target ≤ 16 KiB).
//!
//! Run: `cargo bench -p wireleap-relay --bench relay`. Knobs (env): `WL_BENCH_MIB` (bytes per
//! throughput run, default 128), `WL_BENCH_ROUNDS` (default 3), `WL_BENCH_BUFSIZE` (relay
//! `bufsize`, default the config default 4096), `WL_BENCH_STREAMS` (idle streams, default
//! 10000), `WL_BENCH_ONLY` (`throughput`, `ttfb` or `memory`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use wireleap_daemon::Home;
use wireleap_net::tls;
use wireleap_net::tunnel::{Session, SessionConfig};
use wireleap_proto::address::Address;
use wireleap_proto::contractinfo::{ContractInfo, DirectoryRef};
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::servicekey::ContractSection;
use wireleap_proto::sharetoken::Sharetoken;
use wireleap_proto::status::Status;
use wireleap_proto::wl_payload::{Protocol, WlPayload};
use wireleap_relay::config::{ContractEntry, RelayConfig, Role};
use wireleap_relay::RelayRuntime;

const T: Duration = Duration::from_secs(30);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A contract that accepts every enrollment; its `/info` names itself as directory.
async fn fake_contract(key: &Keypair) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let info = ContractInfo {
        pubkey: Some(key.public()),
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
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn relay_config(port: u16, contract: &str) -> RelayConfig {
    let mut c = RelayConfig {
        address: format!("127.0.0.1:{port}"),
        auto_submit_interval: wireleap_proto::duration::Duration::ZERO,
        bufsize: env_usize("WL_BENCH_BUFSIZE", RelayConfig::default().bufsize as usize) as u32,
        ..RelayConfig::default()
    };
    c.contracts.insert(
        contract.to_string(),
        ContractEntry {
            address: Address::parse(&format!("wireleap://127.0.0.1:{port}")).unwrap(),
            role: Role::Backing,
            key: None,
            network_usage_limit: None,
            upgrade_channel: None,
            update_channel: None,
        },
    );
    c.danger_zone.allow_loopback = true;
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct InProcessRelay {
    addr: SocketAddr,
    pubkey: PublicKey,
    _rt: RelayRuntime,
    _dir: tempfile::TempDir,
}

async fn start_relay(seed: u8, contract: &str) -> InProcessRelay {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path(), "wireleap-relay");
    let keypair = Keypair::from_seed([seed; 32]);
    wireleap_daemon::keyfile::write_keypair(&home, &keypair).unwrap();
    let port = free_port();
    let mut rt = RelayRuntime::start(&home, relay_config(port, contract))
        .await
        .unwrap();
    rt.wait_first_enrollment(T).await;
    InProcessRelay {
        addr: rt.local_addr().unwrap(),
        pubkey: keypair.public(),
        _rt: rt,
        _dir: dir,
    }
}

/// The throughput target: a 9-byte command, `U` + u64 (read that many bytes, answer one
/// byte) or `D` + u64 (send that many bytes, then close); `E` echoes.
async fn target_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let mut cmd = [0u8; 9];
                if tcp.read_exact(&mut cmd).await.is_err() {
                    return;
                }
                let n = u64::from_le_bytes(cmd[1..].try_into().unwrap());
                let mut buf = vec![0u8; 256 << 10];
                match cmd[0] {
                    b'U' => {
                        let mut left = n;
                        while left > 0 {
                            let got = tcp.read(&mut buf).await.unwrap();
                            assert!(got > 0, "upload ended early");
                            left -= got as u64;
                        }
                        tcp.write_all(b"k").await.unwrap();
                    }
                    b'D' => {
                        let mut left = n;
                        while left > 0 {
                            let k = (left as usize).min(buf.len());
                            tcp.write_all(&buf[..k]).await.unwrap();
                            left -= k as u64;
                        }
                    }
                    _ => {
                        tcp.write_all(b"e").await.unwrap();
                        let (mut r, mut w) = tcp.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                }
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for S {}

fn payload(contract: &Keypair, relay: PublicKey, remote: &str) -> String {
    let sk = Keypair::generate();
    let section = ContractSection::new_signed(contract, now() + 600, now() + 4200);
    let token = Sharetoken::new_signed(
        &sk,
        section,
        relay,
        now(),
        wireleap_proto::nonce::generate(32),
    );
    WlPayload::connect(Protocol::Tcp, Address::parse(remote).unwrap(), token).to_header_value()
}

/// A circuit through `relays` to `target`; sessions are kept in `keep`. With `first`, the
/// first hop's stream is opened on that existing session.
async fn circuit(
    relays: &[(SocketAddr, PublicKey)],
    target: SocketAddr,
    contract: &Keypair,
    keep: &mut Vec<Arc<Session>>,
    first: Option<Arc<Session>>,
) -> Box<dyn Stream> {
    let mut io: Option<Box<dyn Stream>> = None;
    for (i, (addr, pubkey)) in relays.iter().enumerate() {
        let remote = match relays.get(i + 1) {
            Some((next, _)) => format!("wireleap://{next}"),
            None => format!("target://{target}"),
        };
        let session = match (i, &first) {
            (0, Some(s)) => s.clone(),
            _ => {
                let transport: Box<dyn Stream> = match io.take() {
                    Some(s) => s,
                    None => Box::new(tls::dial_tcp(&addr.to_string(), T).await.unwrap()),
                };
                let tls = tls::dial_tls(transport, None, Some(pubkey.0), T)
                    .await
                    .unwrap();
                Arc::new(
                    Session::handshake(tls, SessionConfig::default())
                        .await
                        .unwrap(),
                )
            }
        };
        let stream = session
            .open(
                &format!("https://{addr}/"),
                payload(contract, *pubkey, &remote).as_bytes(),
            )
            .await
            .unwrap();
        keep.push(session);
        io = Some(Box::new(stream));
    }
    io.unwrap()
}

async fn open(
    relays: &[(SocketAddr, PublicKey)],
    target: SocketAddr,
    contract: &Keypair,
    keep: &mut Vec<Arc<Session>>,
    first: Option<Arc<Session>>,
) -> Box<dyn Stream> {
    if relays.is_empty() {
        let tcp = TcpStream::connect(target).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        Box::new(tcp)
    } else {
        circuit(relays, target, contract, keep, first).await
    }
}

/// MiB/s moving `size` bytes one way.
async fn transfer(mut io: Box<dyn Stream>, size: u64, upload: bool) -> f64 {
    let mut cmd = [0u8; 9];
    cmd[0] = if upload { b'U' } else { b'D' };
    cmd[1..].copy_from_slice(&size.to_le_bytes());
    let started = Instant::now();
    io.write_all(&cmd).await.unwrap();
    let mut buf = vec![0u8; 256 << 10];
    if upload {
        let mut left = size;
        while left > 0 {
            let k = (left as usize).min(buf.len());
            io.write_all(&buf[..k]).await.unwrap();
            left -= k as u64;
        }
        io.flush().await.unwrap();
        let mut ack = [0u8; 1];
        io.read_exact(&mut ack).await.unwrap();
    } else {
        let mut got = 0u64;
        while got < size {
            let n = io.read(&mut buf).await.unwrap();
            assert!(n > 0, "download ended early at {got}");
            got += n as u64;
        }
    }
    size as f64 / f64::from(1u32 << 20) / started.elapsed().as_secs_f64()
}

async fn throughput(relays: &[(SocketAddr, PublicKey)], target: SocketAddr, contract: &Keypair) {
    let size = env_usize("WL_BENCH_MIB", 128) as u64 * 1024 * 1024;
    let rounds = env_usize("WL_BENCH_ROUNDS", 3).max(1);
    println!(
        "== throughput: one stream, {} MiB per run, {rounds} interleaved rounds (medians), relay bufsize {}",
        size >> 20,
        env_usize("WL_BENCH_BUFSIZE", RelayConfig::default().bufsize as usize)
    );
    let setups: [(&str, &[(SocketAddr, PublicKey)]); 3] = [
        ("direct TCP", &relays[..0]),
        ("1 relay   ", &relays[..1]),
        ("3 relays  ", relays),
    ];
    for upload in [true, false] {
        let dir = if upload { "upload  " } else { "download" };
        let mut figs: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
        for _ in 0..rounds {
            for (i, (_, hops)) in setups.iter().enumerate() {
                let mut keep = Vec::new();
                let io = open(hops, target, contract, &mut keep, None).await;
                figs[i].push(transfer(io, size, upload).await);
            }
        }
        for (i, (name, _)) in setups.iter().enumerate() {
            let ratio = median(figs[i].iter().zip(&figs[0]).map(|(f, b)| f / b).collect());
            println!(
                "{dir} {name} {:8.1} MiB/s  ratio to direct {ratio:.2}",
                median(figs[i].clone())
            );
        }
    }
}

/// Milliseconds from nothing to the first echoed byte.
async fn first_byte(
    relays: &[(SocketAddr, PublicKey)],
    target: SocketAddr,
    contract: &Keypair,
    first: Option<Arc<Session>>,
) -> f64 {
    let started = Instant::now();
    let mut keep = Vec::new();
    let mut io = open(relays, target, contract, &mut keep, first).await;
    io.write_all(&[b'E'; 9]).await.unwrap();
    let mut b = [0u8; 1];
    io.read_exact(&mut b).await.unwrap();
    started.elapsed().as_secs_f64() * 1000.0
}

async fn ttfb(relays: &[(SocketAddr, PublicKey)], target: SocketAddr, contract: &Keypair) {
    let n = 40;
    println!("== time to first byte: connect, send, first echoed byte (median of {n})");
    let direct = {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(first_byte(&relays[..0], target, contract, None).await);
        }
        median(v)
    };
    println!("direct TCP          {direct:7.2} ms");
    for hops in [1usize, 3] {
        let mut cold = Vec::new();
        for _ in 0..n {
            cold.push(first_byte(&relays[..hops], target, contract, None).await);
        }
        let cold = median(cold);
        // Warm: the first hop's session exists (a client keeps one per first relay).
        let session = {
            let (addr, pubkey) = relays[0];
            let tcp = tls::dial_tcp(&addr.to_string(), T).await.unwrap();
            let tls = tls::dial_tls(tcp, None, Some(pubkey.0), T).await.unwrap();
            Arc::new(
                Session::handshake(tls, SessionConfig::default())
                    .await
                    .unwrap(),
            )
        };
        let mut warm = Vec::new();
        for _ in 0..n {
            warm.push(first_byte(&relays[..hops], target, contract, Some(session.clone())).await);
        }
        let warm = median(warm);
        println!(
            "{hops} relay(s) cold     {cold:7.2} ms  (+{:.2} ms per hop over direct)",
            (cold - direct) / hops as f64
        );
        println!(
            "{hops} relay(s) warm     {warm:7.2} ms  (+{:.2} ms per hop over direct)",
            (warm - direct) / hops as f64
        );
    }
}

// ------------------------------------------------------------------ memory

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn memory(contract_url: &str, contract: &Keypair) {
    let streams = env_usize("WL_BENCH_STREAMS", 10_000);
    let limit = raise_nofile();
    if (limit as usize) < streams + 200 {
        println!("== memory: skipped, RLIMIT_NOFILE hard limit {limit} < {streams} streams");
        return;
    }
    // An idle target: accepts and holds every connection.
    let held = Arc::new(AtomicUsize::new(0));
    let target = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = held.clone();
        tokio::spawn(async move {
            let mut conns = Vec::new();
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let held = held.clone();
                conns.push(tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    if tcp.read_exact(&mut b).await.is_ok() {
                        held.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = tcp.read(&mut b).await;
                }));
            }
        });
        addr
    };
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path(), "wireleap-relay");
    let keypair = Keypair::from_seed([9; 32]);
    wireleap_daemon::keyfile::write_keypair(&home, &keypair).unwrap();
    let port = free_port();
    let cfg = relay_config(port, contract_url);
    std::fs::write(home.config_file(), serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let log = std::fs::File::create(dir.path().join("bench.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wireleap-relay"))
        .arg("--home")
        .arg(dir.path())
        .args(["start", "--fg"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let _guard = Kill(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let pubkey = keypair.public();

    let connect = || async move {
        let tcp = tls::dial_tcp(&addr.to_string(), T).await.ok()?;
        let tls = tls::dial_tls(tcp, None, Some(pubkey.0), T).await.ok()?;
        Session::handshake(tls, SessionConfig::default()).await.ok()
    };
    let mut ready = false;
    for _ in 0..300 {
        if let Some(s) = connect().await {
            let ping = WlPayload::ping().to_header_value();
            if s.request_plain(http::Method::PUT, "/", Some(ping.as_bytes()))
                .await
                .is_ok_and(|r| r.status == 200)
            {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "relay did not start: see {}",
        dir.path().join("bench.log").display()
    );

    // Warm up allocator arenas and the store with a first batch, then take the baseline.
    let per_session = 1000;
    let sessions_needed = streams.div_ceil(per_session);
    let mut sessions = Vec::new();
    for _ in 0..sessions_needed {
        sessions.push(Arc::new(connect().await.unwrap()));
    }
    let mut keep = Vec::new();
    let open_batch = |from: usize, to: usize| {
        let sessions = sessions.clone();
        let contract = contract.clone();
        (from..to)
            .map(|i| {
                let s = sessions[i / per_session].clone();
                let p = payload(&contract, pubkey, &format!("target://{target}"));
                tokio::spawn(async move {
                    let mut st = s
                        .open(&format!("https://{addr}/"), p.as_bytes())
                        .await
                        .unwrap();
                    st.write_all(b"x").await.unwrap();
                    st
                })
            })
            .collect::<Vec<_>>()
    };
    let warm = 200.min(streams);
    for t in open_batch(0, warm) {
        keep.push(t.await.unwrap());
    }
    let wait_held = |n: usize| {
        let held = held.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(300);
            while held.load(Ordering::Relaxed) < n {
                assert!(
                    Instant::now() < deadline,
                    "only {} of {n} streams reached the target",
                    held.load(Ordering::Relaxed)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_held(warm).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid);
    let started = Instant::now();
    let step = 1000;
    let mut from = warm;
    while from < streams {
        let to = (from + step).min(streams);
        for t in open_batch(from, to) {
            keep.push(t.await.unwrap());
        }
        from = to;
    }
    wait_held(streams).await;
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    let added = streams - warm;
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / added as f64;
    println!(
        "== memory: {streams} concurrent idle streams through one relay process (bufsize {})",
        cfg.bufsize
    );
    println!(
        "relay RSS {before} KiB with {warm} streams -> {after} KiB with {streams}: {:.1} KiB per stream (target <= 16); opened {added} streams in {:.1} s ({:.0} streams/s incl. durable token store)",
        per / 1024.0,
        opened.as_secs_f64(),
        added as f64 / opened.as_secs_f64()
    );
    drop(keep);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("WL_BENCH_ONLY").ok();
    let want = |what: &str| only.as_deref().is_none_or(|o| o == what);
    rt.block_on(async {
        let contract = Keypair::generate();
        let url = fake_contract(&contract).await;
        if want("throughput") || want("ttfb") {
            let target = target_server().await;
            let mut relays = Vec::new();
            for seed in [1u8, 6, 7] {
                relays.push(start_relay(seed, &url).await);
            }
            let hops: Vec<(SocketAddr, PublicKey)> =
                relays.iter().map(|r| (r.addr, r.pubkey)).collect();
            if want("throughput") {
                throughput(&hops, target, &contract).await;
            }
            if want("ttfb") {
                ttfb(&hops, target, &contract).await;
            }
        }
        if want("memory") {
            memory(&url, &contract).await;
        }
    });
}
