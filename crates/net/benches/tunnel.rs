//! Throughput of one stream: direct loopback TCP (baseline), a plain TCP forwarder and a TLS
//! forwarder (references: the extra loopback leg alone, and with TLS), vs 1 hop vs 3 nested
//! hops of the tunnel (TLS 1.3 + HTTP/2, relay splicing to the target), upload and download.
//!
//! Run: `cargo bench -p wireleap-net --bench tunnel`. Knobs (env): `WL_BENCH_MIB` (bytes per
//! run, default 256), `WL_BENCH_ROUNDS` (interleaved rounds, default 5), `WL_BENCH_STREAM_WINDOW`,
//! `WL_BENCH_CONN_WINDOW`, `WL_BENCH_FRAME`, `WL_BENCH_SPLICE_BUF` (bytes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::future::BoxFuture;
use http::{Method, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use wireleap_net::splice::{splice, SpliceLimits};
use wireleap_net::tls;
use wireleap_net::tunnel::{
    H2Config, Handler, PlainReply, ServeConfig, Server, ServerStream, Session, SessionConfig,
    TunnelRequest,
};

const T: Duration = Duration::from_secs(10);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn h2_config() -> H2Config {
    let d = H2Config::default();
    H2Config {
        stream_window: env_usize("WL_BENCH_STREAM_WINDOW", d.stream_window as usize) as u32,
        connection_window: env_usize("WL_BENCH_CONN_WINDOW", d.connection_window as usize) as u32,
        max_frame_size: env_usize("WL_BENCH_FRAME", d.max_frame_size as usize) as u32,
        ..d
    }
}

fn splice_limits() -> SpliceLimits {
    let d = SpliceLimits::default();
    SpliceLimits {
        buffer_size: env_usize("WL_BENCH_SPLICE_BUF", d.buffer_size),
        ..d
    }
}

/// A loopback listener that runs `handle` on a task per accepted connection (no delay set).
async fn accept_each<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.set_nodelay(true);
            tokio::spawn(handle(tcp));
        }
    });
    addr
}

/// The target: a 9-byte command, `U` + u64 (read that many bytes, answer one byte) or
/// `D` + u64 (send that many bytes, then close).
async fn target_server() -> SocketAddr {
    accept_each(|mut tcp| async move {
        let mut cmd = [0u8; 9];
        tcp.read_exact(&mut cmd).await.unwrap();
        let n = u64::from_le_bytes(cmd[1..].try_into().unwrap());
        let mut buf = vec![0u8; 256 << 10];
        if cmd[0] == b'U' {
            let mut left = n;
            while left > 0 {
                let got = tcp.read(&mut buf).await.unwrap();
                assert!(got > 0, "upload ended early");
                left -= got as u64;
            }
            tcp.write_all(b"k").await.unwrap();
        } else {
            let mut left = n;
            while left > 0 {
                let k = (left as usize).min(buf.len());
                tcp.write_all(&buf[..k]).await.unwrap();
                left -= k as u64;
            }
        }
        tcp.shutdown().await.unwrap();
    })
    .await
}

/// A relay that splices every tunnel to the address in its payload.
struct Relay {
    limits: SpliceLimits,
}

impl Handler for Relay {
    fn tunnel(
        self: Arc<Self>,
        request: TunnelRequest,
        mut stream: ServerStream,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let addr = String::from_utf8(request.payload.unwrap().to_vec()).unwrap();
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let _ = tcp.set_nodelay(true);
            stream.send_headers().unwrap();
            if splice(&mut stream, &mut tcp, &self.limits, |_, _| {})
                .await
                .is_ok()
            {
                let _ = stream.finish_ok();
            }
        })
    }

    fn not_allowed(&self, _method: &Method) -> PlainReply {
        PlainReply::text(StatusCode::METHOD_NOT_ALLOWED, "no")
    }
}

