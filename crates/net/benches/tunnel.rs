//! Throughput of one stream: direct loopback TCP (baseline) vs 1 hop vs 3 nested hops of the
//! tunnel (TLS 1.3 + HTTP/2, relay splicing to the target), upload and download.
//!
//! Run: `cargo bench -p wireleap-net --bench tunnel`. Knobs (env): `WL_BENCH_MIB` (bytes per
//! run, default 256), `WL_BENCH_RUNS` (best of, default 3), `WL_BENCH_STREAM_WINDOW`,
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

/// The target: a 9-byte command, `U` + u64 (read that many bytes, answer one byte) or
/// `D` + u64 (send that many bytes, then close).
async fn target_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
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
            });
        }
    });
    addr
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

/// Moves `size` bytes one way and returns MiB/s.
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
    let secs = started.elapsed().as_secs_f64();
    size as f64 / (1024.0 * 1024.0) / secs
}

async fn best_of(
    runs: usize,
    relays: &[(SocketAddr, [u8; 32])],
    target: SocketAddr,
    size: u64,
    upload: bool,
) -> f64 {
    let mut best: f64 = 0.0;
    for _ in 0..runs {
        let mut keep = Vec::new();
        let io: Box<dyn Stream> = if relays.is_empty() {
            let tcp = TcpStream::connect(target).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            Box::new(tcp)
        } else {
            circuit(relays, target, &mut keep).await
        };
        best = best.max(transfer(io, size, upload).await);
    }
    best
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let size = env_usize("WL_BENCH_MIB", 256) as u64 * 1024 * 1024;
        let runs = env_usize("WL_BENCH_RUNS", 3);
        let h2 = h2_config();
        println!(
            "tunnel bench: {} MiB per run, best of {runs}; stream window {} KiB, connection window {} KiB, max frame {} KiB, splice buffer {} KiB",
            size >> 20,
            h2.stream_window >> 10,
            h2.connection_window >> 10,
            h2.max_frame_size >> 10,
            splice_limits().buffer_size >> 10,
        );
        let target = target_server().await;
        let relays = [start_relay(1).await, start_relay(6).await, start_relay(7).await];
        for upload in [true, false] {
            let dir = if upload { "upload  " } else { "download" };
            let base = best_of(runs, &[], target, size, upload).await;
            let one = best_of(runs, &relays[..1], target, size, upload).await;
            let three = best_of(runs, &relays, target, size, upload).await;
            println!("{dir} direct TCP    {base:9.1} MiB/s  1.00");
            println!("{dir} 1 hop         {one:9.1} MiB/s  {:.2}", one / base);
            println!("{dir} 3 nested hops {three:9.1} MiB/s  {:.2}", three / base);
        }
    });
}