async fn start_relay(seed: u8) -> (SocketAddr, [u8; 32]) {
    let rc = wireleap_net::cert::generate(&[seed; 32], SystemTime::now()).unwrap();
    let cfg = tls::server_config(rc.cert_pem.as_bytes(), rc.key_pem.as_bytes()).unwrap();
    let pubkey = wireleap_proto::keys::Keypair::from_seed([seed; 32])
        .public()
        .0;
    let server = Server::new(
        Arc::new(Relay {
            limits: splice_limits(),
        }),
        ServeConfig {
            h2: h2_config(),
            ..ServeConfig::default()
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        server
            .serve(listener, Some(cfg), std::future::pending())
            .await
    });
    (addr, pubkey)
}

/// Reference point without HTTP/2: a TLS terminator that splices to the target, showing what
/// the TLS layer and the extra TCP leg cost on their own.
async fn start_tls_forwarder(seed: u8, target: SocketAddr) -> (SocketAddr, [u8; 32]) {
    let rc = wireleap_net::cert::generate(&[seed; 32], SystemTime::now()).unwrap();
    let cfg = tls::server_config(rc.cert_pem.as_bytes(), rc.key_pem.as_bytes()).unwrap();
    let pubkey = wireleap_proto::keys::Keypair::from_seed([seed; 32])
        .public()
        .0;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.set_nodelay(true);
            let cfg = cfg.clone();
            tokio::spawn(async move {
                let mut tls = tls::accept_tls(cfg, tcp, T).await.unwrap();
                let mut out = TcpStream::connect(target).await.unwrap();
                let _ = out.set_nodelay(true);
                let _ = splice(&mut tls, &mut out, &splice_limits(), |_, _| {}).await;
            });
        }
    });
    (addr, pubkey)
}

/// Reference point without TLS or HTTP/2: a plain TCP forwarder, i.e. only the extra
/// loopback leg every hop adds. Its ratio bounds what any one-hop tunnel can reach here.
async fn start_tcp_forwarder(target: SocketAddr) -> (SocketAddr, [u8; 32]) {
    let addr = accept_each(move |mut tcp| async move {
        let mut out = TcpStream::connect(target).await.unwrap();
        let _ = out.set_nodelay(true);
        let _ = splice(&mut tcp, &mut out, &splice_limits(), |_, _| {}).await;
    })
    .await;
    (addr, [0; 32])
}

/// What a setup connects through besides tunnel relays.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    /// The relays listed (none: direct).
    Relays,
    /// The TLS-only reference forwarder.
    Tls,
    /// The plain TCP reference forwarder.
    Tcp,
}

/// (label, relays or forwarder to pass through, which kind).
type Setup<'a> = (&'static str, &'a [(SocketAddr, [u8; 32])], Via);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for S {}

/// Builds a circuit through `relays` to `target`; keeps every session alive in `keep`.
async fn circuit(
    relays: &[(SocketAddr, [u8; 32])],
    target: SocketAddr,
    keep: &mut Vec<Session>,
) -> Box<dyn Stream> {
    let cfg = SessionConfig {
        h2: h2_config(),
        ..SessionConfig::default()
    };
    let mut io: Box<dyn Stream> =
        Box::new(tls::dial_tcp(&relays[0].0.to_string(), T).await.unwrap());
    for (i, (_, pubkey)) in relays.iter().enumerate() {
        let next = relays.get(i + 1).map_or(target, |r| r.0);
        let tls = tls::dial_tls(io, None, Some(*pubkey), T).await.unwrap();
        let session = Session::handshake(tls, cfg.clone()).await.unwrap();
        let stream = session
            .open("/", next.to_string().as_bytes())
            .await
            .unwrap();
        keep.push(session);
        io = Box::new(stream);
    }
    io
}

/// One measurement: wall-clock MiB/s and process CPU seconds per GiB moved.
#[derive(Clone, Copy)]
struct Figure {
    mib_s: f64,
    cpu_s_per_gib: f64,
}

/// Process CPU time (user + system) in seconds, from /proc (Linux); 0 elsewhere.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on every mainstream Linux configuration.
    (ticks(11) + ticks(12)) / 100.0
}

/// Moves `size` bytes one way.
async fn transfer(mut io: Box<dyn Stream>, size: u64, upload: bool) -> Figure {
    let mut cmd = [0u8; 9];
    cmd[0] = if upload { b'U' } else { b'D' };
    cmd[1..].copy_from_slice(&size.to_le_bytes());
    let cpu0 = cpu_seconds();
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
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let gib = size as f64 / f64::from(1u32 << 30);
    Figure {
        mib_s: size as f64 / f64::from(1u32 << 20) / secs,
        cpu_s_per_gib: cpu / gib,
    }
}

async fn measure(
    relays: &[(SocketAddr, [u8; 32])],
    via: Via,
    target: SocketAddr,
    size: u64,
    upload: bool,
) -> Figure {
    let mut keep = Vec::new();
    let io: Box<dyn Stream> = if via == Via::Tcp {
        let tcp = TcpStream::connect(relays[0].0).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        Box::new(tcp)
    } else if via == Via::Tls {
        let tcp = tls::dial_tcp(&relays[0].0.to_string(), T).await.unwrap();
        Box::new(
            tls::dial_tls(tcp, None, Some(relays[0].1), T)
                .await
                .unwrap(),
        )
    } else if relays.is_empty() {
        let tcp = TcpStream::connect(target).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        Box::new(tcp)
    } else {
        circuit(relays, target, &mut keep).await
    };
    transfer(io, size, upload).await
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let size = env_usize("WL_BENCH_MIB", 256) as u64 * 1024 * 1024;
        let rounds = env_usize("WL_BENCH_ROUNDS", 5).max(1);
        let h2 = h2_config();
        println!(
            "tunnel bench: {} MiB per run, {rounds} interleaved rounds (medians); stream window {} KiB, connection window {} KiB, max frame {} KiB, splice buffer {} KiB",
            size >> 20,
            h2.stream_window >> 10,
            h2.connection_window >> 10,
            h2.max_frame_size >> 10,
            splice_limits().buffer_size >> 10,
        );
        let target = target_server().await;
        let relays = [start_relay(1).await, start_relay(6).await, start_relay(7).await];
        let forwarder = [start_tls_forwarder(8, target).await];
        let tcp_forwarder = [start_tcp_forwarder(target).await];
        let setups: [Setup<'_>; 5] = [
            ("direct TCP             ", &relays[..0], Via::Relays),
            ("TCP forwarder (bound)  ", &tcp_forwarder[..], Via::Tcp),
            ("TLS only, no h2 (ref.) ", &forwarder[..], Via::Tls),
            ("1 hop                  ", &relays[..1], Via::Relays),
            ("3 nested hops          ", &relays[..], Via::Relays),
        ];
        // `WL_BENCH_HOPS=0,1` restricts the setups (for profiling; 9 = the TLS-only
        // reference, 8 = the TCP forwarder); ratios need 0 included.
        let only: Option<Vec<usize>> = std::env::var("WL_BENCH_HOPS")
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect());
        let setups: Vec<_> = setups
            .into_iter()
            .filter(|(_, hops, via)| {
                let id = match via {
                    Via::Tls => 9,
                    Via::Tcp => 8,
                    Via::Relays => hops.len(),
                };
                only.as_ref().is_none_or(|o| o.contains(&id))
            })
            .collect();
        for upload in [true, false] {
            let dir = if upload { "upload  " } else { "download" };
            // Interleave the setups round by round, so load from other processes hits all of
            // them alike; ratios are taken within a round.
            let mut figs: Vec<Vec<Figure>> = vec![Vec::new(); setups.len()];
            for _ in 0..rounds {
                for (i, (_, hops, via)) in setups.iter().enumerate() {
                    figs[i].push(measure(hops, *via, target, size, upload).await);
                }
            }
            for (i, (name, _, _)) in setups.iter().enumerate() {
                let speed = median(figs[i].iter().map(|f| f.mib_s).collect());
                let ratio = median(
                    figs[i]
                        .iter()
                        .zip(&figs[0])
                        .map(|(f, b)| f.mib_s / b.mib_s)
                        .collect(),
                );
                let cpu = median(figs[i].iter().map(|f| f.cpu_s_per_gib).collect());
                println!(
                    "{dir} {name} {speed:8.1} MiB/s  ratio {ratio:.2}  CPU {cpu:5.2} s/GiB"
                );
            }
        }
    });
}
